"""influent against peer libraries (dattri, captum): the same scores, timed, on MLPs over scikit-learn digits.

Usage::

    python benchmarks/peers.py                 # the issue's sizes (several minutes on 2 cores)
    python benchmarks/peers.py --quick         # small sizes, well under a minute of compute
    python benchmarks/peers.py --large-exact   # adds exact IF on 64-128-10 (9.6k parameters; slow)
    python benchmarks/peers.py --only ip,datainf --out /tmp/peers.csv

Prints one table and writes it as CSV (``--out``, default ``benchmarks/results/peers.csv``).

How it measures
---------------
* Data: ``sklearn.datasets.load_digits``, X / 16, one fixed permutation (seed 0); a problem "n x m" uses the
  first n samples of it for training and the next m as the test set.
* Models: ``influent.models.TabularMLP`` (ReLU MLP, weight_decay=0, default TrainConfig: full-batch Adam,
  lr 1e-2, 100 epochs), float32. The peers receive the very same fitted ``nn.Sequential`` (pickled) and a loss
  built from it with ``torch.func.functional_call``: ``cross_entropy(module(x), y)`` with the default MEAN
  reduction, so that a batch loss is the mean loss, a one-sample loss is l_i, and the Hessian of the full-batch
  loss is influent's ``H = (1/n) sum_i hess l_i`` (no regulariser: weight decay 0 on both sides).
* Every peer runs in a separate worker process (imports paid once, not timed) under an address-space limit, so
  a peer that runs out of memory or past ``--peer-timeout`` is reported as such and the benchmark goes on.
* Each side is warmed up once, untimed, by the same call on the first 16 training and 4 test samples; then
  the full call is timed with ``time.perf_counter`` (calls under ``--repeat-below`` seconds twice, the faster
  time kept, on both sides) (influent: the whole ``attribute``/``score`` call; peers:
  attributor construction + ``cache`` + ``attribute``/``influence``). Both sides use ``--threads`` threads.
* Agreement: Pearson and Spearman correlation of the flattened (n_train x n_test) matrices (scores for the
  LiSSA row), and the largest absolute difference relative to max |ours|, after mapping the peer's values to
  influent's convention (see the notes printed under the table). Where influent's exact solver ran on the
  same problem, the Pearson correlation of each side with that exact answer is shown too ("vs exact").

Conventions (influent, design promise 2): pairwise IP is ``A[i, j] = g_i . g_j``; pairwise IF is
``A[i, j] = (1/n) g_j^T (H + damping I)^-1 g_i`` with absolute damping; higher = training sample i helps.
The mapping of each peer's loss reduction, damping and scale to ours is in ``NOTES`` below.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import platform
import select
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "peers.csv"
WARM_TRAIN, WARM_TEST = 16, 4  # warm-up slice
N_CHECKPOINTS = 5  # TracIn rows: checkpoints recorded during the (full-batch) fit

# How each peer's numbers are mapped to influent's convention. Printed under the table (by key) and kept in
# the CSV. Keep in sync with the `_peer_*` functions below.
NOTES = {
    "ip-dattri": (
        "dattri TracInAttributor as Grad-Dot (one checkpoint, weight_list=[1], normalized_grad=False): A = g_i . g_j, "
        "no rescaling. dattri 0.3.0 cannot switch its random projection off through the constructor: "
        "projector_kwargs=None keeps DEFAULT_PROJECTOR_KWARGS (512-d projection), so we set "
        "attributor.projector_kwargs = None after construction. Train batches of 500, one test batch."),
    "tracin-dattri": (
        "dattri TracInAttributor(weight_list=lr_c, normalized_grad=False) on an AttributionTask holding the same "
        "checkpoints (state dicts recorded by influent's TrainingRecorder during the fit, every 20 of the 100 "
        "full-batch Adam steps: 5 checkpoints, each with its learning rate): A = sum_c lr_c g_i(theta_c) . "
        "g_j(theta_c), no rescaling; projection switched off as in the IP row. Train batches of 500, one test "
        "batch."),
    "tracin-captum": (
        "captum TracInCP over the same checkpoints (saved to files; the load function returns the checkpoint's "
        "learning rate), CrossEntropyLoss(reduction='sum'), sample_wise_grads_per_batch=True, train batches of 500: "
        "A = sum_c lr_c g_j . g_i; captum returns (test, train), transposed."),
    "ip-captum": (
        "captum TracInCP with one checkpoint whose learning rate is 1, CrossEntropyLoss(reduction='sum') with "
        "sample_wise_grads_per_batch=True (per-sample gradients of l_i), train batches of 500: "
        "A = g_j . g_i; captum returns (test, train), transposed."),
    "exact-dattri": (
        "dattri IFAttributorExplicit: Hessian of the loss function on ONE batch holding the whole training set "
        "(our loss is the mean -> H_mean, as ours), regularization = damping (absolute, added to H_mean), "
        "torch.linalg.solve. It returns g_i^T (H+damping I)^-1 g_j without 1/n: mapped = dattri / n. "
        "(With several batches dattri would add up per-batch IHVPs, which is not the IHVP of the full Hessian.)"),
    "exact-captum": (
        "captum NaiveInfluenceFunction: Hessian of the SUM of per-sample losses (reduction='none', summed), i.e. "
        "n * H_mean, so hessian_reg = n * damping gives (n H_mean + n damping I)^-1 = (1/n)(H_mean + damping I)^-1:"
        " its values equal ours with no rescaling (transposed). projection_dim = n_params (full rank); it keeps "
        "eigenvalues above hessian_inverse_tol only, which drops nothing when H + damping I is positive definite."),
    "lissa-dattri": (
        "Scores for the target 'mean test loss' (dattri: a single 'test sample' holding the whole test set, "
        "target = mean CE over it). dattri's recursion h <- v + (1 - d) h - H_B h / s, result h / s, converges to "
        "(H + s d I)^-1 v, so d = damping / s and scaling = s, with the same s on both sides (1.1 x the top "
        "eigenvalue of H + damping I from 20 power iterations, computed before timing); same depth, minibatch "
        "size, one repeat; minibatch losses are means on both sides. Minibatches differ (dattri: without "
        "replacement, independently for each right-hand side; influent: with replacement, shared), so agreement "
        "is limited by sampling noise. Mapped = dattri / n."),
    "datainf-dattri": (
        "dattri IFAttributorDataInf(regularization=damping); influent solver 'datainf' with lam='damping' "
        "(lam_l = damping + the layer's L2 coefficient = damping here). Same closed form: per layer (weight + bias "
        "of one nn.Linear), the mean over i of the Sherman-Morrison inverse of g_il g_il^T + lam I; cross-layer "
        "terms dropped. Mapped = dattri / n. (dattri's default regularization=0.0 divides by zero; its 0.1 "
        "fallback only applies to None.)"),
    "exact-direct": (
        "Plain torch.func, written directly: H of the mean loss by jacrev(jacrev) in chunks of 128 columns "
        "(torch.func.hessian, jacfwd(jacrev), cannot be chunked and runs out of memory at 9.6k parameters), "
        "Cholesky of H + damping I in float64 (LU where it is indefinite), one solve for all test gradients, per-sample "
        "gradients by vmap(grad): the same quantity, (1/n) g_i^T (H + damping I)^-1 g_j, no rescaling."),
    "cg-dattri": (
        "dattri IFAttributorCG(max_iter=k, regularization=damping) on one batch holding the whole training set "
        "(mean loss: H_mean + damping I, as ours). dattri runs exactly k iterations from x0 = v, per test "
        "gradient under vmap (its tol is not used); influent's CG runs k iterations from x0 = 0 on all test "
        "gradients at once (tol set below reach). Both approach the exact solution; 'vs exact' says how close. "
        "Mapped = dattri / n. Rows use the first test samples only, as dattri's cost grows with each one."),
    "arnoldi-dattri": (
        "dattri IFAttributorArnoldi(proj_dim=r, max_iter=m+1, regularization=damping): m Hessian-vector "
        "products (mean loss), top-r Ritz pairs of H + damping I, influence g_i^T Q diag(1/lambda) Q^T g_j; "
        "influent's arnoldi solver with rank=r, n_iter=m (Schioppa et al. 2022): the same construction "
        "(different random start vectors). Mapped = dattri / n."),
    "kfac-curvlinops": (
        "curvlinops KFACLinearOperator(fisher_type='type-2', separate_weight_and_bias=False, mean loss, "
        "kfac_approx='expand') inverted by KFACInverseLinearOperator(damping, use_exact_damping=True), i.e. "
        "(S (x) A + damping I)^-1 as ours, applied to all test gradients; per-sample gradients by vmap(grad). "
        "The same quantity (tests/test_solvers.py checks the matrices agree to 1e-6). No rescaling."),
    "ekfac-curvlinops": (
        "curvlinops EKFACLinearOperator (same settings as the K-FAC row) with KFACInverseLinearOperator("
        "damping, use_exact_damping=True): the same quantity as influent's ekfac. No rescaling."),
    "ekfac-dattri": (
        "dattri IFAttributorEKFAC(damping=damping): damping added to the corrected eigenvalues, as ours; both "
        "use mean-loss curvature. Mapped = dattri / n. NOT the same curvature: dattri's Kronecker factors and "
        "eigenvalues are those of the EMPIRICAL Fisher (gradients at the training labels); influent's are those "
        "of the GGN (= the true Fisher for softmax cross-entropy). Moreover dattri 0.3.0 rotates with "
        "Q_S M Q_A^T (eigenvectors as rows) instead of Q_S^T M Q_A, and for a layer with a bias reshapes "
        "[vec(W), b] to (d_out, d_in + 1), which mixes the bias entries into the weight columns; both reproduced "
        "to 1e-16 on a one-layer model. Expect low agreement; 'vs exact' says which side is closer to the "
        "exact influence."),
}


# ----------------------------------------------------------------------------------------------------------
# problems
# ----------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Problem:
    hidden: tuple[int, ...]
    n_train: int
    n_test: int

    @property
    def arch(self) -> str:
        return "-".join(str(d) for d in (64, *self.hidden, 10))

    def label(self, n_params: int) -> str:
        return f"{self.arch} ({n_params / 1000:.1f}k p), {self.n_train}x{self.n_test}"


SIZES = {
    "default": dict(ip=Problem((512, 512), 1500, 297), small=Problem((32,), 1500, 297),
                    datainf_a=Problem((256,), 800, 150), mid=Problem((128,), 1500, 297),
                    lissa=dict(depth=1000, batch_size=64), cg_iter=50, cg_test=60, arnoldi=(50, 100)),
    "quick": dict(ip=Problem((128, 128), 400, 80), small=Problem((16,), 400, 80),
                  datainf_a=Problem((64,), 300, 60), mid=Problem((32,), 400, 80),
                  lissa=dict(depth=200, batch_size=32), cg_iter=20, cg_test=20, arnoldi=(20, 40)),
}


def load_data(n_train: int, n_test: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    if n_train + n_test > len(X):
        raise SystemExit(f"digits has {len(X)} samples; {n_train} + {n_test} requested")
    idx = np.random.default_rng(0).permutation(len(X))
    tr, te = idx[:n_train], idx[n_train:n_train + n_test]
    return X[tr], y[tr].astype(np.int64), X[te], y[te].astype(np.int64)


# ----------------------------------------------------------------------------------------------------------
# the peer side: runs in a worker process
# ----------------------------------------------------------------------------------------------------------

def _loader(X, y, batch_size):
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    return DataLoader(TensorDataset(torch.as_tensor(X), torch.as_tensor(y)), batch_size=batch_size, shuffle=False)


def _dattri_task(module, checkpoints=None):
    """dattri task on `module`: loss(params, (x, y)) = mean CE over the rows of x (one row: l_i); `checkpoints`
    (a list of state dicts) defaults to the module's own weights."""
    import torch
    import torch.nn.functional as F
    from dattri.task import AttributionTask

    def loss(params, data):
        x, y = data
        out = torch.func.functional_call(module, params, (x.reshape(-1, x.shape[-1]),))
        return F.cross_entropy(out, y.reshape(-1).long())

    return AttributionTask(loss_func=loss, model=module,
                           checkpoints=module.state_dict() if checkpoints is None else list(checkpoints))


