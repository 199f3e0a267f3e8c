"""C toolchain driver: verified content-addressed compile cache, cross-compilation, running under qemu-user.

Cache layout (``$TESSERA_CACHE_DIR`` or ``~/.cache/tessera``)::

    build/<key>.so     shared library      (build/<key>.exe for executables)
    build/<key>.json   its record, written last: sha256 of the source and of the library
    build/<key>.c      generated source, kept for debugging (never compiled from there)
    build/.locks/NN    lock files (256 stripes) that serialize builds of one key across processes
    build/.tmp/PID-*   a build's private directory (gcc's output and temporaries), removed after it
    compilers/<id>     `cc --version` of a compiler binary, keyed by its path/size/mtime

``key`` = sha256 of the source, the full compiler command (binary path and flags) and the compiler's
version string, so a hit needs no compiler process at all. A library is reused only if its record
names this source and its sha256 matches (memoized per file identity); anything else (a truncated or
replaced file, an entry of the old layout without a record) is rebuilt from the source in memory.
The compiler runs in its own process group, tied to this process by a pipe: if this process dies
(even by SIGKILL) or the build is interrupted, the whole group (gcc, cc1, as, ld) is killed; a
private directory whose owner is gone (its ``flock`` is free) is removed by the next build.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import math
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from tessera.errors import CompileError
from tessera.targets.host import host_arch, is_native
from tessera.targets.target import CpuTarget, TargetError
from tessera.utils import atomic_output

CACHE_ENV = "TESSERA_CACHE_DIR"
TIMEOUT_ENV = "TESSERA_CC_TIMEOUT"
DEFAULT_TIMEOUT_S = 1800.0  # generous: the largest zoo models compile in well under a minute
_COMPILER_ENV = {"LC_ALL": "C", "LANG": "C"}  # ASCII quotes in diagnostics, stable messages
_RECORD_FORMAT = 1
_LOCK_STRIPES = 256
_STALE_S = 3600.0  # age after which an unlocked or old-layout temporary is surely abandoned
_log = logging.getLogger(__name__)


def cache_dir() -> Path:
    """Root of the compile cache (read from the environment on every call)."""
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "tessera"


def compiler_name(target: CpuTarget) -> str:
    """The C compiler binary for ``target`` on this machine (cross compiler for a foreign arch)."""
    if target.arch == host_arch():
        return target.compiler.cc
    if not target.compiler.cross_cc:
        raise CompileError(f"target {target.name} ({target.arch}) has no cross compiler (compiler.cross_cc) "
                           f"and this machine is {host_arch()}")
    return target.compiler.cross_cc


def compiler_available(target: CpuTarget) -> bool:
    """Whether the C compiler for ``target`` is installed."""
    try:
        return shutil.which(compiler_name(target)) is not None
    except CompileError:
        return False


def runner_available(target: CpuTarget) -> bool:
    """Whether executables for ``target`` can run here (natively, or under its emulator)."""
    if is_native(target):
        return True
    runner = target.compiler.runner
    return target.arch != host_arch() and bool(runner) and shutil.which(runner[0]) is not None


def _install_hint(packages: Sequence[str]) -> str:
    if not packages:
        return "install it"
    return f"install it (Debian/Ubuntu: apt-get install {' '.join(packages)}, or run scripts/setup.sh)"


def _resolve_compiler(target: CpuTarget) -> str:
    cc = compiler_name(target)
    path = shutil.which(cc)
    if path is None:
        raise CompileError(f"C compiler '{cc}' for target {target.name} not found; "
                           f"{_install_hint(target.compiler.packages)}")
    return path


_version_memo: dict[tuple[str, str, int, int], str] = {}


def compiler_version(cc_path: str) -> str:
    """``cc --version`` output, memoized in-process and on disk by the binary's identity."""
    real = os.path.realpath(cc_path)
    st = os.stat(real)
    ident = (real, st.st_size, st.st_mtime_ns)
    memo_key = (str(cache_dir()), *ident)
    if memo_key in _version_memo:
        return _version_memo[memo_key]
    record = cache_dir() / "compilers" / hashlib.sha256(repr(ident).encode()).hexdigest()[:32]
    try:
        version = record.read_text()
    except OSError:
        try:
            proc = subprocess.run([cc_path, "--version"], capture_output=True, text=True, errors="replace",
                                  env={**os.environ, **_COMPILER_ENV}, timeout=60, check=False)
        except subprocess.TimeoutExpired as e:
            raise CompileError(f"'{cc_path} --version' did not answer within 60 s") from e
        version = proc.stdout.strip() or proc.stderr.strip()
        with atomic_output(record) as tmp:
            tmp.write_text(version)
    _version_memo[memo_key] = version
    return version


