"""Malformed ``.tsr`` graph files: each gives a ModelLoadError naming the file and the problem."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tessera.errors import ModelLoadError
from tessera.graph.dtypes import DType
from tessera.graph.ir import Graph, Node
from tessera.graph.serialize import load_graph, save_graph
from tessera.graph.shape_inference import infer_shapes
from tessera.graph.symbolic import Sym
from tessera.graph.tensor_type import TensorType


def _graph() -> Graph:
    g = Graph("small")
    g.add_input("x", TensorType(DType.float32, (Sym.var("batch"), 4)))
    g.add_constant("w", np.arange(4, dtype=np.float32))
    g.nodes.append(Node("Add", ["x", "w"], ["y"], name="add"))
    g.nodes.append(Node("LeakyRelu", ["y"], ["z"], {"alpha": 0.5}, name="act"))
    g.outputs = ["z"]
    return infer_shapes(g)


def _members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def _write(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members:
            zf.writestr(name, data)
    return path


@pytest.fixture
def good(tmp_path: Path) -> Path:
    p = tmp_path / "good.tsr"
    save_graph(_graph(), p)
    return p


def _edit_doc(good: Path, tmp_path: Path, fn: Callable[[dict[str, Any]], Any]) -> Path:
    members = _members(good)
    doc = json.loads(members["graph.json"])
    fn(doc)
    members["graph.json"] = json.dumps(doc).encode()
    return _write(tmp_path / "bad.tsr", list(members.items()))


def test_good_file_loads_and_round_trips(good: Path) -> None:
    g = load_graph(good)
    assert str(g) == str(_graph())
    np.testing.assert_array_equal(g.constants["w"], np.arange(4, dtype=np.float32))


def test_not_a_zip_and_missing_and_empty(tmp_path: Path) -> None:
    (tmp_path / "text.tsr").write_text("hello")
    with pytest.raises(ModelLoadError, match=r"text\.tsr: corrupt Tessera graph file \(not a zip archive"):
        load_graph(tmp_path / "text.tsr")
    (tmp_path / "empty.tsr").write_bytes(b"")
    with pytest.raises(ModelLoadError, match=r"empty\.tsr: corrupt"):
        load_graph(tmp_path / "empty.tsr")
    with pytest.raises(ModelLoadError, match=r"cannot read .*missing\.tsr"):
        load_graph(tmp_path / "missing.tsr")
    with pytest.raises(ModelLoadError, match="cannot read"):
        load_graph(tmp_path)


@pytest.mark.parametrize("keep", [10, 100, 200, 400])
def test_truncated_file(good: Path, tmp_path: Path, keep: int) -> None:
    data = good.read_bytes()
    p = tmp_path / "cut.tsr"
    p.write_bytes(data[: len(data) - keep])
    with pytest.raises(ModelLoadError, match=r"cut\.tsr: corrupt Tessera graph file"):
        load_graph(p)


def test_flipped_bytes_in_constant_are_caught_by_the_zip_crc(good: Path, tmp_path: Path) -> None:
    data = bytearray(good.read_bytes())
    raw = np.arange(4, dtype=np.float32).tobytes()
    at = bytes(data).index(raw)
    data[at + 5] ^= 0xFF
    p = tmp_path / "flip.tsr"
    p.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match=r"flip\.tsr: corrupt Tessera graph file \(damaged zip data"):
        load_graph(p)


def test_missing_graph_json_and_missing_constant_member(good: Path, tmp_path: Path) -> None:
    members = _members(good)
    p = _write(tmp_path / "nojson.tsr", [(k, v) for k, v in members.items() if k != "graph.json"])
    with pytest.raises(ModelLoadError, match=r"nojson\.tsr: .*graph\.json: missing member 'graph\.json'"):
        load_graph(p)
    p = _write(tmp_path / "noconst.tsr", [(k, v) for k, v in members.items() if k == "graph.json"])
    with pytest.raises(ModelLoadError, match=r"noconst\.tsr: .*constant 'w': missing member 'const/0\.bin'"):
        load_graph(p)


def test_duplicate_members_are_refused(good: Path, tmp_path: Path) -> None:
    members = list(_members(good).items())
    with pytest.warns(UserWarning, match="Duplicate name"):
        p = _write(tmp_path / "dup.tsr", [*members, ("graph.json", members[0][1])])
    with pytest.raises(ModelLoadError, match=r"dup\.tsr: .*duplicate member 'graph\.json'"):
        load_graph(p)


@pytest.mark.parametrize(("text", "match"), [
    (b"{not json", "graph.json is not valid JSON"),
    (b"\xff\xfe\x00", "graph.json is not valid JSON"),
    (b"[" * 100_000 + b"]" * 100_000, "graph.json is nested too deeply"),
    (b"[1, 2]", "graph.json holds a list, not an object"),
    (b'{"format": "other/1"}', "not a Tessera graph file"),
])
def test_bad_json(good: Path, tmp_path: Path, text: bytes, match: str) -> None:
    members = _members(good)
    members["graph.json"] = text
    p = _write(tmp_path / "bad.tsr", list(members.items()))
    with pytest.raises(ModelLoadError, match=rf"bad\.tsr: corrupt Tessera graph file \({match}"):
        load_graph(p)


@pytest.mark.parametrize(("edit", "match"), [
    (lambda d: d.pop("nodes"), "graph has no 'nodes' field"),
    (lambda d: d.update(inputs="x"), "graph field 'inputs' is a str, not a list"),
    (lambda d: d.update(outputs=[1]), "graph outputs must be strings"),
    (lambda d: d.update(types=[]), "graph field 'types' is a list, not a dict"),
    (lambda d: d["types"].update(x=5), "type of 'x' is a int, not a string"),
    (lambda d: d["types"].update(x="f99[2]"), "type of 'x': unknown dtype 'f99'"),
    (lambda d: d["types"].update(x="f32[" + "+".join(["b"] * 5000) + "]"), "longer than 4096 tokens"),
    (lambda d: d["types"].update(x="f32[((((b]"), "type of 'x': cannot parse dimension"),
    (lambda d: d["nodes"].append(7), "node #2 is a int, not an object"),
    (lambda d: d["nodes"][0].update(op=None), "node #0 field 'op' is a NoneType, not a str"),
    (lambda d: d["nodes"][0].update(inputs=[None]), "Add node 'add' inputs must be strings"),
    (lambda d: d["nodes"][1]["attrs"].update(alpha={"float": "abc"}), "bad float 'abc'"),
    (lambda d: d["nodes"][1]["attrs"].update(alpha={"what": 1}), "unknown attribute encoding"),
    (lambda d: d["nodes"][1]["attrs"].update(alpha=[1.0]), "a bare list"),
    (lambda d: d["nodes"][0].update(op="NoSuchOp"), "unknown operator\\(s\\) 'NoSuchOp'"),
    (lambda d: d["constants"].append({"name": "w", "file": "const/0.bin"}), "constant 'w' is listed twice"),
    (lambda d: d["constants"].append({"name": "q", "file": "const/0.bin"}), "constant 'q' has no type"),
    (lambda d: d["types"].update(w="f32[5]"), r"constant 'w' is f32\[5\] \(20 bytes\) but member 'const/0.bin' "
                                              r"holds 16 bytes"),
    (lambda d: d["types"].update(w="f32[n]"), "constant 'w' has a symbolic shape"),
    (lambda d: d["metadata"].update(k=[1]), "metadata values must be strings"),
])
def test_wrong_fields(good: Path, tmp_path: Path, edit: Callable[[dict[str, Any]], Any], match: str) -> None:
    p = _edit_doc(good, tmp_path, edit)
    with pytest.raises(ModelLoadError, match=rf"bad\.tsr: corrupt Tessera graph file \(.*{match}"):
        load_graph(p)


def test_nested_attribute_lists_are_bounded(good: Path, tmp_path: Path) -> None:
    deep: Any = 1
    for _ in range(200):
        deep = {"list": [deep]}
    p = _edit_doc(good, tmp_path, lambda d: d["nodes"][1]["attrs"].update(alpha=deep))
    with pytest.raises(ModelLoadError, match="nested more than 32 levels deep"):
        load_graph(p)


def test_constant_asking_for_terabytes_is_refused_before_reading(good: Path, tmp_path: Path) -> None:
    p = _edit_doc(good, tmp_path, lambda d: d["types"].update(w="f32[1099511627776,4]"))
    with pytest.raises(ModelLoadError, match=r"bad\.tsr: constant 'w' of type f32\[1099511627776, 4\] needs 16\.0 TiB"):
        load_graph(p)
    big = {"tensor": "attr/9.bin", "dtype": "f32", "shape": [1 << 40, 1 << 10]}
    p = _edit_doc(good, tmp_path, lambda d: d["nodes"][1]["attrs"].update(alpha=big))
    with pytest.raises(ModelLoadError, match=r"attribute 'alpha' of type f32\[1099511627776, 1024\] needs 4\.0 PiB"):
        load_graph(p)


def test_a_structurally_valid_but_wrong_graph_is_an_error(good: Path, tmp_path: Path) -> None:
    p = _edit_doc(good, tmp_path, lambda d: d["types"].update(z="f32[3]"))
    with pytest.raises(ModelLoadError, match=r"bad\.tsr: invalid graph: .*output 'z' typed f32\[3\]"):
        load_graph(p)
    p = _edit_doc(good, tmp_path, lambda d: d["nodes"].reverse())
    with pytest.raises(ModelLoadError, match=r"invalid graph: .*uses 'y' before it is defined"):
        load_graph(p)
    p = _edit_doc(good, tmp_path, lambda d: d["nodes"][1]["attrs"].update(alpha="big"))
    with pytest.raises(ModelLoadError, match=r"invalid graph: .*attribute 'alpha' must be"):
        load_graph(p)
