"""Save and load graphs as one ``.tsr`` file (a zip: ``graph.json`` plus raw constant bytes).

Round-trips exactly: names, attributes (including tensor and dtype attributes), symbolic
dims, constant bytes. Writing is atomic (temp file + rename).

Loading treats the file as untrusted: every malformed file (not a zip, truncated, duplicate or
missing members, bad or too deeply nested JSON, fields of the wrong type, constants whose bytes
do not match their declared type or that ask for more memory than the machine has, unknown
operators, an invalid graph) raises :class:`~tessera.errors.ModelLoadError` naming the file and
the problem; nothing else escapes.
"""

from __future__ import annotations

import json
import math
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from tessera.errors import ModelLoadError, TesseraError
from tessera.graph.dtypes import DType
from tessera.graph.ir import Graph, Node
from tessera.graph.tensor_type import TensorType
from tessera.limits import ResourceLimitError, check_allocation
from tessera.utils import atomic_output

FORMAT = "tessera-graph/1"
# attribute values nest lists at most a few levels (e.g. pads per axis); deeper is not a graph file
MAX_ATTR_DEPTH = 32


def _enc_attr(v: Any, blobs: dict[str, bytes]) -> Any:
    if isinstance(v, np.ndarray):
        key = f"attr/{len(blobs)}.bin"
        blobs[key] = np.ascontiguousarray(v).tobytes()
        return {"tensor": key, "dtype": DType.from_np(v.dtype).value, "shape": list(v.shape)}
    if isinstance(v, DType):
        return {"dtype": v.value}
    if isinstance(v, float):
        return {"float": repr(v)}
    if isinstance(v, (list, tuple)):
        return {"list": [_enc_attr(x, blobs) for x in v]}
    return v


def save_graph(g: Graph, path: str | Path) -> None:
    """Write ``g`` to ``path`` atomically."""
    path = Path(path)
    blobs: dict[str, bytes] = {}
    consts = []
    for k, (name, arr) in enumerate(g.constants.items()):
        key = f"const/{k}.bin"
        blobs[key] = np.ascontiguousarray(arr).tobytes()
        consts.append({"name": name, "file": key})
    doc = {
        "format": FORMAT,
        "name": g.name,
        "inputs": g.inputs,
        "outputs": g.outputs,
        "types": {k: str(t) for k, t in g.types.items()},
        "constants": consts,
        "nodes": [
            {"op": n.op, "name": n.name, "inputs": n.inputs, "outputs": n.outputs,
             "attrs": {k: _enc_attr(v, blobs) for k, v in n.attrs.items()}}
            for n in g.nodes
        ],
        "metadata": g.metadata,
    }
    with atomic_output(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("graph.json", json.dumps(doc))
        for key, data in blobs.items():
            zf.writestr(key, data)


class _Bad(Exception):
    """What is wrong with the file (turned into a ModelLoadError naming it)."""


def load_graph(path: str | Path, check: bool = True) -> Graph:
    """Read a graph written by :func:`save_graph`; with ``check`` (the default) the loaded graph
    is also verified. Raises :class:`ModelLoadError` for anything malformed."""
    from tessera.graph.verify import verify

    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError) as e:
        raise ModelLoadError(f"{path}: corrupt Tessera graph file (not a zip archive: {e})") from e
    except OSError as e:
        raise ModelLoadError(f"cannot read {path}: {e.strerror or e}") from e
    try:
        with zf:
            g = _Reader(zf).graph()
        if check:
            _verify(g, verify)
    except _Bad as e:
        raise ModelLoadError(f"{path}: corrupt Tessera graph file ({e})") from None
    except ResourceLimitError as e:
        raise ModelLoadError(f"{path}: {e}") from None
    except TesseraError as e:
        raise ModelLoadError(f"{path}: invalid graph: {e}") from None
    except (zipfile.BadZipFile, EOFError, zlib.error, NotImplementedError, RuntimeError) as e:
        raise ModelLoadError(f"{path}: corrupt Tessera graph file (damaged zip data: {e})") from None
    except OSError as e:
        raise ModelLoadError(f"cannot read {path}: {e.strerror or e}") from None
    return g


def _verify(g: Graph, verify: Any) -> None:
    """Verify a loaded graph: whatever a hostile file makes the shape rules raise, it is a bad file."""
    try:
        verify(g)
    except TesseraError:
        raise
    except Exception as e:
        raise _Bad(f"invalid graph: {type(e).__name__}: {e}") from None


