"""Save and load graphs as one ``.tsr`` file (a zip: ``graph.json`` plus raw constant bytes).

Round-trips exactly: names, attributes (including tensor and dtype attributes), symbolic
dims, constant bytes. Writing is atomic (temp file + rename).
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from tessera.errors import ModelLoadError
from tessera.graph.dtypes import DType
from tessera.graph.ir import Graph, Node
from tessera.graph.tensor_type import TensorType
from tessera.utils import atomic_output

FORMAT = "tessera-graph/1"


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


def _dec_attr(v: Any, zf: zipfile.ZipFile) -> Any:
    if isinstance(v, dict):
        if "tensor" in v:
            dt = DType.parse(v["dtype"]).np
            return np.frombuffer(zf.read(v["tensor"]), dtype=dt).reshape(v["shape"]).copy()
        if "dtype" in v:
            return DType.parse(v["dtype"])
        if "float" in v:
            return float(v["float"])
        if "list" in v:
            return [_dec_attr(x, zf) for x in v["list"]]
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


def load_graph(path: str | Path) -> Graph:
    """Read a graph written by :func:`save_graph`."""
    try:
        with zipfile.ZipFile(path) as zf:
            doc = json.loads(zf.read("graph.json"))
            if doc.get("format") != FORMAT:
                raise ModelLoadError(f"{path}: not a Tessera graph file (format {doc.get('format')!r})")
            types = {k: TensorType.parse(t) for k, t in doc["types"].items()}
            consts = {}
            for c in doc["constants"]:
                t = types[c["name"]]
                consts[c["name"]] = np.frombuffer(zf.read(c["file"]), dtype=t.dtype.np).reshape(
                    [int(d) for d in t.shape]).copy()
            nodes = [
                Node(n["op"], n["inputs"], n["outputs"], {k: _dec_attr(v, zf) for k, v in n["attrs"].items()},
                     n["name"])
                for n in doc["nodes"]
            ]
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, ValueError) as e:
        raise ModelLoadError(f"{path}: corrupt Tessera graph file ({e})") from e
    except OSError as e:
        raise ModelLoadError(f"cannot read {path}: {e.strerror or e}") from e
    return Graph(doc["name"], doc["inputs"], doc["outputs"], nodes, consts, types, doc.get("metadata", {}))
