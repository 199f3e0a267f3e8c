"""Workload keys: stable, independent of names, dependent on shapes/constness; de-duplicated tasks."""

from __future__ import annotations

from pathlib import Path

from tessera.schedule.rules import schedule_stages
from tessera.targets import load_target
from tessera.tune.tasks import extract_tasks, merge_tasks
from tessera.tune.workload import canonical_schedules, instance_schedules

from .helpers import conv_relu, matmul_relu

TARGET = load_target("x86-avx2")


def test_key_ignores_names_and_is_stable() -> None:
    a = extract_tasks(matmul_relu(names="first"))
    b = extract_tasks(matmul_relu(names="other"))  # fresh tensor/axis counters, other node names
    assert len(a) == len(b) == 1
    assert a[0].key == b[0].key
    assert len(a[0].key) == 64 and a[0].weight == 1
    assert a[0].flops == 2 * 32 * 64 * 48  # one stage: the matmul with its Relu epilogue
    assert a[0].name == "MatMul+Relu[32x48]"


def test_key_depends_on_shape_constness_and_structure() -> None:
    base = extract_tasks(matmul_relu())[0].key
    assert extract_tasks(matmul_relu(m=16))[0].key != base
    assert extract_tasks(matmul_relu(const_weight=False))[0].key != base
    assert extract_tasks(conv_relu())[0].key != base


def test_identical_kernels_are_one_task_weighted_by_count() -> None:
    # layers 0 and 1 are 32x64 @ 64x64 (identical workloads); layer 2 is 64 -> 48
    tasks = extract_tasks(matmul_relu(layers=3))
    assert sorted(t.weight for t in tasks) == [1, 2]
    heavy = next(t for t in tasks if t.weight == 2)
    assert sorted(heavy.nodes) == ["a_matmul0", "a_matmul1", "a_relu0", "a_relu1"]
    # across models: identical workloads are tuned once
    merged = merge_tasks(extract_tasks(matmul_relu(names="m1")), extract_tasks(matmul_relu(names="m2")),
                         extract_tasks(conv_relu()))
    assert [t.weight for t in merged] == [2, 1]


def test_canonical_traces_replay_on_another_instance() -> None:
    a = extract_tasks(conv_relu("one"))[0].gc
    b = extract_tasks(conv_relu("two"))[0].gc
    sa = schedule_stages(a.stages, TARGET, frozenset(a.constants))
    sb = schedule_stages(b.stages, TARGET, frozenset(b.constants))
    canon = canonical_schedules(a, sa)
    assert canon == canonical_schedules(b, sb)
    axes = {ax.name for st in a.stages for ax in st.tensor.axes}
    tokens = {tok for steps in canon for step in steps for arg in step.args if isinstance(arg, str)
              for tok in arg.split("_")}
    assert tokens and not tokens & axes  # only canonical names in the stored trace
    assert instance_schedules(b, canon) == sb


def test_key_is_stable_across_processes() -> None:
    """The database outlives the process: keys must not depend on hash seeds or global counters."""
    import os
    import subprocess
    import sys

    code = ("from tests.tune.helpers import conv_relu, matmul_relu\n"
            "from tessera.tune.tasks import extract_tasks\n"
            "matmul_relu(names='warm-up')  # advances the global name counters\n"
            "print(extract_tasks(conv_relu())[0].key, extract_tasks(matmul_relu())[0].key)")
    here = f"{extract_tasks(conv_relu())[0].key} {extract_tasks(matmul_relu())[0].key}"
    root = str(Path(__file__).resolve().parents[2])
    for seed in ("1", "2"):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root,
                             env={**os.environ, "PYTHONHASHSEED": seed}).stdout.strip()
        assert out == here
