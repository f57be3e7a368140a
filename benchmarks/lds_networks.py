"""LDS of attribution methods on networks, with model ensembles, against dattri's TRAK and EK-FAC in one run.

Protocol (dattri's MNIST-MLP benchmark, Deng et al. 2024): a 784-128-64-10 MLP with dropout 0.1, trained by
SGD (lr 0.01, momentum 0.9, batch 64, 50 epochs) on 4,000 digits of the bundled MNIST subset, 200 test digits.
Ground truth: 50 random halves of the training set, each retrained with its own seed (initial weights, data
order, dropout: `refit_many(..., reseed=True)`); LDS = mean over test points of the Spearman correlation
across halves between the half's summed attribution and minus its test loss (`evaluation.lds_score`).
Two more problems: a small CNN on the MNIST images, and an MLP on the Adult table. The halves' test losses are
cached under ``/work/wt/cache`` (or ``--cache``), so a second run trains only the models it scores.

Ensembles: influent's methods with 1, 5 and 10 independently trained models (`influent.attribute` with a list
of adapters, each with its own curvature), the cheap variant from the last checkpoints of one run, and dattri's
TRAK with 1 and 10 models and dattri's EK-FAC on one model, on the same models. Cost: the trainings each row
needs and its seconds (training + attribution), single-threaded (``OMP_NUM_THREADS=1``; torch threads = 1).

Run: ``OMP_NUM_THREADS=1 python benchmarks/lds_networks.py [--problems mnist-mlp,mnist-cnn,adult-mlp] [--quick]``.
``--select-if`` runs instead the held-back selection of `if`'s curvature and damping on networks (sklearn
digits and breast cancer; no MNIST), ``--select-ensemble digits-mlp,breast-cancer-mlp`` the held-back
selection of the ensemble (checkpoints per model, damping, target); ``--trajectory 3,5`` adds
`Ensemble(models=k, checkpoints=N)` rows (``--trajectory-part`` splits the members over processes), see
docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import pickle
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import influent as inf
from influent.targets import margin_scale
import influent.api.ensemble as ens
from influent.curvature.policy import EXACT_GGN_MAX_PARAMS
from influent.data.datasets import load
from influent.evaluation.attribution import LDSGroundTruth, lds_score
from influent.models import SmallCNN, TabularMLP, TorchAdapter, TrainConfig, TrainingRecorder
from influent.models.refit import PerSampleLoss, random_subsets, refit_many, reseeded

torch.set_num_threads(1)
SGD = dict(optimizer="sgd", lr=0.01, momentum=0.9, batch_size=64)


@dataclass
class Problem:
    name: str
    model: Any  # an unfitted adapter (its kind and training settings)
    train: Any
    test: Any


def mnist_mlp(quick: bool) -> Problem:
    n_train, n_test = (1000, 50) if quick else (4000, 200)
    parts = load("mnist", sizes={"train": n_train, "test": n_test, "rest": None}, seed=0)
    net = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Dropout(0.1), nn.Linear(128, 64), nn.ReLU(),
                        nn.Dropout(0.1), nn.Linear(64, 10))  # dattri's MLPMnist
    model = TorchAdapter(net, train=TrainConfig(epochs=10 if quick else 50, **SGD), fitted=False, classes=range(10))
    return Problem("mnist-mlp", model, parts["train"], parts["test"])


def mnist_cnn(quick: bool) -> Problem:
    n_train, n_test = (500, 50) if quick else (2000, 200)
    parts = load("mnist", sizes={"train": n_train, "test": n_test, "rest": None}, seed=1, images=True)
    model = SmallCNN(channels=(8, 16), hidden=64, dropout=0.1, weight_decay=0.0,
                     train=TrainConfig(epochs=5 if quick else 20, **SGD))
    return Problem("mnist-cnn", model, parts["train"], parts["test"])


def adult_mlp(quick: bool) -> Problem:
    parts = load("adult", n_train=500 if quick else 2000, n_valid=10, n_test=50 if quick else 200, seed=0)
    model = TabularMLP(hidden=(64, 32), dropout=0.1, weight_decay=0.0, train=TrainConfig(epochs=10 if quick else 30, **SGD))
    return Problem("adult-mlp", model, parts["train"], parts["test"])


def digits_adam(quick: bool) -> Problem:
    """A check unlike the selection problems' training: digits, a 128-64 MLP without dropout, Adam (lr 1e-3,
    batch 32, 20 epochs), LDS on the 497 test digits."""
    parts = load("digits", seed=1)
    model = TabularMLP(hidden=(128, 64), dropout=0.0, weight_decay=0.0,
                       train=TrainConfig(optimizer="adam", lr=1e-3, batch_size=32, epochs=5 if quick else 20))
    return Problem("digits-adam", model, parts["train"], parts["test"])


PROBLEMS: dict[str, Callable[[bool], Problem]] = {"mnist-mlp": mnist_mlp, "mnist-cnn": mnist_cnn, "adult-mlp": adult_mlp,
                                                  "digits-adam": digits_adam}
TRUTH_SEED = 1000  # the halves' seeds (1000 + k) never coincide with the members' (0..9)


def _describe(p: Problem) -> dict:
    """The model's description without the training options added after the caches were first written, at
    their defaults (schedule 'constant', record True, record_every None), so that cache keys stay stable."""
    d = copy.deepcopy(p.model.describe())
    defaults = {"schedule": "constant", "record": True, "record_every": None}
    d["train"] = {k: v for k, v in d.get("train", {}).items() if not (k in defaults and v == defaults[k])}
    return d


def ground_truth(p: Problem, n_halves: int, cache: Path) -> tuple[LDSGroundTruth, float]:
    """The halves' test losses, trained once and cached; returns them and the seconds they took."""
    key = hashlib.sha256(json.dumps([p.name, _describe(p), len(p.train), len(p.test), n_halves,
                                     p.train.X[:3].sum().item(), p.test.X[:3].sum().item()],
                                    default=str).encode()).hexdigest()[:12]
    path = cache / f"ens_lds_{p.name}_{key}.npz"
    if path.exists():
        d = np.load(path)
        return LDSGroundTruth(d["masks"], d["losses"], 0.5, TRUTH_SEED), float(d["seconds"])
    masks = random_subsets(len(p.train), len(p.train) // 2, n_halves, seed=TRUTH_SEED)
    t0 = time.perf_counter()
    losses = np.stack(refit_many(p.model, p.train, list(masks), PerSampleLoss(p.test), n_jobs=2, seed=TRUTH_SEED,
                                 reseed=True))
    seconds = time.perf_counter() - t0
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, masks=masks, losses=losses, seconds=seconds)
    return LDSGroundTruth(masks, losses, 0.5, TRUTH_SEED), seconds


