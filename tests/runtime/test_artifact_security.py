"""Artifacts that cannot corrupt memory: the library's own ABI against the manifest, duplicate and
unexpected zip members, one digest over every member, signatures, absurd sizes, malformed
manifests, file modes and output directories."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tessera.errors import TesseraError
from tessera.limits import ResourceLimitError
from tessera.runtime import artifact
from tessera.runtime.artifact import DIGEST, LIBRARY, MANIFEST, WEIGHTS, cache_dir, load_artifact, save_artifact
from tessera.runtime.compiled_model import CompiledModel
from tessera.runtime.program import ABI_MAGIC, ArtifactError, Manifest, TensorSpec, abi_words
from tessera.utils import OutputPathError, atomic_output

from .conftest import Fixture, build_fixture_library
from .test_artifact import X, Y, reseal

KEY = b"team secret"


@pytest.fixture
def model(fixture_lib: Fixture) -> CompiledModel:
    return CompiledModel(fixture_lib.library, fixture_lib.manifest(), fixture_lib.weights)


@pytest.fixture
def saved(model: CompiledModel, tmp_path: Path) -> Path:
    return save_artifact(model, tmp_path / "model.tsa")


@pytest.fixture(scope="module")
def aborting_lib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_fixture_library(tmp_path_factory.mktemp("abort") / "abort.so", "ABORT_ON_CALL")


def manifest_dict(path: Path) -> dict:
    return json.loads(zipfile.ZipFile(path).read(MANIFEST))


def nothing_extracted() -> bool:
    return not cache_dir().exists() or not list(cache_dir().iterdir())


# ---- 1. the library's ABI against the manifest -----------------------------------------------------
def test_fixture_library_abi_matches_the_encoding(fixture_lib: Fixture) -> None:
    """The hand-written words in fixture_model.c equal abi_words of the fixture manifest."""
    words = fixture_lib.manifest().abi_words()
    assert words[:6] == [ABI_MAGIC, 1, 128, 192, 2, 3]
    assert words[6:11] == [11, 128, 2, 4, 8]  # x: float32, 128 bytes, (4, 8)
    CompiledModel(fixture_lib.library, fixture_lib.manifest(), fixture_lib.weights)  # accepted


ABI_EDITS = {
    "arena": (lambda d: d.update(arena_bytes=4096), r"arena bytes: library 128, manifest 4096"),
    "input_shape": (lambda d: d["inputs"][0].update(shape=[1]), r"input 0 bytes: library 128, manifest 4"),
    "output_shape": (lambda d: d["outputs"][1].update(shape=[300]), r"output 1 bytes: library 24, manifest 2400"),
    "dtype": (lambda d: d["inputs"][0].update(dtype="int32"), r"input 0 dtype: library float32, manifest int32"),
    "dims": (lambda d: d["inputs"][0].update(shape=[8, 4]), r"input 0 dims: library \[4, 8\], manifest \[8, 4\]"),
    "count": (lambda d: d["outputs"].pop(), r"output count: library 3, manifest 2"),
    "extra_input": (lambda d: d["inputs"].append({"name": "z", "dtype": "float32", "shape": [2]}),
                    r"input count: library 2, manifest 3"),
}


@pytest.mark.parametrize("edit", sorted(ABI_EDITS))
def test_edited_sizes_are_refused_before_any_call(saved: Path, tmp_path: Path, edit: str, aborting_lib: Path) -> None:
    """A manifest edit (digest recomputed, as anyone can) that changes memory layout is refused;
    the same through CompiledModel for a library whose tsr_run/tsr_set_num_threads abort."""
    change, msg = ABI_EDITS[edit]
    d = manifest_dict(saved)
    change(d)
    out = reseal(saved, tmp_path / f"{edit}.tsa", MANIFEST, json.dumps(d).encode())
    with pytest.raises(ArtifactError, match=rf"{edit}.tsa.*does not match its library \({msg}\)"):
        load_artifact(out)
    weights = np.zeros(192, np.uint8)
    with pytest.raises(ArtifactError, match=rf"does not match its library \({msg}\); the artifact was modified"):
        CompiledModel(aborting_lib, Manifest.from_dict(d), weights)  # an aborting call would kill pytest


def test_weights_size_edit_is_refused(saved: Path, tmp_path: Path) -> None:
    """Weights resized consistently in the manifest and the blob: only the library knows better."""
    blob = bytes(256)
    d = {**manifest_dict(saved), "weights_nbytes": 256, "weights_sha256": hashlib.sha256(blob).hexdigest()}
    library = zipfile.ZipFile(saved).read(LIBRARY)
    out = artifact._write(tmp_path / "w.tsa", json.dumps(d).encode(), library, memoryview(blob), None)
    with pytest.raises(ArtifactError, match=r"w.tsa.*\(weights bytes: library 192, manifest 256\)"):
        load_artifact(out)


def test_library_side_mismatch_and_in_process_models(fixture_lib: Fixture, tmp_path: Path) -> None:
    other = build_fixture_library(tmp_path / "arena256.so", "ABI_ARENA=256")
    with pytest.raises(ArtifactError, match=r"arena256.so: manifest of model 'fixture' does not match its library "
                                            r"\(arena bytes: library 256, manifest 128\)"):
        CompiledModel(other, fixture_lib.manifest(), fixture_lib.weights)
    assert CompiledModel(other, fixture_lib.manifest(arena_bytes=256), fixture_lib.weights)(X, Y)[1].tolist() == [
        6, 0, -18]


def test_library_without_abi_is_refused(fixture_lib: Fixture, tmp_path: Path) -> None:
    lib = build_fixture_library(tmp_path / "noabi.so", "NO_ABI", "ABORT_ON_CALL")
    with pytest.raises(ArtifactError, match=r"noabi.so does not export its ABI \(tsr_abi\).*recompile the model"):
        CompiledModel(lib, fixture_lib.manifest(), fixture_lib.weights)


def test_later_manifest_edits_do_not_change_what_calls_allocate(model: CompiledModel) -> None:
    model.manifest.inputs = [TensorSpec("x", "float32", (1,)), TensorSpec("y", "int64", (3,))]
    np.testing.assert_array_equal(model(X, Y)[1], 2 * Y)


# ---- 2. zip members ---------------------------------------------------------------------------------
def zip_with(src: Path, dst: Path, extra: list[tuple[str, bytes]]) -> Path:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name it is asked to write
        for info in zin.infolist():
            zout.writestr(info, zin.read(info.filename))
        for name, data in extra:
            zout.writestr(name, data)
    return dst


@pytest.mark.parametrize("name", [MANIFEST, LIBRARY, WEIGHTS, DIGEST])
def test_duplicate_members_are_refused(saved: Path, tmp_path: Path, name: str) -> None:
    d = manifest_dict(saved)
    out = zip_with(saved, tmp_path / "dup.tsa", [(name, json.dumps({**d, "arena_bytes": 1 << 20}).encode())])
    with pytest.raises(ArtifactError, match=rf"dup.tsa is not a valid Tessera artifact \(duplicate member\(s\) "
                                            rf"'{name}'\)"):
        load_artifact(out)
    assert nothing_extracted()


def test_unexpected_members_are_refused(saved: Path, tmp_path: Path) -> None:
    out = zip_with(saved, tmp_path / "extra.tsa", [("run_me.sh", b"#!/bin/sh\n"), ("../x", b"")])
    with pytest.raises(ArtifactError, match=r"unexpected member\(s\) '../x', 'run_me.sh'"):
        load_artifact(out)


# ---- 3. one digest over every member, signatures ----------------------------------------------------
@pytest.fixture(scope="module")
def foreign_lib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_fixture_library(tmp_path_factory.mktemp("foreign") / "foreign.so", "MARKER", "TWICE_FACTOR=7")


def swap_library(saved: Path, out: Path, lib: bytes) -> Path:
    """The attack on format 1: replace the library and its hash in the manifest, digest untouched."""
    d = {**manifest_dict(saved), "library_sha256": hashlib.sha256(lib).hexdigest()}
    with zipfile.ZipFile(saved) as zin, zipfile.ZipFile(out, "w") as zout:
        for info in zin.infolist():
            data = {MANIFEST: json.dumps(d).encode(), LIBRARY: lib}.get(info.filename) or zin.read(info.filename)
            zout.writestr(info, data)
    return out


def test_swapped_library_and_hash_is_refused_unloaded(saved: Path, tmp_path: Path, foreign_lib: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "constructor-ran"
    monkeypatch.setenv("TSR_TEST_MARKER", str(marker))
    out = swap_library(saved, tmp_path / "swap.tsa", foreign_lib.read_bytes())
    with pytest.raises(ArtifactError, match=r"swap.tsa: digest mismatch over manifest.json, model.so, weights.bin"):
        load_artifact(out)
    assert not marker.exists() and nothing_extracted()


def test_signed_artifacts(model: CompiledModel, saved: Path, tmp_path: Path, foreign_lib: Path,
                          monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "constructor-ran"
    monkeypatch.setenv("TSR_TEST_MARKER", str(marker))
    signed = save_artifact(model, tmp_path / "signed.tsa", key=KEY)
    seal = json.loads(zipfile.ZipFile(signed).read(DIGEST))
    assert len(seal["hmac_sha256"]) == 64 and json.loads(zipfile.ZipFile(saved).read(DIGEST))["hmac_sha256"] is None
    np.testing.assert_array_equal(load_artifact(signed, key=KEY)(X, Y)[1], 2 * Y)
    np.testing.assert_array_equal(load_artifact(signed)(X, Y)[1], 2 * Y)  # no key set: the digest is checked
    with pytest.raises(ArtifactError, match=r"model.tsa: artifact is not signed, and a signing key is set"):
        load_artifact(saved, key=KEY)
    with pytest.raises(ArtifactError, match=r"signed.tsa: bad signature: .*not signed with this key"):
        load_artifact(signed, key="another key")
    # a foreign library, digest recomputed and signed with a key that is not the team's
    forged = reseal(signed, tmp_path / "forged.tsa", LIBRARY, foreign_lib.read_bytes(), key=b"attacker")
    with pytest.raises(ArtifactError, match=r"forged.tsa: bad signature"):
        load_artifact(forged, key=KEY)
    unsigned = reseal(signed, tmp_path / "unsigned.tsa", LIBRARY, foreign_lib.read_bytes())
    with pytest.raises(ArtifactError, match=r"unsigned.tsa: artifact is not signed"):
        load_artifact(unsigned, key=KEY)
    assert not marker.exists()
    with pytest.raises(ArtifactError, match="the artifact key must not be empty"):
        load_artifact(signed, key=b"")


def test_signing_key_from_the_environment(model: CompiledModel, saved: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TESSERA_ARTIFACT_KEY", KEY.decode())
    signed = save_artifact(model, tmp_path / "env.tsa")
    np.testing.assert_array_equal(load_artifact(signed)(X, Y)[1], 2 * Y)
    np.testing.assert_array_equal(load_artifact(signed, key=KEY)(X, Y)[1], 2 * Y)
    with pytest.raises(ArtifactError, match=r"not signed, and a signing key is set \(TESSERA_ARTIFACT_KEY"):
        load_artifact(saved)
    monkeypatch.setenv("TESSERA_ARTIFACT_KEY", "wrong")
    with pytest.raises(ArtifactError, match="bad signature"):
        load_artifact(signed)


def test_old_format_is_refused_clearly(saved: Path, tmp_path: Path) -> None:
    d = {**manifest_dict(saved), "format": "tessera-artifact/1"}
    out = tmp_path / "v1.tsa"
    with zipfile.ZipFile(saved) as zin, zipfile.ZipFile(out, "w") as zout:
        zout.writestr(MANIFEST, json.dumps(d))
        for name in (LIBRARY, WEIGHTS):
            zout.writestr(name, zin.read(name))
    with pytest.raises(ArtifactError, match=r"v1.tsa:manifest.json: artifact format 'tessera-artifact/1' was written "
                                            r"by an older Tessera.*recompile the model"):
        load_artifact(out)


def test_bad_digest_member(saved: Path, tmp_path: Path) -> None:
    for i, content in enumerate([b"[]", b"{", json.dumps({"format": "tessera-artifact/2", "sha256": "zz",
                                                          "hmac_sha256": None}).encode(), b"x" * 5000]):
        out = tmp_path / f"d{i}.tsa"
        with zipfile.ZipFile(saved) as zin, zipfile.ZipFile(out, "w") as zout:
            for info in zin.infolist():
                zout.writestr(info, content if info.filename == DIGEST else zin.read(info.filename))
        with pytest.raises(ArtifactError, match=rf"d{i}.tsa: digest.json"):
            load_artifact(out)


# ---- 4. absurd sizes ----------------------------------------------------------------------------------
@pytest.mark.parametrize("change", [
    {"arena_bytes": 1 << 62},
    {"inputs": [{"name": "x", "dtype": "float32", "shape": [1 << 30, 1 << 30]}, {"name": "y", "dtype": "int64",
                                                                                 "shape": [3]}]},
    {"outputs": [{"name": "big", "dtype": "float64", "shape": [1 << 58]}]},
])
def test_absurd_sizes_are_refused_before_allocating(saved: Path, tmp_path: Path, change: dict) -> None:
    out = reseal(saved, tmp_path / "big.tsa", MANIFEST, json.dumps({**manifest_dict(saved), **change}).encode())
    with pytest.raises(ResourceLimitError, match=r"model 'fixture' \(arena, weights, inputs and outputs\) needs"):
        load_artifact(out)


def test_sizes_beyond_int64_are_refused(saved: Path) -> None:
    d = {**manifest_dict(saved), "outputs": [{"name": "o", "dtype": "float64", "shape": [1 << 40, 1 << 40]}]}
    with pytest.raises(ArtifactError, match=r"tensor 'o': \(1099511627776, 1099511627776\) float64 is larger than "
                                            r"2\*\*63 bytes"):
        Manifest.from_dict(d)
    assert abi_words([], [TensorSpec("o", "uint8", (1 << 62,))], 0, 0)[-2:] == [1, 1 << 62]


# ---- 5. malformed manifests ----------------------------------------------------------------------------
def _base(fixture_lib: Fixture) -> dict:
    return json.loads(fixture_lib.manifest().to_json())


MALFORMED = {
    "nested": (lambda d: "[" * 100_000 + "]" * 100_000, "JSON nested too deeply"),
    "nested_obj": (lambda d: '{"a":' * 100_000 + "1" + "}" * 100_000, "JSON nested too deeply"),
    "list": (lambda d: [1, 2], "expected a JSON object, got list"),
    "string": (lambda d: "manifest", "expected a JSON object, got str"),
    "missing": (lambda d: {k: v for k, v in d.items() if k != "arena_bytes"}, "missing field 'arena_bytes'"),
    "arena_str": (lambda d: {**d, "arena_bytes": "128"}, r"field 'arena_bytes' must be an int in \[0, 2\*\*63\), "
                                                         "got '128'"),
    "arena_float": (lambda d: {**d, "arena_bytes": 128.0}, "field 'arena_bytes' must be an int"),
    "arena_bool": (lambda d: {**d, "arena_bytes": True}, "field 'arena_bytes' must be an int"),
    "negative": (lambda d: {**d, "weights_nbytes": -1}, "field 'weights_nbytes' must be an int"),
    "huge": (lambda d: {**d, "arena_bytes": 10**30}, "field 'arena_bytes' must be an int in"),
    "digits": (lambda d: json.dumps(d).replace('"arena_bytes": 128', '"arena_bytes": ' + "9" * 5000),
               "not valid JSON .*digits"),
    "target": (lambda d: {**d, "target": 3}, "field 'target' must be an object, got 3"),
    "arch": (lambda d: {**d, "target": {**d["target"], "arch": None}}, "field 'target.arch' must be a string"),
    "features": (lambda d: {**d, "target": {**d["target"], "features": [1]}}, "field 'target.features' must be a "
                                                                              "list of strings"),
    "inputs": (lambda d: {**d, "inputs": {"x": 1}}, "field 'inputs' must be a list"),
    "tensor": (lambda d: {**d, "inputs": [5]}, r"field 'inputs\[0\]' must be an object, got 5"),
    "shape": (lambda d: {**d, "inputs": [{**d["inputs"][0], "shape": "ab"}]}, r"field 'inputs\[0\].shape' must be "
                                                                              "a list"),
    "dim_bool": (lambda d: {**d, "outputs": [{**d["outputs"][0], "shape": [True]}]},
                 r"field 'outputs\[0\].shape' must be a list of int64 dims"),
    "dim_neg": (lambda d: {**d, "outputs": [{**d["outputs"][0], "shape": [-4, 8]}]}, "list of int64 dims >= 0"),
    "dtype": (lambda d: {**d, "inputs": [{**d["inputs"][0], "dtype": "U10"}]}, "dtype '<U10' is not a plain numeric"),
    "dtype_obj": (lambda d: {**d, "inputs": [{**d["inputs"][0], "dtype": "O"}]}, "not a plain numeric dtype"),
    "tensor_key": (lambda d: {**d, "inputs": [{**d["inputs"][0], "offset": 3}]},
                   r"unexpected field\(s\) \['offset'\] in inputs\[0\]"),
    "name": (lambda d: {**d, "outputs": [{**d["outputs"][0], "name": ""}]}, "tensor name must be a non-empty string"),
    "weight": (lambda d: {**d, "weights": [{"name": "w", "offset": -1, "nbytes": 4}]},
               r"field 'weights\[0\].offset' must be an int"),
    "memory": (lambda d: {**d, "memory": {"peak_activation_bytes": 1}}, "missing field 'memory.naive_activation"),
    "compile": (lambda d: {**d, "compile": {**d["compile"], "compile_seconds": "fast"}},
                "field 'compile.compile_seconds' must be a finite number"),
    "sha": (lambda d: {**d, "library_sha256": 5}, "field 'library_sha256' must be a string"),
    "unknown": (lambda d: {**d, "entry_point": "evil"}, r"unexpected field\(s\) \['entry_point'\] in the manifest"),
    "format": (lambda d: {**d, "format": ["x"] * 1000}, r"unsupported artifact format \['x', "),
    "dup_key": (lambda d: json.dumps(d)[:-1] + ', "arena_bytes": 4096}', "duplicate key 'arena_bytes'"),
    "no_outputs": (lambda d: {**d, "outputs": []}, "manifest declares no outputs"),
    "dup_names": (lambda d: {**d, "inputs": [d["inputs"][0], d["inputs"][0]]}, "duplicate input names"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_manifest(fixture_lib: Fixture, case: str) -> None:
    make, msg = MALFORMED[case]
    content = make(_base(fixture_lib))
    text = content if isinstance(content, str) and case not in ("string",) else json.dumps(content)
    with pytest.raises(ArtifactError, match=rf"^m.json: .*{msg}"):
        Manifest.from_json(text, source="m.json")


def test_malformed_manifest_through_load(saved: Path, tmp_path: Path) -> None:
    out = reseal(saved, tmp_path / "deep.tsa", MANIFEST, b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(ArtifactError, match=r"deep.tsa:manifest.json: not a manifest \(JSON nested too deeply\)"):
        load_artifact(out)
    out = reseal(saved, tmp_path / "type.tsa", MANIFEST, json.dumps({**manifest_dict(saved), "inputs": 1}).encode())
    with pytest.raises(ArtifactError, match=r"type.tsa:manifest.json: field 'inputs' must be a list, got 1"):
        load_artifact(out)


# ---- 6. file modes -------------------------------------------------------------------------------------
@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


@pytest.mark.parametrize("how", ["anonymous", "named"])
def test_modes_follow_the_umask(model: CompiledModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                umask_027: None, how: str) -> None:
    from tessera import utils

    if how == "named":
        monkeypatch.setattr(utils, "_open_anonymous", lambda directory, mode: None)
    path = save_artifact(model, tmp_path / "m.tsa")
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    loaded = load_artifact(path)
    assert stat.S_IMODE(loaded.library_path.stat().st_mode) == 0o750  # the cached library is executable
    with atomic_output(tmp_path / "other.txt") as tmp:
        tmp.write_text("x")
    assert stat.S_IMODE((tmp_path / "other.txt").stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")) == []


# ---- 7. output directories -----------------------------------------------------------------------------
def test_missing_output_directory_is_not_created(model: CompiledModel, tmp_path: Path) -> None:
    target = tmp_path / "nonexistent" / "x.tsa"
    with pytest.raises(OutputPathError, match=r"cannot write .*x.tsa: the directory .*nonexistent does not exist"):
        save_artifact(model, target)
    assert not target.parent.exists()
    assert issubclass(OutputPathError, TesseraError) and issubclass(OutputPathError, OSError)
    (tmp_path / "file").write_text("")
    with pytest.raises(OutputPathError, match=r"the directory .*file is not a directory"):
        save_artifact(model, tmp_path / "file" / "x.tsa")
    (tmp_path / "d.tsa").mkdir()
    with pytest.raises(OutputPathError, match=r"cannot write .*d.tsa: it is a directory"):
        save_artifact(model, tmp_path / "d.tsa")


def test_atomic_output_default_still_makes_parents(tmp_path: Path) -> None:
    """Internal writers (build cache, tuning database, ...) keep getting their directories."""
    with atomic_output(tmp_path / "a" / "b" / "c.txt") as tmp:
        tmp.write_text("ok")
    assert (tmp_path / "a" / "b" / "c.txt").read_text() == "ok"
    with pytest.raises(OutputPathError, match="does not exist"), atomic_output(tmp_path / "no" / "x",
                                                                               make_parents=False):
        pass
    assert not (tmp_path / "no").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_unwritable_directory(model: CompiledModel, tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    with pytest.raises(OutputPathError, match=r"cannot write .*ro/x.tsa: Permission denied"):
        save_artifact(model, ro / "x.tsa")