def _peer_dattri_tracin(module, Xtr, ytr, Xte, yte, opts):
    import torch
    from dattri.algorithm.tracin import TracInAttributor

    att = TracInAttributor(task=_dattri_task(module), weight_list=torch.ones(1), normalized_grad=False)
    att.projector_kwargs = None  # see NOTES["ip-dattri"]: the constructor cannot turn the projection off
    return att.attribute(_loader(Xtr, ytr, min(500, len(Xtr))), _loader(Xte, yte, len(Xte)))


def _peer_dattri_tracin_ckpts(module, Xtr, ytr, Xte, yte, opts):
    import torch
    from dattri.algorithm.tracin import TracInAttributor

    att = TracInAttributor(task=_dattri_task(module, opts["checkpoints"]),
                           weight_list=torch.tensor(opts["lrs"], dtype=torch.float32), normalized_grad=False)
    att.projector_kwargs = None  # see NOTES["ip-dattri"]
    return att.attribute(_loader(Xtr, ytr, min(500, len(Xtr))), _loader(Xte, yte, len(Xte)))


def _peer_captum_tracincp_ckpts(module, Xtr, ytr, Xte, yte, opts):
    import torch
    from captum.influence import TracInCP
    from torch.utils.data import TensorDataset

    with tempfile.TemporaryDirectory() as d:
        paths = []
        for k, (sd, lr) in enumerate(zip(opts["checkpoints"], opts["lrs"])):
            paths.append(os.path.join(d, f"ckpt{k}.pt"))
            torch.save({"state": sd, "lr": lr}, paths[-1])

        def load(model, p):
            ck = torch.load(p, weights_only=True)
            model.load_state_dict(ck["state"])
            return ck["lr"]

        tc = TracInCP(module, TensorDataset(torch.as_tensor(Xtr), torch.as_tensor(ytr)), checkpoints=paths,
                      checkpoints_load_func=load, loss_fn=torch.nn.CrossEntropyLoss(reduction="sum"),
                      batch_size=min(500, len(Xtr)), sample_wise_grads_per_batch=True)
        return tc.influence((torch.as_tensor(Xte), torch.as_tensor(yte))).T


