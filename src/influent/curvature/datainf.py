"""DataInf: Kwon et al., "DataInf: Efficiently Estimating Data Influence in LoRA-tuned LLMs and
Diffusion Models" (ICLR 2024)."""

from __future__ import annotations

import torch

from ..data.validate import InputError, check_choice
from .base import CurvatureContext, Solver, register


@register("datainf")
class DataInfSolver(Solver):
    """Per-layer closed form that swaps the inverse and the average over samples.

    H is approximated per layer ``l`` (one module's analysed parameters, grouped by the module-name
    prefix) by the empirical Fisher ``G_l = (1/n) sum_i g_il g_il^T`` plus ``lam_l I``, and its inverse
    by the average of the rank-one (Sherman-Morrison) inverses::

        (G_l + lam_l I)^-1 v  ~  (1/(n lam_l)) sum_i [v - (v . g_il) / (lam_l + |g_il|^2) g_il]

    Cross-layer terms are dropped (block-diagonal). One streamed pass over
    ``ctx.grad_source().chunks()`` per `solve`; memory O(chunk_size * p + p * k).

    Parameters
    ----------
    lam : how lam_l is chosen.
          "damping": ``lam_l = damping + reg_l`` (reg_l: the L2 coefficient of the layer's weight,
          else of its first analysed parameter), i.e. the shared damping meaning;
          "paper": DataInf's own heuristic ``lam_l = 0.1 * mean_i |g_il|^2 / d_l`` (d_l = parameters in
          the layer); damping and regulariser are then not used;
          "auto" (default): "paper" when ``ctx.damping == 0``, else "damping".

    Attributes
    ----------
    groups_ : dict layer name -> (d_l,) flat indices of its parameters
    lam_ : dict layer name -> lam_l
    lam_mode_ : "paper" or "damping"
    """

    def __init__(self, lam: str = "auto") -> None:
        super().__init__(lam=lam)
        check_choice(lam, ("auto", "paper", "damping"), "datainf: lam")
        self.lam = lam

    def _fit(self, ctx: CurvatureContext) -> None:
        groups: dict[str, list[torch.Tensor]] = {}
        regs: dict[str, float] = {}
        off = 0
        for pname, t in ctx.params.items():
            owner, _, leaf = pname.rpartition(".")
            groups.setdefault(owner, []).append(torch.arange(off, off + t.numel(), device=ctx.device))
            if owner not in regs or leaf == "weight":
                regs[owner] = float(ctx.adapter.reg_coef.get(pname, 0.0))
            off += t.numel()
        self.groups_ = {k: torch.cat(v) for k, v in groups.items()}
        mode = self.lam if self.lam != "auto" else ("paper" if ctx.damping == 0 else "damping")
        self.lam_mode_ = mode
        if mode == "damping":
            self.lam_ = {k: ctx.damping + regs[k] for k in self.groups_}
        else:
            sq = {k: torch.zeros((), dtype=ctx.dtype, device=ctx.device) for k in self.groups_}
            for _, G in ctx.grad_source().chunks():
                for k, idx in self.groups_.items():
                    sq[k] += (G[:, idx] ** 2).sum()
            self.lam_ = {k: 0.1 * float(sq[k]) / ctx.n / idx.numel() for k, idx in self.groups_.items()}
        bad = [k for k, v in self.lam_.items() if not v > 0]
        if bad:
            raise InputError(f"datainf: lam is not positive for layer(s) {bad} ({self.lam_mode_} mode); "
                             "set damping > 0 (or lam='paper' when gradients are non-zero)")

    def _solve(self, V: torch.Tensor) -> torch.Tensor:
        ctx = self.ctx
        acc = {k: torch.zeros(idx.numel(), V.shape[1], dtype=ctx.dtype, device=ctx.device)
               for k, idx in self.groups_.items()}
        for _, G in ctx.grad_source().chunks():
            G = G.to(ctx.dtype)
            for k, idx in self.groups_.items():
                Gl = G[:, idx]  # (B, d_l)
                coef = (Gl @ V[idx]) / (self.lam_[k] + (Gl**2).sum(1))[:, None]  # (B, k)
                acc[k] += Gl.T @ coef
        out = torch.empty_like(V)
        for k, idx in self.groups_.items():
            out[idx] = (V[idx] - acc[k] / ctx.n) / self.lam_[k]
        return out
