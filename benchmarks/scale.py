"""IP validation scores for a million synthetic samples in a memory-mapped file: peak resident memory and
throughput of `influent.score(method="ip")` next to a direct factorised computation in the same run, and
dattri's TracIn (as Grad-Dot: the same scores) on growing prefixes until one run exceeds `--peer-budget` seconds.

A linear softmax model (256 features, 10 classes, float32) is trained on 20,000 samples; the training split
of the scoring run is the whole memory-mapped file (1,000,000 x 256 float32, 1 GB). The direct reference
computes the same IP scores in closed form, chunk by chunk: g_i . v = (p_i - e_{y_i})^T V x_i + (p_i - e_{y_i}) . v_b.
Single-threaded figures (torch.set_num_threads(1)); the ratio to the direct computation is the figure to
read on a shared machine.

Usage:
    python benchmarks/scale.py [--n 1000000] [--chunk 65536] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

import influent as inf


def rss_mb(field: str = "VmRSS") -> float:
    """This process's resident size (VmRSS) or its peak (VmHWM) in MiB, from /proc/self/status (unlike
    ru_maxrss, VmHWM is not carried over from a parent process across fork + exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def make_data(path: Path, n: int, d: int, K: int, seed: int = 0) -> tuple[np.memmap, np.ndarray, np.ndarray]:
    """A memory-mapped (n, d) float32 file from a planted linear model, written in blocks; labels (n,)."""
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(K, d)).astype(np.float32) / np.sqrt(d) * 3
    X = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, d))
    y = np.empty(n, dtype=np.int64)
    for s in range(0, n, 100_000):
        e = min(n, s + 100_000)
        x = rng.normal(size=(e - s, d)).astype(np.float32)
        X[s:e] = x
        logits = x @ W.T + rng.gumbel(size=(e - s, K)).astype(np.float32)
        y[s:e] = logits.argmax(1)
    X.flush()
    del X
    return np.load(path, mmap_mode="c"), y, W  # copy-on-write: writable for torch, never written


def linear_problem(path: Path, n: int, d: int = 256, K: int = 10):
    """The scoring problem of this benchmark: the memory-mapped data (`make_data`), a linear softmax layer trained
    with Adam on its first 20,000 rows, the adapter, a 10,000-row validation split and the whole file as the
    training split (a view, not a copy). Returns (X, y, lin, model, train, valid)."""
    X, y, _ = make_data(path, n, d, K)
    torch.manual_seed(0)
    lin = nn.Linear(d, K)
    opt = torch.optim.Adam(lin.parameters(), lr=1e-2)
    xs, ys = torch.from_numpy(np.array(X[:20_000])), torch.from_numpy(y[:20_000])
    for _ in range(200):
        opt.zero_grad()
        nn.functional.cross_entropy(lin(xs), ys).backward()
        opt.step()
    model = inf.models.TorchAdapter(lin, loss="cross_entropy")
    return X, y, lin, model, inf.from_arrays(X, y), inf.from_arrays(np.asarray(X[-10_000:]), y[-10_000:])


def direct_ip(lin: nn.Linear, X: np.ndarray, y: np.ndarray, vW: torch.Tensor, vb: torch.Tensor, chunk: int) -> np.ndarray:
    """The same IP scores from the closed-form factors of a linear softmax layer: one (B, d) x (d, 2K) product
    gives the logits and V x together, then (p - e_y) . (V x + v_b)."""
    out = np.empty(len(y))
    K = lin.weight.shape[0]
    M = torch.cat([lin.weight.detach(), vW]).T.contiguous()  # (d, 2K)
    b = lin.bias.detach()
    for s in range(0, len(y), chunk):
        x = torch.from_numpy(X[s:s + chunk])
        Z = x @ M
        p = torch.softmax(Z[:, :K] + b, dim=1)
        p[torch.arange(len(x)), torch.from_numpy(y[s:s + chunk])] -= 1
        out[s:s + chunk] = (p * (Z[:, K:] + vb)).sum(1).numpy()
    return out