def _peer_captum_tracincp(module, Xtr, ytr, Xte, yte, opts):
    import torch
    from captum.influence import TracInCP
    from torch.utils.data import TensorDataset

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "ckpt.pt")
        torch.save(module.state_dict(), path)

        def load(model, p):
            model.load_state_dict(torch.load(p, weights_only=True))
            return 1.0  # learning rate of the checkpoint

        tc = TracInCP(module, TensorDataset(torch.as_tensor(Xtr), torch.as_tensor(ytr)), checkpoints=[path],
                      checkpoints_load_func=load, loss_fn=torch.nn.CrossEntropyLoss(reduction="sum"),
                      batch_size=min(500, len(Xtr)), sample_wise_grads_per_batch=True)
        return tc.influence((torch.as_tensor(Xte), torch.as_tensor(yte))).T


def _peer_dattri_explicit(module, Xtr, ytr, Xte, yte, opts):
    from dattri.algorithm.influence_function import IFAttributorExplicit

    att = IFAttributorExplicit(task=_dattri_task(module), regularization=opts["damping"])
    full = _loader(Xtr, ytr, len(Xtr))  # one batch: see NOTES["exact-dattri"]
    att.cache(full)
    return att.attribute(full, _loader(Xte, yte, len(Xte)))


def _peer_captum_naive(module, Xtr, ytr, Xte, yte, opts):
    import torch
    from captum.influence import NaiveInfluenceFunction
    from torch.utils.data import TensorDataset

    p = sum(t.numel() for t in module.parameters())
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "ckpt.pt")
        torch.save(module.state_dict(), path)

        def load(model, p_):
            model.load_state_dict(torch.load(p_, weights_only=True))
            return 1.0

        nif = NaiveInfluenceFunction(module, TensorDataset(torch.as_tensor(Xtr), torch.as_tensor(ytr)),
                                     checkpoint=path, checkpoints_load_func=load,
                                     loss_fn=torch.nn.CrossEntropyLoss(reduction="none"), batch_size=len(Xtr),
                                     projection_dim=p, hessian_reg=len(Xtr) * opts["damping"])
        return nif.influence((torch.as_tensor(Xte), torch.as_tensor(yte))).T


def _peer_dattri_lissa(module, Xtr, ytr, Xte, yte, opts):
    from dattri.algorithm.influence_function import IFAttributorLiSSA

    s = opts["scale"]
    att = IFAttributorLiSSA(task=_dattri_task(module), batch_size=min(opts["batch_size"], len(Xtr)), num_repeat=1,
                            recursion_depth=opts["depth"], damping=opts["damping"] / s, scaling=s)
    full = _loader(Xtr, ytr, len(Xtr))
    att.cache(full)
    # one "test sample" = the whole test set; the task's loss averages over its rows -> grad of mean test loss
    target = _loader(Xte[None], yte[None], 1)
    return att.attribute(full, target)[:, 0]


def _peer_dattri_datainf(module, Xtr, ytr, Xte, yte, opts):
    from dattri.algorithm.influence_function import IFAttributorDataInf

    att = IFAttributorDataInf(task=_dattri_task(module), regularization=opts["damping"])
    full = _loader(Xtr, ytr, len(Xtr))
    att.cache(full)
    return att.attribute(full, _loader(Xte, yte, len(Xte)))


def _peer_dattri_ekfac(module, Xtr, ytr, Xte, yte, opts):
    from dattri.algorithm.influence_function import IFAttributorEKFAC

    att = IFAttributorEKFAC(task=_dattri_task(module), damping=opts["damping"])
    full = _loader(Xtr, ytr, len(Xtr))
    att.cache(full)
    return att.attribute(full, _loader(Xte, yte, len(Xte)))


