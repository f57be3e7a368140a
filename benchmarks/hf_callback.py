"""Overhead of `InfluentCallback` on a Hugging Face Trainer run (LoRA on a small BERT, single-threaded).

The same run (same seed, data, model initialisation) is timed with and without the callback, alternating,
`--repeats` times (which of the two goes first alternates); the table shows the median wall time of each and their ratio, and — robust to the
machine's load, which moves whole runs by more than the callback costs — the time spent inside the
callback's own methods, summed over the run, as a fraction of that run. The model is a small
BERT built from a config (random weights: nothing is downloaded), LoRA r=8 on query/value.

    OMP_NUM_THREADS=1 python benchmarks/hf_callback.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings

import numpy as np
import torch

warnings.filterwarnings("ignore")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def build(seed: int, hidden: int):
    import peft
    import transformers

    torch.manual_seed(seed)
    cfg = transformers.BertConfig(vocab_size=1000, hidden_size=hidden, num_hidden_layers=4, num_attention_heads=4,
                                  intermediate_size=4 * hidden, max_position_embeddings=128, num_labels=2,
                                  pad_token_id=0)
    model = transformers.BertForSequenceClassification(cfg)
    return peft.get_peft_model(model, peft.LoraConfig(r=8, lora_alpha=16, target_modules=["query", "value"],
                                                      task_type="SEQ_CLS"))


class Tokens(torch.utils.data.Dataset):
    def __init__(self, n: int, length: int) -> None:
        rng = np.random.default_rng(0)
        self.ids = torch.as_tensor(rng.integers(1, 1000, (n, length)))
        self.y = torch.as_tensor(rng.integers(0, 2, n))

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.ids[i], "attention_mask": torch.ones_like(self.ids[i]), "labels": self.y[i]}


def _timed(callback, spent: list[float]) -> None:
    """Accumulate the wall time of the callback's event methods into spent[0]."""
    for name in ("on_optimizer_step", "on_step_end"):
        method = getattr(callback, name)

        def wrapped(*a, _m=method, **k):
            t0 = time.perf_counter()
            try:
                return _m(*a, **k)
            finally:
                spent[0] += time.perf_counter() - t0
        setattr(callback, name, wrapped)


def run(with_callback: bool, data: Tokens, epochs: int, hidden: int, every: int) -> tuple[float, int, float]:
    import transformers

    from influent.models.hf import HFAdapter
    from influent.models.hf_callback import InfluentCallback

    model = build(0, hidden)
    callbacks = [InfluentCallback(HFAdapter(model, params="lora"), every=every)] if with_callback else []
    spent = [0.0]
    if callbacks:
        _timed(callbacks[0], spent)
    with tempfile.TemporaryDirectory() as out:
        args = transformers.TrainingArguments(output_dir=out, per_device_train_batch_size=16, num_train_epochs=epochs,
                                              learning_rate=1e-3, save_strategy="no", report_to=[],
                                              logging_strategy="no", disable_tqdm=True, use_cpu=True, seed=0)
        trainer = transformers.Trainer(model=model, args=args, train_dataset=data, callbacks=callbacks)
        t0 = time.perf_counter()
        trainer.train()
        wall = time.perf_counter() - t0
    return wall, len(callbacks[0].checkpoints) if callbacks else 0, spent[0]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer samples and repeats")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--every", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    n, length, epochs, hidden = (128, 32, 1, 64) if a.quick else (512, 64, 2, 128)
    repeats = a.repeats or (2 if a.quick else 4)
    data = Tokens(n, length)
    run(False, data, 1, hidden, a.every)  # warm-up (imports, allocator)
    times: dict[bool, list[float]] = {False: [], True: []}
    kept, inside = 0, []
    for r in range(repeats):
        for flag in ((False, True) if r % 2 == 0 else (True, False)):  # alternate which run goes first
            wall, k, spent = run(flag, data, epochs, hidden, a.every)
            times[flag].append(wall)
            kept = max(kept, k)
            if flag:
                inside.append(spent / wall)
    base, cb = statistics.median(times[False]), statistics.median(times[True])
    steps = epochs * ((n + 15) // 16)
    print(f"Trainer run: {n} sequences x {length} tokens, BERT hidden {hidden} x 4 layers, LoRA r=8 q/v, "
          f"{steps} optimizer steps, 1 thread, median of {repeats}")
    print("| run | wall (s) | checkpoints | ratio to no callback | time inside the callback |")
    print("| --- | --- | --- | --- | --- |")
    print(f"| no callback | {base:.2f} | 0 | 1.000 | |")
    print(f"| InfluentCallback(every={a.every}) | {cb:.2f} | {kept} | {cb / base:.3f} | "
          f"{100 * statistics.median(inside):.2f}% of the run |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
