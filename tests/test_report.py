"""The HTML report: `influent demo` end to end, the page in headless Chromium (no network requests, every
section present, images decoded), offline-by-construction checks, and the report for tabular/text data.

The Chromium test needs the Debian package `chromium` (``apt-get install -y chromium``) and skips without
it. It drives the browser over the DevTools protocol on a pipe (``--remote-debugging-pipe``), so it needs
no Python package beyond the standard library. Set ``INFLUENT_UPDATE_SCREENSHOT=1`` to refresh
``docs/report.png`` from the screenshot it takes.
"""

import base64
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

import influent as inf
from influent.report import build_report
from influent.runs.record import write_report
from influent.runs.summary import harmful_rule, png
from influent.report.svg import nice_ticks
from influent.runs.inputs import Data
from influent.runs.config import RunConfig
from influent.runs.steps import Steps
from influent.runs.pipeline import run_score

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("summary", "distribution", "samples", "removal", "detection", "comparison", "settings")


# ---- a minimal DevTools-protocol client over a pipe -------------------------------------------------------
def chromium_binary():
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


class Browser:
    """Headless Chromium driven over ``--remote-debugging-pipe`` (fd 3: commands in, fd 4: replies out)."""

    def __init__(self, binary, width=1200, height=900):
        self.profile = tempfile.mkdtemp(prefix="influent-chromium-")
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def fds():  # in the child: the pipe ends become fds 3 and 4 (inheritable)
            a, b = os.dup(to_chrome_r), os.dup(from_chrome_w)
            os.dup2(a, 3)
            os.dup2(b, 4)

        args = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--no-default-browser-check",
                "--hide-scrollbars", "--mute-audio", f"--user-data-dir={self.profile}", "--remote-debugging-pipe",
                "about:blank"]
        self.proc = subprocess.Popen(args, preexec_fn=fds, close_fds=False, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self.buf, self.next_id, self.events = b"", 0, []
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Network", "Page", "Runtime", "Log"):
            self.send(f"{domain}.enable", session=True)
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}, session=True)

    def _read(self, want, timeout):
        end = time.time() + timeout
        while time.time() < end:
            while b"\0" in self.buf:
                raw, self.buf = self.buf.split(b"\0", 1)
                msg = json.loads(raw)
                if "method" in msg:
                    self.events.append(msg)
                if want(msg):
                    return msg
            chunk = os.read(self._from_chrome, 1 << 16)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self.buf += chunk
        raise TimeoutError("no answer from chromium")

    def send(self, method, params=None, session=False, timeout=60):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = self.session
        os.write(self._to_chrome, json.dumps(msg).encode() + b"\0")
        reply = self._read(lambda m: m.get("id") == self.next_id, timeout)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def open(self, url, timeout=60):
        self.events.clear()
        self.send("Page.navigate", {"url": url}, session=True)
        self._read(lambda m: m.get("method") == "Page.loadEventFired", timeout)
        time.sleep(0.3)  # let late requests (if any) show up
        self.send("Runtime.evaluate", {"expression": "1"}, session=True)

    def requests(self):
        return [e["params"]["request"]["url"] for e in self.events if e.get("method") == "Network.requestWillBeSent"]

    def errors(self):
        out = [e["params"] for e in self.events if e.get("method") == "Runtime.exceptionThrown"]
        out += [e["params"]["entry"] for e in self.events
                if e.get("method") == "Log.entryAdded" and e["params"]["entry"].get("level") == "error"]
        return out

    def eval(self, expression):
        res = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session=True)
        return res["result"].get("value")

    def screenshot(self, width=1200, height=None):
        full = self.eval("document.documentElement.scrollHeight")
        h = full if height is None else min(full, height)
        shot = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True,
                                                    "clip": {"x": 0, "y": 0, "width": width, "height": h, "scale": 1}},
                         session=True)
        return base64.b64decode(shot["data"])

    def close(self):
        try:
            self.send("Browser.close", timeout=10)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_chrome)
        os.close(self._from_chrome)
        shutil.rmtree(self.profile, ignore_errors=True)


def off_disk(urls):
    """The requests that did not stay on disk or inline (anything but file: and data: URLs)."""
    return [u for u in urls if not (u.startswith("file:") or u.startswith("data:"))]


@pytest.fixture(scope="module")
def browser():
    binary = chromium_binary()
    if binary is None:
        pytest.skip("headless Chromium is not installed (Debian: apt-get install -y chromium)")
    b = Browser(binary)
    yield b
    b.close()