def _peer_direct_exact(module, Xtr, ytr, Xte, yte, opts):
    """The direct route in plain torch.func: H of the mean loss by jacrev(jacrev) in chunks of 128 columns
    (torch.func.hessian's jacfwd(jacrev) cannot be chunked and runs out of memory at 9.6k parameters),
    H + damping I factored by Cholesky in float64, one solve for all test gradients, per-sample gradients
    by vmap(grad). Returns (1/n) g_i^T (H + damping I)^-1 g_j."""
    import torch
    import torch.nn.functional as F
    from torch.func import functional_call, grad, jacrev, vmap

    names = [n for n, _ in module.named_parameters()]
    shapes = [q.shape for _, q in module.named_parameters()]
    sizes = [q.numel() for _, q in module.named_parameters()]
    theta = torch.cat([q.detach().reshape(-1) for q in module.parameters()])
    X, y, Xt, yt = (torch.as_tensor(a) for a in (Xtr, ytr, Xte, yte))

    def unflat(th):
        return {n: c.reshape(s) for n, c, s in zip(names, torch.split(th, sizes), shapes)}

    def loss(th, x, t):
        return F.cross_entropy(functional_call(module, unflat(th), (x,)), t)

    H = jacrev(jacrev(lambda th: loss(th, X, y)), chunk_size=opts.get("chunk", 128))(theta)
    A = 0.5 * (H + H.T).double()
    A.diagonal().add_(opts["damping"])
    L, info = torch.linalg.cholesky_ex(A)
    one = lambda th, x, t: loss(th, x[None], t[None])
    Gtr = vmap(grad(one), in_dims=(None, 0, 0))(theta, X, y)
    Gte = vmap(grad(one), in_dims=(None, 0, 0))(theta, Xt, yt)
    # indefinite H + damping I: LU solve (torch.linalg.solve) instead
    U = torch.cholesky_solve(Gte.double().T, L) if int(info) == 0 else torch.linalg.solve(A, Gte.double().T)
    return (Gtr.double() @ U) / len(X)


def _peer_dattri_cg(module, Xtr, ytr, Xte, yte, opts):
    from dattri.algorithm.influence_function import IFAttributorCG

    att = IFAttributorCG(task=_dattri_task(module), max_iter=opts["max_iter"], regularization=opts["damping"])
    full = _loader(Xtr, ytr, len(Xtr))
    att.cache(full)
    return att.attribute(full, _loader(Xte, yte, len(Xte)))


def _peer_dattri_arnoldi(module, Xtr, ytr, Xte, yte, opts):
    from dattri.algorithm.influence_function import IFAttributorArnoldi

    att = IFAttributorArnoldi(task=_dattri_task(module), proj_dim=opts["rank"], max_iter=opts["n_iter"] + 1,
                              regularization=opts["damping"])
    full = _loader(Xtr, ytr, len(Xtr))
    att.cache(full)
    return att.attribute(full, _loader(Xte, yte, len(Xte)))


def _peer_curvlinops_kfac(module, Xtr, ytr, Xte, yte, opts):
    """curvlinops' (E)K-FAC of the type-2 Fisher (= GGN for softmax cross-entropy), joint weight and bias,
    inverted with exact damping, applied to all test gradients; per-sample gradients by vmap(grad)."""
    import torch
    import torch.nn.functional as F
    from curvlinops import EKFACLinearOperator, KFACInverseLinearOperator, KFACLinearOperator
    from torch.func import functional_call, grad, vmap

    X, y, Xt, yt = (torch.as_tensor(a) for a in (Xtr, ytr, Xte, yte))
    params = list(module.parameters())
    cls = EKFACLinearOperator if opts["corrected"] else KFACLinearOperator
    op = cls(module, torch.nn.CrossEntropyLoss(reduction="mean"), params, [(X, y)], fisher_type="type-2",
             separate_weight_and_bias=False, check_deterministic=False, progressbar=False)
    inv = KFACInverseLinearOperator(op, damping=opts["damping"], use_exact_damping=True)
    table = {n: q.detach() for n, q in module.named_parameters()}
    one = lambda ps, x, t: F.cross_entropy(functional_call(module, ps, (x[None],)), t[None])

    def grads(A, b):
        g = vmap(grad(one), in_dims=(None, 0, 0))(table, A, b)
        return torch.cat([g[n].reshape(len(A), -1) for n in table], dim=1)

    U = inv @ grads(Xt, yt).T
    return grads(X, y) @ U / len(X)


PEER_FUNCS: dict[str, Callable] = {
    "dattri-tracin": _peer_dattri_tracin, "captum-tracincp": _peer_captum_tracincp,
    "dattri-tracin-ckpts": _peer_dattri_tracin_ckpts, "captum-tracincp-ckpts": _peer_captum_tracincp_ckpts,
    "dattri-explicit": _peer_dattri_explicit, "captum-naive": _peer_captum_naive,
    "direct-exact": _peer_direct_exact, "dattri-lissa": _peer_dattri_lissa, "dattri-cg": _peer_dattri_cg,
    "dattri-arnoldi": _peer_dattri_arnoldi, "curvlinops-kfac": _peer_curvlinops_kfac, "dattri-datainf": _peer_dattri_datainf, "dattri-ekfac": _peer_dattri_ekfac,
}


def _run_job(job: dict) -> dict:
    """In the worker: warm up on a slice, then time the full call."""
    import torch

    fn = PEER_FUNCS[job["peer"]]
    Xtr, ytr, Xte, yte = job["Xtr"], job["ytr"], job["Xte"], job["yte"]
    opts = dict(job["opts"])
    torch.manual_seed(0)
    warm = dict(opts, depth=min(opts.get("depth", 1), 10)) if "depth" in opts else opts
    fn(job["module"], Xtr[:WARM_TRAIN], ytr[:WARM_TRAIN], Xte[:WARM_TEST], yte[:WARM_TEST], warm)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    out = fn(job["module"], Xtr, ytr, Xte, yte, opts)
    seconds = time.perf_counter() - t0
    if seconds < job.get("repeat_below", 0.0):  # short calls: the best of two (shared machines are noisy)
        torch.manual_seed(0)
        t0 = time.perf_counter()
        fn(job["module"], Xtr, ytr, Xte, yte, opts)
        seconds = min(seconds, time.perf_counter() - t0)
    return {"status": "ok", "seconds": seconds, "values": out.detach().cpu().double().numpy()}


