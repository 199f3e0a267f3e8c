"""NPU instruction set: validation against a description (errors by type and message) and the text form's
exact round trip."""

from __future__ import annotations

import pytest

from tessera.npu import (
    Addr,
    Barrier,
    Config,
    DmaLoad,
    DmaStore,
    Finish,
    Gemm,
    NpuProgramError,
    Program,
    Signal,
    Vec,
    Wait,
    assemble,
    disassemble,
    load_description,
    sanitize_tag,
    validate,
)

G1, G2, G3 = (load_description(f"npu-gen{i}") for i in (1, 2, 3))


def _gemm(q: str = "compute", **kw: object) -> Gemm:
    f = dict(a=Addr("spad", 0), b=Addr("spad", 4096), c=Addr("acc", 0), m=32, k=32, n=32, dtype="i8",
             acc_dtype="i32", accumulate=False, a_stride=32, b_stride=32, c_stride=32)
    f.update(kw)
    return Gemm(q, **f)  # type: ignore[arg-type]


EVERY = Program([[
    Config("compute", "dataflow", "output-stationary"),
    DmaLoad("load", Addr("spad", 0), Addr("dram", 0x40), 30, 30, "i8", 30, 32, pad=(1, 1, 1, 1), tag="conv1"),
    Signal("load", 0), Wait("compute", 0),
    _gemm(accumulate=True, dataflow="output-stationary", tag="conv1"),
    Vec("vector", "add", Addr("spad", 0x8000), Addr("spad", 0x8000), 64, "bf16", src1=Addr("spad", 0x9000),
        rows=4, dst_stride=80, src_stride=96, src1_bcast="row"),
    Vec("vector", "mul", Addr("acc", 0x100), Addr("acc", 0x100), 16, "f32", imm=0.125),
    Vec("vector", "cast", Addr("spad", 0xA000), Addr("acc", 0x100), 16, "f32", out_dtype="bf16"),
    Vec("vector", "shift", Addr("acc", 0x200), Addr("acc", 0x200), 8, "i32", imm=-3.0),
    DmaStore("store", Addr("dram", 0), Addr("acc", 0), 32, 32, "i32", "i8", 32, 32, bias=Addr("spad", 0xB000),
             scale=Addr("spad", 0xB080), act="clip", lo=-4.5, hi=6.0),
    DmaStore("store", Addr("dram", 0x1000), Addr("acc", 0), 32, 32, "f32", "bf16", 32, 32, scale=0.1,
             act="relu6"),
    Barrier("store"), Finish("store"),
]])


def test_round_trip_every_instruction() -> None:
    validate(EVERY, G2, dram_bytes=1 << 16)
    text = disassemble(EVERY)
    assert assemble(text) == EVERY
    assert disassemble(assemble(text)) == text
    assert "act=clip(-4.5,6.0)" in text and "pad=1,1,1,1" in text and "scale=0.1 " in text
    assert "vector vec add dst=spad:0x8000" in text and "src1_bcast=row" in text and "tag=conv1" in text


def test_round_trip_multicore() -> None:
    prog = Program([[_gemm(), Barrier("compute")], [], [Barrier("load"), Finish("load")]])
    text = disassemble(prog)
    assert text.count(".core") == 3
    assert assemble(text) == prog


def test_assembler_syntax() -> None:
    p = assemble("# comment only\n  inorder  gemm a=spad:16 b=spad:0x100 c=acc:0 m=1 k=2 n=3 dtype=i8 "
                 "acc_dtype=i32 accumulate=1 a_stride=2 b_stride=3 c_stride=3   # trailing\n")
    assert p.cores[0][0] == Gemm("inorder", Addr("spad", 16), Addr("spad", 256), Addr("acc", 0), 1, 2, 3, "i8",
                                 "i32", True, 2, 3, 3)
    cases = [("inorder gemz", "line 1: unknown opcode 'gemz'"),
             ("inorder signal tokn=1", "line 1: unknown field 'tokn' for signal"),
             ("inorder signal", "line 1: signal is missing field.*token"),
             ("inorder signal token=x", "line 1: bad value for 'token'"),
             ("inorder dma.load dst=sram:0", "bad value for 'dst'.*space"),
             ("inorder signal token=1 token=2", "given twice"),
             ("inorder vec dst=spad:0", "vec needs an op name"),
             (".core 1\ninorder finish", "line 1: expected '.core 0'")]
    for text, pattern in cases:
        with pytest.raises(NpuProgramError, match=pattern):
            assemble(text)


def _bad(prog: Program, desc: object, pattern: str) -> None:
    with pytest.raises(NpuProgramError, match=pattern):
        validate(prog, desc, dram_bytes=1 << 20)  # type: ignore[arg-type]


