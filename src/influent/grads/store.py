"""An on-disk, chunked, resumable store of per-sample gradients (zarr).

Layout under ``root/<key>/``: array ``g`` (n, p) chunked by rows, and array ``done`` (n_chunks,) int8.
A chunk's flag is set only after its rows are written, so an interrupted run recomputes exactly the
chunks that are not marked done. The key combines the model fingerprint (analysed parameter names and
values), the data fingerprint and the chunking, so a changed model or data set never reads stale rows.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import zarr

from ..data.validate import InputError


def store_key(model_fingerprint: str, data_fingerprint: str, param_names: list[str], extra: str = "") -> str:
    h = hashlib.sha256(json.dumps([model_fingerprint, data_fingerprint, param_names, extra]).encode())
    return h.hexdigest()[:20]


class GradientStore:
    """Rows of per-sample gradients on disk, written chunk by chunk.

    Parameters
    ----------
    root : folder holding one sub-folder per key
    key : see `store_key`
    n, p : number of samples and of analysed parameters
    chunk_rows : rows per chunk (the unit of resumption)
    dtype : numpy dtype of the stored gradients
    """

    def __init__(self, root: str | Path, key: str, n: int, p: int, chunk_rows: int, dtype: str = "float32") -> None:
        self.path = Path(root) / key
        self.n, self.p, self.chunk_rows = int(n), int(p), int(chunk_rows)
        self.n_chunks = (self.n + self.chunk_rows - 1) // self.chunk_rows
        self.path.mkdir(parents=True, exist_ok=True)
        meta = self.path / "meta.json"
        spec = {"n": self.n, "p": self.p, "chunk_rows": self.chunk_rows, "dtype": str(np.dtype(dtype))}
        if meta.exists():
            if json.loads(meta.read_text()) != spec:
                raise InputError(f"gradient store {self.path} was written with other settings; delete it to rebuild")
            mode = "r+"
        else:
            mode = "w"
        self.g = zarr.open_array(str(self.path / "g"), mode=mode, shape=(self.n, self.p),
                                 chunks=(self.chunk_rows, self.p), dtype=spec["dtype"])
        self.done = zarr.open_array(str(self.path / "done"), mode=mode, shape=(self.n_chunks,),
                                    chunks=(1,), dtype="int8", fill_value=0)
        if mode == "w":
            tmp = meta.with_suffix(".tmp")
            tmp.write_text(json.dumps(spec))
            tmp.replace(meta)

    def rows(self, ci: int) -> slice:
        return slice(ci * self.chunk_rows, min(self.n, (ci + 1) * self.chunk_rows))

    def missing(self) -> list[int]:
        flags = np.asarray(self.done[:])
        return [int(i) for i in np.flatnonzero(flags == 0)]

    def is_complete(self) -> bool:
        return not self.missing()

    def write(self, ci: int, block: np.ndarray) -> None:
        self.g[self.rows(ci)] = block
        self.done[ci] = 1

    def read(self, ci: int) -> np.ndarray:
        if not self.done[ci]:
            raise KeyError(f"chunk {ci} of {self.path} is not written yet")
        return np.asarray(self.g[self.rows(ci)])