# ---- the demo, end to end ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    """`influent demo --out tmp` run as a user would (the installed console script when present)."""
    out = tmp_path_factory.mktemp("demo") / "tmp"
    exe = shutil.which("influent")
    cmd = [exe] if exe else [sys.executable, "-m", "influent.cli"]
    # one thread: the demo is small, and OpenMP threads on a busy 2-core machine can slow it down many times
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "COLUMNS": "120"}
    proc = subprocess.run(cmd + ["demo", "--out", str(out)], capture_output=True, text=True, timeout=900, env=env,
                          cwd=out.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def test_demo_writes_everything_and_finds_the_flipped_labels(demo_dir):
    out, proc = demo_dir
    assert sorted(p.name for p in out.iterdir()) == ["data", "report.html", "run.json", "scores.parquet"]
    rec = json.loads((out / "run.json").read_text())
    det = rec["results"]["detection"]
    assert det["n_noisy"] == 100 and det["n"] == 1000
    assert rec["method"]["name"] == "mislabel"  # the demo's default: the wrong-label detector
    assert det["auc"] > 0.9 and det["precision_at_k"] > 0.7  # it ranks the flipped labels first
    rows = {r["method"]: r for r in rec["results"]["comparison"]}
    assert set(rows) == {"mislabel", "if", "ip", "self-if", "random"}
    assert rows["random"]["auc"] < 0.6 < rows["if"]["auc"]
    # the printed table agrees with run.json, and every progress bar finished
    assert f"{rows['mislabel']['auc']:.3f}" in proc.stdout and f"{rows['if']['auc']:.3f}" in proc.stdout
    for name, p in rec["progress"].items():
        assert p["done"] == p["total"], name
    assert proc.stderr.count("100%") >= 8
    # the removal curve of the detector: removing the 10% it flags first lowers the test loss below every
    # random removal of as many samples (its other end, the surest labels, is no influence ranking, so removing
    # them is not asked to raise the loss as the demo asked of `if` when `if` was its method)
    c = rec["results"]["curve"]
    i = c["k"].index(100)
    assert c["harmful"]["cost"][i] < c["random"]["cost_min"][i]
    # the loop closes: influent.clean's measured recommendation is printed and recorded; its baseline is the
    # model as trained (the same fit), and an action is taken only with an interval above 0
    cl = rec["results"]["clean"]
    assert cl["summary"].split(":")[0] in " ".join(proc.stdout.split())
    assert cl["candidates"][0]["action"] == "none"
    assert cl["candidates"][0]["accuracy"] == pytest.approx(rec["results"]["summary"]["valid_accuracy"])
    assert cl["action"] == "none" or cl["gain_ci"][0] > 0
    assert cl["reproduce"].startswith("influent clean --train ") and "--drop clean_label" in cl["reproduce"]


class _Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs, self.tags, self.ids = [], [], set()

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for k, v in attrs:
            if k in ("src", "href", "xlink:href", "srcset", "poster", "data", "action", "background"):
                self.refs.append(v or "")
            if k == "id":
                self.ids.add(v)


def test_report_is_offline_by_construction(demo_dir):
    html = (demo_dir[0] / "report.html").read_text()
    p = _Refs()
    p.feed(html)
    assert p.refs, "the page should link its sections and inline its images"
    bad = [r for r in p.refs if not (r.startswith("#") or r.startswith("data:image/png;base64,"))]
    assert bad == []
    assert not {"script", "link", "iframe", "object", "embed", "base"} & set(p.tags)
    assert "url(" not in html and "@import" not in html
    assert set(SECTIONS) <= p.ids


def test_report_rebuild_gives_the_same_page(demo_dir, tmp_path):
    out = demo_dir[0]
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    (copy / "report.html").unlink()
    write_report(copy)
    assert (copy / "report.html").read_bytes() == (out / "report.html").read_bytes()


def test_report_in_headless_chromium(browser, demo_dir, tmp_path):
    out = demo_dir[0]
    url = (out / "report.html").resolve().as_uri()
    browser.open(url)
    reqs = browser.requests()
    assert url in reqs
    assert off_disk(reqs) == []
    assert browser.errors() == []
    seen = browser.eval("JSON.stringify(%s.map(id => { const e = document.getElementById(id);"
                        " return e ? [id, e.offsetHeight] : [id, -1]; }))" % json.dumps(list(SECTIONS)))
    heights = dict(json.loads(seen))
    assert all(h > 100 for h in heights.values()), heights
    images = json.loads(browser.eval("JSON.stringify([...document.images].map(i => [i.complete, i.naturalWidth]))"))
    assert len(images) == 18 and all(done and w == 8 for done, w in images)
    n_svg = browser.eval("document.querySelectorAll('section svg[role=img]').length")
    assert n_svg == 6  # five charts and the clean candidates' intervals
    # honest words: the wrong-label detector has no target, so nothing "looks harmful"; the headline is the
    # measured recommendation of influent.clean, the same as in run.json
    lead = browser.eval("document.querySelector('#summary .lead').innerText")
    assert "training" in lead and "look harmful" not in lead and ("look wrong" in lead or "look unusual" in lead)
    rec = json.loads((out / "run.json").read_text())
    head = browser.eval("document.querySelector('#summary .rec').innerText")
    assert head == rec["results"]["clean"]["summary"]
    shot = browser.screenshot()
    w, h = struct.unpack(">II", shot[16:24])
    assert shot[:8] == b"\x89PNG\r\n\x1a\n" and w == 1200 and h > 2500
    (tmp_path / "report.png").write_bytes(shot)
    if os.environ.get("INFLUENT_UPDATE_SCREENSHOT") == "1":  # the README's picture: up to the detection section
        top = browser.eval("document.getElementById('detection').offsetTop")
        (ROOT / "docs" / "report.png").write_bytes(browser.screenshot(height=top - 10))


def test_the_network_check_would_catch_a_fetch(browser, tmp_path):
    page = tmp_path / "leaky.html"
    page.write_text('<!DOCTYPE html><html><body><img src="http://127.0.0.1:9/pixel.png"></body></html>')
    browser.open(page.resolve().as_uri())
    assert off_disk(browser.requests()) == ["http://127.0.0.1:9/pixel.png"]


# ---- report pieces ---------------------------------------------------------------------------------------------
def _png_pixels(b64):
    data = base64.b64decode(b64)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, ihdr = 8, b"", None
    while pos < len(data):
        n = struct.unpack(">I", data[pos:pos + 4])[0]
        tag, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        assert struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])[0] == zlib.crc32(tag + body) & 0xFFFFFFFF
        if tag == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif tag == b"IDAT":
            idat += body
        pos += 12 + n
    w, h, _, colour, *_ = ihdr
    ch = 3 if colour == 2 else 1
    raw = zlib.decompress(idat)
    rows = [raw[r * (w * ch + 1):(r + 1) * (w * ch + 1)] for r in range(h)]
    assert all(r[0] == 0 for r in rows)
    return np.frombuffer(b"".join(r[1:] for r in rows), np.uint8).reshape((h, w, ch) if ch == 3 else (h, w))


