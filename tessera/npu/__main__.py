"""``python -m tessera.npu``: list NPU descriptions, or assemble and simulate a text program.

    python -m tessera.npu describe [NAME_OR_PATH ...]
    python -m tessera.npu run PROGRAM.s --target NAME_OR_PATH [--dram-bytes N] [--timing-only] [--trace]
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from tessera.errors import TesseraError
from tessera.npu.asm import assemble_file
from tessera.npu.hw import list_descriptions, load_description
from tessera.npu.isa import NpuProgramError

_MAX_DRAM = (1 << 63) - 1  # addresses are int64


class _Parser(argparse.ArgumentParser):
    """Usage errors as one ``error: ...`` line (exit status 2), like every other error here."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {self.prog}: {message}\n")


def _describe(names: list[str]) -> None:
    for name in names or list_descriptions():
        d = load_description(name)
        print("  ".join(f"{k}={v}" for k, v in d.summary().items()))


def _run(args: argparse.Namespace) -> None:
    from tessera.npu.sim import simulate

    if not 0 < args.dram_bytes <= _MAX_DRAM:
        raise NpuProgramError(f"--dram-bytes must be a positive number of bytes up to 2**63 - 1, got {args.dram_bytes}")
    if not args.timing_only:  # the functional simulator holds the whole DRAM
        from tessera.limits import check_allocation

        check_allocation(args.dram_bytes, "--dram-bytes (the simulated DRAM)")
    program = assemble_file(args.program)
    r = simulate(program, args.target, args.dram_bytes, functional=not args.timing_only, trace=args.trace)
    if r.trace:
        for core, idx, queue, start, end in r.trace:
            print(f"core {core} #{idx:<5} {queue:<8} {start:>12.1f} {end:>12.1f}")
    print(f"{r.description}: {r.instructions} instructions, {r.cycles} cycles ({r.seconds * 1e6:.2f} us), "
          f"MAC utilization {r.utilization:.1%}, {r.folds} folds")
    print(f"bound: {r.bound} ({r.bound_cycles:.0f} cycles: compute {r.compute_bound_cycles:.0f}, DRAM "
          f"{r.memory_bound_cycles:.0f}); DRAM read {r.dram_read_bytes} B, written {r.dram_write_bytes} B")
    print("busy cycles: " + ", ".join(f"{q} {c:.0f}" for q, c in r.queue_busy.items()))
    if r.energy_pj is not None:
        print(f"energy {r.energy_pj / 1e6:.3f} uJ")
    for tag, t in r.tags.items():
        print(f"  {tag}: {t.cycles:.0f} cycles, {t.macs} MACs, {t.dram_bytes} DRAM B, bound {t.bound}")


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="python -m tessera.npu", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("describe", help="key figures of NPU descriptions (default: the built-in ones)")
    p.add_argument("names", nargs="*")
    p = sub.add_parser("run", help="assemble a text program and simulate it")
    p.add_argument("program")
    p.add_argument("--target", required=True)
    p.add_argument("--dram-bytes", type=int, default=1 << 24, help="size of the (zeroed) DRAM")
    p.add_argument("--timing-only", action="store_true")
    p.add_argument("--trace", action="store_true", help="print every instruction's start and completion")
    args = parser.parse_args(argv)
    try:
        _describe(args.names) if args.cmd == "describe" else _run(args)
    except (TesseraError, OSError) as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except MemoryError as e:  # safety net: sizes are checked before allocating
        print(f"error: out of memory: {str(e) or 'a memory request failed'}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
