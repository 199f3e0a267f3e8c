"""Lower a partitioned :class:`DeviceLayer` to a GEMM on the NPU: operand encodings, DRAM layout,
constant bytes and the host-side layout steps (im2col for convolutions, reshapes), for a precision.

Precision ``int8``: activations per-tensor and weights per-channel from a
:class:`~tessera.graph.passes.quantize.QuantizationPlan`; the int32 accumulator is requantized to the
output's int8 scale on the store path (bias in int32 units, scale per output column) when the store
path has ``scale`` and ``cast``, else stored as int32 and dequantized by the host.
Precision ``bf16``: bf16 operands, f32 accumulation, bf16 outputs when the store path can cast.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from tessera.codegen.npu.gemm import SIZES, GemmSpec, Tiling, pack_blocks, unpack_blocks
from tessera.codegen.npu.machine import Machine
from tessera.codegen.npu.partition import DeviceLayer
from tessera.errors import CompileError
from tessera.graph.ops.nn import kernel_slices, padded_windows
from tessera.graph.passes.quantize import QuantizationPlan, quantize_array
from tessera.npu.dtypes import decode, encode

ALIGN = 64
# int8 outputs only where per-tensor rounding noise stays below this fraction of the signal's RMS
# (calibrated); otherwise the store path writes f32 (or int32) and nothing is lost to outliers.
OUTPUT_NOISE = 0.02


def _align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


@dataclass
class LayerData:
    """A layer's GEMM plus everything the host needs to run it: constant DRAM bytes and (de)quantization."""

    layer: DeviceLayer
    spec: GemmSpec
    dram_bytes: int
    consts: list[tuple[int, np.ndarray]]  # (dram address, uint8 bytes): bias/scale vectors
    weight: np.ndarray | None = None  # constant B [K, N] in storage dtype, packed per tiling
    a_scale: float | None = None  # int8: activation scale of A
    a_smooth: np.ndarray | None = None  # int8: per-input-channel divisors of A (SmoothQuant)
    b_scale: float | None = None  # int8: per-tensor scale of a runtime B
    out_scale: np.ndarray | None = None  # multiplier from stored output units to float (per column)
    host_act: str = "none"  # activation the host applies after dequantization (store path could not)

    @property
    def a_bytes(self) -> int:
        return self.spec.batch * self.spec.m * self.spec.k * SIZES[self.spec.in_dtype]

    @property
    def host_bytes(self) -> int:
        """Bytes the host moves for this layer: runtime operands written in the device layout, output read."""
        s = self.spec
        b = 0 if s.b_shared else s.batch * s.k * s.n * SIZES[s.in_dtype]
        return self.a_bytes + b + s.batch * s.m * s.n * SIZES[s.out_dtype]

    def const_bytes(self, t: Tiling) -> list[tuple[int, np.ndarray]]:
        """DRAM writes of the constants, the weight packed block-major for tiling ``t``."""
        if self.weight is None:
            return list(self.consts)
        packed = np.ascontiguousarray(pack_blocks(self.weight, t.kb, t.nb)).view(np.uint8)
        return [(self.spec.b_addr, packed), *self.consts]


def _weight_matrix(layer: DeviceLayer, q: np.ndarray) -> np.ndarray:
    """An int8 weight in the layer's [K, N] layout (the float weight's layout rule, applied to q)."""
    if layer.kind == "conv":
        return q.reshape(q.shape[0], -1).T
    if layer.attrs.get("weight_axis", 1) == 0:
        return q.T
    return q


def _int8_act(act: str, s_out: float, m: Machine) -> str:
    """A float activation in int8 output units (saturation at +-127 covers a relu6 whose range the
    calibration already bounds)."""
    if act in ("none", "relu"):
        return act
    lo, hi = (0.0, 6.0) if act == "relu6" else tuple(float(v) for v in act[5:-1].split(","))
    if "clip" in m.store_ops:
        return f"clip({lo / s_out!r},{hi / s_out!r})"
    if lo == 0.0 and "relu" in m.store_ops:
        return "relu"
    raise CompileError(f"activation {act} cannot be applied on this store path in int8")


