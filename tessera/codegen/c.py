"""C code generation for loop-IR kernels (GCC; a thread pool for parallel loops, vector extensions for SIMD).

:func:`render_kernel` emits one C function per kernel; :func:`render_module` adds the prelude.
Loop kinds:

* ``parallel``: the outermost one is outlined into a function over an iteration range and run by
  the module's thread pool (:mod:`tessera.codegen.c_pool`); parallel loops nested inside it run
  serially.
* ``vectorized``: explicit vector code (see :mod:`tessera.codegen.c_vector`) when every access is
  contiguous or invariant in the loop variable and the body is a list of stores over supported
  operations; otherwise a scalar loop, marked ``#pragma omp simd`` only when iterations provably
  touch distinct elements of every stored buffer.
* ``vectorized`` over a *fold* ``acc = acc op e`` (op add, mul, min or max on f32/f64; ``acc``
  invariant in the loop and not read by ``e``, ``e`` vector code as above): vectors of partial
  results (``_FOLD_ACCUMULATORS`` of them, for latency) start at the op's identity, combine
  whole vectors of ``e``, are combined with each other, and their lanes are folded into ``acc``
  in lane order; a scalar loop folds the elements past the last whole vector. Min/max give the
  in-order result (NaN propagates; only the sign of a zero among equal zeros may differ); a sum
  or product is reassociated, so it differs from the in-order fold by rounding (relative error of
  order ``log2(extent) * eps`` of the sum of magnitudes: ~1e-7 for f32). The schedule opts in by
  vectorizing a reduction loop (:mod:`tessera.schedule.rules`).
* ``unrolled``: fully unrolled when small, else ``#pragma GCC unroll``. The write-back of a register
  tile whose vector lanes fall on a strided axis of the output while the unrolled rows fall on a
  contiguous one (a conv tile vectorized over output channels stored to NCHW) is vectorized over
  the rows instead, on transposed registers (:meth:`_Emitter.store_across_lanes`).

Local buffers whose every access has a constant index after unrolling (an accumulator tile) are
*scalar-replaced*: kept in named scalar or vector variables so the C compiler holds them in
registers. Buffer names are validated and mapped to ``p0..`` (params) and ``l0..`` (locals);
loop variables to ``i0..``.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tessera.codegen.c_expr import ScalarExprs
from tessera.codegen.c_pool import POOL_RUNTIME
from tessera.codegen.c_types import FLOATS, WIDTH, c_type, check_ident, literal, prelude, vec_type, vector_ok
from tessera.codegen.c_vector import (
    NotPromotable,
    NoVec,
    Promo,
    VectorExprs,
    linear_coeff,
    math_declarations,
    vector_math_table,
)
from tessera.loop.computes.index_check import INDEX_CHECK, site_message
from tessera.loop.expr import (
    BinOp,
    Call,
    Const,
    Expr,
    Load,
    Select,
    Var,
    children,
    const,
    free_vars,
    linear_form,
    loads_in,
    simplify,
    substitute,
    to_str,
)
from tessera.loop.ir import Allocate, Buffer, For, If, Kernel, Seq, Stmt, Store

if TYPE_CHECKING:
    from tessera.targets.target import Intrinsic

__all__ = ["render_kernel", "render_module", "c_type"]

MAX_PROMOTED = 512  # elements of a local buffer that may be scalar-replaced (32 registers of 16 lanes)
MAX_STACK_BYTES = 64 * 1024  # larger local buffers go to the heap (keeps worker-thread stacks small)
_FULL_UNROLL_EXTENT = 16
_FULL_UNROLL_SIZE = 512  # statements emitted by one fully unrolled loop
_VECTOR_UNROLL_STEPS = 16
_LOOP_VAR = re.compile(r"i[0-9]+\Z")
_FOLD_IDENTITY = {"add": 0.0, "mul": 1.0, "max": -math.inf, "min": math.inf}
# independent vector accumulators of a long fold (softmax rows of 128: 4 beat 1 by ~8% and 2 by ~4%); the
# lanes are folded in order: a tree over lanes measured no faster (rows overlap out of order)
_FOLD_ACCUMULATORS = 4


def render_kernel(kernel: Kernel, vector_lanes: dict[str, int], intrinsics: Iterable[Intrinsic] = ()) -> str:
    """C source of ``void NAME(const T* restrict p0, ..., T* restrict pN)`` (params in order;
    inputs const). ``vector_lanes`` maps a dtype to the SIMD lane count used for vectorized loops;
    ``intrinsics`` (a target's, :attr:`CpuTarget.intrinsics`) may declare vector versions of math
    functions, which vectorized loops then call (their includes/prototypes precede the function)."""
    return _Emitter(kernel, vector_lanes, intrinsics).render()


# Index checks (tessera.loop.computes.index_check): a C function whose code checks indices keeps the
# last failing site in a local ``tsr_hit`` (a conditional move, no branch in the loop) and, at its end,
# stores it in the module's error word (from any pool thread, relaxed: the pool's join orders it
# before tsr_run reads it); ``entry`` calls tsr_take_error after the kernels and fails the run.
INDEX_CHECK_RUNTIME = r"""
static _Atomic(const char*) tsr_index_error;
static const char* tsr_error_text = "";
static inline int64_t tsr_index_check(int64_t w, int64_t n, const char* site, const char** hit) {
  *hit = (uint64_t)w >= (uint64_t)n ? site : *hit;
  return w;
}
static __attribute__((noinline, cold, unused)) void tsr_index_fail(const char* site) {
  if (!atomic_load_explicit(&tsr_index_error, memory_order_relaxed))  /* stored once: no fight over the line */
    atomic_store_explicit(&tsr_index_error, site, memory_order_relaxed);
}
static const char* tsr_where_pending = 0;
static const char* tsr_where_text = "";
/* called by tsr_run after a kernel that checks indices: the first such kernel to fail names its node(s) */
static inline __attribute__((unused)) void tsr_note_where(const char* where) {
  if (!tsr_where_pending && atomic_load_explicit(&tsr_index_error, memory_order_relaxed)) tsr_where_pending = where;
}
/* 1 (and the message kept for tsr_error_message) if a kernel met an index out of range since the last call, else 0 */
static inline int tsr_take_error(void) {
  const char* e = atomic_exchange_explicit(&tsr_index_error, (const char*)0, memory_order_relaxed);
  const char* where = tsr_where_pending;
  tsr_where_pending = 0;
  if (!e) return 0;
  tsr_error_text = e;
  tsr_where_text = where ? where : "";
  return 1;
}
/* what the last failed tsr_run met, and the node(s) of the kernel that met it ("" if unknown) */
const char* tsr_error_message(void) { return tsr_error_text; }
const char* tsr_error_where(void) { return tsr_where_text; }
"""


def render_module(kernels: list[str], entry: str) -> str:
    """A complete C translation unit: prelude, the rendered kernels, then ``entry`` (which returns
    ``tsr_take_error()`` as a failure status after its kernels)."""
    return "\n".join([prelude(), POOL_RUNTIME, INDEX_CHECK_RUNTIME, *kernels, entry, ""])


def c_string(text: str) -> str:
    """A C string literal of ``text`` (UTF-8; everything but plain printable ASCII octal-escaped)."""
    safe = set(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ()[],.:;_-+=<>'/")
    return '"' + "".join(chr(b) if b in safe else f"\\{b:03o}" for b in text.encode()) + '"'


def _collapse(e: Expr) -> Expr:
    """An affine index rebuilt from its linear form, so ``(x//c)*c + x%c`` becomes ``x`` (the
    vectorizer then sees a fused axis as contiguous)."""
    lf = linear_form(e)
    if lf is None:
        return e
    terms, c0 = lf
    if not any(isinstance(a, BinOp) and a.op in ("floordiv", "mod") for a in _atoms(e)):
        return e  # nothing to collapse: keep the simplifier's form
    out: Expr = const(c0)
    for atom, k in sorted(terms.items(), key=lambda t: to_str(t[0])):
        out = out + (atom if k == 1 else atom * k)
    return simplify(out)


def _atoms(e: Expr) -> list[Expr]:
    if isinstance(e, BinOp) and e.op in ("add", "sub", "mul"):
        return _atoms(e.a) + _atoms(e.b)
    return [e]


def _stores_only(s: Stmt) -> list[Store] | None:
    if isinstance(s, Store):
        return [s]
    if isinstance(s, Seq):
        out: list[Store] = []
        for b in s.body:
            sub = _stores_only(b)
            if sub is None:
                return None
            out += sub
        return out
    return None


def _accesses(s: Stmt, buf: Buffer, in_vector: bool = False) -> Iterator[bool]:
    """For each access of ``buf`` in ``s``: whether it is inside a vectorized loop."""
    if isinstance(s, Store):
        if s.buffer is buf:
            yield in_vector
        for e in (*s.indices, s.value):
            yield from (in_vector for ld in loads_in(e) if ld.tensor is buf)
    elif isinstance(s, Seq):
        for b in s.body:
            yield from _accesses(b, buf, in_vector)
    elif isinstance(s, For):
        yield from _accesses(s.body, buf, in_vector or s.kind == "vectorized")
    elif isinstance(s, If):
        yield from (in_vector for ld in loads_in(s.cond) if ld.tensor is buf)
        yield from _accesses(s.then, buf, in_vector)
    elif isinstance(s, Allocate):
        yield from _accesses(s.body, buf, in_vector)


@dataclass(frozen=True)
class _Fold:
    """A store ``acc = acc op e`` (or ``e op acc``) of a loop whose iterations only fold into ``acc``."""

    store: Store
    op: str
    e: Expr
    acc_first: bool

    def value(self, x: Expr) -> Expr:
        """The store's value with ``e`` replaced by ``x``."""
        acc = self.store.value.a if self.acc_first else self.store.value.b  # type: ignore[attr-defined]
        a, b = (acc, x) if self.acc_first else (x, acc)
        return BinOp(self.op, a, b, self.store.value.dtype)


def _checks_in(e: Expr, out: list[Call]) -> None:
    """The index checks evaluated whenever ``e`` is (not those under a select arm or the right of && / ||)."""
    if isinstance(e, Call) and e.fn == INDEX_CHECK:
        out.append(e)
    if isinstance(e, Select):
        _checks_in(e.cond, out)
    elif isinstance(e, BinOp) and e.op in ("and", "or"):
        _checks_in(e.a, out)
    else:
        for k in children(e):
            _checks_in(k, out)


def _invariant_checks(s: For) -> list[Call]:
    """Index checks that every iteration of ``s`` evaluates (outside any ``If``) on values the loop
    does not change: neither its variables nor buffers it stores appear in them."""
    found: list[Call] = []
    inner: set[str] = set()
    stored: set[int] = set()

    def scan(t: Stmt, guarded: bool) -> None:
        if isinstance(t, For):
            inner.add(t.var.name)
            scan(t.body, guarded)
        elif isinstance(t, Seq):
            for b in t.body:
                scan(b, guarded)
        elif isinstance(t, Allocate):
            scan(t.body, guarded)
        elif isinstance(t, If):
            if not guarded:
                _checks_in(t.cond, found)
            scan(t.then, True)
        elif isinstance(t, Store):
            stored.add(id(t.buffer))
            if not guarded:
                for e in (*t.indices, t.value):
                    _checks_in(e, found)

    scan(s, False)
    return [c for c in found if not (free_vars(c) & inner) and not any(id(ld.tensor) in stored for ld in loads_in(c))]


def _size(s: Stmt) -> int:
    """Rough count of statements emitted for ``s``."""
    if isinstance(s, Store):
        return 1
    if isinstance(s, Seq):
        return sum(_size(b) for b in s.body)
    if isinstance(s, For):
        inner = _size(s.body)
        return inner * s.extent if s.kind == "unrolled" and s.extent <= _FULL_UNROLL_EXTENT else inner + 1
    if isinstance(s, If):
        return 1 + _size(s.then)
    if isinstance(s, Allocate):
        return 1 + _size(s.body)
    return 1


class _Emitter(ScalarExprs, VectorExprs):
    def __init__(self, kernel: Kernel, vector_lanes: dict[str, int], intrinsics: Iterable[Intrinsic] = ()) -> None:
        self.kernel = kernel
        self.lanes = dict(vector_lanes)
        self.vector_math = vector_math_table(intrinsics)
        self.math_used: dict[str, tuple[Intrinsic, int]] = {}
        self.names: dict[int, str] = {}
        self.promoted: dict[int, Promo] = {}
        self.cvars: dict[str, str] = {}
        self.consts: dict[str, int] = {}
        self.ranges: dict[str, tuple[int, int]] = {}
        self.in_parallel = False
        self.counters: dict[str, int] = {}
        self.locals: dict[int, Buffer] = {}
        self.outlined: list[str] = []  # functions of the outlined parallel loops
        self.param_decls: list[tuple[str, str]] = []  # (C declaration, C name) of each kernel param
        self.sites: dict[int, str] = {}  # index-check site id -> C name of its message
        self.checks = False  # the C function being emitted checks indices (declares tsr_hit)
        self.hoisted: set[Expr] = set()  # index checks already made before an enclosing loop

    def fresh(self, prefix: str) -> str:
        n = self.counters.get(prefix, 0)
        self.counters[prefix] = n + 1
        return f"{prefix}{n}"

    def render(self) -> str:
        k = self.kernel
        check_ident(k.name, "kernel")
        params, doc = [], []
        for i, b in enumerate(k.params):
            check_ident(b.name, "buffer")
            if id(b) in self.names:
                raise ValueError(f"buffer {b.name} appears twice in the params of {k.name}")
            if b.scope != "global":
                raise ValueError(f"kernel param {b.name} must have global scope, not {b.scope!r}")
            self.names[id(b)] = f"p{i}"
            const_q = "const " if i < k.num_inputs else ""
            params.append(f"{const_q}{c_type(b.dtype)}* restrict p{i}")
            self.param_decls.append((params[-1], f"p{i}"))
            doc.append(f" * p{i}: {b.name} {b.dtype}{list(b.shape)} {'in' if i < k.num_inputs else 'out'}")
        body: list[str] = []
        with self.function_body(body):
            body += self.stmt(k.body, 1)
        sites = [f"static const char {name}[] = {c_string(site_message(const(sid)))};"
                 for sid, name in self.sites.items()]
        return "\n".join([*math_declarations(self.math_used), f"/* kernel {k.name}", *doc, " */", *sites,
                          *self.outlined,
                          f"void {k.name}({', '.join(params)}) {{", *body, "}", ""])

    # ---- scalar expression hooks ---------------------------------------------------------------
    def var_ref(self, name: str) -> str:
        try:
            return self.cvars[name]
        except KeyError:
            raise ValueError(f"variable {name!r} is not bound by an enclosing loop") from None

    def buffer_ref(self, buf: Buffer) -> str:
        try:
            return self.names[id(buf)]
        except KeyError:
            raise ValueError(f"buffer {buf.name} is neither a kernel param nor allocated") from None

    def flat_index(self, buf: Buffer, indices: tuple[Expr, ...]) -> Expr:
        if len(indices) != len(buf.shape):
            raise ValueError(f"{buf.name} has rank {len(buf.shape)}, accessed with {len(indices)} indices")
        flat: Expr = const(0)
        stride = 1
        for i, n in zip(reversed(indices), reversed(buf.shape), strict=True):
            flat = i * stride + flat
            stride *= n
        return _collapse(simplify(flat, self.ranges))

    def mem_ref(self, buf: Buffer, indices: tuple[Expr, ...]) -> str:
        flat = self.flat_index(buf, indices)
        promo = self.promoted.get(id(buf))
        if promo is not None:
            if not isinstance(flat, Const):
                raise NotPromotable(buf, "non-constant index")
            return promo.ref(int(flat.value))
        return f"{self.buffer_ref(buf)}[{self.sexpr(flat)}]"

    def load_ref(self, e: Load) -> str:
        if not isinstance(e.tensor, Buffer):
            raise TypeError(f"loop-IR loads must reference a Buffer, got {type(e.tensor).__name__}")
        return self.mem_ref(e.tensor, e.indices)

    def index_site(self, site: Expr) -> str:
        sid = int(site.value) if isinstance(site, Const) else -1
        if sid not in self.sites:
            self.sites[sid] = f"{self.kernel.name}_site{len(self.sites)}"
        self.checks = True
        return self.sites[sid]

    @contextmanager
    def function_body(self, lines: list[str]) -> Iterator[None]:
        """Emitting one C function's body into ``lines``: if it checks indices, it is wrapped in the
        declaration of its ``tsr_hit`` and the report of it (:data:`INDEX_CHECK_RUNTIME`)."""
        saved, self.checks = self.checks, False
        try:
            yield
            if self.checks:
                lines[:] = ["  const char* tsr_hit = 0;", *lines, "  if (tsr_hit) tsr_index_fail(tsr_hit);"]
        finally:
            self.checks = saved

    def prep(self, e: Expr) -> Expr:
        """``e`` with unrolled loop variables replaced by their constants, simplified."""
        if self.consts:
            e = substitute(e, {n: const(v) for n, v in self.consts.items()})
        return simplify(e, self.ranges)

    def prep_store(self, s: Store) -> Store:
        return Store(s.buffer, tuple(self.prep(i) for i in s.indices), self.prep(s.value))

    # ---- scoped state --------------------------------------------------------------------------
    @contextmanager
    def bind(self, var: str, *, cvar: str | None = None, value: int | None = None,
             rng: tuple[int, int] | None = None) -> Iterator[None]:
        saved = (self.cvars.get(var), self.consts.get(var), self.ranges.get(var))
        self.cvars.pop(var, None)
        self.consts.pop(var, None)
        self.ranges.pop(var, None)
        if cvar is not None:
            self.cvars[var] = cvar
        if value is not None:
            self.consts[var] = value
        if rng is not None:
            self.ranges[var] = rng
        try:
            yield
        finally:
            for table, old in zip((self.cvars, self.consts, self.ranges), saved, strict=True):
                table.pop(var, None)
                if old is not None:
                    table[var] = old  # type: ignore[index]

    # ---- statements ----------------------------------------------------------------------------
    def stmt(self, s: Stmt, ind: int) -> list[str]:
        pad = "  " * ind
        if isinstance(s, Seq):
            return [line for b in s.body for line in self.stmt(b, ind)]
        if isinstance(s, Store):
            return [pad + self.store_line(self.prep_store(s))]
        if isinstance(s, If):
            cond = self.prep(s.cond)
            if isinstance(cond, Const):
                return self.stmt(s.then, ind) if cond.value else []
            return [f"{pad}if ({self.sexpr(cond)}) {{", *self.stmt(s.then, ind + 1), f"{pad}}}"]
        if isinstance(s, Allocate):
            return self.allocate(s, ind)
        if isinstance(s, For):
            return self.loop(s, ind)
        raise TypeError(f"cannot emit C for statement {s!r}")

    def store_line(self, s: Store) -> str:
        ref = self.mem_ref(s.buffer, s.indices)
        value = self.sexpr(s.value)
        if s.buffer.dtype == "bool":
            value = f"(uint8_t)({value} != 0)"
        return f"{ref} = {value};"

    def allocate(self, s: Allocate, ind: int) -> list[str]:
        buf, pad = s.buffer, "  " * ind
        check_ident(buf.name, "buffer")
        ct = c_type(buf.dtype)
        if buf.scope not in ("local", "global"):
            raise ValueError(f"unknown buffer scope {buf.scope!r}")
        name = self.fresh("l")
        if buf.scope == "local" and 0 < buf.numel <= MAX_PROMOTED:
            promo = Promo(name, buf, self._promo_lanes(s))
            self.promoted[id(buf)] = promo
            try:
                body = self.stmt(s.body, ind)
                return [f"{pad}{promo.declaration()}  /* {buf.name} */", *body]
            except NotPromotable as err:
                if err.buf is not buf:
                    raise
            finally:
                del self.promoted[id(buf)]
        self.names[id(buf)] = name
        self.locals[id(buf)] = buf
        try:
            if buf.scope == "local" and buf.numel * WIDTH[buf.dtype] <= MAX_STACK_BYTES:
                decl = f"{pad}{ct} {name}[{max(buf.numel, 1)}] __attribute__((aligned(64)));  /* {buf.name} */"
                return [decl, *self.stmt(s.body, ind)]
            decl = f"{pad}{ct}* restrict {name} = ({ct}*)tsr_alloc({buf.numel} * sizeof({ct}));  /* {buf.name} */"
            return [decl, *self.stmt(s.body, ind), f"{pad}free({name});"]
        finally:
            del self.names[id(buf)], self.locals[id(buf)]

    def _promo_lanes(self, s: Allocate) -> int:
        buf = s.buffer
        lanes = self.lanes.get(buf.dtype, 1)
        in_vector_loop = any(_accesses(s.body, buf))
        if vector_ok(buf.dtype, lanes) and buf.numel % lanes == 0 and in_vector_loop:
            return lanes
        return 1

    def full_unroll(self, s: For) -> bool:
        total = s.extent * _size(s.body)
        return (s.extent <= _FULL_UNROLL_EXTENT and total <= _FULL_UNROLL_SIZE) or total <= 64

    def loop(self, s: For, ind: int) -> list[str]:
        if s.extent <= 0:
            return []
        # an index check invariant in the loop is made once before it: the loop's code is then the
        # same as without checks (e.g. a Gather of one row fused into a GEMM keeps its vectorization)
        new = list(dict.fromkeys(c for c in map(self.prep, _invariant_checks(s)) if c not in self.hoisted))
        if not new:
            return self._loop(s, ind)
        checks = [f"{'  ' * ind}(void){self.sexpr(c)};" for c in new]
        self.hoisted.update(new)
        try:
            return [*checks, *self._loop(s, ind)]
        finally:
            self.hoisted.difference_update(new)

    def _loop(self, s: For, ind: int) -> list[str]:
        if s.extent > 1 and s.kind == "unrolled" and self.promoted and self.full_unroll(s):
            lines = self.store_across_lanes(s, ind)
            if lines is not None:
                return lines
        if s.extent == 1 or (s.kind == "unrolled" and self.full_unroll(s)):
            return [line for k in range(s.extent) for line in self._unrolled_copy(s, k, ind)]
        if s.kind == "vectorized":
            return self.vector_loop(s, ind)
        # a register tile declared outside the loop cannot be shared with other threads: serial then
        if s.kind == "parallel" and not self.in_parallel and not self.promoted:
            self.in_parallel = True
            try:
                return self.parallel_loop(s, ind)
            finally:
                self.in_parallel = False
        pragma = f"#pragma GCC unroll {min(s.extent, _FULL_UNROLL_EXTENT)}" if s.kind == "unrolled" else None
        return self.c_loop(s, ind, pragma)

    def store_across_lanes(self, s: For, ind: int) -> list[str] | None:
        """The write-back of a register tile whose vector lanes run along a strided axis of the
        output while the unrolled loop ``s`` runs along a contiguous one (a conv tile vectorized
        over output channels, stored to NCHW): vectorized over ``s`` instead, on the tile's
        registers transposed (``_across_registers``), so the epilogue loads and stores whole
        vectors instead of one element per lane. None where the nest does not have that form:
        ``s`` > [unrolled loops] > a vectorized loop of stores that read no stored buffer."""
        mids, body = [], s.body
        while isinstance(body, For) and body.kind != "vectorized" and (body.extent == 1 or body.kind == "unrolled"):
            mids.append(body)
            body = body.body
        stores = _stores_only(body.body) if isinstance(body, For) and body.kind == "vectorized" else None
        if not stores or len(mids) > 2:
            return None
        vec, dtype = body, stores[0].buffer.dtype
        lanes = self.lanes.get(dtype, 1)
        n = 1 << (min(lanes, s.extent).bit_length() - 1)  # rows per transpose
        if (any(st.buffer.dtype != dtype or id(st.buffer) in self.promoted for st in stores)
                or not vector_ok(dtype, lanes) or not vector_ok(dtype, n) or vec.extent % lanes or lanes % n):
            return None
        u, v = s.var.name, vec.var.name
        stored = {id(st.buffer) for st in stores}
        with ExitStack() as scope:
            for loop in (s, *mids, vec):
                scope.enter_context(self.bind(loop.var.name, rng=(0, loop.extent - 1)))
            for st in stores:
                flat = self.flat_index(st.buffer, tuple(self.prep(i) for i in st.indices))
                if linear_coeff(flat, u) != 1 or linear_coeff(flat, v) == 1:
                    return None
                if any(id(ld.tensor) in stored for ld in loads_in(st.value)):
                    return None  # the reordered stores could change what is read
            if not any(id(ld.tensor) in self.promoted for st in stores for ld in loads_in(st.value)):
                return None
        # chunks of n rows; a last, overlapping one covers the rest (stores are idempotent here)
        starts = [*range(0, s.extent - n + 1, n), *([s.extent - n] if s.extent % n else [])]
        pad, out, saved = "  " * ind, [], self.row_transposes
        try:
            for values in itertools.product(*(range(m.extent) for m in mids)):
                with ExitStack() as scope:
                    for m, k in zip(mids, values, strict=True):
                        scope.enter_context(self.bind(m.var.name, value=k))
                    for block in range(0, vec.extent, lanes):
                        lines: list[str] = []
                        for start in starts:
                            self.row_transposes = {}
                            for lane in range(block, block + lanes):
                                with self.bind(v, value=lane), self.bind(u, rng=(0, s.extent - 1)):
                                    prepped = [self.prep_store(st) for st in stores]
                                    lines += self.vector_step(prepped, u, const(start), n)
                        out += [f"{pad}{{", *(f"{pad}  {x}" for x in lines), f"{pad}}}"]
        except (NoVec, NotPromotable):
            return None
        finally:
            self.row_transposes = saved
        return out

    def parallel_loop(self, s: For, ind: int) -> list[str]:
        """``s`` outlined into ``<kernel>_par<k>(captured..., lo, hi)`` and run by the module's thread
        pool (:mod:`tessera.codegen.c_pool`); captured: the kernel's params, the buffers allocated
        so far and the enclosing loops' variables, passed through a context struct."""
        pad, fn = "  " * ind, f"{self.kernel.name}_{self.fresh('par')}"
        captured = list(self.param_decls)  # (C declaration of the parameter, C name)
        for buf_id, buf in self.locals.items():
            name = self.names[buf_id]
            captured.append((f"{c_type(buf.dtype)}* restrict {name}", name))
        captured += [(f"int64_t {cv}", cv) for cv in self.cvars.values() if _LOOP_VAR.match(cv)]
        cv = self.fresh("i")
        body: list[str] = []
        with self.function_body(body), self.bind(s.var.name, cvar=cv, rng=(0, s.extent - 1)):
            body += [f"  for (int64_t {cv} = lo; {cv} < hi; ++{cv}) {{", *self.stmt(s.body, 2), "  }"]
        decls = [d for d, _ in captured]
        fields = "".join(f" {d.replace(' restrict', '')};" for d in decls)
        self.outlined += [
            f"static __attribute__((noinline)) void {fn}({', '.join([*decls, 'int64_t lo', 'int64_t hi'])}) {{",
            *body, "}",
            f"typedef struct {{{fields} }} {fn}_ctx;",
            f"static void {fn}_task(void* c_, int64_t lo, int64_t hi) {{",
            f"  {fn}_ctx* c = ({fn}_ctx*)c_;",
            f"  {fn}({', '.join([*(f'c->{n}' for _, n in captured), 'lo', 'hi'])});", "}"]
        init = ", ".join(n for _, n in captured)
        return [f"{pad}{{", f"{pad}  {fn}_ctx tsr_ctx = {{{init}}};",
                f"{pad}  tsr_parallel_for({fn}_task, &tsr_ctx, {s.extent});", f"{pad}}}"]

    def c_loop(self, s: For, ind: int, pragma: str | None) -> list[str]:
        pad = "  " * ind
        cv = self.fresh("i")
        with self.bind(s.var.name, cvar=cv, rng=(0, s.extent - 1)):
            inner = self.stmt(s.body, ind + 1)
        head = f"{pad}for (int64_t {cv} = 0; {cv} < {s.extent}; ++{cv}) {{"
        return [*([pad + pragma] if pragma else []), head, *inner, f"{pad}}}"]

    # ---- vectorized loops ----------------------------------------------------------------------
    def vector_loop(self, s: For, ind: int) -> list[str]:
        name = s.var.name
        with self.bind(name, rng=(0, s.extent - 1)):
            stores = _stores_only(s.body)
            prepped = [self.prep_store(st) for st in stores] if stores is not None else None
            fold = self._fold(prepped, name) if prepped is not None else None
        if fold is not None:
            lanes = self.lanes.get(fold.store.buffer.dtype, 1)
            if vector_ok(fold.store.buffer.dtype, lanes) and s.extent >= lanes:
                try:
                    return self.fold_loop(s, fold, lanes, ind)
                except NoVec:
                    pass
            return self.c_loop(s, ind, None)
        with self.bind(name, rng=(0, s.extent - 1)):
            independent = prepped is not None and self._independent(prepped, name)
            lanes = self.lanes.get(prepped[0].buffer.dtype, 1) if prepped else 1
            if independent and self._lanes_ok(prepped, lanes, s.extent):
                try:
                    return self._vector_steps(s, prepped, lanes, ind)
                except NoVec:
                    pass
        if self.promoted and s.extent <= _FULL_UNROLL_EXTENT * 4 and any(
                next(_accesses(s.body, p.buf), None) is not None for p in self.promoted.values()):
            # keep a register tile in registers: constant indices need the loop unrolled
            return [line for k in range(s.extent) for line in self._unrolled_copy(s, k, ind)]
        pragma = "#pragma omp simd" if independent else None
        return self.c_loop(s, ind, pragma)

    def _unrolled_copy(self, s: For, k: int, ind: int) -> list[str]:
        with self.bind(s.var.name, value=k):
            return self.stmt(s.body, ind)

    def _lanes_ok(self, stores: list[Store], lanes: int, extent: int) -> bool:
        return extent % lanes == 0 and all(vector_ok(st.buffer.dtype, lanes) for st in stores)

    def _independent(self, stores: list[Store], var: str) -> bool:
        """Whether iterations of ``var`` touch distinct elements of each stored buffer and read a
        stored buffer only at the element the same iteration writes (no loop-carried dependence)."""
        written: dict[int, Expr] = {}
        for st in stores:
            flat = self.flat_index(st.buffer, st.indices)
            c = linear_coeff(flat, var)
            if not c or written.setdefault(id(st.buffer), flat) != flat:
                return False
        for st in stores:
            for e in (*st.indices, st.value):
                for ld in loads_in(e):
                    w = written.get(id(ld.tensor))
                    if w is not None and self.flat_index(ld.tensor, ld.indices) != w:
                        return False
        return True

    def _vector_steps(self, s: For, stores: list[Store], lanes: int, ind: int) -> list[str]:
        name, pad = s.var.name, "  " * ind
        steps = s.extent // lanes
        touches_promoted = any(
            id(st.buffer) in self.promoted or any(id(ld.tensor) in self.promoted for ld in loads_in(st.value))
            for st in stores)
        if steps == 1 or (touches_promoted and steps <= _VECTOR_UNROLL_STEPS):
            out: list[str] = []
            for k in range(steps):
                lines = self.vector_step(stores, name, const(k * lanes), lanes)
                out += [f"{pad}{{", *(f"{pad}  {x}" for x in lines), f"{pad}}}"]
            return out
        cv = self.fresh("i")
        with self.bind(name, cvar=cv, rng=(0, s.extent - 1)):
            lines = self.vector_step(stores, name, Var(name), lanes)
        return [
            f"{pad}for (int64_t {cv} = 0; {cv} < {s.extent}; {cv} += {lanes}) {{",
            *(f"{pad}  {x}" for x in lines), f"{pad}}}"]

    # ---- vectorized folds (reductions) ---------------------------------------------------------
    def _fold(self, stores: list[Store], var: str) -> _Fold | None:
        """``stores`` as a fold over ``var`` (see the module docstring), or None."""
        if len(stores) != 1:
            return None
        st = stores[0]
        v, buf = st.value, st.buffer
        if not isinstance(v, BinOp) or v.op not in _FOLD_IDENTITY or buf.dtype not in FLOATS or v.dtype != buf.dtype:
            return None
        flat = self.flat_index(buf, st.indices)
        if linear_coeff(flat, var) != 0 or any(ld.tensor is buf for i in st.indices for ld in loads_in(i)):
            return None
        for acc, e, first in ((v.a, v.b, True), (v.b, v.a, False)):
            if (isinstance(acc, Load) and acc.tensor is buf and self.flat_index(buf, acc.indices) == flat
                    and e.dtype == buf.dtype and all(ld.tensor is not buf for ld in loads_in(e))):
                return _Fold(st, v.op, e, first)
        return None

    def fold_loop(self, s: For, fold: _Fold, lanes: int, ind: int) -> list[str]:
        """A fold over ``s`` with vectors of partial results (raises NoVec when ``e`` is not vector code)."""
        name, pad = s.var.name, "  " * ind
        dtype, op = fold.store.buffer.dtype, fold.op
        whole = s.extent // lanes * lanes
        k = max(1, min(_FOLD_ACCUMULATORS, whole // lanes))
        block = k * lanes
        main = s.extent // block * block
        vt = vec_type(dtype, lanes)
        accs = [self.fresh("r") for _ in range(k)]
        ident = "{" + ", ".join([literal(_FOLD_IDENTITY[op], dtype)] * lanes) + "}"
        out = [f"{pad}{{", f"{pad}  {vt} {', '.join(f'{a} = {ident}' for a in accs)};"]

        def vector_loop(start: int, stop: int, n_acc: int) -> None:
            cv = self.fresh("i")
            with self.bind(name, cvar=cv, rng=(start, stop - 1)):
                bases = [Var(name) + j * lanes if j else Var(name) for j in range(n_acc)]
                lines = self.vector_fold(fold.e, op, accs[:n_acc], name, bases, lanes)
            step = n_acc * lanes
            out.extend([f"{pad}  for (int64_t {cv} = {start}; {cv} < {stop}; {cv} += {step}) {{",
                        *(f"{pad}    {x}" for x in lines), f"{pad}  }}"])

        vector_loop(0, main, k)
        if main < whole:
            vector_loop(main, whole, 1)
        out += [f"{pad}  {x}" for x in self.vector_merge(op, dtype, lanes, accs)]
        lane = " lane"  # not an IR variable name
        for j in range(lanes):
            with self.bind(lane, cvar=f"{accs[0]}[{j}]"):
                st = Store(fold.store.buffer, fold.store.indices, fold.value(Var(lane, dtype)))
                out.append(f"{pad}  {self.store_line(st)}")
        if whole < s.extent:
            cv = self.fresh("i")
            with self.bind(name, cvar=cv, rng=(whole, s.extent - 1)):
                line = self.store_line(self.prep_store(fold.store))
            out += [f"{pad}  for (int64_t {cv} = {whole}; {cv} < {s.extent}; ++{cv}) {{", f"{pad}    {line}",
                    f"{pad}  }}"]
        return [*out, f"{pad}}}"]