def fit_members(p: Problem, k: int, cache: Path) -> tuple[list, list, float]:
    """k members (member s trained with seed s: `api.ensemble.fit_members`), the per-epoch checkpoints of
    member 0 (recorded in a second, identical run) and the single-threaded seconds of one training."""
    path = cache / f"ens_members_{p.name}_{_key(p)}_{k}.pkl"
    if path.exists():
        with open(path, "rb") as f:
            return pickle.load(f)
    cfg = p.model.train_config
    steps = -(-len(p.train) // cfg.batch_size)
    rec = TrainingRecorder(every=steps)
    t0 = time.perf_counter()
    run0 = reseeded(p.model, 0).fit(p.train, recorder=rec)
    seconds = time.perf_counter() - t0
    members = [run0] + ens.fit_members(p.model, p.train, k - 1, seed=1, n_jobs=2)
    run0.recorder_ = None
    out = (members, rec.checkpoints, seconds)
    with open(path, "wb") as f:
        pickle.dump(out, f)
    return out


def _key(p: Problem) -> str:
    return hashlib.sha256(json.dumps([p.name, _describe(p), len(p.train), len(p.test),
                                      float(p.train.X[:3].sum()), float(p.test.X[:3].sum())],
                                     default=str).encode()).hexdigest()[:12]


def influent_rows(p: Problem, members: list, ckpts: list, truth: LDSGroundTruth, t_train: float,
                  ks: tuple[int, ...], methods: list[str], cache: Path) -> list[dict]:
    """LDS of each method with the first k members (the mean of the members' attributions: exactly what
    `influent.attribute(members[:k], ...)` returns), the checkpoint ensembles of run 0, and TracIn."""
    rows = []
    for method in methods:
        mats, secs = [], []
        name, _, factor = method.partition("@")  # "if@0.1": damping 0.1 x mean eigenvalue (kronfluence's rule)
        for s, m in enumerate(members[:max(ks)]):
            path = cache / f"ens_attr_{p.name}_{_key(p)}_{method}_{s}.npz"
            if path.exists():  # a rerun reuses the member's matrix and its measured seconds
                d = np.load(path)
                mats.append(d["A"])
                secs.append(float(d["seconds"]))
                continue
            t0 = time.perf_counter()
            extra = dict(damping=float(factor) * mean_eigenvalue(m, p.train)) if factor else {}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                mats.append(inf.attribute(m, p.train, p.test, name, **extra))
            secs.append(time.perf_counter() - t0)
            np.savez(path, A=mats[-1], seconds=secs[-1])
        for k in ks:
            A = np.mean(mats[:k], axis=0)
            label = f"{name}, damping {factor} x mean eig" if factor else method
            rows.append(dict(problem=p.name, method=f"influent {label}", models=k, trainings=k,
                             lds=lds_score(A, truth).score, seconds=k * t_train + sum(secs[:k])))
        if method == methods[0]:  # the measured quantity: the margin gives the same LDS (per-test scaling)
            A = np.mean([M * margin_scale(m, p.test)[None, :] for M, m in zip(mats, members)], axis=0)
            rows.append(dict(problem=p.name, method=f"influent {method}, target=margin", models=max(ks),
                             trainings=max(ks), lds=lds_score(A, truth).score, seconds=max(ks) * t_train + sum(secs)))
        print(pd.DataFrame(rows[-len(ks) - 1:]).to_string(index=False), flush=True)
    # the cheap variant: the last checkpoints of one run, each with its own curvature
    for n_ck in (5, 10):
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            A = inf.attribute(members[0], p.train, p.test, methods[0], ensemble=ckpts[-n_ck:])
        rows.append(dict(problem=p.name, method=f"influent {methods[0]}, last {n_ck} epoch checkpoints of one run",
                         models=1, trainings=1, lds=lds_score(A, truth).score,
                         seconds=t_train + time.perf_counter() - t0))
    every = max(1, len(ckpts) // 10)
    t0 = time.perf_counter()
    A = inf.attribute(members[0], p.train, p.test, "tracin", checkpoints=ckpts[every - 1::every][-10:])
    rows.append(dict(problem=p.name, method="influent tracin (10 checkpoints)", models=1, trainings=1,
                     lds=lds_score(A, truth).score, seconds=t_train + time.perf_counter() - t0))
    print(pd.DataFrame(rows[-3:]).to_string(index=False), flush=True)
    return rows


def dattri_rows(p: Problem, members: list, truth: LDSGroundTruth, t_train: float, ks: tuple[int, ...],
                which: tuple[str, ...] = ("trak", "ekfac"), cache: Path = Path("/work/wt/cache"),
                trak_parts: tuple[int, ...] = ()) -> list[dict]:
    """dattri 0.3's TRAK (margin output, projection 512, its defaults) with k models and EK-FAC on one model."""
    try:
        from dattri.algorithm.influence_function import IFAttributorEKFAC
        from dattri.algorithm.trak import TRAKAttributor
        from dattri.task import AttributionTask
    except ImportError:
        print("dattri is not installed: no dattri rows")
        return []
    net = copy.deepcopy(members[0].module).eval()
    X, t = members[0].tensors(p.train)
    Xt, tt = members[0].tensors(p.test)
    train_dl = DataLoader(TensorDataset(X, t), batch_size=500, shuffle=False)  # fewer projector builds; same result
    test_dl = DataLoader(TensorDataset(Xt, tt), batch_size=500, shuffle=False)

    def margin(params, data):  # TRAK's model output function, as in dattri's examples
        x, y = data
        logp = -nn.functional.cross_entropy(torch.func.functional_call(net, params, x.unsqueeze(0)), y.unsqueeze(0))
        return logp - torch.log(1 - torch.exp(logp))

    def prob(params, data):
        x, y = data
        return torch.exp(-nn.functional.cross_entropy(torch.func.functional_call(net, params, x.unsqueeze(0)),
                                                      y.unsqueeze(0)))

    def mean_loss(params, data):
        x, y = data
        return nn.functional.cross_entropy(torch.func.functional_call(net, params, x), y)

    rows = []
    states = [{k: v.detach().clone() for k, v in m.module.state_dict().items()} for m in members]
    parts = [cache / f"ens_trak_{p.name}_{_key(p)}_{m}.npz" for m in range(len(members))]
    for m in trak_parts:  # dattri TRAK-1 of model m with ensemble m's projection, before its Q weighting
        if parts[m].exists():
            continue
        t0 = time.perf_counter()
        task = AttributionTask(loss_func=margin, model=net, checkpoints=states[m])
        att = TRAKAttributor(task=task, correct_probability_func=prob, device="cpu",
                             projector_kwargs={"proj_dim": 512, "device": "cpu", "proj_seed": int(1e5) * m})
        att.cache(train_dl)
        Q = att.Q.detach().clone()
        att.Q = torch.ones_like(att.Q)
        X = att.attribute(test_dl).detach().numpy()
        np.savez(parts[m], X=X, Q=Q.numpy(), seconds=time.perf_counter() - t0)
        print(f"TRAK part {m} in {time.perf_counter() - t0:.0f} s", flush=True)
    if "trak" in which and all(f.exists() for f in parts[:max(ks)]):
        # dattri's TRAK-M is exactly (mean_m X_m) * (mean_m Q_m) with model m projected under seed 1e5 * m
        # (BasicProjector: seed + 1e3 * block + 1e5 * ensemble_id), so ten TRAK-1 parts, run in parallel
        # processes, assemble it; TRAK-1 is X_0 * Q_0
        loaded = [np.load(f) for f in parts[:max(ks)]]
        for k in (1, max(ks)):
            X = np.mean([d["X"] for d in loaded[:k]], 0)
            Q = np.mean([d["Q"] for d in loaded[:k]], 0)
            rows.append(dict(problem=p.name, method=f"dattri TRAK-{k}", models=k, trainings=k,
                             lds=lds_score(X * Q[:, None], truth).score,
                             seconds=k * t_train + sum(float(d["seconds"]) for d in loaded[:k])))
            print(rows[-1], flush=True)
    assembled = bool(rows)
    for k in ks:
        if k not in (1, 10) or "trak" not in which or assembled:
            continue
        t0 = time.perf_counter()
        task = AttributionTask(loss_func=margin, model=net, checkpoints=states[:k])
        att = TRAKAttributor(task=task, correct_probability_func=prob, device="cpu",
                             projector_kwargs={"proj_dim": 512, "device": "cpu"})
        att.cache(train_dl)
        A = att.attribute(test_dl).detach().numpy()
        rows.append(dict(problem=p.name, method=f"dattri TRAK-{k}", models=k, trainings=k,
                         lds=lds_score(A, truth).score, seconds=k * t_train + time.perf_counter() - t0))
        print(rows[-1], flush=True)
    if "ekfac" in which and any(isinstance(m, nn.Linear) for m in net.modules()):
        t0 = time.perf_counter()
        task = AttributionTask(loss_func=mean_loss, model=net, checkpoints=states[0])
        att = IFAttributorEKFAC(task=task, device="cpu", damping=0.1)
        att.cache(train_dl)
        A = att.attribute(train_dl, test_dl).detach().numpy()
        rows.append(dict(problem=p.name, method="dattri EK-FAC (damping 0.1)", models=1, trainings=1,
                         lds=lds_score(A, truth).score, seconds=t_train + time.perf_counter() - t0))
        print(rows[-1], flush=True)
    return rows


# ---- item 3: `if`'s default curvature and damping on networks, chosen by LDS on held-back problems ----
def select_problems(quick: bool) -> list[Problem]:
    """Small problems that are not the benchmark's: MLPs on scikit-learn's digits and breast cancer."""
    out = []
    for data, hidden in (("digits", (64, 32)), ("breast-cancer", (32,))):
        parts = load(data, seed=0)
        model = TabularMLP(hidden=hidden, dropout=0.1, weight_decay=0.0,
                           train=TrainConfig(epochs=10 if quick else 30, **SGD))
        out.append(Problem(f"{data}-mlp", model, parts["train"], parts["valid"]))
    return out


def mean_eigenvalue(m: Any, train: Any) -> float:
    """(mean_i |g_i|^2 + sum of the regulariser's diagonal) / p: the curvature's mean eigenvalue that the
    damping rule of `Job.solver` scales."""
    from influent.grads.source import GradientSource

    sq = GradientSource(m, train, 512).sq_norms()
    reg = m.reg_hessian_diag()
    return (float(sq.mean()) + float(reg.sum())) / max(1, reg.numel())


SELECT = {  # solver, solver_options, damping factor x mean eigenvalue (None: no damping option, "ip")
    **{f"ekfac, damping {f:g} x mean eig": ("ekfac", None, f) for f in (0.001, 0.01, 0.1, 1.0, 10.0)},
    **{f"kfac, damping {f:g} x mean eig": ("kfac", None, f) for f in (0.01, 0.1, 1.0)},
    **{f"exact GGN, damping {f:g} x mean eig": ("exact", {"curvature": "ggn"}, f) for f in (0.001, 0.01, 0.1, 1.0)},
}


def select_if(quick: bool, cache: Path, ks: tuple[int, ...] = (1, 5)) -> None:
    rows = []
    for p in select_problems(quick):
        truth, _ = ground_truth(p, 10 if quick else 30, cache)
        members = ens.fit_members(p.model, p.train, max(ks), seed=0, n_jobs=2)
        eigs = [mean_eigenvalue(m, p.train) for m in members]
        settings = {**SELECT, "ip (no curvature)": None}
        for name, how in settings.items():
            if how is not None and how[0] == "exact" and members[0].n_params() > EXACT_GGN_MAX_PARAMS:
                continue  # the exact Gauss-Newton only where the default would fall back to it
            mats = []
            t0 = time.perf_counter()
            for m, eig in zip(members, eigs):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    if how is None:
                        mats.append(inf.attribute(m, p.train, p.test, "ip"))
                    else:
                        solver, opts, f = how
                        mats.append(inf.attribute(m, p.train, p.test, "if", solver=solver, solver_options=opts,
                                                  damping=f * eig))
            row = dict(problem=p.name, p=members[0].n_params(), setting=name, seconds=time.perf_counter() - t0)
            for k in ks:
                row[f"lds_{k}"] = lds_score(np.mean(mats[:k], axis=0), truth).score
            rows.append(row)
            print(row, flush=True)
    df = pd.DataFrame(rows)
    with pd.option_context("display.width", 200):
        print(df.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"held-back selection of if's default; ks {ks}; single-threaded")


# ---- issue 25: which ensemble to use (checkpoints, damping, target), chosen on held-back problems ----
SELECT_FACTORS = (0.3, 1.0, 3.0)


def recorded_members(p: Problem, k: int, cache: Path, prefix: str = "ens_recmembers") -> list:
    """k members of the problem's model kind (seeds 0..k-1), each with a checkpoint per epoch (cached as
    ``<prefix>_<problem>_<key>_<k>.pkl``)."""
    steps = -(-len(p.train) // p.model.train_config.batch_size)
    path = cache / f"{prefix}_{p.name}_{_key(p)}_{k}.pkl"
    if path.exists():
        with open(path, "rb") as f:
            return pickle.load(f)
    members = ens.fit_members(p.model, p.train, k, seed=0, n_jobs=2, record_every=steps)
    with open(path, "wb") as f:
        pickle.dump(members, f)
    return members


def _ens_members(p: Problem, k: int, cache: Path) -> list:
    """k members (seeds 0..k-1) of a selection problem, each recording a checkpoint every epoch."""
    return recorded_members(p, k, cache, prefix="ens_selmembers")


def _ckpt_attr(p: Problem, m: Any, s: int, c: int, factor: float, cache: Path, method: str = "if",
               extra: dict | None = None, tag: str = "") -> tuple[np.ndarray, np.ndarray, float]:
    """Attribution of member s at its checkpoint c (1-based epoch) with damping factor x mean eigenvalue;
    also the margin scale of the test points there and the seconds. Cached."""
    f = cache / f"ens_sel_{p.name}_{_key(p)}_{method}{tag}@{factor:g}_{s}_{c}.npz"
    if f.exists():
        d = np.load(f)
        return d["A"], d["scale"], float(d["seconds"])
    e = ens.checkpoint_members(m, [m.recorder_.checkpoints[c - 1]])[0]
    t0 = time.perf_counter()
    opts = dict(extra or {})
    if method == "if" and factor != 1.0:
        opts["damping"] = factor * mean_eigenvalue(e, p.train)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        A = inf.attribute(e, p.train, p.test, method, **opts)
    sec = time.perf_counter() - t0
    scale = margin_scale(e, p.test)
    np.savez(f, A=A, scale=scale, seconds=sec)
    return A, scale, sec


def select_ensemble(quick: bool, cache: Path, names: tuple[str, ...] = ("digits-mlp",), k: int = 10) -> None:
    """LDS of ensemble variants with 1, 5 and 10 trainings on the held-back selection problems: members'
    last checkpoint vs the mean over each member's last n epoch checkpoints, the damping factor, the target
    (loss or margin)."""
    rows = []
    for p in select_problems(quick):
        if p.name not in names:
            continue
        truth, _ = ground_truth(p, 10 if quick else 30, cache)
        members = _ens_members(p, k, cache)
        E = len(members[0].recorder_.checkpoints)
        print(f"{p.name}: {k} members, {E} checkpoints each", flush=True)

        def variant(label: str, ckpts: list[int], factor: float = 1.0, target: str = "loss", **kw: Any) -> None:
            per_member, secs = [], []
            for s, m in enumerate(members):
                mats = []
                for c in ckpts:
                    A, scale, sec = _ckpt_attr(p, m, s, c, factor, cache, **kw)
                    mats.append(A * scale[None, :] if target == "margin" else A)
                    secs.append(sec)
                per_member.append(np.mean(mats, 0))
            row = dict(problem=p.name, variant=label, ckpts=len(ckpts), damping=factor, target=target,
                       seconds_per_model=sum(secs) / len(members))
            for kk in (1, 5, k):
                row[f"lds_{kk}"] = lds_score(np.mean(per_member[:kk], 0), truth).score
            rows.append(row)
            print(row, flush=True)

        for f in SELECT_FACTORS:
            variant("last checkpoint", [E], f)
        variant("last checkpoint", [E], 1.0, "margin")
        for n in (2, 5, 10):
            variant(f"last {n} epochs", list(range(E - n + 1, E + 1)), 1.0)
            variant(f"last {n} epochs", list(range(E - n + 1, E + 1)), 1.0, "margin")
        for f in SELECT_FACTORS:
            if f != 1.0:
                variant("last 5 epochs", list(range(E - 4, E + 1)), f, "margin")
        spreads = {"5 over the second half": list(range(E, E // 2, -max(1, E // 10)))[:5][::-1],
                   "every epoch of the second half": list(range(E // 2 + 1, E + 1)),
                   "2 over the whole run": list(range(E, 0, -max(1, E // 2)))[:2][::-1],
                   "3 over the whole run": list(range(E, 0, -max(1, E // 3)))[:3][::-1],
                   "5 over the whole run": list(range(E, 0, -max(1, E // 5)))[:5][::-1],
                   "10 over the whole run": list(range(E, 0, -max(1, E // 10)))[:10][::-1],
                   "every epoch": list(range(1, E + 1)),
                   "5 over the first half": list(range(E // 2, 0, -max(1, E // 10)))[:5][::-1]}
        for label, cks in spreads.items():
            for target in ("loss", "margin"):
                variant(f"{label} {cks}", cks, 1.0, target)
        for f in SELECT_FACTORS:
            if f != 1.0:
                variant("5 over the second half", spreads["5 over the second half"], f, "loss")
                variant("3 over the whole run", spreads["3 over the whole run"], f, "loss")
        for label, cks in (("last checkpoint", [E]), ("3 over the whole run", spreads["3 over the whole run"])):
            # TRAK's curvature in a projected space: P H P^T solved exactly (the projected method's own damping)
            variant(f"{label}, projected (dim 512)", cks, 1.0, "loss", extra={"projection": {"dim": 512}}, tag="proj")
    df = pd.DataFrame(rows)
    with pd.option_context("display.width", 220, "display.max_colwidth", 60):
        print(df.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print("held-back selection of the ensemble (issue 25); single-threaded")


def members_x_checkpoints(p: Problem, truth: LDSGroundTruth, t_train: float, ks: tuple[int, ...], cache: Path,
                          n_ck: int = 5, method: str = "if") -> list[dict]:
    """Each of the k members expanded into its last `n_ck` epoch checkpoints (`fit_members(record_every=...)`):
    the mean over k x n_ck members, still k trainings."""
    members = recorded_members(p, max(ks), cache)
    mats, margin_mats, secs = [], [], []
    for s, m in enumerate(members):
        f = cache / f"ens_attr_{p.name}_{_key(p)}_{method}x{n_ck}_{s}.npz"
        if f.exists():
            d = np.load(f)
        else:
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                expanded = ens.checkpoint_members(m, m.recorder_.checkpoints[-n_ck:])
                per = [inf.attribute(e, p.train, p.test, method) for e in expanded]
            A = np.mean(per, 0)
            Am = np.mean([M * margin_scale(e, p.test)[None, :] for M, e in zip(per, expanded)], 0)
            np.savez(f, A=A, Am=Am, seconds=time.perf_counter() - t0)
            d = np.load(f)
        mats.append(d["A"])
        margin_mats.append(d["Am"])
        secs.append(float(d["seconds"]))
    rows = []
    for k in ks:
        for label, M in (("", mats), (", target=margin", margin_mats)):
            rows.append(dict(problem=p.name, method=f"influent {method}{label}, each model's last {n_ck} epoch checkpoints",
                             models=k, trainings=k, lds=lds_score(np.mean(M[:k], 0), truth).score,
                             seconds=k * t_train + sum(secs[:k])))
    print(pd.DataFrame(rows).to_string(index=False), flush=True)
    return rows


def trajectory_rows(p: Problem, truth: LDSGroundTruth, t_train: float, ks: tuple[int, ...], cache: Path,
                    n_cks: tuple[int, ...] = (3,), part: tuple[int, ...] | None = None, method: str = "if",
                    single: tuple[int, ...] = ()) -> list[dict]:
    """`Ensemble(models=k, checkpoints=n_ck)`: each of the k members expanded into n_ck checkpoints spread over
    its whole run (`api.ensemble.spread` of its per-epoch checkpoints; the last is the trained model), the mean
    over k x n_ck attributions, k trainings. Each (member, checkpoint) matrix is `influent.attribute` of that
    checkpoint, cached, so several processes (`part`: the members this one computes) share the work.
    `single`: also member 0 alone with these numbers of checkpoints (the best single model)."""
    members = recorded_members(p, max(ks), cache)

    def one(s: int, ck: Any) -> tuple[np.ndarray, np.ndarray, float]:
        f = cache / f"ens_traj_{p.name}_{_key(p)}_{method}_{s}_{ck.step}.npz"
        if not f.exists():
            e = ens.checkpoint_members(members[s], [ck])[0]
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                A = inf.attribute(e, p.train, p.test, method)
            np.savez(f, A=A, scale=margin_scale(e, p.test), seconds=time.perf_counter() - t0)
            print(f"member {s} step {ck.step}: {time.perf_counter() - t0:.0f} s", flush=True)
        d = np.load(f)
        return d["A"], d["scale"], float(d["seconds"])

    def mean_of(s: int, n: int) -> tuple[np.ndarray, np.ndarray, float]:
        got = [one(s, ck) for ck in ens.spread(members[s].recorder_.checkpoints, n)]
        return (np.mean([A for A, _, _ in got], 0), np.mean([A * sc[None, :] for A, sc, _ in got], 0),
                sum(sec for _, _, sec in got))

    todo = range(len(members)) if part is None else part
    for n_ck in n_cks:
        for s in todo:
            mean_of(s, n_ck)
    for n in single:
        if part is None or 0 in part:
            mean_of(0, n)
    if part is not None:
        return []
    rows = []
    for n_ck in n_cks:
        per = [mean_of(s, n_ck) for s in range(len(members))]
        for k in ks:
            for label, i in (("", 0), (", target=margin", 1)):
                rows.append(dict(problem=p.name, method=f"influent {method}{label}, Ensemble(models={k}, checkpoints={n_ck})",
                                 models=k, trainings=k, lds=lds_score(np.mean([x[i] for x in per[:k]], 0), truth).score,
                                 seconds=k * t_train + sum(x[2] for x in per[:k])))
    for n in single:
        A, Am, sec = mean_of(0, n)
        for label, M in (("", A), (", target=margin", Am)):
            rows.append(dict(problem=p.name, method=f"influent {method}{label}, Ensemble(models=1, checkpoints={n})",
                             models=1, trainings=1, lds=lds_score(M, truth).score, seconds=t_train + sec))
    print(pd.DataFrame(rows).to_string(index=False), flush=True)
    return rows


def api_check(p: Problem, truth: LDSGroundTruth, models: int, checkpoints: int) -> dict:
    """The user's path end to end: `influent.attribute(unfitted model, ..., ensemble=Ensemble(models,
    checkpoints))` trains the members (seeds 0..models-1, 2 processes) and averages; its LDS and seconds."""
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        A = inf.attribute(p.model, p.train, p.test, "if", ensemble=ens.Ensemble(models=models, checkpoints=checkpoints),
                          seed=0, ensemble_jobs=2)
    row = dict(problem=p.name, method=f"influent if, inf.attribute(..., ensemble=Ensemble({models}, {checkpoints}))",
               models=models, trainings=models, lds=lds_score(A, truth).score, seconds=time.perf_counter() - t0)
    print(row, flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--problems", default="mnist-mlp,mnist-cnn,adult-mlp")
    ap.add_argument("--methods", default="if,ip,gex")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--truth-only", action="store_true")
    ap.add_argument("--no-dattri", action="store_true")
    ap.add_argument("--no-influent", action="store_true")
    ap.add_argument("--dattri", default="trak,ekfac", help="dattri methods: trak, ekfac")
    ap.add_argument("--trak-parts", default="", help="models whose dattri TRAK-1 parts this process computes "
                    "(e.g. 0,1,2: run several processes; a run with all parts cached assembles TRAK-10)")
    ap.add_argument("--checkpoint-members", type=int, default=0, help="also: each model's last N epoch checkpoints")
    ap.add_argument("--trajectory", default="", help="also: Ensemble(models=k, checkpoints=N) for these N "
                    "(e.g. 3,5), each model's N checkpoints spread over its whole run")
    ap.add_argument("--trajectory-part", default="", help="members whose checkpoint attributions this process "
                    "computes (then it prints nothing; a run with all of them cached prints the rows)")
    ap.add_argument("--trajectory-methods", default="if", help="methods of the --trajectory rows")
    ap.add_argument("--trajectory-single", default="", help="member 0 alone with these numbers of checkpoints")
    ap.add_argument("--api-check", default="", help="MODELS,CHECKPOINTS: also the end-to-end library call "
                    "(trains its own members, 2 processes; wall seconds)")
    ap.add_argument("--halves", type=int, default=50)
    ap.add_argument("--cache", default="/work/wt/cache")
    ap.add_argument("--select-if", action="store_true")
    ap.add_argument("--select-ensemble", default="", help="held-back selection of the ensemble on these "
                    "problems (digits-mlp,breast-cancer-mlp)")
    args = ap.parse_args()
    cache = Path(args.cache)
    if args.select_if:
        return select_if(args.quick, cache)
    if args.select_ensemble:
        return select_ensemble(args.quick, cache, tuple(args.select_ensemble.split(",")))
    ks = (1, 2, 3) if args.quick else (1, 5, 10)
    rows = []
    for name in args.problems.split(","):
        p = PROBLEMS[name](args.quick)
        truth, sec = ground_truth(p, 10 if args.quick else args.halves, cache)
        print(f"{name}: ground truth {truth.losses.shape} in {sec:.0f} s", flush=True)
        if args.truth_only:
            continue
        members, ckpts, t_train = fit_members(p, max(ks), cache)
        print(f"{name}: {len(members)} members, {len(ckpts)} checkpoints, one training {t_train:.1f} s", flush=True)
        if not args.no_influent:
            rows += influent_rows(p, members, ckpts, truth, t_train, ks, args.methods.split(","), cache)
        if args.checkpoint_members:
            rows += members_x_checkpoints(p, truth, t_train, ks, cache, args.checkpoint_members)
        if args.api_check:
            k, n = (int(v) for v in args.api_check.split(","))
            rows.append(api_check(p, truth, k, n))
        if args.trajectory:
            part = tuple(int(m) for m in args.trajectory_part.split(",") if m) or None
            single = tuple(int(m) for m in args.trajectory_single.split(",") if m)
            n_cks = tuple(int(n) for n in args.trajectory.split(","))
            for method in args.trajectory_methods.split(","):
                rows += trajectory_rows(p, truth, t_train, ks, cache, n_cks, part, method=method, single=single)
            if part is not None:
                continue
        if not args.no_dattri:
            parts = tuple(int(m) for m in args.trak_parts.split(",") if m)
            rows += dattri_rows(p, members, truth, t_train, ks, tuple(args.dattri.split(",")), cache, parts)
    if rows:
        df = pd.DataFrame(rows)
        with pd.option_context("display.width", 200, "display.max_colwidth", 70):
            print(df.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        print(f"single-threaded (torch threads = 1); halves: {args.halves}; seconds = trainings x one training + attribution")


if __name__ == "__main__":
    main()
