"""Atomic output: every file is staged beside its destination with the umask's mode, fsync'd and moved into
place; `atomic_group` moves the files of one command together (both or neither).

Staged files and folders are named by `staging_name` (``.NAME.influent-HOST-PID-RANDOM.tmp``), so that a
later run can tell whose they are: `remove_stale` removes those of a process of this host that is gone (a
run killed with SIGKILL, or by a power loss, cannot clean up after itself). `move_new` is the exclusive
move (never replaces), used where an output may be written only if it does not exist yet.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
import socket
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


_GROUPS: list[list[tuple[Path, Path]]] = []  # open `atomic_group` blocks: (staged temporary, final path)
_NAME_PART = 100  # characters of the destination's name kept in a staging name (a name may have 255 in all)
_HOST = f"{zlib.crc32(socket.gethostname().encode()):08x}"[:6]
_STAGED = re.compile(r"^\..*\.influent-(?P<host>[0-9a-f]{6})-(?P<pid>\d+)-[0-9a-f]+\.tmp$", re.S)


def _umask() -> int:
    """The process umask (read by setting it and setting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _file_mode() -> int:
    """The mode a new file gets under the process umask (0666 & ~umask), as `open` would give it."""
    return 0o666 & ~_umask()


def staging_name(name: str) -> str:
    """The hidden name of a file or folder staged for `name`: ``.NAME.influent-HOST-PID-RANDOM.tmp`` (NAME cut
    to 100 characters, so that a long but valid name stays valid), recognised by `remove_stale`."""
    return f".{name[:_NAME_PART]}.influent-{_HOST}-{os.getpid()}-{secrets.token_hex(4)}.tmp"


def _alive(pid: int) -> bool:
    """Whether process `pid` of this host exists (a zombie counts; on Windows every process is taken to be
    alive: os.kill there would stop it, not probe it)."""
    if pid == os.getpid() or os.name == "nt":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process: alive
        return True
    return True


def remove_stale(folder: str | Path) -> list[Path]:
    """Remove the staged files and folders in `folder` (named by `staging_name`) whose process, on this host,
    is gone, e.g. killed with SIGKILL mid-write; returns what was removed. Never raises."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        m = _STAGED.match(entry.name)
        if m is None or m["host"] != _HOST or _alive(int(m["pid"])):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
            removed.append(Path(entry.path))
        except OSError:  # pragma: no cover - removed by another run meanwhile, or not ours to remove
            pass
    return removed


def staging_folder(prefix: str, dir: str | Path | None = None) -> Path:
    """A new empty folder named ``staging_name(prefix)`` in `dir` (default: the system's temporary folder)
    with the mode a new folder gets under the umask (0777 & ~umask), for output staged there and moved into
    place; stale staged entries of dead processes in `dir` are removed first."""
    import tempfile

    parent = Path(dir) if dir is not None else Path(tempfile.gettempdir())
    remove_stale(parent)
    name = prefix.strip(".-") or "influent"
    folder = parent / staging_name(name)
    try:
        folder.mkdir(mode=0o700)
    except OSError as exc:  # named by what is written, not by the hidden staging name
        raise _named(exc, parent / name) from None
    os.chmod(folder, 0o777 & ~_umask())
    return folder


def _named(exc: OSError, path: Path) -> OSError:
    """`exc` naming `path` (the destination) instead of a staging name, or no file at all."""
    if exc.errno is None or (exc.filename is not None and not _STAGED.match(Path(str(exc.filename)).name)):
        return exc
    return OSError(exc.errno, exc.strerror or os.strerror(exc.errno), str(path))


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


def _renameat2():
    """libc's renameat2 (Linux, glibc >= 2.28), or None."""
    try:
        import ctypes

        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # pragma: no cover - not Linux/glibc
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return fn


_RENAMEAT2: list[Any] = []


def move_new(src: str | Path, dest: str | Path) -> None:
    """Move file or folder `src` to `dest` (same filesystem) only if `dest` does not exist, atomically:
    of two processes moving to the same `dest`, exactly one succeeds and the other gets `FileExistsError`.
    Uses renameat2(RENAME_NOREPLACE) where the kernel and filesystem have it; otherwise a hard link (files)
    or an exclusive mkdir of `dest` and a rename onto that empty folder (folders)."""
    import ctypes

    src, dest = Path(src), Path(dest)
    if not _RENAMEAT2:
        _RENAMEAT2.append(_renameat2())
    fn = _RENAMEAT2[0]
    if fn is not None:
        if fn(-100, os.fsencode(src), -100, os.fsencode(dest), 1) == 0:  # AT_FDCWD, RENAME_NOREPLACE
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):  # anything but "not supported here"
            raise OSError(err, os.strerror(err), str(dest))  # EEXIST: FileExistsError
    if src.is_dir():
        os.mkdir(dest)  # FileExistsError if it exists: the claim
        try:
            os.rename(src, dest)  # onto our own empty folder; fails if another writer put files in it meanwhile
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dest)) from None
            os.rmdir(dest)
            raise
        return
    os.link(src, dest)  # FileExistsError if it exists
    os.unlink(src)


def atomic_write(path: str | Path, write: Any, replace: bool = True) -> Path:
    """Call `write(tmp_path)`, flush it to disk, give it the umask's mode and move it into place, so that
    readers never see a partial file. Inside an `atomic_group` block the move waits for the block's end.
    ``replace=False``: the move never replaces an existing `path` (`FileExistsError`; see `move_new`).
    An `OSError` without a file name (a full disk) is raised naming `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path.parent)
    tmp = path.parent / staging_name(path.name)
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError as exc:
        raise _named(exc, path) from None
    try:
        write(tmp)
        os.chmod(tmp, _file_mode())
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        if _GROUPS:
            _GROUPS[-1].append((tmp, path))
            return path
        os.replace(tmp, path) if replace else move_new(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise _named(exc, path) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


@contextmanager
def atomic_group(replace: bool = True) -> Iterator[None]:
    """Every `atomic_write` inside the block is staged, and all are moved into place together when the
    block ends; if it raises (or is interrupted), none is, and the staged files are removed.
    ``replace=False``: no file replaces an existing one; if one exists when the block ends, those already
    moved are taken back and `FileExistsError` is raised (of two processes writing the same new files,
    the one that moves the first file first wins)."""
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
    i = 0
    try:
        for i, (tmp, path) in enumerate(staged):
            os.replace(tmp, path) if replace else move_new(tmp, path)
    except BaseException:
        if not replace:  # the ones moved are ours and new: take them back
            for _, path in staged[:i]:
                path.unlink(missing_ok=True)
        for tmp, _ in staged[i:]:
            tmp.unlink(missing_ok=True)
        raise
    for folder in {path.parent for _, path in staged}:
        _fsync_dir(folder)
