"""The build cache verifies what it reuses; an interrupted or killed compile leaves nothing behind.

Pins the build-cache cases of issue 17: a truncated or replaced cached library is rebuilt, a cached
``.c`` is never compiled, old-layout entries are rebuilt, `kill -9`/KeyboardInterrupt/timeout end the
whole compiler process tree and leave no temporaries, and concurrent builds of one key agree."""

from __future__ import annotations

import ctypes
import dataclasses
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from pathlib import Path

import pytest

from tessera.errors import CompileError
from tessera.targets import build_shared_library, compiler_available, is_native, load_target
from tessera.targets import toolchain as tc

X86 = load_target("x86-avx2")
pytestmark = pytest.mark.skipif(not (is_native(X86) and compiler_available(X86)),
                                reason="needs an x86-64 AVX2 machine with gcc")
REPO = Path(__file__).resolve().parents[2]

SAXPY = """
#include <stddef.h>
void saxpy(float a, const float *x, float *y, size_t n) {
  for (size_t i = 0; i < n; ++i) y[i] = a * x[i] + y[i];
}
"""


def _constructor(marker: Path) -> str:
    return textwrap.dedent(f"""
    #include <stdio.h>
    __attribute__((constructor)) static void tsr_evil(void) {{
      FILE *f = fopen("{marker}", "w");
      if (f) {{ fputs("ran", f); fclose(f); }}
    }}
    """)


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv(tc.CACHE_ENV, str(root))
    monkeypatch.delenv(tc.TIMEOUT_ENV, raising=False)
    return root


