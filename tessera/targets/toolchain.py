"""C toolchain driver: content-addressed compile cache, cross-compilation, running under qemu-user.

Cache layout (``$TESSERA_CACHE_DIR`` or ``~/.cache/tessera``)::

    build/<key>.c      generated source, kept for debugging
    build/<key>.so     shared library      (build/<key>.exe for executables)
    compilers/<id>     `cc --version` of a compiler binary, keyed by its path/size/mtime

``key`` = sha256 of the source, the full compiler command (binary path and flags) and the compiler's
version string, so a hit needs no compiler process at all.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from tessera.errors import CompileError
from tessera.targets.host import host_arch, is_native
from tessera.targets.target import CpuTarget, TargetError
from tessera.utils import atomic_output

CACHE_ENV = "TESSERA_CACHE_DIR"
_COMPILER_ENV = {"LC_ALL": "C", "LANG": "C"}  # ASCII quotes in diagnostics, stable messages


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
        proc = subprocess.run([cc_path, "--version"], capture_output=True, text=True,
                              env={**os.environ, **_COMPILER_ENV}, check=False)
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


def build_shared_library(source: str, target: CpuTarget, name: str) -> Path:
    """Compile C ``source`` into a shared library for ``target`` (cached by content); return its path."""
    return _build(source, target, name, "shared", ".so")


def build_executable(source: str, target: CpuTarget, name: str) -> Path:
    """Compile C ``source`` (with ``main``) into an executable for ``target`` (cached); return its path."""
    return _build(source, target, name, "executable", ".exe")


def _build(source: str, target: CpuTarget, name: str, kind: str, suffix: str) -> Path:
    command = compile_command(target, kind)
    key = build_key(source, command, compiler_version(command[0]))
    out_dir = cache_dir() / "build"
    final = out_dir / f"{key}{suffix}"
    if final.exists():
        return final
    out_dir.mkdir(parents=True, exist_ok=True)
    c_path = out_dir / f"{key}.c"
    if not c_path.exists():
        with atomic_output(c_path) as tmp:
            tmp.write_text(source)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{key}.", suffix=f"{suffix}.tmp", dir=out_dir)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        proc = subprocess.run([*command, "-o", str(tmp), str(c_path), *target.compiler.ldflags],
                              capture_output=True, text=True, env={**os.environ, **_COMPILER_ENV}, check=False)
        if proc.returncode != 0:
            raise CompileError(_describe_failure(proc.stderr or proc.stdout, c_path, name, target, command))
        tmp.chmod(0o755)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
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