def lower_layer(layer: DeviceLayer, m: Machine, precision: str, plan: QuantizationPlan | None) -> LayerData:
    """Encodings, DRAM layout and constants of ``layer`` (see module docstring)."""
    n = layer.n
    bias_on_store = "bias" in m.store_ops
    if precision == "bf16":
        in_dt, acc_dt = "bf16", "f32"
        out_dt = "bf16" if "cast" in m.store_ops else "f32"
    else:
        in_dt, acc_dt = "i8", "i32"
        assert plan is not None
        requant = {"scale", "cast"} <= m.store_ops
        out_dt = "i32" if not requant else "i8" if plan.act(layer.out).noise <= OUTPUT_NOISE else "f32"
    if not m.supports(in_dt, acc_dt):
        raise CompileError(f"layer {layer.tag}: the matrix unit has no ({in_dt}, {acc_dt}) pair")
    isz = SIZES[in_dt]
    a_addr = 0
    b_addr = _align(layer.batch * layer.m * layer.k * isz)
    b_size = layer.k * n * isz * (layer.batch if layer.kind == "batched" else 1)
    pos = _align(b_addr + b_size)
    consts: list[tuple[int, np.ndarray]] = []
    weight = smooth = None
    a_scale = b_scale = None
    out_scale = None
    host_act = "none"
    act = layer.act
    scale_vec = None
    bias_vec = None
    if precision == "bf16":
        if layer.weight is not None:
            weight = encode(layer.weight, "bf16").view(np.uint16).reshape(layer.weight.shape)
        if layer.bias is not None:
            bias_vec = layer.bias.astype(np.float32)
    else:
        a_scale = plan.act(layer.a).scale
        sm = plan.smoothing.get(layer.nodes[0].name) if layer.kind != "batched" else None
        if layer.kind == "batched":
            b_scale = plan.act(layer.b).scale
            w_scale = np.full(n, b_scale, np.float64)
        else:
            wq = plan.weights.get(layer.weight_name)
            if sm is not None:
                a_scale, wq, smooth = sm.input.scale, sm.weight, sm.factors
            if wq is None:
                raise CompileError(f"layer {layer.tag}: quantization plan has no weights for {layer.weight_name!r}")
            weight = np.ascontiguousarray(_weight_matrix(layer, wq.q))
            w_scale = wq.scale.astype(np.float64)
        acc_unit = a_scale * w_scale  # float value of one accumulator unit, per column
        if layer.bias is not None:
            bias_vec = plan.bias_int32(layer.bias, a_scale, w_scale.astype(np.float32)).astype(np.float64)
        if out_dt == "i8":
            s_out = plan.act(layer.out).scale
            scale_vec = (acc_unit / s_out).astype(np.float32)
            out_scale = np.full(n, s_out, np.float32)
            act = _int8_act(act, s_out, m)
        elif out_dt == "f32":  # the store path dequantizes: (acc + bias) * unit, activation in float
            scale_vec = acc_unit.astype(np.float32)
        else:
            out_scale = acc_unit.astype(np.float32)
            if act != "relu":
                host_act, act = act, "none"
    bias_addr = scale_addr = None
    if bias_vec is not None:
        bias_addr = pos
        bdt = "f32" if bias_on_store else acc_dt
        consts.append((bias_addr, encode(bias_vec, bdt)))
        pos = _align(pos + n * 4)
    if scale_vec is not None:
        scale_addr = pos
        consts.append((scale_addr, encode(scale_vec, "f32")))
        pos = _align(pos + n * 4)
    out_addr = pos
    pos = _align(pos + layer.batch * layer.m * n * SIZES[out_dt])
    spec = GemmSpec(layer.m, layer.k, n, layer.batch, in_dt, acc_dt, out_dt, act, a_addr, b_addr, out_addr,
                    bias_addr, scale_addr, b_shared=layer.kind != "batched")
    return LayerData(layer, spec, pos, consts, weight, a_scale, smooth, b_scale, out_scale, host_act)


