"""Single-file artifacts: round trip, corruption/truncation detection, atomic save, cache,
architecture check, and loading in a fresh virtualenv that has only NumPy."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import venv
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tessera import utils
from tessera.runtime import artifact
from tessera.runtime.artifact import (
    DIGEST,
    LIBRARY,
    MANIFEST,
    WEIGHTS,
    cache_dir,
    load_artifact,
    read_manifest,
    save_artifact,
)
from tessera.runtime.compiled_model import CompiledModel
from tessera.runtime.program import ArtifactError, TargetInfo, host_cpu_features

from .conftest import Fixture

REPO = Path(__file__).resolve().parents[2]
X = np.arange(32, dtype=np.float32).reshape(4, 8) / 7
Y = np.array([3, 0, -9], dtype=np.int64)


@pytest.fixture
def model(fixture_lib: Fixture) -> CompiledModel:
    return CompiledModel(fixture_lib.library, fixture_lib.manifest(), fixture_lib.weights)


@pytest.fixture
def saved(model: CompiledModel, tmp_path: Path) -> Path:
    return save_artifact(model, tmp_path / "model.tsr")


def rewrite_member(src: Path, dst: Path, name: str, data: bytes) -> None:
    """Copy the zip ``src`` to ``dst`` with member ``name`` replaced (a valid zip, altered content)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info, data if info.filename == name else zin.read(info.filename))


def reseal(src: Path, dst: Path, name: str, data: bytes, key: bytes | None = None) -> Path:
    """Like :func:`rewrite_member`, with the digest recomputed (and signed with ``key``): what anyone
    can do without the signing key, so only the checks behind the digest stand in the way."""
    members = {n: zipfile.ZipFile(src).read(n) for n in (MANIFEST, LIBRARY, WEIGHTS)}
    members[name] = data
    return artifact._write(dst, members[MANIFEST], members[LIBRARY], memoryview(members[WEIGHTS]), key)


def test_round_trip(model: CompiledModel, saved: Path, fixture_lib: Fixture) -> None:
    assert sorted(zipfile.ZipFile(saved).namelist()) == sorted([MANIFEST, LIBRARY, WEIGHTS, DIGEST])
    loaded = load_artifact(saved)
    for a, b in zip(model(X, Y), loaded(X, Y), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(loaded(X, Y)[0], fixture_lib.expected(X, Y)[0], rtol=1e-6)
    m = loaded.manifest
    assert m.model_name == "fixture" and m.format == "tessera-artifact/2"
    assert [s.name for s in m.inputs] == ["x", "y"] and m.weights[1].name == "b"
    assert m.memory is not None and m.compile is not None and m.compile.tessera_version == "0.1.0"
    assert len(m.library_sha256) == 64 and len(m.weights_sha256) == 64
    assert read_manifest(saved) == m
    # the library is loaded from the content-addressed cache
    assert loaded.library_path == cache_dir() / f"{m.library_sha256}.so"
    assert loaded.library_path.read_bytes() == fixture_lib.library.read_bytes()
    assert loaded.weights.ctypes.data % 64 == 0


def test_save_after_build_dir_is_gone(fixture_lib: Fixture, tmp_path: Path) -> None:
    build = tmp_path / "build"
    build.mkdir()
    lib = build / "m.so"
    shutil.copy(fixture_lib.library, lib)
    model = CompiledModel(lib, fixture_lib.manifest(), fixture_lib.weights)
    shutil.rmtree(build)
    path = save_artifact(model, tmp_path / "m.tsr")
    np.testing.assert_array_equal(load_artifact(path)(X, Y)[1], 2 * Y)


def test_cache_dir_and_reuse(saved: Path, tmp_path: Path) -> None:
    assert cache_dir() == tmp_path / "cache" / "artifacts"
    first = load_artifact(saved).library_path
    mtime = first.stat().st_mtime_ns
    assert load_artifact(saved).library_path == first and first.stat().st_mtime_ns == mtime
    # a damaged cache entry is detected and rewritten (unlink first: the loaded library is mmapped)
    first.unlink()
    first.write_bytes(b"garbage")
    again = load_artifact(saved, num_threads=1)
    assert again.num_threads == 1
    assert first.read_bytes() == saved_library(saved)
    np.testing.assert_array_equal(again(X, Y)[1], 2 * Y)
    assert not list(first.parent.glob(".*.tmp"))


def saved_library(path: Path) -> bytes:
    return zipfile.ZipFile(path).read(LIBRARY)


@pytest.mark.parametrize("keep", [0, 10, 0.5, -1])
def test_truncated_artifact(saved: Path, keep: float) -> None:
    data = saved.read_bytes()
    n = int(len(data) * keep) if isinstance(keep, float) else (keep if keep >= 0 else len(data) + keep)
    saved.write_bytes(data[:n])
    with pytest.raises(ArtifactError, match=rf"{saved}.*(truncated or corrupt|not a valid)"):
        load_artifact(saved)


def test_missing_and_not_a_zip(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="artifact not found: .*nope.tsr"):
        load_artifact(tmp_path / "nope.tsr")
    junk = tmp_path / "junk.tsr"
    junk.write_text("hello")
    with pytest.raises(ArtifactError, match=r"junk.tsr is not a valid Tessera artifact"):
        load_artifact(junk)
    other = tmp_path / "other.zip"
    with zipfile.ZipFile(other, "w") as zf:
        zf.writestr(MANIFEST, "{}")
    with pytest.raises(ArtifactError, match="missing model.so, weights.bin"):
        load_artifact(other)


def test_corrupted_weights_hash_mismatch(saved: Path, fixture_lib: Fixture, tmp_path: Path) -> None:
    bad = bytearray(fixture_lib.weights.tobytes())
    bad[5] ^= 0xFF
    out = tmp_path / "bad.tsr"
    rewrite_member(saved, out, WEIGHTS, bytes(bad))
    with pytest.raises(ArtifactError, match=r"bad.tsr: digest mismatch over manifest.json, model.so, weights.bin"):
        load_artifact(out)


def test_corrupted_library_hash_mismatch(saved: Path, fixture_lib: Fixture, tmp_path: Path) -> None:
    lib = bytearray(fixture_lib.library.read_bytes())
    lib[-1] ^= 0x01
    out = tmp_path / "badlib.tsr"
    rewrite_member(saved, out, LIBRARY, bytes(lib))
    with pytest.raises(ArtifactError, match=r"badlib.tsr: digest mismatch .*corrupt or was modified"):
        load_artifact(out)
    # with the digest recomputed, the manifest's own record of the library still differs
    with pytest.raises(ArtifactError, match=r"badlib2.tsr: model.so sha256 differs from the manifest's"):
        load_artifact(reseal(saved, tmp_path / "badlib2.tsr", LIBRARY, bytes(lib)))
    assert not cache_dir().exists() or not list(cache_dir().iterdir())  # nothing extracted


def test_flipped_byte_in_file(saved: Path, fixture_lib: Fixture) -> None:
    data = bytearray(saved.read_bytes())
    pos = bytes(data).find(fixture_lib.weights.tobytes()[:32])  # stored weights lie verbatim in the zip
    assert pos > 0
    data[pos + 3] ^= 0x40
    saved.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=rf"{saved.name}: cannot read weights.bin \(truncated or corrupt"):
        load_artifact(saved)


