"""Run-time checks of index values read from tensors (Gather, Scatter, ...).

A compute definition wraps such an index in ``index_check(w, n, site)``: the value is ``w``
(the caller still clamps it, so memory stays safe), and generated code records ``site`` when
``w`` is outside ``[0, n)``; the library then fails the run with the site's message
(:mod:`tessera.codegen.c`). ``site`` is a constant naming a message in :data:`SITES`: derived
from the message text, so the same model gives the same expressions (and workload keys)
in every process."""

from __future__ import annotations

import hashlib

from tessera.loop.expr import Call, Expr, cast, const
from tessera.loop.te_eval import CALLS

INDEX_CHECK = "index_check"
CHECKED_OPS = frozenset({"Gather", "GatherElements", "GatherND", "ScatterElements", "ScatterND"})  # ops that check
SITES: dict[int, str] = {}  # site id -> message


def index_site(message: str) -> int:
    """The site id of ``message`` (registered in :data:`SITES`)."""
    sid = int.from_bytes(hashlib.sha256(message.encode()).digest()[:6], "big")
    while SITES.get(sid, message) != message:  # a hash collision: the next free id
        sid += 1
    SITES[sid] = message
    return sid


def index_check(w: Expr, n: int, message: str) -> Expr:
    """``w`` (an i64 index), checked at run time to lie in ``[0, n)``; ``message`` says what is wrong."""
    return Call(INDEX_CHECK, (cast(w, "i64"), const(n), const(index_site(message))), "i64")


def site_message(site: Expr) -> str:
    """The message of an ``index_check`` call's site argument."""
    return SITES.get(int(getattr(site, "value", -1)), "an index is out of range")


# NumPy evaluation of expressions (te_eval, the loop interpreter): the value; the clamp around it
# keeps it in bounds, as in generated code
CALLS.setdefault(INDEX_CHECK, lambda w, n, site: w)
