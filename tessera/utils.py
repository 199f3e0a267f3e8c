"""Small utilities shared by every layer (no Tessera imports here)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only on success.

    A killed or failed writer never leaves a half-written file under the final name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class ContentHashed:
    """Mixin for frozen dataclasses that have ``source`` and ``hash`` fields (both excluded from
    comparison): ``hash`` is the SHA-256 of the canonical JSON of every other field, so two
    descriptions with the same content have the same identity whatever file they came from."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "hash", hashlib.sha256(self.canonical().encode()).hexdigest())

    def canonical(self) -> str:
        """Canonical JSON of the content (everything except ``source`` and ``hash``)."""
        fields = dataclasses.fields(self)  # type: ignore[arg-type]
        d = {f.name: getattr(self, f.name) for f in fields if f.name not in ("source", "hash")}
        return json.dumps(d, sort_keys=True, separators=(",", ":"), default=dataclasses.asdict)