def compile_command(target: CpuTarget, kind: str) -> list[str]:
    """The compiler command (without source/output) for ``kind`` "shared" or "executable"."""
    cmd = [_resolve_compiler(target), *target.compiler.flags]
    return cmd + ["-shared"] if kind == "shared" else cmd


def build_key(source: str, command: Sequence[str], version: str) -> str:
    """Content address of one build."""
    blob = json.dumps({"source": source, "command": list(command), "version": version}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def compile_timeout() -> float:
    """Seconds one compiler run may take: ``$TESSERA_CC_TIMEOUT`` or :data:`DEFAULT_TIMEOUT_S`."""
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_TIMEOUT_S
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise CompileError(f"${TIMEOUT_ENV}={raw!r} is not a positive number of seconds")
    return seconds


def build_shared_library(source: str, target: CpuTarget, name: str, timeout: float | None = None) -> Path:
    """Compile C ``source`` into a shared library for ``target`` (cached by content); return its path.

    ``timeout`` (seconds, default :func:`compile_timeout`) bounds the compiler run."""
    return _build(source, target, name, "shared", ".so", timeout)


def build_executable(source: str, target: CpuTarget, name: str, timeout: float | None = None) -> Path:
    """Compile C ``source`` (with ``main``) into an executable for ``target`` (cached); return its path."""
    return _build(source, target, name, "executable", ".exe", timeout)


# ---- verification --------------------------------------------------------------------------------
_hash_memo: dict[tuple[int, ...], str] = {}


def _identity(st: os.stat_result) -> tuple[int, ...]:
    # ctime cannot be set from user space: a rewrite that restores size and mtime still changes it
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, memoized in-process by the file's identity (inode, size, mtime, ctime)."""
    with open(path, "rb") as f:
        ident = _identity(os.fstat(f.fileno()))
        if ident in _hash_memo:
            return _hash_memo[ident]
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    if len(_hash_memo) > 4096:
        _hash_memo.clear()
    _hash_memo[ident] = digest
    return digest


def _read_record(path: Path) -> dict[str, object] | None:
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read(1 << 16))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _verified(final: Path, key: str, source_sha: str) -> str | None:
    """Why the cache entry at ``final`` cannot be reused, or None when it can."""
    record = _read_record(final.with_suffix(".json"))
    if record is None:
        return "no readable record (missing, damaged, or an entry of the old layout)"
    if (record.get("format") != _RECORD_FORMAT or record.get("key") != key
            or record.get("source_sha256") != source_sha):
        return "record is not this build's"
    try:
        if final.stat().st_size != record.get("library_bytes"):
            return "library size differs from the record"
        if file_sha256(final) != record.get("library_sha256"):
            return "library sha256 differs from the record"
    except OSError as e:
        return f"library unreadable ({e.strerror})"
    return None


def _source_matches(path: Path, size: int, sha: str) -> bool:
    try:
        return path.stat().st_size == size and file_sha256(path) == sha
    except OSError:
        return False


# ---- private temporary directories -------------------------------------------------------------
def _tmp_root(out_dir: Path) -> Path:
    return out_dir / ".tmp"