def dattri_tracin(lin: nn.Linear, X: np.ndarray, y: np.ndarray, valid_X: np.ndarray, valid_y: np.ndarray,
                  batch: int = 4096) -> np.ndarray:
    """dattri's TracInAttributor as Grad-Dot at the final model (one checkpoint, weight 1, no normalisation,
    projection off), the validation set as ONE test batch whose loss is its mean CE: A_i = g_i . grad f."""
    import torch.nn.functional as F
    from dattri.algorithm.tracin import TracInAttributor
    from dattri.task import AttributionTask
    from torch.utils.data import DataLoader, TensorDataset

    def loss(params, data):
        x, t = data
        out = torch.func.functional_call(lin, params, (x.reshape(-1, x.shape[-1]),))
        return F.cross_entropy(out, t.reshape(-1).long())

    att = TracInAttributor(task=AttributionTask(loss_func=loss, model=lin, checkpoints=lin.state_dict()),
                           weight_list=torch.ones(1), normalized_grad=False)
    att.projector_kwargs = None  # dattri 0.3's constructor cannot switch its projection off
    tr = DataLoader(TensorDataset(torch.from_numpy(np.ascontiguousarray(X)), torch.from_numpy(y)), batch_size=batch)
    # one test "sample" holding the whole validation set (the loss reshapes it to rows: its mean CE)
    te = DataLoader(TensorDataset(torch.from_numpy(valid_X)[None], torch.from_numpy(valid_y)[None]), batch_size=1)
    return att.attribute(tr, te).reshape(-1).numpy()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--chunk", type=int, default=65536)
    ap.add_argument("--dir", default=None)
    ap.add_argument("--no-peer", action="store_true", help="skip dattri")
    ap.add_argument("--peer-budget", type=float, default=30.0, help="seconds: dattri stops after the first run above")
    args = ap.parse_args()
    torch.set_num_threads(1)
    d, K = 256, 10
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        X, y, lin, model, train, valid = linear_problem(Path(tmp) / "X.npy", args.n, d, K)  # train: a view of the file
        rss0 = rss_mb()
        target = inf.targets.Utility(valid)
        target.prepare(model)
        v = target.grad(model)
        vW, vb = v[:d * K].reshape(K, d), v[d * K:]

        t0 = time.perf_counter()
        ref = direct_ip(lin, X, y, vW, vb, args.chunk)  # the first pass also pages the file in
        t_first = time.perf_counter() - t0
        t0 = time.perf_counter()
        direct_ip(lin, X, y, vW, vb, args.chunk)
        t_direct = time.perf_counter() - t0
        rows = [{"computation": "direct factorised (closed form)", "seconds": t_direct,
                 "samples/s": args.n / t_direct, "max |diff|": 0.0},
                {"computation": "  (its first pass, paging the file in)", "seconds": t_first,
                 "samples/s": args.n / t_first, "max |diff|": 0.0}]
        for chunk in (args.chunk, 4096, 512):  # 512: score's default chunk_size
            t0 = time.perf_counter()
            s = inf.score(model, train, valid, method="ip", chunk_size=chunk)
            t = time.perf_counter() - t0
            name = f"influent.score ip, chunk {chunk}" + (" (default)" if chunk == 512 else "")
            rows.append({"computation": name, "seconds": t, "samples/s": args.n / t,
                         "max |diff|": float(np.abs(s.values - ref).max() / np.abs(ref).max())})
        peak = rss_mb("VmHWM")  # before the peer runs
        if not args.no_peer:  # dattri on growing prefixes until one run exceeds the budget
            try:
                import dattri  # noqa: F401
            except ImportError:
                print("dattri is not installed: no peer row")
            else:
                size, budget = 10_000, args.peer_budget
                while size <= args.n:
                    t0 = time.perf_counter()
                    A = dattri_tracin(lin, X[:size], y[:size], np.asarray(valid.X), valid.y)
                    t = time.perf_counter() - t0
                    rows.append({"computation": f"dattri TracIn (Grad-Dot), first {size:,}", "seconds": t,
                                 "samples/s": size / t,
                                 "max |diff|": float(np.abs(A - ref[:size]).max() / np.abs(ref[:size]).max())})
                    if t > budget:
                        break
                    size *= 4
        df = pd.DataFrame(rows)
        df["vs direct"] = df["samples/s"] / df["samples/s"].iloc[0]
        print(f"{args.n:,} samples x {d} features (memory-mapped float32, {args.n * d * 4 / 2**30:.2f} GiB), {K} classes; "
              f"single-threaded")
        with pd.option_context("display.width", 200, "display.float_format", "{:,.4g}".format):
            print(df.to_string(index=False))
        print(f"\npeak resident memory of the process through the influent and direct runs: {peak:,.0f} MiB (including mapped data pages; "
              f"{rss0:,.0f} MiB after loading, before scoring); target < 2,560 MiB; throughput target >= 1,000,000/s")


if __name__ == "__main__":
    main()