def test_png_round_trip():
    img = (np.arange(8 * 5) * 6).reshape(8, 5).astype(np.uint8)
    np.testing.assert_array_equal(_png_pixels(png(img)), img)
    rgb = np.random.default_rng(0).integers(0, 256, (4, 6, 3)).astype(np.uint8)
    np.testing.assert_array_equal(_png_pixels(png(rgb)), rgb)


def test_harmful_rule_words_follow_the_registry():
    v = np.array([-3.0, -1.0, 0.5, 2.0, 3.0, 4.0])
    # a method without a target is never "harmful", whatever the sign of its values
    assert harmful_rule(v, says="unusual")["rule"] == "outlier"
    r = harmful_rule(v, says="mislabelled", count=2)
    assert r["rule"] == "count" and (v < r["threshold"]).sum() == 2
    assert harmful_rule(v, says="mislabelled", count=6)["threshold"] > v.max()
    from influent.methods import METHODS

    assert {name for name, spec in METHODS.items() if spec.says == "harmful"} == \
        {name for name, spec in METHODS.items() if spec.needs_target}


def test_harmful_rule():
    assert harmful_rule(np.array([-1.0, 2.0, 3.0])) == {"rule": "negative", "threshold": 0.0}
    v = -np.array([1.0, 2, 3, 4, 5, 6, 7, 8, 100])  # self-influence style: all negative, one outlier
    r = harmful_rule(v)
    q1, q3 = np.quantile(v, [0.25, 0.75])
    assert r["rule"] == "outlier" and r["threshold"] == pytest.approx(q1 - 1.5 * (q3 - q1))
    assert (v < r["threshold"]).sum() == 1


def test_nice_ticks():
    assert nice_ticks(0, 1, 5) == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert nice_ticks(-0.0024, 0.0021, 6) == pytest.approx([-0.002, -0.001, 0, 0.001, 0.002])
    assert nice_ticks(3, 97, 4) == pytest.approx([25, 50, 75])


def _run_in_memory(text=None, top=4):
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True)
    X = (X - X.mean(0)) / X.std(0)
    cols = [f"feature {j}" for j in range(X.shape[1])]
    train = inf.Split(X[:200], y[:200], name="train", columns=cols)
    valid = inf.Split(X[200:300], y[200:300], name="valid", columns=cols)
    data = Data(train, valid, text=None if text is None else np.array(text))
    cfg = RunConfig(train="train.csv", valid="valid.csv", method="ip", top=top)
    return run_score(cfg, data, Steps())


def test_tabular_report_shows_table_rows_of_the_lowest_values():
    o = _run_in_memory()
    worst = o.scores.most_harmful(4)
    samples = o.record["results"]["samples"]
    assert samples["kind"] == "tabular" and [r["position"] for r in samples["harmful"]] == worst.tolist()
    assert all(len(r["features"]) == 5 for r in samples["harmful"])  # 30 features: the 5 most unusual
    assert o.html.count('<td class="num">1</td>') == 1 and "feature " in o.html
    assert 'id="removal"' in o.html and "No test split was given" in o.html
    assert 'id="detection"' not in o.html


def test_text_report_shows_the_text_escaped():
    texts = [f"review {i} <b>not bold</b>" for i in range(200)]
    o = _run_in_memory(text=texts, top=3)
    worst = o.scores.most_harmful(3)
    for i in worst:
        assert f"review {i} &lt;b&gt;not bold&lt;/b&gt;" in o.html
    assert "<b>not bold</b>" not in o.html
    assert build_report(json.loads(json.dumps(o.record))) == o.html