@contextlib.contextmanager
def _private_dir(out_dir: Path) -> Iterator[Path]:
    """A fresh directory under ``build/.tmp`` named by our pid and locked (flock) while we live;
    removed on the way out, whatever happens. A directory whose lock is free is an orphan: swept."""
    root = _tmp_root(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    d = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=root))
    fd = -1
    try:
        # lock first, then publish the lock under its final name: a sweeper never sees it unlocked
        fd = os.open(d / "lock.new", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.rename(d / "lock.new", d / "lock")
        yield d
    finally:
        for _ in range(20):  # a compiler killed a moment ago may still be creating files in it
            shutil.rmtree(d, ignore_errors=True)
            if not d.exists():
                break
            time.sleep(0.01)
        if fd >= 0:
            os.close(fd)


def _sweep(out_dir: Path) -> None:
    """Remove what killed builds left: private directories whose lock no live process holds."""
    root = _tmp_root(out_dir)
    try:
        entries = list(os.scandir(root))
    except OSError:
        return
    now = time.time()
    for entry in entries:
        try:
            fd = os.open(os.path.join(entry.path, "lock"), os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            # killed between creating the directory and locking it, or its removal was cut short
            with contextlib.suppress(OSError):
                if not _pid_alive(entry.name) or now - entry.stat(follow_symlinks=False).st_mtime > _STALE_S:
                    _remove(entry.path)
            continue
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # its owner is alive
        else:
            _log.debug("removing %s, left by a build that did not finish", entry.path)
            _remove(entry.path)
        finally:
            os.close(fd)


def _pid_alive(name: str) -> bool:
    """Whether the process named by a private directory's ``PID-`` prefix exists (unknown: yes)."""
    pid = name.split("-", 1)[0]
    if not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            os.unlink(path)


_legacy_swept: set[str] = set()


def _sweep_legacy(out_dir: Path) -> None:
    """Once per process and cache: old-layout temporaries (``.<name>.*.tmp``) older than an hour."""
    if str(out_dir) in _legacy_swept:
        return
    _legacy_swept.add(str(out_dir))
    now = time.time()
    with contextlib.suppress(OSError):
        for entry in os.scandir(out_dir):
            if entry.name.startswith(".") and entry.name.endswith(".tmp"):
                with contextlib.suppress(OSError):
                    if now - entry.stat(follow_symlinks=False).st_mtime > _STALE_S:
                        _remove(entry.path)


@contextlib.contextmanager
def _key_lock(out_dir: Path, key: str) -> Iterator[None]:
    """Exclusive across processes and threads for builds of ``key`` (one of 256 stripes)."""
    locks = out_dir / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    fd = os.open(locks / f"{int(key[:8], 16) % _LOCK_STRIPES:02x}", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _publish_hashed(src: Path, dst: Path, sha: str) -> None:
    """:func:`_publish` a file whose sha256 we know, remembering it (the rename moved its ctime)."""
    with open(src, "rb") as f:
        os.replace(src, dst)
        _hash_memo[_identity(os.fstat(f.fileno()))] = sha


def _publish(src: Path, dst: Path, data: bytes | None = None) -> None:
    """Atomically put ``src`` (or ``data`` written to ``src``) at ``dst``: same filesystem, one rename."""
    if data is not None:
        with open(src, "wb") as f:
            f.write(data)
    os.replace(src, dst)


# ---- the compiler process --------------------------------------------------------------------------
_SH = "/bin/sh"
# $1: file for our pid (= the group id). Fd 0 is the read end of a pipe whose only writer is the
# Python process: a watcher blocks on it and kills the whole group when it reads EOF, i.e. when that
# process closes it (build ended by an exception) or dies (even by SIGKILL). On a normal end the
# wrapper stops the watcher itself and exits with the compiler's status.
_WRAPPER = r"""pidf=$1; shift
echo $$ >"$pidf"
exec 3<&0 </dev/null
"$@" 3<&- &
cc=$!
{ read -r _ <&3; kill -KILL 0; } >/dev/null 2>&1 &
w=$!
exec 3<&-
wait "$cc"; rc=$?
kill "$w" 2>/dev/null; wait "$w" 2>/dev/null
exit "$rc"
"""


def _run_compiler(argv: Sequence[str], work: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` in its own process group that cannot outlive this process or this call."""
    pid_file = work / "pgid"
    env = {**os.environ, **_COMPILER_ENV, "TMPDIR": str(work)}  # gcc's own temporaries die with us too
    r, w = os.pipe()
    try:
        return subprocess.run([_SH, "-c", _WRAPPER, "tessera-cc", str(pid_file), *argv], stdin=r,
                              capture_output=True, text=True, errors="replace", env=env, timeout=timeout,
                              start_new_session=True, check=False)
    except BaseException:
        _kill_group(pid_file)  # now, not only when the watcher wakes: the private dir goes next
        raise
    finally:
        os.close(w)
        os.close(r)


def _kill_group(pid_file: Path) -> None:
    try:
        pgid = int(pid_file.read_text())
    except (OSError, ValueError):
        return  # it never started: the closed pipe ends whatever did
    with contextlib.suppress(OSError):
        os.killpg(pgid, signal.SIGKILL)


# ---- the build -----------------------------------------------------------------------------------
def _build(source: str, target: CpuTarget, name: str, kind: str, suffix: str, timeout: float | None) -> Path:
    command = compile_command(target, kind)
    key = build_key(source, command, compiler_version(command[0]))
    out_dir = cache_dir() / "build"
    final = out_dir / f"{key}{suffix}"
    data = source.encode()
    source_sha = hashlib.sha256(data).hexdigest()
    c_path = out_dir / f"{key}.c"
    if _verified(final, key, source_sha) is None:
        if not _source_matches(c_path, len(data), source_sha):  # the debug copy is never trusted: rewrite it
            with contextlib.suppress(OSError), _private_dir(out_dir) as work:  # (a read-only cache still hits)
                _publish(work / c_path.name, c_path, data)
        return final
    limit = compile_timeout() if timeout is None else timeout
    out_dir.mkdir(parents=True, exist_ok=True)
    with _key_lock(out_dir, key):
        why = _verified(final, key, source_sha)  # another process may have built it meanwhile
        if why is None:
            return final
        if final.exists():
            _log.debug("rebuilding %s: %s", final, why)
        _sweep(out_dir)
        _sweep_legacy(out_dir)
        with _private_dir(out_dir) as work:
            src, out = work / c_path.name, work / final.name
            src.write_bytes(data)
            argv = [*command, "-o", str(out), str(src), *target.compiler.ldflags]
            try:
                proc = _run_compiler(argv, work, limit)
            except subprocess.TimeoutExpired as e:
                _publish(src, c_path)
                raise CompileError(f"C compiler did not finish building {name!r} for target {target.name} "
                                   f"within {limit:g} s (killed); generated source: {c_path}; "
                                   f"set ${TIMEOUT_ENV} to allow more") from e
            if proc.returncode != 0:
                _publish(src, c_path)
                stderr = (proc.stderr or proc.stdout).replace(str(src), str(c_path))
                raise CompileError(_describe_failure(stderr, c_path, name, target, command))
            if not out.is_file():
                raise CompileError(f"C compiler reported success building {name!r} for target {target.name} "
                                   f"but wrote no output (command: {' '.join(command)})")
            out.chmod(0o755)
            library_sha = file_sha256(out)
            record = {"format": _RECORD_FORMAT, "key": key, "source_sha256": source_sha,
                      "library_sha256": library_sha, "library_bytes": out.stat().st_size}
            final.with_suffix(".json").unlink(missing_ok=True)  # no moment with a new library and an old record
            _publish_hashed(src, c_path, source_sha)
            _publish_hashed(out, final, library_sha)
            _publish(work / "record.json", final.with_suffix(".json"), json.dumps(record).encode())
    return final


_IN_FUNCTION = re.compile(r"in function [`'\u2018\"]([^'`\u2019\"]+)['\u2019`\"]", re.IGNORECASE)
_ERROR = re.compile(r"(?:\berror\b|undefined reference)", re.IGNORECASE)


def error_functions(stderr: str) -> tuple[list[str], str]:
    """Functions that contain errors (from gcc/ld "In function 'NAME'" context lines) and the first error line."""
    current: str | None = None
    functions: list[str] = []
    first = ""
    for line in stderr.splitlines():
        m = _IN_FUNCTION.search(line)
        if m:
            current = m.group(1)
            continue
        if ": At top level:" in line:
            current = None
            continue
        if _ERROR.search(line) and "note:" not in line:
            first = first or line.strip()
            if current and current not in functions:
                functions.append(current)
    return functions, first or (stderr.strip().splitlines() or ["(no compiler output)"])[0]


def _describe_failure(stderr: str, c_path: Path, name: str, target: CpuTarget, command: Sequence[str]) -> str:
    functions, first = error_functions(stderr)
    where = f"in function(s) {', '.join(functions)}" if functions else "outside any function"
    return (f"C compiler failed building {name!r} for target {target.name}: errors {where}; "
            f"generated source: {c_path}; first error: {first} "
            f"(command: {' '.join(command)} -o <out> {c_path})")


def run_executable(target: CpuTarget, exe: str | os.PathLike[str], args: Sequence[str] = (),
                   timeout: float | None = 60.0) -> subprocess.CompletedProcess[str]:
    """Run ``exe`` built for ``target``: natively, or under the target's emulator (qemu-user) for a foreign
    arch. Returns the completed process (text output captured, no check); raises
    ``subprocess.TimeoutExpired`` after ``timeout`` seconds."""
    argv = [os.fspath(exe), *map(str, args)]
    if not is_native(target):
        if target.arch == host_arch():
            raise TargetError(f"this machine lacks ISA features of target {target.name} "
                              f"({', '.join(target.isa)}); its code cannot run here")
        runner = target.compiler.runner
        if not runner:
            raise TargetError(f"target {target.name} ({target.arch}) has no emulator (compiler.runner) "
                              f"to run on this {host_arch()} machine")
        if shutil.which(runner[0]) is None:
            raise TargetError(f"emulator '{runner[0]}' for target {target.name} not found; "
                              f"{_install_hint(target.compiler.runner_packages)}")
        argv = [*runner, *argv]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
