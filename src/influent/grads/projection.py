"""Random projections of per-sample gradients: g (p,) -> P g (k,) with E[P^T P] = I.

Three sketches, each reproducible from a seed and applied chunk by chunk (the (n, p) matrix is never built):

- ``"gaussian"``: P = R^T / sqrt(k), R (p, k) with N(0, 1) entries (the projection of TRAK, Park et al.
  2023, Sec. 3.2, and of the Johnson-Lindenstrauss lemma);
- ``"rademacher"``: the same with +-1 entries (Achlioptas, 2003);
- ``"sparse"``: a sparse Johnson-Lindenstrauss transform (Kane & Nelson, 2014, the block construction):
  the k rows are split into `nnz` blocks and every coordinate j of g lands in one hashed row of each block
  with a random sign and weight 1/sqrt(nnz). Applying it costs O(B p nnz) instead of O(B p k).

For all three, ``E[<P g, P h>] = <g, h>`` and ``E[|P g|^2] = |g|^2``. Dense kinds hold R in memory when
p * k <= 2^24 and otherwise regenerate it block by block (4096 rows of R per seed) on every chunk.
On the factorised linear-layer path a dense sketch is applied to the factors directly,
``P vec(delta a^T) = sum_{o,i} delta_o a_i R[(o, i), :] / sqrt(k)``, so the (B, p) chunk is not built either.
"""

from __future__ import annotations

from typing import Any

import torch

from ..data.validate import InputError, check_choice, check_number
from .linear import LayerFactors

KINDS = ("gaussian", "rademacher", "sparse")
_MAX_CACHED = 1 << 24  # entries of R kept in memory
_BLOCK = 4096  # rows of R drawn from one seed


