"""Atomic output: every file is staged beside its destination with the umask's mode, fsync'd and moved into
place; `atomic_group` moves the files of one command together (both or neither)."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


_GROUPS: list[list[tuple[Path, Path]]] = []  # open `atomic_group` blocks: (staged temporary, final path)


def _umask() -> int:
    """The process umask (read by setting it and setting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _file_mode() -> int:
    """The mode a new file gets under the process umask (0666 & ~umask), as `open` would give it."""
    return 0o666 & ~_umask()


def staging_folder(prefix: str, dir: str | Path | None = None) -> Path:
    """A new empty folder (`tempfile.mkdtemp` in `dir`) with the mode a new folder gets under the umask
    (0777 & ~umask), not mkdtemp's 0700, for output staged there and moved into place."""
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=dir))
    os.chmod(folder, 0o777 & ~_umask())
    return folder


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Any) -> Path:
    """Call `write(tmp_path)`, flush it to disk, give it the umask's mode and move it into place, so that
    readers never see a partial file. Inside an `atomic_group` block the move waits for the block's end."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.chmod(tmp, _file_mode())
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        if _GROUPS:
            _GROUPS[-1].append((tmp, path))
            return path
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


@contextmanager
def atomic_group() -> Iterator[None]:
    """Every `atomic_write` inside the block is staged, and all are moved into place together when the
    block ends; if it raises (or is interrupted), none is, and the staged files are removed."""
    staged: list[tuple[Path, Path]] = []
    _GROUPS.append(staged)
    try:
        yield
    except BaseException:
        _GROUPS.pop()
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise
    _GROUPS.pop()
    try:
        for i, (tmp, path) in enumerate(staged):
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in staged[i:]:
            tmp.unlink(missing_ok=True)
        raise
    for folder in {path.parent for _, path in staged}:
        _fsync_dir(folder)
