"""Streaming attribution: blocks on disk and top-k per test sample, against the dense `attribute` matrix."""

import numpy as np
import pytest
import zarr

import influent as inf
from influent.data.validate import InputError
from influent.api.stream import attribute_stream, explain
from helpers import run_cli as _cli


@pytest.mark.parametrize("method,opts", [("ip", {}), ("if", {"solver": "exact"})])
def test_blocks_and_topk_equal_the_dense_matrix(iris, tmp_path, method, opts):
    train, valid = iris
    model = inf.models.SklearnLogistic(C=1.0).fit(train)
    dense = inf.attribute(model, train, valid, method=method, **opts)
    top = attribute_stream(model, train, valid, tmp_path / "run", method=method, k=5, block=7, **opts)
    Z = np.asarray(zarr.open_array(str(tmp_path / "run" / "attribution.zarr"), mode="r")[:])
    assert np.allclose(Z, dense, rtol=1e-10, atol=1e-14)
    order = np.argsort(-dense, axis=0)
    assert np.array_equal(top.helpful_index, order[:5].T)
    assert np.allclose(top.helpful_value, np.take_along_axis(dense, order[:5], 0).T)
    low = np.argsort(dense, axis=0)[:5].T
    assert np.array_equal(top.harmful_index, low)
    assert np.all(np.diff(top.helpful_value, axis=1) <= 0) and np.all(np.diff(top.harmful_value, axis=1) >= 0)
    rows = explain(tmp_path / "run", 3)
    assert [r[0] for r in rows["helpful"]] == list(train.ids[order[:5, 3]])
    assert rows["harmful"][0][1] == pytest.approx(dense[:, 3].min())


def test_explain_cli_prints_the_rows_and_rejects_bad_input(iris, tmp_path, capsys):
    from influent.cli import main

    train, valid = iris
    model = inf.models.SklearnLogistic(C=1.0).fit(train)
    attribute_stream(model, train, valid, tmp_path / "run", method="ip", k=3, block=16)
    dense = inf.attribute(model, train, valid, method="ip")
    main(["explain", "--scores", str(tmp_path / "run"), "--test-row", "2"])
    out = capsys.readouterr().out
    best = train.ids[int(np.argmax(dense[:, 2]))]
    assert "most helpful" in out and "most harmful" in out and f"  1  {best}  " in out
    with pytest.raises(SystemExit) as exc:
        main(["explain", "--scores", str(tmp_path / "run"), "--test-row", str(len(valid))])
    assert exc.value.code == 2 and "--test-row must be in" in capsys.readouterr().err
    with pytest.raises(InputError, match="already holds outputs"):
        attribute_stream(model, train, valid, tmp_path / "run", method="ip")


# ---- influent score --topk K: the streamed attribution of the test split in the run folder ----------------
def _score_args(d, out, *extra, test=True):
    return (["score", "--train", d / "train.csv", "--valid", d / "valid.csv"] + (["--test", d / "test.csv"] if test else [])
            + ["--label", "y", "--no-curve", "--no-standardize", "--out", out, *extra])


def _dense(d, method):
    """The dense `attribute` matrix of the run's model (sklearn logistic, deterministic) on its test split."""
    from influent.models.factory import build_model
    from influent.runs.config import RunConfig
    from influent.runs.inputs import load_data

    data = load_data(RunConfig(train=str(d / "train.csv"), valid=str(d / "valid.csv"), test=str(d / "test.csv"), label="y"))
    model = build_model("logistic", {}, data.train, 0).fit(data.train)
    return data, inf.attribute(model, data.train, data.test, method=method)


@pytest.mark.parametrize("method,pairwise", [("if", "if"), ("self-if", "ip")])
def test_score_topk_writes_the_test_attribution_explain_reads_it_and_the_report_shows_it(data_dir, tmp_path, capsys,
                                                                                        method, pairwise):
    import json

    out = tmp_path / "run"
    code, stdout, err = _cli(_score_args(data_dir, out, "--method", method, "--topk", 4), capsys)
    assert code == 0, err
    data, dense = _dense(data_dir, pairwise)  # a method without a pairwise form falls back to ip
    Z = np.asarray(zarr.open_array(str(out / "attribution" / "attribution.zarr"), mode="r")[:])
    assert Z.shape == (300, 134) and np.allclose(Z, dense, rtol=1e-8, atol=1e-12)
    top = np.load(out / "attribution" / "topk.npz")
    assert np.array_equal(top["helpful_index"], np.argsort(-dense, axis=0)[:4].T)
    assert np.array_equal(top["harmful_index"], np.argsort(dense, axis=0)[:4].T)
    # explain on the run folder itself
    code, text, _ = _cli(["explain", "--scores", out, "--test-row", 5], capsys)
    best, worst = data.train.ids[int(np.argmax(dense[:, 5]))], data.train.ids[int(np.argmin(dense[:, 5]))]
    assert code == 0 and f"  1  {best}  " in text.split("most harmful")[0] and f"  1  {worst}  " in text.split("most harmful")[1]
    # the record holds the first test samples' top-k; the report shows them and computes nothing
    att = json.loads((out / "run.json").read_text())["results"]["attribution"]
    assert att["method"] == pairwise and att["k"] == 4 and len(att["examples"]) == 3
    ex = att["examples"][1]
    assert [r["id"] for r in ex["helpful"]] == list(data.train.ids[np.argsort(-dense[:, 1])[:4]])
    assert ex["harmful"][0]["value"] == pytest.approx(dense[:, 1].min())
    assert ("no pairwise form" in att.get("note", "")) == (method != pairwise)
    html = (out / "report.html").read_text()
    assert 'id="attribution"' in html and 'href="#attribution"' in html
    from influent.report import build_report

    rec = json.loads((out / "run.json").read_text())
    rec["results"]["attribution"]["examples"][0]["helpful"][0]["id"] = "planted-id-123"
    assert "planted-id-123" in build_report(rec)