class Projection:
    """A seeded random projection from p to `dim` dimensions.

    Parameters
    ----------
    p : input dimension (analysed parameters)
    dim : output dimension k
    kind : "gaussian" | "rademacher" | "sparse"
    seed : seed of the sketch (the same seed gives the same P)
    nnz : non-zeros per input coordinate of the sparse sketch (default 4; ignored by dense kinds)
    dtype : dtype of the projected rows
    device : device of the sketch and of the projected rows (the model's); P is drawn on the CPU from the
        seed and moved there, so the same seed gives the same P on every device
    """

    def __init__(self, p: int, dim: int, kind: str = "sparse", seed: int = 0, nnz: int = 4,
                 dtype: torch.dtype = torch.float64, device: torch.device | str | None = None) -> None:
        check_choice(kind, KINDS, "kind", unknown="projection kind")
        if int(dim) < 1:
            raise InputError(f"projection dim must be a positive integer, got {dim!r}")
        if kind == "sparse":
            check_number(nnz, "projection nnz", kind=int, low=1, high=int(dim))
        self.p, self.k, self.kind, self.seed, self.dtype = int(p), int(dim), kind, int(seed), dtype
        self.device = torch.device("cpu" if device is None else device)
        self.nnz = int(nnz) if kind == "sparse" else None
        self._R: torch.Tensor | None = None
        if kind == "sparse":
            self._hash, self._sign = self._sparse_tables()
        elif self.p * self.k <= _MAX_CACHED:
            self._R = self.rows(0, self.p)

    def spec(self) -> dict[str, Any]:
        """The settings that define P (saved with the scores, and part of a gradient-store key)."""
        out: dict[str, Any] = {"kind": self.kind, "dim": self.k, "seed": self.seed}
        if self.nnz is not None:
            out["nnz"] = self.nnz
        return out

    # -- dense kinds -------------------------------------------------------------------------------
    def _block(self, b: int) -> torch.Tensor:
        rows = min(_BLOCK, self.p - b * _BLOCK)
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + b)
        if self.kind == "gaussian":
            R = torch.randn(rows, self.k, generator=gen, dtype=torch.float64)
        else:
            R = torch.randint(0, 2, (rows, self.k), generator=gen, dtype=torch.int8).to(torch.float64) * 2 - 1
        return R.to(device=self.device, dtype=self.dtype)

    def rows(self, start: int, stop: int) -> torch.Tensor:
        """Rows start:stop of the unscaled R, shape (stop - start, k) (dense kinds)."""
        if self._R is not None:
            return self._R[start:stop]
        b0, b1 = start // _BLOCK, (stop - 1) // _BLOCK
        R = torch.cat([self._block(b) for b in range(b0, b1 + 1)])
        return R[start - b0 * _BLOCK:stop - b0 * _BLOCK]

    # -- sparse kind -------------------------------------------------------------------------------
    def _sparse_tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(nnz, p) target rows (block r covers rows edges[r]:edges[r+1]) and (nnz, p) signs."""
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + 7)
        edges = torch.linspace(0, self.k, self.nnz + 1).round().long()
        width = (edges[1:] - edges[:-1])[:, None]
        u = torch.rand(self.nnz, self.p, generator=gen, dtype=torch.float64)
        h = edges[:-1, None] + (u * width).long().clamp_max(width - 1)
        s = torch.randint(0, 2, (self.nnz, self.p), generator=gen).to(self.dtype) * 2 - 1
        return h.to(self.device), (s / self.nnz**0.5).to(self.device)

    # -- application -------------------------------------------------------------------------------
    def __call__(self, G: torch.Tensor) -> torch.Tensor:
        """(B, p) -> (B, k) projected rows P g_i."""
        G = G.to(device=self.device, dtype=self.dtype)
        if G.shape[1] != self.p:
            raise InputError(f"projection from {self.p} dimensions applied to rows of {G.shape[1]}")
        if self.kind == "sparse":
            Gt = G.T.contiguous()
            out = torch.zeros(self.k, G.shape[0], dtype=self.dtype, device=self.device)
            for r in range(self.nnz):
                out.index_add_(0, self._hash[r], Gt * self._sign[r][:, None])
            return out.T.contiguous()
        if self._R is not None:
            return G @ self._R / self.k**0.5
        out = torch.zeros(G.shape[0], self.k, dtype=self.dtype, device=self.device)
        for s in range(0, self.p, _BLOCK):
            out += G[:, s:s + _BLOCK] @ self.rows(s, min(self.p, s + _BLOCK))
        return out / self.k**0.5

    def vectors(self, V: torch.Tensor) -> torch.Tensor:
        """(p,) -> (k,) or (p, m) -> (k, m): directions in parameter space mapped to the projected space."""
        vec = V.ndim == 1
        out = self(V.reshape(self.p, -1).T).T
        return out[:, 0] if vec else out

    def transpose_block(self, start: int, stop: int) -> torch.Tensor:
        """(p, stop - start) columns start:stop of P^T (rows of P as columns), for building P H P^T."""
        if self.kind == "sparse":
            out = torch.zeros(self.p, stop - start, dtype=self.dtype, device=self.device)
            cols = torch.arange(self.p, device=self.device)
            for r in range(self.nnz):
                keep = (self._hash[r] >= start) & (self._hash[r] < stop)
                out.index_put_((cols[keep], self._hash[r][keep] - start), self._sign[r][keep], accumulate=True)
            return out
        out = torch.empty(self.p, stop - start, dtype=self.dtype, device=self.device)
        for s in range(0, self.p, _BLOCK):
            out[s:s + _BLOCK] = self.rows(s, min(self.p, s + _BLOCK))[:, start:stop]
        return out / self.k**0.5

    @property
    def factorisable(self) -> bool:
        """True when the sketch can be applied to linear-layer factors (dense kinds)."""
        return self.kind != "sparse"

    def from_factors(self, fa: list[LayerFactors], shapes: dict[str, torch.Size]) -> torch.Tensor:
        """(B, k) projected per-sample gradients from linear-layer factors, without the (B, p) rows.

        `shapes` maps each analysed parameter name to its shape, in the flat parameter order of P."""
        offset, i0 = {}, 0
        for name, shape in shapes.items():
            offset[name] = i0
            i0 += int(torch.Size(shape).numel())
        B = fa[0].a.shape[0]
        out = torch.zeros(B, self.k, dtype=self.dtype, device=self.device)
        for lf in fa:
            prefix = f"{lf.name}." if lf.name else ""
            delta, a = (lf.delta.to(device=self.device, dtype=self.dtype),
                        lf.a.to(device=self.device, dtype=self.dtype))
            d_out, d_in = delta.shape[1], a.shape[1]
            if lf.has_weight:
                s = offset[prefix + "weight"]
                R = self.rows(s, s + d_out * d_in).reshape(d_out, d_in * self.k)
                out += torch.einsum("bik,bi->bk", (delta @ R).reshape(B, d_in, self.k), a)
            if lf.has_bias:
                s = offset[prefix + "bias"]
                out += delta @ self.rows(s, s + d_out)
        return out / self.k**0.5


def make_projection(spec: Any, p: int, dtype: torch.dtype = torch.float64,
                    device: torch.device | str | None = None) -> Projection | None:
    """A `Projection` from an option value: None, a `Projection`, or a dict such as
    ``{"kind": "sparse", "dim": 4096, "seed": 0}`` (keys kind, dim, seed, nnz), on `device` (default CPU);
    a one-line `InputError` for anything else."""
    if spec is None:
        return None
    if isinstance(spec, Projection):
        if spec.p != p:
            raise InputError(f"projection is from {spec.p} dimensions, the model analyses {p} parameters")
        return spec
    if not isinstance(spec, dict):
        raise InputError(f"projection must be a mapping such as {{\"kind\": \"sparse\", \"dim\": 4096, \"seed\": 0}}, "
                         f"got {spec!r}")
    unknown = sorted(set(spec) - {"kind", "dim", "seed", "nnz"})
    if unknown:
        raise InputError(f"projection takes keys kind, dim, seed, nnz; unknown {unknown}")
    if "dim" not in spec:
        raise InputError("projection needs a dim, e.g. {\"kind\": \"sparse\", \"dim\": 4096}")
    try:
        dim, seed = int(spec["dim"]), int(spec.get("seed", 0))
        nnz = int(spec["nnz"]) if "nnz" in spec else min(4, max(1, dim))
    except (TypeError, ValueError):
        raise InputError(f"projection dim, seed and nnz must be integers, got {spec!r}") from None
    return Projection(p, dim, spec.get("kind", "sparse"), seed, nnz, dtype, device)