def im2col(x: np.ndarray, layer: DeviceLayer) -> np.ndarray:
    """Rows (n, oh, ow), columns (c, kh, kw): the A matrix of a convolution, in ``x``'s dtype."""
    assert layer.window is not None
    win = dataclasses.replace(layer.window, pads=layer.conv_pads)
    xp, geo, _ = padded_windows(x, win, 0)
    outs = [o for _, _, o in geo]
    nb, c = x.shape[:2]
    k = int(np.prod(win.kernel))
    cols = np.empty((nb, c, k, *outs), dtype=x.dtype)
    for idx, (_, sl) in enumerate(kernel_slices(win, outs)):
        cols[:, :, idx] = xp[(slice(None), slice(None), *sl)]
    return np.ascontiguousarray(cols.reshape(nb, c * k, -1).transpose(0, 2, 1).reshape(-1, c * k))


def _encode(x: np.ndarray, dt: str, scale: float | None) -> np.ndarray:
    """Values in the device dtype's storage (int8 quantized with ``scale``, bf16 bit patterns)."""
    if dt == "i8":
        return quantize_array(x, scale)  # type: ignore[arg-type]
    return encode(x, dt).view(np.uint16).reshape(x.shape)


def input_bytes(ld: LayerData, t: Tiling, a: np.ndarray, b: np.ndarray | None) -> list[tuple[int, np.ndarray]]:
    """DRAM writes (address, bytes) for the runtime operands of a layer: the host's layout step
    (quantize/encode, im2col for convolutions, block-major packing for tiling ``t``)."""
    spec, layer = ld.spec, ld.layer
    a = np.asarray(a, np.float32)
    if ld.a_smooth is not None:
        shape = [1] * a.ndim
        shape[1 if layer.kind == "conv" else -1] = -1
        a = a / ld.a_smooth.reshape(shape)
    aq = _encode(a, spec.in_dtype, ld.a_scale)
    amat = im2col(aq, layer) if layer.kind == "conv" else aq
    amat = pack_blocks(amat.reshape(spec.batch, spec.m, spec.k), t.mb, t.kb)
    out = [(spec.a_addr, np.ascontiguousarray(amat).view(np.uint8).reshape(-1))]
    if layer.kind == "batched":
        assert b is not None
        bq = _encode(np.asarray(b, np.float32), spec.in_dtype, ld.b_scale)
        bq = pack_blocks(bq.reshape(spec.batch, spec.k, spec.n), t.kb, t.nb)
        out.append((spec.b_addr, np.ascontiguousarray(bq).view(np.uint8).reshape(-1)))
    return out


def read_output(ld: LayerData, t: Tiling, dram: np.ndarray) -> np.ndarray:
    """The layer's float32 output in the graph's layout, from the DRAM image after the program ran."""
    spec, layer = ld.spec, ld.layer
    flat = decode(dram, spec.out_addr, (spec.batch, spec.m * spec.n), spec.out_dtype)
    y = unpack_blocks(flat, spec.m, spec.n, t.mb, t.nb).reshape(spec.batch * spec.m, spec.n).astype(np.float32)
    if ld.out_scale is not None:
        y = y * ld.out_scale[None, :]
    if ld.host_act == "relu6":
        y = np.clip(y, 0.0, 6.0)
    elif ld.host_act.startswith("clip("):
        lo, hi = (float(v) for v in ld.host_act[5:-1].split(","))
        y = np.clip(y, lo, hi)
    if layer.kind == "conv":
        nb, co, oh, ow = layer.out_shape
        return np.ascontiguousarray(y.reshape(nb, oh, ow, co).transpose(0, 3, 1, 2))
    return y.reshape(layer.out_shape)
