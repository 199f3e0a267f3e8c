"""Static memory planner: no overlap of live buffers (checked by brute force), optimal on small
known cases, large savings on long chains."""

from __future__ import annotations

import random
import time

import numpy as np
import pytest

from tessera.runtime.memory_plan import BufferLife, MemoryPlan, check_plan, live_lower_bound, plan_memory


def brute_force_check(buffers: list[BufferLife], plan: MemoryPlan) -> None:
    """Rasterise (time x 64-byte address block) and assert no cell is owned by two live buffers."""
    blocks = plan.arena_bytes // 64
    steps = max(b.last_use for b in buffers) + 1
    owner = np.full((steps, blocks), -1, dtype=np.int64)
    for i, b in enumerate(buffers):
        off = plan.offsets[b.name]
        assert off % 64 == 0
        assert off + b.nbytes <= plan.arena_bytes
        lo, hi = off // 64, (off + b.nbytes + 63) // 64
        cells = owner[b.first_use : b.last_use + 1, lo:hi]
        assert (cells == -1).all(), f"{b.name} overlaps {set(cells[cells >= 0].tolist())}"
        cells[...] = i


def random_buffers(rng: random.Random, n: int, steps: int) -> list[BufferLife]:
    out = []
    for i in range(n):
        first = rng.randrange(steps)
        last = min(steps - 1, first + rng.choice([0, 0, 1, 2, 3, rng.randrange(steps)]))
        out.append(
            BufferLife(f"b{i}", rng.choice([0, 1, 64, 100, 256, 1000, 4096, rng.randrange(1, 20000)]), first, last)
        )
    return out


@pytest.mark.parametrize("seed", range(40))
def test_random_intervals_never_overlap(seed: int) -> None:
    rng = random.Random(seed)
    bufs = random_buffers(rng, rng.randrange(1, 60), rng.randrange(1, 30))
    plan = plan_memory(bufs)
    brute_force_check(bufs, plan)
    check_plan(bufs, plan)
    assert set(plan.offsets) == {b.name for b in bufs}
    assert live_lower_bound(bufs) <= plan.arena_bytes <= plan.naive_bytes
    assert plan.naive_bytes == sum((b.nbytes + 63) // 64 * 64 for b in bufs)


def test_check_plan_detects_overlap() -> None:
    bufs = [BufferLife("a", 128, 0, 2), BufferLife("b", 128, 2, 3)]
    bad = MemoryPlan({"a": 0, "b": 64}, 192, 256)
    with pytest.raises(AssertionError, match="a .* overlaps b"):
        check_plan(bufs, bad)
    with pytest.raises(AssertionError, match="not aligned"):
        check_plan(bufs, MemoryPlan({"a": 0, "b": 130}, 512, 256))


@pytest.mark.parametrize(
    ("bufs", "optimum"),
    [
        # disjoint lifetimes share everything
        ([BufferLife("a", 1000, 0, 0), BufferLife("b", 1000, 1, 1), BufferLife("c", 500, 2, 2)], 1024),
        # all live at once: no reuse possible
        ([BufferLife("a", 64, 0, 5), BufferLife("b", 128, 0, 5), BufferLife("c", 64, 0, 5)], 256),
        # two-step chain ping-pong: a->b->c->d with each buffer live for two steps
        ([BufferLife(f"t{i}", 256, i, i + 1) for i in range(6)], 512),
        # a long-lived skip connection plus a chain beside it (residual block)
        (
            [BufferLife("skip", 512, 0, 5)] + [BufferLife(f"r{i}", 256, i, i + 1) for i in range(5)],
            1024,
        ),
        # a small buffer fits in the hole a freed large one leaves
        (
            [
                BufferLife("big", 1024, 0, 1),
                BufferLife("keep", 256, 0, 3),
                BufferLife("s1", 512, 2, 3),
                BufferLife("s2", 512, 2, 3),
            ],
            1280,
        ),
    ],
)
def test_known_cases_reach_optimum(bufs: list[BufferLife], optimum: int) -> None:
    plan = plan_memory(bufs)
    brute_force_check(bufs, plan)
    assert live_lower_bound(bufs) == optimum
    assert plan.arena_bytes == optimum


def test_cnn_like_chain_arena_much_smaller_than_naive() -> None:
    # 50 layers, each output consumed by the next layer; sizes shrink/grow like a CNN.
    bufs = []
    size = 64 * 112 * 112 * 4
    for i in range(50):
        if i % 10 == 9:
            size //= 2
        bufs.append(BufferLife(f"act{i}", size, i, i + 1))
    plan = plan_memory(bufs)
    check_plan(bufs, plan)
    assert plan.arena_bytes == live_lower_bound(bufs)
    assert plan.arena_bytes * 8 < plan.naive_bytes
    assert plan.saving > 0.85


def test_alignment_and_validation() -> None:
    bufs = [BufferLife("a", 1, 0, 1), BufferLife("b", 1, 0, 1)]
    plan = plan_memory(bufs, alignment=256)
    assert sorted(plan.offsets.values()) == [0, 256] and plan.arena_bytes == 512
    with pytest.raises(ValueError, match="power of two"):
        plan_memory(bufs, alignment=48)
    with pytest.raises(ValueError, match="duplicate buffer names"):
        plan_memory([BufferLife("a", 1, 0, 0), BufferLife("a", 2, 1, 1)])
    with pytest.raises(ValueError, match="last_use 0 < first_use 1"):
        BufferLife("a", 1, 1, 0)
    assert plan_memory([]).arena_bytes == 0


def test_inplace_hint_shares_bytes() -> None:
    # relu(x) in place: y reuses x's bytes, z (a new buffer) does not collide with either
    bufs = [BufferLife("x", 1024, 0, 1), BufferLife("y", 1024, 1, 2), BufferLife("z", 512, 1, 3)]
    plan = plan_memory(bufs, inplace={"y": "x"})
    assert plan.aliases == {"y": "x"}
    assert plan.offsets["y"] == plan.offsets["x"]
    assert plan.arena_bytes == 1024 + 512
    check_plan(bufs, plan)
    # without the hint x and y are both live at step 1
    assert plan_memory(bufs).arena_bytes == 2048 + 512


def test_inplace_hint_ignored_when_unsafe() -> None:
    # x is still read at step 2, after y is produced at step 1: overwriting it would be wrong
    bufs = [BufferLife("x", 1024, 0, 2), BufferLife("y", 1024, 1, 2)]
    plan = plan_memory(bufs, inplace={"y": "x", "nope": "x"})
    assert plan.aliases == {}
    assert plan.offsets["x"] != plan.offsets["y"]
    check_plan(bufs, plan)


def test_inplace_chain() -> None:
    bufs = [BufferLife(f"t{i}", 4096, i, i + 1) for i in range(5)] + [BufferLife("side", 64, 0, 5)]
    plan = plan_memory(bufs, inplace={f"t{i + 1}": f"t{i}" for i in range(4)})
    assert len({plan.offsets[f"t{i}"] for i in range(5)}) == 1
    assert plan.arena_bytes == 4096 + 64
    check_plan(bufs, plan)


def test_planner_is_fast_on_large_graphs() -> None:
    rng = random.Random(1)
    bufs = [BufferLife(f"b{i}", rng.randrange(64, 1 << 20), i, i + rng.choice([1, 1, 2, 5, 40])) for i in range(2000)]
    t0 = time.perf_counter()
    plan = plan_memory(bufs)
    elapsed = time.perf_counter() - t0
    check_plan(bufs, plan)
    assert plan.arena_bytes < 1.3 * live_lower_bound(bufs)
    assert elapsed < 5.0
