"""Loop IR: buffers, loop nests with kinds, stores; a kernel is a function over buffers."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from tessera.loop.expr import Expr, Var, to_str

LOOP_KINDS = ("serial", "parallel", "vectorized", "unrolled")


@dataclass(eq=False)
class Buffer:
    """A memory region. ``scope``: "global" (kernel argument or workspace) or "local"
    (a small per-thread array, e.g. an accumulator tile kept in registers)."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    scope: str = "global"

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    def __repr__(self) -> str:
        return f"{self.name}: {self.dtype}{list(self.shape)} {self.scope}"


class Stmt:
    """Base class of loop-IR statements."""


@dataclass(eq=False)
class For(Stmt):
    var: Var
    extent: int
    kind: str
    body: Stmt

    def __post_init__(self) -> None:
        if self.kind not in LOOP_KINDS:
            raise ValueError(f"unknown loop kind {self.kind!r}")


@dataclass(eq=False)
class Store(Stmt):
    buffer: Buffer
    indices: tuple[Expr, ...]
    value: Expr


@dataclass(eq=False)
class Seq(Stmt):
    body: list[Stmt]


@dataclass(eq=False)
class If(Stmt):
    cond: Expr
    then: Stmt


@dataclass(eq=False)
class Allocate(Stmt):
    """Declare a local buffer for the scope of ``body``."""

    buffer: Buffer
    body: Stmt


@dataclass(eq=False)
class Kernel:
    """A kernel: ``params`` are global buffers (inputs first, then outputs)."""

    name: str
    params: list[Buffer]
    body: Stmt
    num_inputs: int
    attrs: dict[str, object] = field(default_factory=dict)

    @property
    def inputs(self) -> list[Buffer]:
        return self.params[: self.num_inputs]

    @property
    def outputs(self) -> list[Buffer]:
        return self.params[self.num_inputs:]

    def __str__(self) -> str:
        return format_kernel(self)


def walk_stmts(s: Stmt) -> Iterator[Stmt]:
    """``s`` and every statement nested in it, outer first."""
    yield s
    if isinstance(s, Seq):
        for b in s.body:
            yield from walk_stmts(b)
    elif isinstance(s, For | Allocate):
        yield from walk_stmts(s.body)
    elif isinstance(s, If):
        yield from walk_stmts(s.then)


def format_stmt(s: Stmt, indent: int = 1) -> list[str]:
    pad = "  " * indent
    if isinstance(s, For):
        head = f"{pad}for {s.var.name} in 0..{s.extent}" + ("" if s.kind == "serial" else f" ({s.kind})") + ":"
        return [head, *format_stmt(s.body, indent + 1)]
    if isinstance(s, Store):
        return [f"{pad}{s.buffer.name}[{', '.join(to_str(i) for i in s.indices)}] = {to_str(s.value)}"]
    if isinstance(s, Seq):
        return [line for b in s.body for line in format_stmt(b, indent)]
    if isinstance(s, If):
        return [f"{pad}if {to_str(s.cond)}:", *format_stmt(s.then, indent + 1)]
    if isinstance(s, Allocate):
        return [f"{pad}alloc {s.buffer!r}", *format_stmt(s.body, indent)]
    return [f"{pad}{s!r}"]


def format_kernel(k: Kernel) -> str:
    params = ", ".join(repr(p) for p in k.params)
    return "\n".join([f"kernel {k.name}({params}):", *format_stmt(k.body)])