def _describe_error(exc: BaseException, seconds: float, mem_gb: float) -> str:
    msg = str(exc).strip().splitlines()
    text = msg[-1] if msg else ""
    if isinstance(exc, MemoryError) or "can't allocate memory" in str(exc) or "not enough memory" in str(exc):
        return f"out of memory ({mem_gb:.0f} GB limit) after {seconds:.0f} s"
    return f"error after {seconds:.0f} s: {type(exc).__name__}: {text[:160]}"


def worker_main(threads: int, mem_gb: float) -> None:
    """Peer worker: reads 'job_path<TAB>result_path' lines on stdin, answers 'done' on the protocol channel."""
    import resource

    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything a library prints goes to stderr, never into the protocol
    sys.stdout = sys.stderr
    if mem_gb > 0:
        lim = int(mem_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (lim, lim))
    warnings.filterwarnings("ignore")
    import torch

    torch.set_num_threads(threads)
    for mod in ("dattri.algorithm.influence_function", "dattri.algorithm.tracin", "captum.influence", "curvlinops"):
        try:
            __import__(mod)
        except Exception:  # reported per job
            pass
    proto.write("ready\n")
    for line in sys.stdin:
        job_path, res_path = line.rstrip("\n").split("\t")
        t0 = time.perf_counter()
        try:
            job = torch.load(job_path, weights_only=False)
            res = _run_job(job)
        except ImportError as exc:
            res = {"status": f"not installed ({exc.name or exc})"}
        except BaseException as exc:  # noqa: BLE001 - any failure of a peer is a result, not a crash
            traceback.print_exc()
            res = {"status": _describe_error(exc, time.perf_counter() - t0, mem_gb)}
        torch.save(res, res_path)
        proto.write("done\n")