def test_bad_manifest(saved: Path, tmp_path: Path) -> None:
    d = json.loads(zipfile.ZipFile(saved).read(MANIFEST))
    cases = {
        "fmt": ({**d, "format": "tessera-artifact/99"}, "unsupported artifact format 'tessera-artifact/99'"),
        "field": ({k: v for k, v in d.items() if k != "outputs"}, "missing field 'outputs'"),
        "dtype": ({**d, "inputs": [{"name": "x", "dtype": "floaty", "shape": [1]}]}, "unknown dtype 'floaty'"),
        "outside": ({**d, "weights_nbytes": 100}, r"weight 'w' \[0, 128\) lies outside the 100-byte weights blob"),
        "size": ({**d, "weights_nbytes": 100, "weights": []}, "weights.bin has 192 bytes, manifest declares 100"),
    }
    for key, (content, msg) in cases.items():
        out = reseal(saved, tmp_path / f"{key}.tsr", MANIFEST, json.dumps(content).encode())
        with pytest.raises(ArtifactError, match=msg):
            load_artifact(out)
    out = reseal(saved, tmp_path / "json.tsr", MANIFEST, b"{not json")
    with pytest.raises(ArtifactError, match=r"json.tsr:manifest.json: not valid JSON"):
        load_artifact(out)


def test_other_architecture_is_refused(model: CompiledModel, fixture_lib: Fixture, tmp_path: Path) -> None:
    arch = "aarch64" if model.manifest.target.arch != "aarch64" else "x86_64"
    model.manifest.target = TargetInfo(name="cortex-a76", hash="beef", arch=arch)
    path = save_artifact(model, tmp_path / "arm.tsr")
    with pytest.raises(ArtifactError, match=rf"arm.tsr: model 'fixture' was compiled for {arch}.*recompile"):
        load_artifact(path)
    assert not cache_dir().exists() or not list(cache_dir().iterdir())  # nothing extracted


@pytest.mark.skipif(host_cpu_features() is None, reason="no /proc/cpuinfo")
def test_missing_cpu_features_are_refused(model: CompiledModel, tmp_path: Path) -> None:
    t = model.manifest.target
    have = sorted(host_cpu_features() or ())[:2]
    model.manifest.target = TargetInfo(t.name, t.hash, t.arch, (*have, "tsr_fake_isa"))
    path = save_artifact(model, tmp_path / "isa.tsr")
    with pytest.raises(ArtifactError, match="needs CPU features tsr_fake_isa that this machine lacks"):
        load_artifact(path)