def test_validation_errors() -> None:
    one = lambda *ins: Program([list(ins)])  # noqa: E731
    _bad(one(_gemm("load")), G1, r"core 0, instruction 0 \(gemm\): queue 'load' is not one of .*inorder")
    _bad(one(_gemm("inorder", dtype="bf16", acc_dtype="f32")), G1, r"dtype pair \(bf16, f32\) is not supported")
    _bad(one(_gemm(dataflow="weight-stationary")), G2, r"dataflow 'weight-stationary' is not supported")
    _bad(one(_gemm(m=40000)), G2, r"a region spad:0x0 .* \(40000x32, stride 32\) exceeds spad \(1048576 bytes\)")
    _bad(one(_gemm(c=Addr("acc", 262144 - 64))), G2, r"c region acc:0x3ffc0 .* exceeds acc \(262144 bytes\)")
    _bad(one(_gemm(a=Addr("acc", 0))), G2, r"a must be in spad, got 'acc'")
    _bad(one(_gemm(a_stride=8)), G2, r"a_stride=8 is smaller than the row length 32")
    _bad(one(_gemm(c=Addr("acc", 2))), G2, r"c address acc:0x2 is not aligned to the 4-byte element")
    _bad(one(_gemm(tag="has space")), G2, r"tag 'has space' is not an identifier")
    _bad(one(Vec("inorder", "add", Addr("spad", 0), Addr("spad", 0), 8, "i8", imm=1.0)), G1,
         r"vec add: the description 'npu-gen1' has no vector unit")
    _bad(one(Vec("vector", "exp", Addr("spad", 0), Addr("spad", 0), 8, "i8")), G2, r"'exp' needs a float dtype")
    _bad(one(Vec("vector", "tanh", Addr("spad", 0), Addr("spad", 0), 8, "f32")), G2, r"unknown vector op 'tanh'")
    _bad(one(Vec("vector", "add", Addr("spad", 0), Addr("spad", 0), 8, "f32")), G2,
         r"needs exactly one of src1 and imm")
    _bad(one(DmaLoad("load", Addr("spad", 0), Addr("dram", 0), 5000, 1, "i8", 1, 1)), G2,
         r"rows=5000 exceeds dma.max_rows=4096")
    _bad(one(DmaLoad("load", Addr("l2", 0), Addr("dram", 0), 1, 1, "i8", 1, 1)), G2, r"has no \[memory.l2\]")
    _bad(one(DmaLoad("load", Addr("spad", 0), Addr("dram", (1 << 20) - 4), 1, 8, "i8", 8, 8)), G2,
         r"src region .* exceeds dram")
    _bad(one(DmaStore("inorder", Addr("dram", 0), Addr("acc", 0), 1, 4, "i32", "i8", 4, 4,
                      bias=Addr("spad", 0))), G1, r"store-path op 'bias' is not supported")
    _bad(one(DmaStore("store", Addr("dram", 0), Addr("acc", 0), 1, 4, "i32", "i8", 4, 4, act="gelu")), G2,
         r"act must be one of none, relu, relu6, clip")
    _bad(one(Signal("inorder", 0)), G1, r"token 0 out of range \(execution.tokens = 0\)")
    _bad(one(Wait("load", 32)), G2, r"token 32 out of range")
    _bad(one(Config("compute", "dataflow", "weight-stationary")), G2, r"dataflow 'weight-stationary' is not")
    _bad(one(Finish("load"), Signal("load", 1)), G2, r"instruction 0 \(finish\): instructions follow finish")
    _bad(Program([[Barrier("load")], []]), G3, r"different numbers of barriers: \[1, 0\]")
    _bad(Program([[], [], [], [], []]), G3, r"5 cores but 'npu-gen3' has 4")


def test_config_sets_dataflow_and_l2_allowed_on_gen3() -> None:
    validate(Program([[DmaLoad("load", Addr("l2", 0), Addr("dram", 0), 4, 64, "i8", 64, 64),
                       DmaLoad("load", Addr("spad", 0), Addr("l2", 0), 4, 64, "i8", 64, 64),
                       _gemm(m=100, k=200, n=50, a_stride=200, b_stride=50, c_stride=50)]]), G3)


def test_sanitize_tag() -> None:
    assert sanitize_tag("/layer1/conv 0:1") == "_/layer1/conv_0_1"
    assert sanitize_tag("Conv_12") == "Conv_12" and sanitize_tag("0abc") == "_0abc"


def test_vector_imm_checks() -> None:
    one = lambda *ins: Program([list(ins)])  # noqa: E731
    _bad(one(Vec("vector", "mul", Addr("spad", 0), Addr("spad", 0), 8, "i32", imm=0.5)), G2,
         r"imm=0.5 must be an integer for integer dtype 'i32'")
    _bad(one(Vec("vector", "shift", Addr("spad", 0), Addr("spad", 0), 8, "i32")), G2, r"shift needs an integer imm")
    _bad(one(Vec("vector", "max", Addr("spad", 0), Addr("spad", 0), 8, "f32", imm=float("nan"))), G2,
         r"imm must be a finite number")
    validate(one(Vec("vector", "mul", Addr("spad", 0), Addr("spad", 0), 8, "i32", imm=3.0)), G2)


def test_module_cli_describe_and_run(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from tessera.npu.__main__ import main

    assert main(["describe"]) == 0
    out = capsys.readouterr().out
    assert "name=npu-gen3" in out and "matrix=64x32 dot-product" in out and "L2=4 MiB" in out
    prog = tmp_path / "p.s"
    prog.write_text(disassemble(Program([[_gemm("compute", tag="l1")]])))
    assert main(["run", str(prog), "--target", "npu-gen2", "--timing-only"]) == 0
    out = capsys.readouterr().out
    # output-stationary 32x32x32: one fold streaming k=32 cycles + fill 64
    assert "1 instructions, 96 cycles" in out and "l1: 96 cycles, 32768 MACs" in out
    assert main(["run", str(prog), "--target", "npu-gen1"]) == 2
    assert "queue 'compute' is not one of the description's queues" in capsys.readouterr().err
