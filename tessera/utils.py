"""Small utilities shared by every layer (imports nothing from Tessera but :mod:`tessera.errors`)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from tessera.errors import TesseraError

__all__ = ["OutputPathError", "atomic_file", "atomic_output", "current_umask", "ContentHashed"]


class OutputPathError(TesseraError, OSError):
    """An output file cannot be written where it was asked for (missing directory, a directory in
    its place, no permission). Also an :class:`OSError`, so ``except OSError`` handlers still see it."""


def current_umask() -> int:
    """This process's umask, read without changing it where ``/proc`` allows (no race with threads)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _check_target(path: Path, make_parents: bool) -> None:
    parent = path.parent
    if make_parents:
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputPathError(f"cannot create the directory {parent} for {path}: {e.strerror or e}") from e
    elif not parent.is_dir():
        what = "is not a directory" if parent.exists() else "does not exist"
        raise OutputPathError(f"cannot write {path}: the directory {parent} {what}")
    if path.is_dir():
        raise OutputPathError(f"cannot write {path}: it is a directory")


def _temp_name(path: Path) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(tmp)


@contextmanager
def atomic_output(path: str | Path, *, make_parents: bool = True, mode: int = 0o666) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only on success.

    A failed writer never leaves a half-written file under the final name (a killed one may leave
    the hidden temporary). The final file gets ``mode & ~umask``, as ``open()`` would give it.
    ``make_parents=False`` refuses a missing directory (:class:`OutputPathError`) instead of creating it."""
    path = Path(path)
    _check_target(path, make_parents)
    try:
        tmp = _temp_name(path)
    except OSError as e:
        raise OutputPathError(f"cannot write {path}: {e.strerror or e}") from e
    try:
        yield tmp
        os.chmod(tmp, mode & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _open_anonymous(directory: Path, mode: int) -> int | None:
    """An unnamed file in ``directory`` (Linux ``O_TMPFILE``), or None where the OS or file system lacks it."""
    flag = getattr(os, "O_TMPFILE", None)
    if flag is None or not os.path.isdir("/proc/self/fd"):  # linking it into place needs /proc
        return None
    try:
        return os.open(directory, flag | os.O_WRONLY | getattr(os, "O_CLOEXEC", 0), mode)
    except OSError as e:
        if isinstance(e, PermissionError):
            raise
        return None  # EOPNOTSUPP, EISDIR (old kernels), EINVAL...: use a named temporary instead


def _link_into_place(fd: int, path: Path) -> None:
    """Give the unnamed file ``fd`` the name ``path`` (replacing a file there)."""
    # linkat(AT_SYMLINK_FOLLOW) on the /proc magic link; os.link uses linkat only with a dir fd
    procfd = os.open("/proc/self/fd", os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        try:
            os.link(str(fd), path, src_dir_fd=procfd, follow_symlinks=True)
            return
        except FileExistsError:
            pass
        for _ in range(100):
            tmp = path.with_name(f".{path.name}.{os.urandom(6).hex()}.tmp")
            try:
                os.link(str(fd), tmp, src_dir_fd=procfd, follow_symlinks=True)
            except FileExistsError:
                continue
            try:
                os.replace(tmp, path)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            return
        raise FileExistsError(f"no free temporary name beside {path}")
    finally:
        os.close(procfd)


@contextmanager
def atomic_file(path: str | Path, *, mode: int = 0o666, make_parents: bool = False) -> Iterator[BinaryIO]:
    """Yield a binary file that appears at ``path`` (complete, fsynced) only when the block succeeds.

    Where Linux allows it the data goes to an unnamed ``O_TMPFILE`` in the target directory that is
    linked into place at the end, so even a ``kill -9`` leaves nothing behind; elsewhere a hidden
    temporary beside ``path`` is renamed over it. The file gets ``mode & ~umask``. A missing
    directory raises :class:`OutputPathError` unless ``make_parents``."""
    path = Path(path)
    _check_target(path, make_parents)
    try:
        fd = _open_anonymous(path.parent, mode)
    except OSError as e:
        raise OutputPathError(f"cannot write {path}: {e.strerror or e}") from e
    if fd is None:
        with atomic_output(path, make_parents=False, mode=mode) as tmp, open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        return
    with open(fd, "wb", closefd=True) as f:
        yield f
        f.flush()
        os.fsync(f.fileno())
        _link_into_place(f.fileno(), path)


class ContentHashed:
    """Mixin for frozen dataclasses that have ``source`` and ``hash`` fields (both excluded from
    comparison): ``hash`` is the SHA-256 of the canonical JSON of every other field, so two
    descriptions with the same content have the same identity whatever file they came from."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "hash", hashlib.sha256(self.canonical().encode()).hexdigest())

    def canonical(self) -> str:
        """Canonical JSON of the content (everything except ``source`` and ``hash``)."""
        fields = dataclasses.fields(self)  # type: ignore[arg-type]
        d = {f.name: getattr(self, f.name) for f in fields if f.name not in ("source", "hash")}
        return json.dumps(d, sort_keys=True, separators=(",", ":"), default=dataclasses.asdict)