def test_score_topk_without_test_split_is_skipped_with_a_note(data_dir, tmp_path, capsys):
    import json

    out = tmp_path / "run"
    code, stdout, err = _cli(_score_args(data_dir, out, "--method", "ip", "--topk", 3, test=False), capsys)
    assert code == 0, err
    assert "top-k attribution skipped" in stdout and not (out / "attribution").exists()
    assert "skipped" in json.loads((out / "run.json").read_text())["results"]["attribution"]
    assert 'id="attribution"' in (out / "report.html").read_text()
    code, _, err = _cli(["explain", "--scores", out, "--test-row", 0], capsys)
    assert code == 2 and "--topk K" in err and err.count("\n") == 1


def test_score_topk_bad_value_and_existing_outputs(data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = _cli(_score_args(data_dir, out, "--method", "ip", "--topk", -1), capsys)
    assert code == 2 and "--topk must be >= 0" in err and not out.exists()
    assert _cli(_score_args(data_dir, out, "--method", "ip", "--topk", 2), capsys)[0] == 0
    first = np.load(out / "attribution" / "topk.npz")["helpful_index"]
    code, _, err = _cli(_score_args(data_dir, out, "--method", "ip", "--topk", 3), capsys)
    assert code == 2 and "--force" in err  # the earlier run is kept
    assert np.array_equal(np.load(out / "attribution" / "topk.npz")["helpful_index"], first)
    assert _cli(_score_args(data_dir, out, "--method", "ip", "--topk", 3, "--force"), capsys)[0] == 0
    again = np.load(out / "attribution" / "topk.npz")["helpful_index"]
    assert again.shape == (134, 3) and np.array_equal(again[:, :2], first)
    assert sorted(p.name for p in out.iterdir()) == ["attribution", "report.html", "run.json", "scores.parquet"]
    # a forced run without --topk removes the earlier run's attribution rather than leaving it stale
    assert _cli(_score_args(data_dir, out, "--method", "ip", "--force"), capsys)[0] == 0
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "run.json", "scores.parquet"]


def test_score_topk_keeps_a_score_only_option_and_stages_beside_the_output(data_dir, tmp_path, capsys, monkeypatch):
    """`contamination` is read by the outlier detector's score form, not its pairwise form: the run still writes
    its attribution; the staging folder is on the output's filesystem (not the system temporary folder) and
    nothing of it is left."""
    import tempfile

    system_tmp = tmp_path / "system-tmp"
    system_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system_tmp))
    out = tmp_path / "runs" / "run"
    code, _, err = _cli(_score_args(data_dir, out, "--method", "outlier", "-o", "contamination=0.1", "--topk", 2), capsys)
    assert code == 0, err
    assert (out / "attribution" / "topk.npz").is_file()
    import os

    mask = os.umask(0o022)
    os.umask(mask)
    assert (out / "attribution").stat().st_mode & 0o777 == 0o777 & ~mask  # a new folder's mode, not mkdtemp's 0700
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["run"]  # no staging folder left beside it
    assert not any(system_tmp.iterdir())  # nothing staged in the system temporary folder


def test_a_truncated_topk_file_is_a_one_line_error(iris, tmp_path):
    from influent.api.stream import load_topk

    train, test = iris
    model = inf.models.SklearnLogistic(C=1.0).fit(train)
    out = tmp_path / "att"
    attribute_stream(model, train, test, out, method="ip", k=2)
    data = (out / "topk.npz").read_bytes()
    (out / "topk.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(inf.InputError, match=r"^the streamed attribution: cannot read .*topk\.npz: .*--topk K --force$") as exc:
        load_topk(out)
    assert "\n" not in str(exc.value)


def test_a_refused_call_creates_no_output_folder(iris, tmp_path):
    train, test = iris
    model = inf.models.SklearnLogistic(C=1.0).fit(train)
    with pytest.raises(inf.InputError, match="does not take option"):
        attribute_stream(model, train, test, tmp_path / "att", method="ip", colour="red")
    with pytest.raises(inf.InputError, match="test must be an influent Split"):
        attribute_stream(model, train, test.X, tmp_path / "att", method="ip")
    assert not (tmp_path / "att").exists()