class PeerRunner:
    """Runs peer jobs in a persistent worker process; restarts it after a timeout or a crash."""

    def __init__(self, threads: int, mem_gb: float, timeout: float, log: Path) -> None:
        self.threads, self.mem_gb, self.timeout = threads, mem_gb, timeout
        self.log = log
        self.proc: subprocess.Popen | None = None
        self.tmp = tempfile.TemporaryDirectory(prefix="influent-peers-")
        self.k = 0

    def _start(self) -> None:
        env = dict(os.environ, TQDM_DISABLE="1", PYTHONWARNINGS="ignore", OMP_NUM_THREADS=str(self.threads),
                   MKL_NUM_THREADS=str(self.threads))
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--_worker", "--threads", str(self.threads),
             "--peer-mem-gb", str(self.mem_gb)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(self.log, "a"), text=True, env=env)
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"peer worker failed to start; see {self.log}")

    def _stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def run(self, job: dict) -> dict:
        import torch

        if self.proc is None or self.proc.poll() is not None:
            self._start()
        assert self.proc is not None and self.proc.stdin is not None and self.proc.stdout is not None
        self.k += 1
        job_path = os.path.join(self.tmp.name, f"job{self.k}.pt")
        res_path = os.path.join(self.tmp.name, f"res{self.k}.pt")
        torch.save(job, job_path)
        t0 = time.perf_counter()
        self.proc.stdin.write(f"{job_path}\t{res_path}\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], self.timeout)
        if not ready:
            self._stop()
            return {"status": f"did not finish in {self.timeout:.0f} s"}
        line = self.proc.stdout.readline()
        if line.strip() != "done":
            rc = self.proc.wait()
            self.proc = None
            how = f"killed by signal {-rc}" if rc < 0 else f"worker exited with code {rc}"
            oom = " (out of memory?)" if rc in (-9, 137) else ""
            return {"status": f"{how}{oom} after {time.perf_counter() - t0:.0f} s"}
        res = torch.load(res_path, weights_only=False)
        os.remove(job_path)
        os.remove(res_path)
        return res

    def close(self) -> None:
        self._stop()
        self.tmp.cleanup()


# ----------------------------------------------------------------------------------------------------------
# the influent side
# ----------------------------------------------------------------------------------------------------------

@dataclass
class Fitted:
    problem: Problem
    model: Any
    train: Any
    test: Any
    arrays: tuple
    fit_seconds: float

    @property
    def n_params(self) -> int:
        return self.model.n_params()


@dataclass
class PeerSpec:
    peer: str  # key of PEER_FUNCS
    name: str  # shown in the table
    note: str  # key of NOTES
    scale: Callable[[int], float] = lambda n: 1.0  # mapped = peer * scale(n_train)
    same: bool = True  # computes the same quantity as influent (the row's ratio target applies)
    max_ratio: float | None = None  # overrides the row's target for this peer


@dataclass
class RowSpec:
    key: str
    method: str
    problem_key: str
    ours: Callable[[Fitted, Any, Any], np.ndarray]  # (fitted, train split, test split) -> values
    peers: list[PeerSpec]
    solver: str | None = None  # influent solver this row needs
    opts: dict = field(default_factory=dict)  # peer options
    target: str = "-"
    max_ratio: float | None = None  # vs the first peer only
    min_agree: float | None = None
    scores: bool = False  # compares score vectors (target: mean test loss) instead of matrices
    test_limit: int | None = None  # only the first test samples (for the rows whose peers iterate per sample)


def _corr(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    from scipy.stats import spearmanr

    a, b = np.ravel(a), np.ravel(b)
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return float("nan"), float("nan")
    return float(np.corrcoef(a, b)[0, 1]), float(spearmanr(a, b)[0])


def _fmt(x: float | None, spec: str = ".3g") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return format(x, spec)


def _fmt_corr(x: float | None) -> str:
    if x is None or math.isnan(x):
        return "-"
    if x > 0.9999:
        return f"{x:.6f}"
    return f"{x:.4f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (well under a minute of compute)")
    ap.add_argument("--large-exact", action="store_true", help="add exact IF on the 64-128-10 problem (slow)")
    ap.add_argument("--only", default="", help="comma list of rows: ip,tracin,exact,cg,lissa,arnoldi,datainf,kfac,ekfac,"
                    "exact-large")
    ap.add_argument("--sizes", default="", help="with --only: comma list of problem keys (small, mid, ip, datainf_a)")
    ap.add_argument("--damping", type=float, default=0.05, help="absolute damping of every IF row (default 0.05)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads on both sides (default 1: on a shared machine more threads than free cores "
                         "make OpenMP barriers stall and timings swing 10x; use 2 on an idle 2-core machine)")
    ap.add_argument("--repeat-below", type=float, default=60.0,
                    help="a timed call shorter than this many seconds is run twice and the faster time kept, on "
                         "both sides (default 60; 0 times every call once)")
    ap.add_argument("--peer-timeout", type=float, default=350.0, help="seconds before a peer job is stopped")
    ap.add_argument("--peer-mem-gb", type=float, default=None, help="address-space limit of the peer worker "
                    "(default: 75%% of physical memory)")
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="CSV path (default benchmarks/results/peers.csv)")
    ap.add_argument("--_worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.peer_mem_gb is None:
        args.peer_mem_gb = 0.75 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    if args._worker:
        worker_main(args.threads or 1, args.peer_mem_gb)
        return 0

    warnings.filterwarnings("ignore")
    import torch

    import influent as inf
    from influent.curvature import SOLVERS, CurvatureContext, make_solver

    torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    sizes = SIZES["quick" if args.quick else "default"]
    lam = args.damping
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    keys = ["ip", "tracin", "exact", "cg", "lissa", "arnoldi", "datainf", "kfac", "ekfac", "exact-large"]
    unknown = only - set(keys)
    if unknown:
        ap.error(f"--only: unknown row(s) {sorted(unknown)}; choose from {','.join(keys)}")
    sizes_only = {s.strip() for s in args.sizes.split(",") if s.strip()}
    load0 = os.getloadavg()

    # ---- models ------------------------------------------------------------------------------------------
    fitted: dict[str, Fitted] = {}

    def get(problem_key: str) -> Fitted:
        pr = sizes[problem_key]
        key = (pr.hidden, pr.n_train, pr.n_test)
        for f in fitted.values():
            if (f.problem.hidden, f.problem.n_train, f.problem.n_test) == key:
                return f
        Xtr, ytr, Xte, yte = load_data(pr.n_train, pr.n_test)
        train, test = inf.from_arrays(Xtr, ytr, name="train"), inf.from_arrays(Xte, yte, name="test")
        t0 = time.perf_counter()
        cfg = inf.models.TrainConfig()
        # 5 checkpoints for the TracIn rows (recording does not change the fit)
        recorder = inf.TrainingRecorder(every=max(1, cfg.epochs // N_CHECKPOINTS))
        model = inf.models.TabularMLP(hidden=pr.hidden, weight_decay=0.0, train=cfg,
                                      dtype=torch.float32).fit(train, recorder=recorder)
        f = Fitted(pr, model, train, test, (Xtr, ytr, Xte, yte), time.perf_counter() - t0)
        fitted[problem_key] = f
        print(f"  fitted {pr.arch} on {pr.n_train} samples in {f.fit_seconds:.1f} s "
              f"({f.n_params} parameters)", flush=True)
        return f

    # ---- rows --------------------------------------------------------------------------------------------
    def ours_ip(f, tr, te):
        return inf.attribute(f.model, tr, te, method="ip")

    def ours_tracin(f, tr, te):
        return inf.attribute(f.model, tr, te, method="tracin")

    def ours_if(solver, **solver_options):
        def run(f, tr, te):
            kw = {"solver_options": solver_options} if solver_options else {}
            return inf.attribute(f.model, tr, te, method="if", solver=solver, damping=lam, **kw)
        return run

    lissa_opts = dict(sizes["lissa"])

    def ours_lissa(f, tr, te):
        opts = dict(depth=lissa_opts["depth"], scale=lissa_opts["scale"],
                    batch_size=min(lissa_opts["batch_size"], len(tr)))
        return inf.score(f.model, tr, target=inf.targets.Utility(te), method="if", solver="lissa", damping=lam,
                         solver_options=opts).values

    per_n = lambda n: 1.0 / n  # dattri's IF attributors leave out the 1/n of the mean-loss influence
    dattri_if = lambda peer, note, same=True: PeerSpec(peer, "dattri", note, per_n, same)
    exact_peers = [PeerSpec("direct-exact", "direct", "exact-direct", max_ratio=1.5),
                   dattri_if("dattri-explicit", "exact-dattri"),
                   PeerSpec("captum-naive", "captum", "exact-captum")]
    cg_opts = {"max_iter": sizes["cg_iter"]}
    arnoldi_opts = {"rank": sizes["arnoldi"][0], "n_iter": sizes["arnoldi"][1]}
    curv = lambda corrected: PeerSpec("curvlinops-kfac", "curvlinops", "ekfac-curvlinops" if corrected else
                                      "kfac-curvlinops")
    rows = []
    for key in ("small", "mid"):
        big = key == "mid"
        rows += [
            RowSpec("exact-large" if big else "exact", "IF exact (pairwise)", key,
                    ours_if("exact", max_params=50_000), exact_peers[:1] if big else exact_peers, solver="exact",
                    opts={"damping": lam}, target="ratio <= 1.5 vs direct, agreement >= 0.999" if big else
                    "<= 1.5 vs direct, <= 1.0 vs peers", max_ratio=1.5 if big else 1.0,
                    min_agree=0.999 if big else None),
            RowSpec("cg", "IF CG (pairwise)", key, ours_if("cg", tol=1e-30, max_iter=cg_opts["max_iter"]),
                    [dattri_if("dattri-cg", "cg-dattri")], solver="cg", opts=dict(cg_opts, damping=lam),
                    target="ratio <= 1.0", max_ratio=1.0, test_limit=sizes["cg_test"]),
            RowSpec("lissa", "IF LiSSA (scores)", key, ours_lissa, [dattri_if("dattri-lissa", "lissa-dattri")],
                    solver="lissa", opts={"damping": lam}, scores=True, target="ratio <= 1.0", max_ratio=1.0),
            RowSpec("arnoldi", "IF Arnoldi (pairwise)", key,
                    ours_if("arnoldi", rank=arnoldi_opts["rank"], n_iter=arnoldi_opts["n_iter"]),
                    [dattri_if("dattri-arnoldi", "arnoldi-dattri")], solver="arnoldi",
                    opts=dict(arnoldi_opts, damping=lam), target="ratio <= 1.0", max_ratio=1.0),
            RowSpec("datainf", "IF DataInf (pairwise)", key, ours_if("datainf", lam="damping"),
                    [dattri_if("dattri-datainf", "datainf-dattri")], solver="datainf", opts={"damping": lam},
                    target="ratio <= 0.5", max_ratio=0.5),
            RowSpec("kfac", "IF K-FAC (pairwise)", key, ours_if("kfac"), [curv(False)], solver="kfac",
                    opts={"damping": lam, "corrected": False}, target="ratio <= 0.5", max_ratio=0.5),
            RowSpec("ekfac", "IF EK-FAC (pairwise)", key, ours_if("ekfac"),
                    [curv(True), dattri_if("dattri-ekfac", "ekfac-dattri", same=False)], solver="ekfac",
                    opts={"damping": lam, "corrected": True}, target="ratio <= 0.5 vs curvlinops", max_ratio=0.5),
        ]
    tracin_peers = [PeerSpec("dattri-tracin-ckpts", "dattri", "tracin-dattri"),
                    PeerSpec("captum-tracincp-ckpts", "captum", "tracin-captum")]
    for key in ("small", "mid", "ip"):
        rows.append(RowSpec("tracin", f"TracIn, {N_CHECKPOINTS} checkpoints (pairwise)", key, ours_tracin,
                            tracin_peers, target="ratio <= 0.5, agreement >= 0.999", max_ratio=0.5,
                            min_agree=0.999))
    rows += [
        RowSpec("ip", "IP grad-dot (pairwise)", "ip", ours_ip,
                [PeerSpec("dattri-tracin", "dattri", "ip-dattri"), PeerSpec("captum-tracincp", "captum", "ip-captum")],
                target="ratio <= 0.10, agreement >= 0.999", max_ratio=0.10, min_agree=0.999),
        RowSpec("kfac", "IF K-FAC (pairwise)", "ip", ours_if("kfac"), [curv(False)], solver="kfac",
                opts={"damping": lam, "corrected": False}, target="ratio <= 0.5", max_ratio=0.5),
        RowSpec("ekfac", "IF EK-FAC (pairwise)", "ip", ours_if("ekfac"), [curv(True)], solver="ekfac",
                opts={"damping": lam, "corrected": True}, target="ratio <= 0.5", max_ratio=0.5),
        RowSpec("datainf", "IF DataInf (pairwise)", "datainf_a", ours_if("datainf", lam="damping"),
                [dattri_if("dattri-datainf", "datainf-dattri")], solver="datainf", opts={"damping": lam},
                target="ratio <= 0.05 (dattri ~26 s)", max_ratio=0.05),
    ]
    if only:
        rows = [r for r in rows if r.key in only and (not sizes_only or r.problem_key in sizes_only)]
    elif not args.large_exact:
        rows = [r for r in rows if r.key != "exact-large"]

    mode = "quick" if args.quick else "default"
    print(f"influent vs peers ({mode} sizes): torch {torch.__version__}, {threads} threads, damping {lam:g}, "
          f"peer timeout {args.peer_timeout:.0f} s, load average {load0[0]:.1f} at start", flush=True)
    log = Path(tempfile.gettempdir()) / "influent-peers-worker.log"
    runner = PeerRunner(threads, args.peer_mem_gb, args.peer_timeout, log)
    exact: dict[tuple, np.ndarray] = {}  # (hidden, n, m) -> influent's exact pairwise matrix
    table: list[dict] = []
    used_notes: list[str] = []
    try:
        for row in rows:
            f = get(row.problem_key)
            pr = f.problem
            problem = pr.label(f.n_params)
            target = row.target if not (args.quick and row.max_ratio) else "(default sizes only)"
            base = dict(method=row.method, problem=problem, n_params=f.n_params, n_train=pr.n_train,
                        n_test=pr.n_test, target=target)
            if row.solver is not None and row.solver not in SOLVERS:
                table.append(dict(base, ours_s=None, peer="-", status=f"influent solver {row.solver!r} not "
                                  "available (module not written yet)"))
                print(f"  {row.method} {problem}: solver {row.solver!r} not available", flush=True)
                continue
            if row.key == "lissa":  # the same scale on both sides, chosen before timing
                solver = make_solver("lissa", scale="auto", power_iter=20)
                lissa_opts["scale"] = float(f"{solver.fit(CurvatureContext(f.model, f.train, lam)).scale_:.4g}")
                row.opts.update(lissa_opts, batch_size=min(lissa_opts["batch_size"], pr.n_train))
            if row.key == "tracin":  # the peers get the very checkpoints (and learning rates) influent uses
                ckpts = f.model.recorder_.checkpoints
                row.opts = {"checkpoints": [{k: v.clone() for k, v in c.params.items()} for c in ckpts],
                            "lrs": [c.lr for c in ckpts], "steps": [c.step for c in ckpts]}
            # influent: warm-up on a slice, then the timed call
            tr_w, te_w = f.train.subset(np.arange(WARM_TRAIN)), f.test.subset(np.arange(WARM_TEST))
            m_test = min(row.test_limit or pr.n_test, pr.n_test)
            test = f.test.subset(np.arange(m_test)) if m_test < pr.n_test else f.test
            base["n_test"] = m_test
            if m_test < pr.n_test:
                base["problem"] = problem = f"{pr.arch} ({f.n_params / 1000:.1f}k p), {pr.n_train}x{m_test}"
            status = "ok"
            try:
                try:  # the warm-up only pays one-time costs; its tiny problem may be ill-posed (an indefinite
                    row.ours(f, tr_w, te_w)  # 16-sample Hessian stops CG), which says nothing about the real one
                except ValueError:
                    pass
                t0 = time.perf_counter()
                ours = np.asarray(row.ours(f, f.train, test), dtype=np.float64)
                ours_s = time.perf_counter() - t0
                if ours_s < args.repeat_below:  # short calls: the best of two, as for the peers
                    t0 = time.perf_counter()
                    row.ours(f, f.train, test)
                    ours_s = min(ours_s, time.perf_counter() - t0)
            except Exception as exc:  # noqa: BLE001 - reported in the table
                traceback.print_exc()
                ours, ours_s, status = None, None, f"influent failed: {type(exc).__name__}: {exc}"[:200]
            key = (pr.hidden, pr.n_train, pr.n_test)
            cache = Path(args.out).parent / f"exact-{pr.arch}-{pr.n_train}x{pr.n_test}-damping{lam:g}.npy"
            if row.key in ("exact", "exact-large") and ours is not None:
                exact[key] = ours
                cache.parent.mkdir(parents=True, exist_ok=True)
                np.save(cache, ours)  # the reference of later runs with --only (deterministic training)
            elif key not in exact and cache.exists():
                exact[key] = np.load(cache)
            ref = exact.get(key)
            if ref is not None:
                ref = ref[:, :m_test]
            if ref is not None and row.scores:
                ref = ref.mean(axis=1)  # scores for the mean test loss = row means of the pairwise matrix
            ours_vs_exact = None
            if ours is not None and ref is not None and row.key not in ("exact", "exact-large"):
                ours_vs_exact = _corr(ours, ref)[0]
            print(f"  {row.method} {problem}: influent {_fmt(ours_s, '.2f')} s", flush=True)
            for ps in row.peers:
                Xtr, ytr, Xte, yte = f.arrays
                Xte, yte = Xte[:m_test], yte[:m_test]
                job = dict(peer=ps.peer, module=f.model.module, Xtr=Xtr, ytr=ytr, Xte=Xte, yte=yte, opts=row.opts,
                           repeat_below=args.repeat_below)
                res = runner.run(job)
                entry = dict(base, ours_s=ours_s, peer=ps.name, note=ps.note, status=status,
                             ours_vs_exact=ours_vs_exact)
                if ps.note not in used_notes:
                    used_notes.append(ps.note)
                if res["status"] != "ok":
                    entry.update(peer_status=res["status"])
                    print(f"    {ps.name} ({ps.peer}): {res['status']}", flush=True)
                else:
                    peer = res["values"] * ps.scale(pr.n_train)
                    entry.update(peer_s=res["seconds"], peer_status="ok")
                    if ours_s is not None:
                        entry["ratio"] = ours_s / res["seconds"]
                    if ours is not None:
                        if peer.shape != ours.shape:
                            entry["peer_status"] = f"shape {peer.shape} != ours {ours.shape}"
                        else:
                            entry["pearson"], entry["spearman"] = _corr(ours, peer)
                            entry["max_rel_err"] = float(np.abs(ours - peer).max() / np.abs(ours).max())
                            if ref is not None:
                                entry["peer_vs_exact"] = _corr(peer, ref)[0]
                    print(f"    {ps.name} ({ps.peer}): {res['seconds']:.2f} s, pearson "
                          f"{_fmt_corr(entry.get('pearson'))}", flush=True)
                if ps.same and (row.max_ratio or row.min_agree) and not args.quick:
                    limit = ps.max_ratio if ps.max_ratio is not None else row.max_ratio
                    ok = entry.get("ratio") is not None and (limit is None or entry["ratio"] <= limit)
                    ok = ok and (row.min_agree is None or min(entry.get("pearson", -1), entry.get("spearman", -1))
                                 >= row.min_agree)
                    entry["met"] = "yes" if ok else "NO"
                table.append(entry)
    finally:
        runner.close()
    load1 = os.getloadavg()

    # ---- the table ---------------------------------------------------------------------------------------
    cols = [("method", "method"), ("problem", "MLP, train x test"), ("ours_s", "influent s"), ("peer", "peer"),
            ("peer_s", "peer s"), ("ratio", "ours/peer"), ("pearson", "pearson"), ("spearman", "spearman"),
            ("max_rel_err", "max rel err"), ("vs_exact", "vs exact ours/peer"), ("target", "target"),
            ("met", "met")]

    def cell(r: dict, k: str) -> str:
        if k in ("ours_s", "peer_s"):
            if k == "peer_s" and r.get("peer_status", "ok") != "ok":
                return r["peer_status"]
            return _fmt(r.get(k), ".2f")
        if k == "ratio":
            x = r.get(k)
            return "-" if x is None else (f"{x:.3f} (1/{1 / x:.0f})" if x < 0.5 else f"{x:.2f}")
        if k in ("pearson", "spearman"):
            return _fmt_corr(r.get(k))
        if k == "max_rel_err":
            return _fmt(r.get(k), ".1e")
        if k == "vs_exact":
            a, b = r.get("ours_vs_exact"), r.get("peer_vs_exact")
            return "-" if a is None and b is None else f"{_fmt_corr(a)} / {_fmt_corr(b)}"
        if k == "peer" and r.get("note"):
            return f"{r['peer']} [{used_notes.index(r['note']) + 1}]"
        if k == "method" and r.get("status", "ok") != "ok":
            return f"{r['method']} ({r['status']})"
        return str(r.get(k, "-") or "-")

    body = [[cell(r, k) for k, _ in cols] for r in table]
    head = [h for _, h in cols]
    widths = [max(len(head[i]), *(len(b[i]) for b in body)) if body else len(head[i]) for i in range(len(cols))]
    line = "  ".join("-" * w for w in widths)
    print()
    print("  ".join(h.ljust(w) for h, w in zip(head, widths)))
    print(line)
    for b in body:
        print("  ".join(c.ljust(w) for c, w in zip(b, widths)))
    print(line)
    print(f"damping {lam:g} (absolute, on H = mean-loss Hessian); {threads} torch threads; load average "
          f"{load0[0]:.1f} -> {load1[0]:.1f} ({os.cpu_count()} CPUs, {platform.machine()}); "
          f"influent ratio = influent time / peer time.")
    print("vs exact: Pearson correlation with influent's exact solver on the same problem (validated by the "
          "exact row against dattri and captum).")
    for i, k in enumerate(used_notes):
        print(f"[{i + 1}] {NOTES[k]}")

    # ---- CSV ---------------------------------------------------------------------------------------------
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fields = ["method", "problem", "n_params", "n_train", "n_test", "ours_s", "peer", "peer_s", "peer_status",
              "ratio", "pearson", "spearman", "max_rel_err", "ours_vs_exact", "peer_vs_exact", "target", "met",
              "status", "damping", "threads", "mode", "note"]
    tmp = out.with_suffix(out.suffix + ".tmp")
    with open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for r in table:
            w.writerow(dict(r, damping=lam, threads=threads, mode=mode, note=NOTES.get(r.get("note", ""), "")))
    tmp.replace(out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
