"""One robust factorisation of a symmetric matrix: Cholesky first, an optional gauge lift, eigh fallback.

`factorize(A)` is the one way a symmetric (p, p) matrix is inverted in influent: the exact solver's
``H + damping I``, the last-layer Hessian of `mislabel`, the projected Hessian ``P H P^T + damping I`` of
projected influence, and (through the exact solver) FI's Hessian. FI's metric tensor, a Gram matrix known
only through its square-root factor, uses `gram_pinv` with the same cut-off rule.

The rule (one for every caller):

1. Cholesky (``torch.linalg.cholesky_ex``, no exception on failure). The factor is accepted when it exists
   and its smallest squared pivot exceeds ``rcond`` times the largest (a smaller one would amplify
   round-off by more than ``1 / rcond``).
2. Gauge lift (optional): directions ``U`` (p, r) known to be null directions of ``A`` (a symmetry of the
   model, e.g. the common intercept shift of a softmax layer without penalty, which changes no
   probability) are lifted to the eigenvalue ``max diag A`` first, ``A + max(diag A) U U^T``, so that
   Cholesky succeeds; every result is projected back onto the complement of ``U``, which makes it the
   pseudo-inverse ``A^+`` exactly when ``A U = 0``.
3. Otherwise the symmetric eigendecomposition: eigenvalues with ``|lambda| <= rcond * max |lambda|`` are
   treated as zero (pseudo-inverse; for a matrix that is positive semi-definite by construction, ``psd``,
   every eigenvalue below ``rcond * max |lambda|`` is, negative round-off included), the others inverted
   exactly, negative ones included (an indefinite ``A``: `Factor.n_negative` counts them).

Only the lower triangle of ``A`` is read (as LAPACK does). Everything runs in ``A``'s dtype and device;
`Factor.solve` returns its right-hand side's dtype.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

PATHS = ("cholesky", "eigh")


def default_rcond(dtype: torch.dtype) -> float:
    """Relative eigenvalue (and squared-pivot) cut-off: 1e-10 in float64, 1e-5 in lower precisions."""
    return 1e-10 if dtype == torch.float64 else 1e-5


@dataclass(eq=False)
class Factor:
    """A factorisation of a symmetric (p, p) matrix ``A`` (see `factorize`); solves with ``A^-1`` (``A^+``).

    Attributes
    ----------
    path : "cholesky" (``A``, or ``A`` with its gauge lifted, is positive definite) or "eigh" (the fallback)
    dtype : the dtype of the factorisation (``A``'s)
    rcond : the relative cut-off used
    chol : (p, p) lower Cholesky factor (cholesky path)
    evals, evecs : (p,), (p, p) eigenvalues and eigenvectors of ``A`` (eigh path)
    inv_evals : (p,) ``1 / lambda`` for kept eigenvalues, 0 for the ones treated as zero (eigh path)
    gauge : (p, r) orthonormal null directions lifted and projected out, or None
    n_null : eigenvalues treated as zero (eigh path; 0 on the cholesky path)
    n_negative : negative eigenvalues kept, i.e. inverted (eigh path; 0 on the cholesky path)
    """

    path: str
    dtype: torch.dtype
    rcond: float
    chol: torch.Tensor | None = None
    evals: torch.Tensor | None = None
    evecs: torch.Tensor | None = None
    inv_evals: torch.Tensor | None = None
    gauge: torch.Tensor | None = None
    n_null: int = 0
    n_negative: int = 0

    def _project(self, W: torch.Tensor) -> torch.Tensor:
        """(p, m) W without its components along the gauge directions."""
        return W if self.gauge is None else W - self.gauge @ (self.gauge.T @ W)

    def solve(self, B: torch.Tensor) -> torch.Tensor:
        """``A^-1 B`` (``A^+ B`` on the eigh path or with a gauge) for B (p,) or (p, m); B's dtype."""
        W = B.to(self.dtype)
        W = self._project(W[:, None] if B.ndim == 1 else W)
        if self.chol is not None:
            out = torch.cholesky_solve(W, self.chol)
        else:
            out = self.evecs @ (self.inv_evals[:, None] * (self.evecs.T @ W))
        out = self._project(out)
        return (out[:, 0] if B.ndim == 1 else out).to(B.dtype)

    def inverse(self) -> torch.Tensor:
        """(p, p) ``A^-1`` (``A^+`` on the eigh path or with a gauge), explicitly, in the factor's dtype."""
        if self.chol is not None:
            X = torch.cholesky_inverse(self.chol)
        else:
            X = (self.evecs * self.inv_evals) @ self.evecs.T
        if self.gauge is not None:  # (I - U U^T) X (I - U U^T), X symmetric
            X = self._project(X)
            X = X - (X @ self.gauge) @ self.gauge.T
        return X

    def quad(self, G: torch.Tensor) -> torch.Tensor:
        """(m,) ``g^T A^-1 g`` for the rows g of G (m, p), without forming ``A^-1 G^T``; G's dtype."""
        W = self._project(G.to(self.dtype).T)  # (p, m)
        if self.chol is not None:  # g^T (L L^T)^-1 g = |L^-1 g|^2
            Z = torch.linalg.solve_triangular(self.chol, W, upper=False)
            return (Z**2).sum(0).to(G.dtype)
        P = self.evecs.T @ W
        return (P**2 * self.inv_evals[:, None]).sum(0).to(G.dtype)

    def report(self) -> dict[str, Any]:
        """What the factorisation decided: the path, and on the eigh path the counts of null and negative
        eigenvalues; ``gauge``: the number of lifted directions, when any."""
        out: dict[str, Any] = {"path": self.path}
        if self.path == "eigh":
            out.update(n_null=self.n_null, n_negative=self.n_negative)
        if self.gauge is not None:
            out["gauge"] = int(self.gauge.shape[1])
        return out


def factorize(A: torch.Tensor, rcond: float | None = None, gauge: torch.Tensor | None = None,
              psd: bool = False) -> Factor:
    """Factor a symmetric (p, p) matrix ``A`` by the rule of this module (Cholesky, gauge lift, eigh).

    Parameters
    ----------
    A : (p, p) symmetric matrix, any float dtype and device (only its lower triangle is read; not changed)
    rcond : relative cut-off of squared Cholesky pivots and of eigenvalues; None: `default_rcond` of A's dtype
    gauge : (p,) or (p, r) orthonormal directions known to be null directions of ``A`` (``A U = 0``), lifted
        before Cholesky and projected out of every result; None: no lift
    psd : ``A`` is positive semi-definite by construction (a Gauss-Newton matrix plus a penalty): on the eigh
        path its negative eigenvalues are round-off and treated as zero instead of being inverted

    Returns
    -------
    `Factor`; ``solve``, ``inverse`` and ``quad`` give ``A^-1`` products, or ``A^+`` ones where ``A`` is singular.
    """
    if A.ndim != 2 or A.shape[0] != A.shape[1]:
        raise ValueError(f"factorize: A must be a square matrix, got shape {tuple(A.shape)}")
    rc = default_rcond(A.dtype) if rcond is None else float(rcond)
    U = None
    if gauge is not None:
        U = gauge.to(A.dtype).reshape(A.shape[0], -1)
    lifted = A if U is None else A + A.diagonal().max() * (U @ U.T)
    L, info = torch.linalg.cholesky_ex(lifted)
    del lifted
    if int(info) == 0:
        piv = L.diagonal() ** 2
        if float(piv.min()) > rc * float(piv.max()):
            return Factor("cholesky", A.dtype, rc, chol=L, gauge=U)
    del L
    evals, evecs = torch.linalg.eigh(A)
    top = evals.abs().max()
    keep = (evals if psd else evals.abs()) > rc * top
    inv = torch.where(keep, 1.0 / torch.where(keep, evals, torch.ones_like(evals)), torch.zeros_like(evals))
    return Factor("eigh", A.dtype, rc, evals=evals, evecs=evecs, inv_evals=inv, gauge=U,
                  n_null=int((~keep).sum()), n_negative=int((evals[keep] < 0).sum()))


def gram_pinv(S: torch.Tensor, rcond: float | None = None, null: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pseudo-inverse of the Gram matrices ``G = S^T S`` (batched) from their square-root factors ``S``.

    The rule of `factorize` applied to ``G`` without forming it (which would square its condition number):
    the singular value decomposition ``S = W diag(s) V^T`` gives the eigenvalues ``s_r^2`` of ``G``, and those
    with ``s_r^2 <= rcond * max_r s_r^2`` (relative to the same matrix's largest) are treated as zero
    (rcond None: `default_rcond` of S's dtype).

    S : (B, K, d) factors (any batch shape in front of (K, d))
    null : (B, K) unit vectors, or (B, K, r) orthonormal columns, n with ``n^T S = 0`` in exact arithmetic (a
        known null combination of the rows, e.g. ``sqrt P`` for FI's metric tensor): their component is
        removed from ``S`` first, which deletes the round-off a pseudo-inverse would otherwise blow up

    Returns Vh (B, R, d) right singular vectors (eigenvectors of G, R = min(K, d)) and inv_s (B, R): ``1 / s_r``
    for kept eigenvalues, 0 for dropped ones; then ``a^T pinv(G) a = sum_r (inv_s_r * Vh_r . a)^2``.
    """
    if null is not None:
        N = null[..., None] if null.ndim == S.ndim - 1 else null  # (B, K, r)
        S = S - N @ (N.transpose(-1, -2) @ S)
    rc = default_rcond(S.dtype) if rcond is None else float(rcond)
    _, s, Vh = torch.linalg.svd(S, full_matrices=False)
    ev = s**2
    top = ev.max(dim=-1, keepdim=True).values
    keep = (ev > rc * top) & (top > 0)
    inv_s = torch.where(keep, 1.0 / torch.where(keep, s, torch.ones_like(s)), torch.zeros_like(s))
    return Vh, inv_s
