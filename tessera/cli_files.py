"""Files the command line reads and writes for the user: output paths checked before any work,
``.npy`` inputs read without unpickling or oversized allocations, ``.npz`` outputs under any name.

Every failure is a :class:`~tessera.errors.TesseraError` naming the file (one line, exit status 2)."""

from __future__ import annotations

import math
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from tessera.errors import TesseraError
from tessera.limits import check_allocation

__all__ = ["check_npz_names", "check_output_path", "load_npy", "os_error_message", "save_npz"]

_ZIP_NAME_MAX = 0xFFFF  # a zip member's name length is a 16-bit field


def os_error_message(e: OSError) -> str:
    """``e`` as ``FILE: reason`` (both file names for a rename), or its text when it names no file."""
    if e.filename is None:
        return str(e)
    names = f"{e.filename}" + (f" -> {e.filename2}" if e.filename2 is not None else "")
    return f"{names}: {e.strerror or e}"


def _short(name: str, limit: int = 60) -> str:
    r = repr(name)
    return r if len(r) <= limit else f"{r[:limit]}... ({len(name)} characters)"


def check_output_path(path: str | os.PathLike[str], what: str) -> Path:
    """Refuse, before any work is done, an output path that cannot be written: a directory, a
    directory that does not exist (never created here), a parent that is a file, no permission."""
    p = Path(path)
    if str(path).endswith(("/", os.sep)) or p.name in ("", ".", "..") or p.is_dir():
        raise TesseraError(f"cannot write {what} {path}: it is a directory (give a file name)")
    parent = p.parent
    if not parent.is_dir():
        ancestor = parent
        while not ancestor.exists() and ancestor != ancestor.parent:
            ancestor = ancestor.parent
        if ancestor.exists() and not ancestor.is_dir():
            raise TesseraError(f"cannot write {what} {path}: {ancestor} is not a directory")
        raise TesseraError(f"cannot write {what} {path}: the directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise TesseraError(f"cannot write {what} {path}: no permission to write in {parent}")
    return p


def check_npz_names(names: list[str]) -> None:
    """Refuse output names that a zip member cannot hold, or that ``np.load`` would confuse."""
    given = set(names)
    for name in names:
        if "\0" in name:
            raise TesseraError(f"output {_short(name)} cannot be saved in an .npz: the name holds a NUL character")
        try:
            encoded = (name + ".npy").encode("utf-8")
        except UnicodeEncodeError as e:
            raise TesseraError(f"output {_short(name)} cannot be saved in an .npz: the name is not "
                               f"valid Unicode ({e.reason})") from None
        if len(encoded) > _ZIP_NAME_MAX:
            raise TesseraError(f"output {_short(name)} cannot be saved in an .npz: its name is {len(encoded)} "
                               f"bytes, a zip member's name at most {_ZIP_NAME_MAX}")
        if name + ".npy" in given:
            # np.load looks a key up as a member name first: "a.npy" would return output "a"
            raise TesseraError(f"outputs {_short(name)} and {_short(name + '.npy')} cannot both be saved in "
                               "one .npz (np.load would return the first for the second's name)")


def save_npz(path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray]) -> None:
    """Write ``arrays`` as an uncompressed ``.npz`` (``np.load(path)[name]`` gives each back under any
    name, ``file`` and ``allow_pickle`` included); the file appears complete or not at all."""
    from tessera.utils import atomic_file

    check_npz_names(list(arrays))
    try:
        with atomic_file(path) as f, zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            for name, value in arrays.items():
                with zf.open(name + ".npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)
    except OSError as e:
        if isinstance(e, TesseraError):
            raise
        raise TesseraError(f"cannot write outputs to {path}: {os_error_message(e)}") from e


def load_npy(name: str, file: str) -> np.ndarray:
    """The array in ``.npy`` file ``file`` (input ``name``): never unpickled, and its header checked
    against the file's size and the machine's memory before the data is read."""
    where = f"cannot read input {name!r} from {file}"
    try:
        with open(file, "rb") as f:
            head = f.read(6)
            if head.startswith(b"PK\x03\x04"):
                raise TesseraError(f"{where}: it is an .npz archive; give one array per input as a .npy file")
            if head != b"\x93NUMPY":
                raise TesseraError(f"{where}: not a .npy file" + (" (it is empty)" if not head else ""))
            f.seek(0)
            version = np.lib.format.read_magic(f)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, _, dtype = read_header(f)
            if dtype.hasobject:
                raise TesseraError(f"{where}: it holds Python objects ({dtype}), which are not loaded "
                                   "(they would be unpickled)")
            nbytes = math.prod(shape) * dtype.itemsize
            size = os.fstat(f.fileno()).st_size - f.tell()
            if nbytes > size:
                raise TesseraError(f"{where}: truncated: its header declares {dtype}{list(shape)} "
                                   f"({nbytes} bytes) but {size} bytes of data follow")
            check_allocation(nbytes, f"input {name!r} from {file}")
            f.seek(0)
            return np.load(f, allow_pickle=False)
    except TesseraError:
        raise
    except OSError as e:
        raise TesseraError(f"{where}: {e.strerror or e}") from e
    except (ValueError, EOFError, SyntaxError) as e:
        raise TesseraError(f"{where}: {e}") from e
