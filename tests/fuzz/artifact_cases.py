"""Generated damaged ``.tsa`` artifacts: a valid artifact's zip members, edited.

An artifact holds native code and is trusted like it, so no case edits the library's bytes and
then rewrites its hash (that is running someone else's code, not a damaged file). Every other
edit is fair: manifest fields (with or without rewriting the manifest's sha256 fields, as an
attacker would), duplicate and extra members, truncation, bit flips caught by the hashes, and a
real Tessera library of another model put in place of this one.
"""

from __future__ import annotations

import hashlib
import io
import json
import warnings
import zipfile
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from tessera.runtime import artifact

MANIFEST, LIBRARY, WEIGHTS, DIGEST = "manifest.json", "model.so", "weights.bin", "digest.json"
JSON_VALUES: list[Any] = [-1, 0, 1, 3, 4, 7, 64, 2**31, 2**40, 2**63 - 1, 2**64, -(2**63), 1.5, "", "float64", "int8",
                          "bool", "object", "x", "../../x", None, True, [], {}, [1, 2], [0], [2**62, 2**62], {"a": 1}]


@dataclass
class Members:
    """A zip's members in order: (name, bytes, compress_type)."""

    items: list[tuple[str, bytes, int]]

    @staticmethod
    def read(data: bytes) -> Members:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            return Members([(i.filename, zf.read(i), i.compress_type) for i in zf.infolist()])

    def get(self, name: str) -> bytes:
        return next((b for n, b, _ in self.items if n == name), b"")

    def manifest(self) -> Any:
        """The manifest as JSON data, None when an earlier edit left it unreadable or not an object."""
        try:
            d = json.loads(self.get(MANIFEST))
        except (ValueError, RecursionError):
            return None
        return d if isinstance(d, dict) else None

    def put(self, name: str, data: bytes) -> None:
        self.items = [(n, data if n == name else b, c) for n, b, c in self.items]

    def write(self) -> bytes:
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as zf:
            for name, data, compress in self.items:
                info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = compress
                zf.writestr(info, data)
        return out.getvalue()


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into a JSON value (dict keys, list indices), containers included."""
    out = [prefix] if prefix else []
    if isinstance(obj, dict):
        for k in sorted(obj):
            out += _paths(obj[k], (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, (*prefix, i))
    return out


def _get(obj: Any, path: tuple[Any, ...]) -> Any:
    for k in path:
        obj = obj[k]
    return obj


def rehash(members: Members) -> None:
    """Rewrite what an unsigned artifact's integrity rests on, as an attacker would: the manifest's
    sha256 fields, then the seal over every member (``digest.json``) where the format has one."""
    d = members.manifest()
    if d is not None:
        d["library_sha256"] = hashlib.sha256(members.get(LIBRARY)).hexdigest()
        d["weights_sha256"] = hashlib.sha256(members.get(WEIGHTS)).hexdigest()
        members.put(MANIFEST, json.dumps(d, indent=1).encode())
    digest_cls = getattr(artifact, "_Digest", None)
    if digest_cls is None or DIGEST not in [n for n, _, _ in members.items]:
        return
    digest = digest_cls()
    for name in (MANIFEST, LIBRARY, WEIGHTS):
        data = members.get(name)
        digest.member(name, len(data))
        digest.update(data)
    seal = {"format": artifact.FORMAT_VERSION, "sha256": digest.hexdigest(), "hmac_sha256": None}
    members.put(DIGEST, json.dumps(seal, indent=1).encode())


def _manifest_field(m: Members, draw: Any) -> str:
    d = m.manifest()
    if not d:
        return "manifest field: (manifest already unreadable)"
    path = draw(st.sampled_from(_paths(d)))
    parent, key = _get(d, path[:-1]), path[-1]
    old = parent[key]
    how = draw(st.sampled_from(["value", "value", "scale", "delete"] if isinstance(old, int) else ["value", "delete"]))
    if how == "scale" and isinstance(old, int) and not isinstance(old, bool):
        parent[key] = draw(st.sampled_from([old + 1, old - 1, old * 2, old // 2, old + 64, old * 1000, -old]))
    elif how == "delete":
        del parent[key]
    else:
        parent[key] = draw(st.sampled_from(JSON_VALUES))
    m.put(MANIFEST, json.dumps(d, indent=1).encode())
    return f"manifest {'/'.join(map(str, path))}: {old!r} -> " + ("(deleted)" if how == "delete" else repr(parent[key]))


def _manifest_raw(m: Members, draw: Any) -> str:
    text = m.get(MANIFEST)
    how = draw(st.sampled_from(["deep", "deep_field", "truncate", "not_object", "binary", "empty"]))
    if how == "deep":
        m.put(MANIFEST, b"[" * 100_000 + b"]" * 100_000)
    elif how == "deep_field":  # a valid manifest with one field nested 100k deep
        deep = b"[" * 100_000 + b"1" + b"]" * 100_000
        m.put(MANIFEST, text.replace(b'"model_name": ', b'"model_name": ' + deep + b', "was_model_name": ', 1))
    elif how == "truncate":
        m.put(MANIFEST, text[: draw(st.integers(0, max(len(text) - 1, 0)))])
    elif how == "not_object":
        m.put(MANIFEST, draw(st.sampled_from([b"[]", b"1", b"null", b'"manifest"', b"NaN"])))
    elif how == "binary":
        m.put(MANIFEST, b"\xff\xfe" + text)
    else:
        m.put(MANIFEST, b"")
    return f"manifest.json {how}"


def _members(m: Members, draw: Any, other: Members) -> str:
    how = draw(st.sampled_from(["dup_manifest", "dup_library", "dup_weights", "extra", "drop", "reorder"]))
    names = [n for n, _, _ in m.items]
    if how == "dup_manifest":  # a second manifest with a different arena, after the real one
        d = m.manifest() or {}
        d["arena_bytes"] = 0
        where = draw(st.sampled_from(["after", "before"]))
        extra = (MANIFEST, json.dumps(d).encode(), zipfile.ZIP_DEFLATED)
        m.items = [*m.items, extra] if where == "after" else [extra, *m.items]
        return f"second manifest.json (arena_bytes 0) {where} the real one"
    if how == "dup_library":
        m.items.append((LIBRARY, other.get(LIBRARY), zipfile.ZIP_DEFLATED))
        return "second model.so (another model's library) appended"
    if how == "dup_weights":
        m.items.append((WEIGHTS, b"\0" * len(m.get(WEIGHTS)), zipfile.ZIP_STORED))
        return "second weights.bin (zeros) appended"
    if how == "extra":
        name = draw(st.sampled_from(["evil.so", "../escape", "/abs", "manifest.json/", "x" * 200]))
        m.items.append((name, b"junk" * 100, zipfile.ZIP_STORED))
        return f"extra member {name!r}"
    if how == "drop":
        name = draw(st.sampled_from(names))
        m.items = [it for it in m.items if it[0] != name]
        return f"member {name} dropped"
    m.items.reverse()
    return "members reversed"


def _flip(m: Members, draw: Any, name: str) -> str:
    data = bytearray(m.get(name))
    if not data:
        return f"{name}: nothing to flip"
    pos = draw(st.lists(st.integers(0, len(data) * 8 - 1), min_size=1, max_size=4, unique=True))
    for p in pos:
        data[p // 8] ^= 1 << (p % 8)
    m.put(name, bytes(data))
    return f"{name}: flip bits {pos} (hashes not rewritten)"


def _resize_weights(m: Members, draw: Any) -> str:
    w = m.get(WEIGHTS)
    n = draw(st.sampled_from([0, len(w) // 2, len(w) - 4, len(w) + 4, len(w) * 2]))
    m.put(WEIGHTS, (w + b"\0" * n)[:n])
    d = m.manifest()
    if d is not None:
        d["weights_nbytes"] = n
        m.put(MANIFEST, json.dumps(d).encode())
    return f"weights.bin resized to {n} bytes, manifest weights_nbytes too"


@dataclass
class ArtifactCase:
    steps: list[str]
    data: bytes

    def __repr__(self) -> str:
        return f"ArtifactCase({'; '.join(self.steps)})"


class Blob:
    """Bytes with a short repr (hypothesis prints strategy arguments)."""

    def __init__(self, name: str, data: bytes) -> None:
        self.name, self.data = name, data

    def __repr__(self) -> str:
        return f"<{self.name}: {len(self.data)} bytes>"


@st.composite
def artifact_cases(draw: Any, original: Blob, other: Blob) -> ArtifactCase:
    """``original`` edited once or twice; ``other`` is another model's valid artifact."""
    m = Members.read(original.data)
    theirs = Members.read(other.data)
    steps: list[str] = []
    flips: list[str] = []
    for _ in range(draw(st.integers(1, 2))):
        kind = draw(st.sampled_from(["field", "field", "field", "raw", "members", "flip", "resize", "swap_library",
                                     "file"]))
        if kind == "field":
            steps.append(_manifest_field(m, draw))
            if draw(st.integers(0, 3)) > 0:
                rehash(m)
                steps.append("hashes and seal rewritten")
        elif kind == "raw":
            steps.append(_manifest_raw(m, draw))
            if draw(st.booleans()):
                rehash(m)
                steps.append("hashes and seal rewritten")
        elif kind == "members":
            steps.append(_members(m, draw, theirs))
            if draw(st.booleans()):
                rehash(m)
                steps.append("hashes and seal rewritten")
        elif kind == "flip":  # last, after any rewrite of the hashes (which would make it a legitimate edit)
            flips.append(draw(st.sampled_from([LIBRARY, WEIGHTS])))
        elif kind == "resize":
            steps.append(_resize_weights(m, draw))
            rehash(m)
        elif kind == "swap_library":
            m.put(LIBRARY, theirs.get(LIBRARY))
            rehash(m)
            steps.append("model.so replaced by another model's library, hashes and seal rewritten")
        else:
            steps.append("file-level damage")
    steps += [_flip(m, draw, name) for name in flips]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile: "Duplicate name" is the point
        data = m.write()
    if steps[-1] == "file-level damage":
        how = draw(st.sampled_from(["truncate", "flip"]))
        if how == "truncate":
            n = draw(st.integers(0, len(data) - 1))
            data = data[:n]
            steps[-1] = f"file truncated to {n} of {len(data)} bytes"
        else:
            pos = draw(st.lists(st.integers(0, len(data) * 8 - 1), min_size=1, max_size=4, unique=True))
            buf = bytearray(data)
            for p in pos:
                buf[p // 8] ^= 1 << (p % 8)
            data = bytes(buf)
            steps[-1] = f"file bits {pos} flipped"
    return ArtifactCase(steps, data)
