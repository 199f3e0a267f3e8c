"""Host detection from /proc/cpuinfo and sysfs, the "host" name, and is_native."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import pytest

from tessera.targets import TargetError, host_target, is_native, load_target
from tessera.targets import host as host_mod

AVX2_FLAGS = frozenset("fpu sse sse2 ssse3 sse4_1 sse4_2 avx f16c fma avx2 bmi2".split())
AVX512_FLAGS = AVX2_FLAGS | {"avx512f", "avx512dq", "avx512bw", "avx512vl", "avx512cd"}


def _cpuinfo_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.split(":")[0].strip() in ("flags", "Features"):
            return set(line.split(":", 1)[1].split())
    return set()


@pytest.fixture
def fake_cpu(monkeypatch: pytest.MonkeyPatch):
    """Pretend to be a machine with the given arch and cpuinfo flags."""
    monkeypatch.delenv(host_mod.HOST_TARGET_ENV, raising=False)

    def apply(arch: str, flags: frozenset[str]) -> None:
        monkeypatch.setattr(host_mod, "host_arch", lambda: arch)
        monkeypatch.setattr(host_mod, "host_isa_features", lambda: flags)
        host_mod._host_target.cache_clear()

    yield apply
    host_mod._host_target.cache_clear()


@pytest.mark.skipif(platform.machine() != "x86_64" or not Path("/proc/cpuinfo").exists(), reason="needs x86-64 Linux")
def test_host_target_on_this_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(host_mod.HOST_TARGET_ENV, raising=False)
    flags = _cpuinfo_flags()
    assert {"avx2", "fma"} <= flags, "the development machines are AVX2+FMA"
    expected = "x86-avx512" if {"avx512f", "avx512dq", "avx512bw", "avx512vl"} <= flags else "x86-avx2"
    t = host_target()
    assert t.name == expected and is_native(t) and load_target("host") == t
    assert t.cores == len(os.sched_getaffinity(0)) and t.cores >= 1
    assert t.peak_gflops() == pytest.approx(t.cores * t.peak_gflops(1))
    l1 = Path("/sys/devices/system/cpu/cpu0/cache/index0")
    if (l1 / "size").exists() and (l1 / "type").read_text().strip() == "Data":
        size = (l1 / "size").read_text().strip()
        assert t.caches.l1d == int(size.rstrip("K")) * 1024
        assert t.caches.line == int((l1 / "coherency_line_size").read_text())
    # overriding cores/caches changes the hash (it keys the tuning database)
    assert t.hash != load_target(expected).hash and t.source == load_target(expected).source


def test_detection_rules(fake_cpu) -> None:
    fake_cpu("x86_64", AVX2_FLAGS)
    t = host_target()
    assert t.name == "x86-avx2" and t.cores == len(os.sched_getaffinity(0))
    fake_cpu("x86_64", AVX512_FLAGS)
    assert host_target().name == "x86-avx512"
    fake_cpu("aarch64", frozenset("fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics".split()))
    assert host_target().name == "arm-neon"
    fake_cpu("x86_64", frozenset("fpu sse sse2 avx".split()))  # AVX without AVX2: no description fits
    with pytest.raises(TargetError, match="no built-in target description fits"):
        host_target()


def test_env_override(fake_cpu, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_cpu("x86_64", AVX512_FLAGS)
    monkeypatch.setenv(host_mod.HOST_TARGET_ENV, "x86-avx2")
    assert host_target().name == "x86-avx2"


def test_is_native(fake_cpu) -> None:
    fake_cpu("x86_64", AVX2_FLAGS)
    assert is_native(load_target("x86-avx2"))
    assert not is_native(load_target("x86-avx512"))
    assert not is_native(load_target("arm-neon"))
    fake_cpu("aarch64", frozenset({"fp", "asimd"}))
    assert is_native(load_target("arm-neon")) and not is_native(load_target("x86-avx2"))


def test_sysfs_size_parsing() -> None:
    assert host_mod._parse_size("32K\n") == 32768 and host_mod._parse_size("2M") == 2 << 20
    assert host_mod._parse_size("512") == 512
