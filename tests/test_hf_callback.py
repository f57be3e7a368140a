"""The Trainer callback records what TracIn needs, as our own recorder does on the same run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers", reason="text extras not installed: pip install 'influent[text]'")
pytest.importorskip("peft", reason="text extras not installed: pip install 'influent[text]'")
pytest.importorskip("accelerate", reason="transformers.Trainer needs accelerate: pip install 'influent[text]'")

import influent  # noqa: E402
from influent.models import TrainingRecorder  # noqa: E402
from influent.models.hf import HFAdapter  # noqa: E402
from influent.models.hf_callback import InfluentCallback  # noqa: E402

from test_hf import small_bert, token_split  # noqa: E402


class TokenDataset(torch.utils.data.Dataset):
    def __init__(self, split, pad_id: int = 0) -> None:
        self.ids = torch.as_tensor(split.X, dtype=torch.long)
        self.y = torch.as_tensor(split.y, dtype=torch.long)
        self.pad_id = pad_id

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.ids[i], "attention_mask": (self.ids[i] != self.pad_id).long(), "labels": self.y[i]}


def test_callback_checkpoints_give_the_tracin_scores_of_our_recorder(tmp_path):
    model = small_bert(seed=3)
    train, _ = token_split(12, seed=4)
    valid, _ = token_split(5, seed=5)
    adapter = HFAdapter(model, params="lora")
    callback = InfluentCallback(adapter, every=2, directory=tmp_path / "ckpt")
    ours = TrainingRecorder(every=2)
    steps = {"n": 0}

    class RecordedSGD(torch.optim.SGD):  # our recorder, called around the optimizer's own step
        def step(self, closure=None):
            lr = self.param_groups[0]["lr"]
            out = super().step(closure)
            steps["n"] += 1
            ours.record(adapter, steps["n"], lr, last=steps["n"] == 9)
            return out

    opt = RecordedSGD([p for p in model.parameters() if p.requires_grad], lr=0.05)
    args = transformers.TrainingArguments(output_dir=str(tmp_path / "out"), per_device_train_batch_size=4,
                                          num_train_epochs=3, learning_rate=0.05, lr_scheduler_type="linear",
                                          save_strategy="no", report_to=[], logging_strategy="no",
                                          disable_tqdm=True, use_cpu=True, seed=0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 1 - k / 9)
    transformers.Trainer(model=model, args=args, train_dataset=TokenDataset(train), callbacks=[callback],
                         optimizers=(opt, sched)).train()
    assert steps["n"] == 9
    got = [(c.step, c.lr) for c in callback.checkpoints]
    assert got == [(c.step, c.lr) for c in ours.checkpoints]
    assert [s for s, _ in got] == [2, 4, 6, 8, 9]
    assert np.allclose([lr for _, lr in got], [0.05 * (1 - (s - 1) / 9) for s, _ in got])  # the rate of that step
    a = influent.score(adapter, train, valid, method="tracin", checkpoints=callback.checkpoints).values
    b = influent.score(adapter, train, valid, method="tracin", checkpoints=ours.checkpoints).values
    assert np.abs(a).max() > 0 and np.allclose(a, b, rtol=1e-6, atol=1e-12 * np.abs(b).max())
    loaded = TrainingRecorder.load(tmp_path / "ckpt")
    c = influent.score(adapter, train, valid, method="tracin", checkpoints=loaded.checkpoints).values
    assert np.allclose(c, b, rtol=1e-6, atol=1e-12 * np.abs(b).max())
    # the last checkpoint is the trained model itself
    final = {n: p for n, p in adapter.params().items()}
    assert all(torch.equal(final[n], v) for n, v in callback.checkpoints[-1].params.items())