@pytest.fixture
def compiles(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Every compiler run (not `--version`) from now on."""
    tc.compiler_version(shutil.which(X86.compiler.cc))  # memoize `gcc --version` first
    calls: list[list[str]] = []
    real_run = subprocess.run

    def spy(argv, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(list(argv))
        return real_run(argv, *args, **kwargs)

    monkeypatch.setattr(tc.subprocess, "run", spy)
    return calls


def _saxpy(lib: Path) -> list[float]:
    """Load ``lib`` (once per path: dlopen returns an already loaded library by name) and run it."""
    so = ctypes.CDLL(str(lib))
    so.saxpy.argtypes = [ctypes.c_float, ctypes.POINTER(ctypes.c_float), ctypes.POINTER(ctypes.c_float),
                         ctypes.c_size_t]
    n = 19
    xs, ys = (ctypes.c_float * n)(*range(n)), (ctypes.c_float * n)(*([1.0] * n))
    so.saxpy(2.0, xs, ys, n)
    return list(ys)


EXPECTED = [2.0 * i + 1.0 for i in range(19)]  # small integers: exact in f32


def _record(lib: Path) -> dict[str, object]:
    return json.loads(lib.with_suffix(".json").read_text())


def _leftovers(cache: Path) -> list[str]:
    """Temporaries anywhere in the build cache (private build directories, `*.tmp` files)."""
    build = cache / "build"
    found = [str(p.relative_to(build)) for p in (build / ".tmp").iterdir()] if (build / ".tmp").exists() else []
    return found + [p.name for p in build.glob("*.tmp") if p.is_file()]


def test_record_holds_hashes_of_source_and_library(cache: Path) -> None:
    lib = build_shared_library(SAXPY, X86, "saxpy")
    rec = _record(lib)
    assert rec["source_sha256"] == tc.hashlib.sha256(SAXPY.encode()).hexdigest()
    assert rec["library_sha256"] == tc.hashlib.sha256(lib.read_bytes()).hexdigest()
    assert rec["library_bytes"] == lib.stat().st_size and rec["key"] == lib.stem
    assert lib.with_suffix(".c").read_text() == SAXPY and _leftovers(cache) == []


def test_truncated_library_is_rebuilt_quietly(cache: Path, compiles: list[list[str]],
                                              caplog: pytest.LogCaptureFixture) -> None:
    lib = build_shared_library(SAXPY, X86, "saxpy")
    good = lib.read_bytes()
    assert len(compiles) == 1
    with open(lib, "r+b") as f:
        f.truncate(len(good) // 2)
    caplog.set_level(logging.DEBUG, logger=tc.__name__)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = build_shared_library(SAXPY, X86, "saxpy")
    assert again == lib and len(compiles) == 2  # rebuilt, no error
    assert again.stat().st_size == len(good) and _record(again)["library_sha256"] == tc.file_sha256(again)
    assert [r.levelno for r in caplog.records] == [logging.DEBUG]  # one debug line, nothing louder
    assert "library size differs" in caplog.records[0].getMessage()
    assert _saxpy(again) == EXPECTED
    build_shared_library(SAXPY, X86, "saxpy")
    assert len(compiles) == 2  # and the rebuilt entry is a hit again


def test_replaced_or_appended_library_is_never_loaded(cache: Path, tmp_path: Path,
                                                      compiles: list[list[str]]) -> None:
    marker = tmp_path / "marker"
    evil_src = SAXPY + _constructor(marker)  # same function, plus a constructor
    evil = build_shared_library(evil_src, X86, "evil")  # never loaded by this process
    subprocess.run([sys.executable, "-c", "import ctypes, sys; ctypes.CDLL(sys.argv[1])", str(evil)], check=True)
    assert marker.read_text() == "ran"  # the constructor does run when its library is loaded
    marker.unlink()
    for tamper in ("replace", "append"):
        lib = build_shared_library(SAXPY + f"// {tamper}\n", X86, "saxpy")
        n = len(compiles)
        if tamper == "replace":
            shutil.copyfile(evil, lib)
        else:
            with open(lib, "ab") as f:
                f.write(evil.read_bytes())
        again = build_shared_library(SAXPY + f"// {tamper}\n", X86, "saxpy")
        assert again == lib and len(compiles) == n + 1, tamper  # verification failed: rebuilt
        assert _record(again)["library_sha256"] == tc.hashlib.sha256(again.read_bytes()).hexdigest()
        assert _saxpy(again) == EXPECTED
        assert not marker.exists(), tamper


def test_cached_source_is_never_compiled(cache: Path, tmp_path: Path, compiles: list[list[str]]) -> None:
    marker = tmp_path / "marker"
    lib = build_shared_library(SAXPY, X86, "saxpy")
    c_path = lib.with_suffix(".c")
    # (a) the library is a hit: the tampered debug copy is put back, nothing compiled
    with open(c_path, "a") as f:
        f.write(_constructor(marker))
    assert build_shared_library(SAXPY, X86, "saxpy") == lib and len(compiles) == 1
    assert c_path.read_text() == SAXPY
    # (b) the library must be rebuilt: it is built from the source in memory, not from the file
    with open(c_path, "a") as f:
        f.write(_constructor(marker))
    lib.unlink()
    again = build_shared_library(SAXPY, X86, "saxpy")
    assert len(compiles) == 2 and str(c_path) not in compiles[-1]
    assert c_path.read_text() == SAXPY
    assert _saxpy(again) == EXPECTED
    assert not marker.exists()


@pytest.mark.parametrize("record", ["missing", "garbage", "other key", "wrong hash"])
def test_old_layout_and_bad_records_are_rebuilt(cache: Path, compiles: list[list[str]], record: str) -> None:
    lib = build_shared_library(SAXPY, X86, "saxpy")
    rec_path = lib.with_suffix(".json")
    rec = _record(lib)
    if record == "missing":  # the layout before records: <key>.c and <key>.so only
        rec_path.unlink()
    elif record == "garbage":
        rec_path.write_bytes(b"\x00{not json")
    elif record == "other key":
        rec_path.write_text(json.dumps({**rec, "key": "0" * 64}))
    else:
        rec_path.write_text(json.dumps({**rec, "library_sha256": "0" * 64}))
    assert build_shared_library(SAXPY, X86, "saxpy") == lib and len(compiles) == 2
    assert _record(lib) == rec  # gcc is deterministic here: the same library, a correct record again
    assert _saxpy(lib) == EXPECTED


def test_library_hash_is_memoized(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lib = build_shared_library(SAXPY, X86, "saxpy")
    hashed: list[object] = []
    real = tc.hashlib.file_digest
    monkeypatch.setattr(tc.hashlib, "file_digest", lambda f, d: hashed.append(f) or real(f, d))
    for _ in range(5):
        assert build_shared_library(SAXPY, X86, "saxpy") == lib
    assert hashed == []  # hashed once when built, remembered by (inode, size, mtime, ctime)
    os.utime(lib, ns=(lib.stat().st_atime_ns, lib.stat().st_mtime_ns))  # ctime moves: hash again
    build_shared_library(SAXPY, X86, "saxpy")
    assert len(hashed) == 1


# ---- interrupted builds ----------------------------------------------------------------------------
FAKE_CC = """#!/bin/sh
# a compiler that never finishes: it starts a child (like gcc's cc1) and waits for it
if [ "$1" = "--version" ]; then echo "fake-cc 1.0"; exit 0; fi
sleep 300 &
echo "$$ $!" > "$FAKE_CC_PIDS.new"; mv "$FAKE_CC_PIDS.new" "$FAKE_CC_PIDS"
wait
"""


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, killed and waiting to be reaped, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _wait_dead(pids: list[int], seconds: float = 5.0) -> list[int]:
    deadline = time.monotonic() + seconds
    while any(map(_alive, pids)) and time.monotonic() < deadline:
        time.sleep(0.02)
    return [p for p in pids if _alive(p)]


@pytest.fixture
def fake_cc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    script = tmp_path / "fake-cc"
    script.write_text(FAKE_CC)
    script.chmod(0o755)
    pids = tmp_path / "fake-cc.pids"
    monkeypatch.setenv("FAKE_CC_PIDS", str(pids))
    target = dataclasses.replace(X86, compiler=dataclasses.replace(X86.compiler, cc=str(script)))
    started: list[int] = []
    yield target, pids, started
    for pid in started:  # never leave a sleeper behind, even when the test fails
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


def _read_pids(path: Path, started: list[int], seconds: float = 10.0) -> list[int]:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < deadline, "the fake compiler never started"
        time.sleep(0.01)
    started += [int(p) for p in path.read_text().split()]
    return started


def test_compile_timeout_kills_the_compiler_tree(cache: Path, fake_cc, monkeypatch: pytest.MonkeyPatch) -> None:
    target, pids, started = fake_cc
    t0 = time.monotonic()
    with pytest.raises(CompileError, match=r"did not finish building 'slow' .* within 0\.5 s \(killed\).*"
                                           r"TESSERA_CC_TIMEOUT"):
        build_shared_library(SAXPY, target, "slow", timeout=0.5)
    assert time.monotonic() - t0 < 10
    assert _wait_dead(_read_pids(pids, started)) == []
    assert _leftovers(cache) == [] and not list((cache / "build").glob("*.so"))
    assert list((cache / "build").glob("*.c"))  # the source stays for the message
    pids.unlink()
    monkeypatch.setenv(tc.TIMEOUT_ENV, "0.3")  # the environment sets the default
    with pytest.raises(CompileError, match=r"within 0\.3 s"):
        build_shared_library(SAXPY, target, "slow")
    assert _wait_dead(_read_pids(pids, started)) == []
    for bad in ("soon", "0", "-1", "inf", "nan"):
        monkeypatch.setenv(tc.TIMEOUT_ENV, bad)
        with pytest.raises(CompileError, match=rf"TESSERA_CC_TIMEOUT='{bad}' is not a positive number of seconds"):
            build_shared_library(SAXPY, target, "slow")


def test_compiler_that_writes_nothing_is_a_compile_error(cache: Path, tmp_path: Path) -> None:
    script = tmp_path / "lazy-cc"
    script.write_text('#!/bin/sh\n[ "$1" = "--version" ] && echo "lazy-cc 1.0"\nexit 0\n')
    script.chmod(0o755)
    lazy = dataclasses.replace(X86, compiler=dataclasses.replace(X86.compiler, cc=str(script)))
    with pytest.raises(CompileError, match=r"reported success building 'lazy' .* but wrote no output"):
        build_shared_library(SAXPY, lazy, "lazy")
    assert _leftovers(cache) == [] and not list((cache / "build").glob("*.so"))


def test_keyboard_interrupt_kills_the_compiler_and_cleans_up(cache: Path, fake_cc) -> None:
    target, pids, started = fake_cc
    main = threading.get_ident()

    def interrupt() -> None:
        deadline = time.monotonic() + 10
        while not pids.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        signal.pthread_kill(main, signal.SIGINT)  # Ctrl-C while the compiler runs

    threading.Thread(target=interrupt, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        build_shared_library(SAXPY, target, "interrupted")
    assert _wait_dead(_read_pids(pids, started)) == []
    assert _leftovers(cache) == [] and not list((cache / "build").glob("*.so"))
    lib = build_shared_library(SAXPY, X86, "saxpy")  # a later build works
    assert _saxpy(lib) == EXPECTED and _leftovers(cache) == []


def _big_source(functions: int) -> str:
    """C that keeps gcc -O3 busy for seconds (nested loops it vectorizes and unrolls)."""
    return "\n".join(f"""
void k{i}(const float *restrict a, const float *restrict b, float *restrict c, int n) {{
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j) {{
      float acc = 0.0f;
      for (int k = 0; k < n; ++k) acc += a[i * n + k] * b[k * n + j] + (float){i} * a[k];
      c[i * n + j] = acc > 0.0f ? acc : {i}.0f * acc;
    }}
}}""" for i in range(functions))


def _descendants(root: int) -> dict[int, str]:
    """Running descendants of ``root``: pid -> command name, from /proc."""
    parents: dict[int, tuple[int, str]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            name, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
            if rest[0] not in ("Z", "X"):
                parents[int(d.name)] = (int(rest[1]), name)
    found: dict[int, str] = {}
    for pid, (_, name) in parents.items():
        p = pid
        while p in parents and p != root:
            p = parents[p][0]
        if p == root and pid != root:
            found[pid] = name
    return found


def test_kill_9_of_a_compile_leaves_no_compiler_and_no_temporaries(cache: Path, tmp_path: Path) -> None:
    src = tmp_path / "big.c"
    src.write_text(_big_source(150))
    script = ("import sys; from pathlib import Path; from tessera.targets import build_shared_library, load_target; "
              "build_shared_library(Path(sys.argv[1]).read_text(), load_target('x86-avx2'), 'big')")
    proc = subprocess.Popen([sys.executable, "-c", script, str(src)], cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        deadline = time.monotonic() + 60
        tree: dict[int, str] = {}
        while "cc1" not in tree.values():  # gcc's compiler proper is at work
            assert proc.poll() is None and time.monotonic() < deadline, f"no cc1 seen (rc {proc.poll()})"
            time.sleep(0.05)
            tree = _descendants(proc.pid)
        assert any(n == "gcc" for n in tree.values()), tree
        assert list((cache / "build" / ".tmp").iterdir()), "the build's private directory exists while it runs"
        proc.kill()
        proc.wait()
        assert _wait_dead(list(tree)) == [], {p: n for p, n in tree.items() if _alive(p)}
    finally:
        proc.kill()
        proc.wait()
    assert not list((cache / "build").glob("*.so"))
    lib = build_shared_library(SAXPY, X86, "saxpy")  # the next build sweeps what the killed one left
    assert _leftovers(cache) == [] and _saxpy(lib) == EXPECTED


def _free_pid() -> int:
    pid = 4_000_000  # above the default pid_max: no such process
    while Path(f"/proc/{pid}").exists():
        pid += 1
    return pid


def test_sweep_removes_only_what_dead_builds_left(cache: Path) -> None:
    build = cache / "build"
    tmp = build / ".tmp"
    with tc._private_dir(build) as mine:
        unlocked = tmp / f"{os.getpid()}-unlocked"  # free lock, live pid (reused): the lock decides
        unlocked.mkdir()
        (unlocked / "lock").touch()
        (unlocked / "big.so").write_bytes(b"partial")
        no_lock_dead = tmp / f"{_free_pid()}-nolock"  # killed before it locked: its pid is gone
        no_lock_dead.mkdir()
        no_lock_live = tmp / f"{os.getpid()}-starting"  # a live build about to lock: kept
        no_lock_live.mkdir()
        tc._sweep(build)
        assert mine.is_dir() and (mine / "lock").is_file()
        assert not unlocked.exists() and not no_lock_dead.exists() and no_lock_live.is_dir()
    assert not mine.exists()


def test_old_layout_temporaries_are_swept_when_stale(cache: Path) -> None:
    build = cache / "build"
    build.mkdir(parents=True)
    key = "ab" * 32
    stale, fresh = build / f".{key}.x1y2.so.tmp", build / f".{key}.z3w4.so.tmp"
    stale.write_bytes(b"half a library")
    fresh.write_bytes(b"maybe a running old-version build")
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))
    build_shared_library(SAXPY, X86, "saxpy")
    assert not stale.exists() and fresh.exists()


def test_threads_building_one_key_compile_once(cache: Path, compiles: list[list[str]]) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:
        libs = list(pool.map(lambda _: build_shared_library(SAXPY, X86, "saxpy"), range(4)))
    assert len(set(libs)) == 1 and len(compiles) == 1
    assert _record(libs[0])["library_sha256"] == tc.hashlib.sha256(libs[0].read_bytes()).hexdigest()
    assert _saxpy(libs[0]) == EXPECTED and _leftovers(cache) == []


CONCURRENT = """
import hashlib, json, sys, time
from pathlib import Path
from tessera.targets import build_shared_library, load_target
from tessera.targets import toolchain as tc
runs = []
real = tc.subprocess.run
tc.subprocess.run = lambda argv, *a, **k: runs.append(argv) or real(argv, *a, **k)
go = Path(sys.argv[2])
while not go.exists():
    time.sleep(0.005)
lib = build_shared_library(Path(sys.argv[1]).read_text(), load_target("x86-avx2"), "same")
compiled = sum("-o" in argv for argv in runs)
print(json.dumps({"lib": str(lib), "sha": hashlib.sha256(lib.read_bytes()).hexdigest(), "compiled": compiled}))
"""


def test_two_processes_building_one_key_agree(cache: Path, tmp_path: Path) -> None:
    src = tmp_path / "mid.c"
    src.write_text(_big_source(12))
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", CONCURRENT, str(src), str(go)], cwd=REPO, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env={**os.environ, "PYTHONPATH": str(REPO)}) for _ in range(2)]
    time.sleep(0.5)  # both imported and waiting
    go.touch()
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        results.append(json.loads(out))
    assert results[0]["lib"] == results[1]["lib"] and results[0]["sha"] == results[1]["sha"]
    lib = Path(results[0]["lib"])
    assert _record(lib)["library_sha256"] == results[0]["sha"]
    assert sorted(r["compiled"] for r in results) == [0, 1]  # one compiled, the other waited and reused it
    assert _leftovers(cache) == []