class _Reader:
    """Checks every field of ``graph.json`` and every member it names."""

    def __init__(self, zf: zipfile.ZipFile) -> None:
        self.zf = zf
        self.infos: dict[str, zipfile.ZipInfo] = {}
        for info in zf.infolist():
            if info.filename in self.infos:
                raise _Bad(f"duplicate member {info.filename!r}")
            self.infos[info.filename] = info

    def read(self, member: Any, what: str) -> bytes:
        if not isinstance(member, str) or member not in self.infos:
            raise _Bad(f"{what}: missing member {member!r}")
        info = self.infos[member]
        check_allocation(info.file_size, f"{what} (member {member!r})")
        data = self.zf.read(info)
        if len(data) != info.file_size:
            raise _Bad(f"{what}: member {member!r} is truncated")
        return data

    def graph(self) -> Graph:
        try:
            doc = json.loads(self.read("graph.json", "graph.json"))
        except RecursionError:
            raise _Bad("graph.json is nested too deeply") from None
        except (UnicodeDecodeError, ValueError) as e:
            raise _Bad(f"graph.json is not valid JSON: {e}") from None
        if not isinstance(doc, dict):
            raise _Bad(f"graph.json holds a {type(doc).__name__}, not an object")
        if doc.get("format") != FORMAT:
            raise _Bad(f"not a Tessera graph file (format {str(doc.get('format'))[:80]!r})")
        name = _field(doc, "name", str, "graph")
        inputs = _strings(_field(doc, "inputs", list, "graph"), "graph inputs")
        outputs = _strings(_field(doc, "outputs", list, "graph"), "graph outputs")
        types: dict[str, TensorType] = {}
        for k, t in _field(doc, "types", dict, "graph").items():
            if not isinstance(t, str):
                raise _Bad(f"type of {k!r} is a {type(t).__name__}, not a string")
            try:
                types[k] = TensorType.parse(t)
            except (ValueError, TypeError, TesseraError) as e:
                raise _Bad(f"type of {k!r}: {e}") from None
        consts = {}
        for c in _field(doc, "constants", list, "graph"):
            if not isinstance(c, dict):
                raise _Bad(f"constant entry is a {type(c).__name__}, not an object")
            cname = _field(c, "name", str, "constant")
            if cname in consts:
                raise _Bad(f"constant {cname!r} is listed twice")
            if cname not in types:
                raise _Bad(f"constant {cname!r} has no type")
            consts[cname] = self.array(_field(c, "file", str, f"constant {cname!r}"), types[cname].dtype,
                                       types[cname].shape, f"constant {cname!r}")
        metadata = _field(doc, "metadata", dict, "graph", {})
        if not all(isinstance(v, str) for v in metadata.values()):
            raise _Bad("metadata values must be strings")
        nodes = [self.node(n, k) for k, n in enumerate(_field(doc, "nodes", list, "graph"))]
        from tessera.graph.registry import has_op

        unknown = sorted({n.op for n in nodes if not has_op(n.op)})
        if unknown:
            shown = ", ".join(repr(op[:80]) for op in unknown[:5]) + (", ..." if len(unknown) > 5 else "")
            raise _Bad(f"unknown operator(s) {shown}")
        return Graph(name, inputs, outputs, nodes, consts, types, metadata)

    def node(self, n: Any, k: int) -> Node:
        if not isinstance(n, dict):
            raise _Bad(f"node #{k} is a {type(n).__name__}, not an object")
        what = f"node #{k}"
        op = _field(n, "op", str, what)
        name = _field(n, "name", str, what, "")
        what = f"{op[:80]} node {name[:80]!r}"
        attrs = {a: self.attr(v, f"{what} attribute {a!r}", 0) for a, v in _field(n, "attrs", dict, what, {}).items()}
        return Node(op, _strings(_field(n, "inputs", list, what), f"{what} inputs"),
                    _strings(_field(n, "outputs", list, what), f"{what} outputs"), attrs, name)

    def attr(self, v: Any, what: str, depth: int) -> Any:
        if depth > MAX_ATTR_DEPTH:
            raise _Bad(f"{what} is nested more than {MAX_ATTR_DEPTH} levels deep")
        if isinstance(v, dict):
            if "tensor" in v:
                dt = _dtype(v.get("dtype"), what)
                shape = v.get("shape")
                if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
                    raise _Bad(f"{what}: tensor shape must be a list of non-negative ints")
                return self.array(v["tensor"], dt, tuple(shape), what)
            if "dtype" in v:
                return _dtype(v["dtype"], what)
            if "float" in v:
                try:
                    return float(v["float"])
                except (TypeError, ValueError):
                    raise _Bad(f"{what}: bad float {str(v['float'])[:80]!r}") from None
            if "list" in v and isinstance(v["list"], list):
                return [self.attr(x, what, depth + 1) for x in v["list"]]
            raise _Bad(f"{what}: unknown attribute encoding")
        if isinstance(v, list):
            raise _Bad(f"{what}: a bare list (lists are encoded as {{'list': [...]}})")
        return v

    def array(self, member: Any, dtype: DType, shape: tuple[Any, ...], what: str) -> np.ndarray:
        """The raw bytes of ``member`` as an array of ``dtype[shape]``: the size must match."""
        if not all(isinstance(d, int) for d in shape):
            raise _Bad(f"{what} has a symbolic shape {list(map(str, shape))}")
        nbytes = math.prod(shape) * dtype.itemsize
        check_allocation(nbytes, f"{what} of type {dtype.value}{list(shape)}")
        if not isinstance(member, str) or member not in self.infos:
            raise _Bad(f"{what}: missing member {member!r}")
        size = self.infos[member].file_size
        if size != nbytes:
            raise _Bad(f"{what} is {dtype.value}{list(shape)} ({nbytes} bytes) but member {member!r} "
                       f"holds {size} bytes")
        data = self.read(member, what)
        return np.frombuffer(data, dtype=dtype.np).reshape(shape).copy()


def _field(d: dict[str, Any], key: str, kind: type, what: str, default: Any = None) -> Any:
    if key not in d:
        if default is not None:
            return default
        raise _Bad(f"{what} has no {key!r} field")
    v = d[key]
    if not isinstance(v, kind):
        raise _Bad(f"{what} field {key!r} is a {type(v).__name__}, not a {kind.__name__}")
    return v


def _strings(v: list[Any], what: str) -> list[str]:
    if not all(isinstance(x, str) for x in v):
        raise _Bad(f"{what} must be strings")
    return list(v)


def _dtype(v: Any, what: str) -> DType:
    if not isinstance(v, str):
        raise _Bad(f"{what}: dtype must be a string")
    try:
        return DType.parse(v)
    except TesseraError as e:
        raise _Bad(f"{what}: {e}") from None