def test_failed_save_leaves_nothing(model: CompiledModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "out" / "model.tsr"
    path.parent.mkdir()

    def boom(src, dst) -> None:
        dst.write(bytes(src[:10]))
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(artifact, "_copy_chunks", boom)
    with pytest.raises(OSError, match="disk full"):
        save_artifact(model, path)
    assert list(path.parent.iterdir()) == []  # neither final file nor temporary left behind


def test_failed_save_keeps_previous_artifact(
    model: CompiledModel, saved: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = saved.read_bytes()
    monkeypatch.setattr(artifact, "_copy_chunks", lambda src, dst: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        save_artifact(model, saved)
    assert saved.read_bytes() == before
    assert [p.name for p in saved.parent.iterdir() if p.name.endswith(".tmp")] == []
    np.testing.assert_array_equal(load_artifact(saved)(X, Y)[1], 2 * Y)


KILLED_SAVE = """
import os, signal, sys
import numpy as np
from tessera import utils
from tessera import utils
from tessera.runtime import artifact
from tessera.runtime.compiled_model import CompiledModel
from tessera.runtime.program import Manifest
if sys.argv[2] == "named":  # an OS or file system without O_TMPFILE
    utils._open_anonymous = lambda directory, mode: None
m = Manifest.from_json(open(sys.argv[3]).read())
model = CompiledModel(sys.argv[4], m, np.load(sys.argv[5]))
def die(src, dst):
    dst.write(bytes(src[:10])); dst.flush()
    os.kill(os.getpid(), signal.SIGKILL)
artifact._copy_chunks = die
artifact.save_artifact(model, sys.argv[1])
"""


@pytest.mark.parametrize("how", ["anonymous", "named"])
def test_killed_save_leaves_nothing(model: CompiledModel, tmp_path: Path, how: str) -> None:
    """A writer SIGKILLed mid-save leaves nothing where O_TMPFILE works, at most one hidden,
    unloadable temporary where it does not; never a file under the final name."""
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    if how == "anonymous":
        probe = utils._open_anonymous(out_dir, 0o600)
        if probe is None:
            pytest.skip("this OS or file system has no O_TMPFILE (the 'named' case covers the fallback)")
        os.close(probe)
    path = out_dir / "killed.tsa"
    (tmp_path / "m.json").write_text(model.manifest.to_json())
    np.save(tmp_path / "w.npy", np.asarray(model.weights))
    args = [str(path), how, str(tmp_path / "m.json"), str(model.library_path), str(tmp_path / "w.npy")]
    proc = subprocess.run([sys.executable, "-c", KILLED_SAVE, *args], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr
    left = list(out_dir.iterdir())
    if how == "anonymous":
        assert left == []
    else:
        assert [p.name.startswith(".killed.tsa.") for p in left] == [True]
        with pytest.raises(ArtifactError):
            load_artifact(left[0])


def _numpy_wheel() -> Path | None:
    """A cached numpy wheel for this interpreter (pip's cache of locally built wheels), if any."""
    try:
        out = subprocess.run(
            [sys.executable, "-m", "pip", "cache", "list", "numpy", "--format=abspath"],
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    wheels = [Path(line) for line in out.splitlines() if line.endswith(".whl") and tag in line]
    return wheels[0] if wheels else None


@pytest.mark.slow
def test_fresh_virtualenv_with_only_numpy(saved: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True, system_site_packages=False).create(env_dir)
    py = env_dir / "bin" / "python"
    wheel = _numpy_wheel()
    cmd = [str(py), "-m", "pip", "install", "-q"]
    cmd += ["--no-index", "--find-links", str(wheel.parent), "numpy"] if wheel else ["numpy"]
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update(PYTHONPATH=str(REPO), PYTHONNOUSERSITE="1", TESSERA_CACHE_DIR=str(tmp_path / "venv-cache"))
    script = textwrap.dedent(
        f"""
        import importlib.util, json, sys
        import numpy as np
        from tessera.runtime.artifact import load_artifact
        model = load_artifact({str(saved)!r})
        x = np.arange(32, dtype=np.float32).reshape(4, 8) / 7
        y = np.array([3, 0, -9], dtype=np.int64)
        out = model.run_dict(x, y)
        print(json.dumps({{
            "sum": out["sum"].tolist(), "twice": out["twice"].tolist(),
            "absent": [m for m in ("torch", "onnx", "ml_dtypes") if importlib.util.find_spec(m) is None],
            "tessera_modules": sorted(m for m in sys.modules if m.startswith("tessera")),
            "numpy_file": np.__file__,
        }}))
        """
    )
    proc = subprocess.run([str(py), "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["absent"] == ["torch", "onnx", "ml_dtypes"]
    assert Path(res["numpy_file"]).is_relative_to(env_dir)
    assert all(
        m in ("tessera", "tessera.errors", "tessera.limits", "tessera.utils") or m.startswith("tessera.runtime")
        for m in res["tessera_modules"]
    )
    w = np.frombuffer(zipfile.ZipFile(saved).read(WEIGHTS), np.float32)
    np.testing.assert_allclose(np.array(res["sum"], np.float32), X + w[:32].reshape(4, 8) + w[32:40], rtol=1e-6)
    np.testing.assert_array_equal(res["twice"], 2 * Y)
    for mod in ("torch", "onnx", "ml_dtypes"):
        fail = subprocess.run([str(py), "-c", f"import {mod}"], env=env, capture_output=True, text=True)
        assert fail.returncode != 0 and "ModuleNotFoundError" in fail.stderr
