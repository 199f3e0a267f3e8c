"""Post-training quantization: calibration and int8 parameters (target independent).

:func:`quantize` runs the reference executor on calibration inputs, records the range of every
float value, and quantizes the weights of every matrix-product node (Conv, MatMul, Gemm with a
constant weight operand). The result is a :class:`QuantizationPlan`: an annotation of the graph
(the graph itself is not rewritten) holding

- per-tensor symmetric activation scales (zero point 0): ``q = clip(round(x / s), -127, 127)``,
  from the calibrated min/max or a percentile of ``|x|``;
- per-output-channel symmetric int8 weights and their scales;
- helpers for what an integer matrix unit needs: bias in int32 units
  (``round(b / (s_in * s_w[c]))``) and the requantization scale per output channel
  (``s_in * s_w[c] / s_out``) that the store path multiplies the int32 accumulator by.

:func:`choose_precision` makes the precision policy explicit: ``"auto"`` picks bf16 when the
target lists it (no calibration needed, ~3 significant digits), int8 otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from tessera.errors import GraphError
from tessera.graph.ir import Graph, Node
from tessera.graph.reference import run_reference

QMAX = 127  # symmetric int8: [-127, 127], so that -x is representable
PRECISIONS = ("auto", "int8", "bf16")
MATRIX_OPS = ("Conv", "MatMul", "Gemm")
_PERCENTILE_SAMPLES = 1 << 20
_SAMPLE_ROWS = 256


@dataclass(frozen=True)
class TensorQuant:
    """Per-tensor symmetric quantization of an activation: observed range and scale."""

    lo: float
    hi: float
    scale: float
    rms: float = 0.0

    @property
    def noise(self) -> float:
        """Rounding noise of int8 at this scale relative to the signal's RMS (uniform error model:
        ``scale / sqrt(12) / rms``); large when a few outliers set the range."""
        return self.scale / np.sqrt(12.0) / self.rms if self.rms > 0 else 0.0

    def quantize(self, x: np.ndarray) -> np.ndarray:
        return quantize_array(x, self.scale)

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        return q.astype(np.float32) * np.float32(self.scale)


@dataclass(frozen=True)
class WeightQuant:
    """Per-output-channel symmetric int8 weight: ``w ~= q * scale`` along ``axis``."""

    q: np.ndarray  # int8, the weight's shape
    scale: np.ndarray  # float32, one per output channel
    axis: int


@dataclass(frozen=True)
class Smoothing:
    """Per-input-channel smoothing of one matrix-product node (SmoothQuant): the input is divided by
    ``factors`` along ``axis`` before quantization and the weight multiplied by them, which moves
    activation outliers into the (per-channel quantized) weights; ``x * w`` is unchanged."""

    factors: np.ndarray  # float32, one per input channel
    axis: int  # the input's channel axis
    input: TensorQuant  # of the smoothed input
    weight: WeightQuant  # of the smoothed weight


@dataclass
class QuantizationPlan:
    """Scales per tensor and quantized weights for one graph (see module docstring)."""

    activations: dict[str, TensorQuant] = field(default_factory=dict)
    weights: dict[str, WeightQuant] = field(default_factory=dict)
    method: str = "minmax"
    smoothing: dict[str, Smoothing] = field(default_factory=dict)  # by node name

    def act(self, name: str) -> TensorQuant:
        try:
            return self.activations[name]
        except KeyError:
            raise GraphError(f"quantization plan has no calibrated range for value {name!r}") from None

    def bias_int32(self, bias: np.ndarray, in_scale: float, w_scale: np.ndarray) -> np.ndarray:
        """Bias in accumulator units (int32), saturated to the int32 range."""
        b = np.round(bias.astype(np.float64) / (float(in_scale) * w_scale.astype(np.float64)))
        return np.clip(b, -(2**31), 2**31 - 1).astype(np.int32)

    @staticmethod
    def requant_scale(in_scale: float, w_scale: np.ndarray, out_scale: float) -> np.ndarray:
        """Per-output-channel multiplier from int32 accumulator units to the output's int8 units."""
        return (float(in_scale) * w_scale.astype(np.float64) / float(out_scale)).astype(np.float32)


def choose_precision(requested: str, dtype_pairs: Iterable[tuple[str, str]]) -> str:
    """The matrix precision for a target listing ``dtype_pairs`` (input, accumulator).

    ``auto``: bf16 when (bf16, f32) is listed, else int8; an explicit request the target
    cannot do is an error naming what it can do."""
    if requested not in PRECISIONS:
        raise GraphError(f"unknown precision {requested!r} (choose from {', '.join(PRECISIONS)})")
    pairs = {tuple(p) for p in dtype_pairs}
    have = {"bf16": ("bf16", "f32") in pairs, "int8": ("i8", "i32") in pairs}
    if requested == "auto":
        for p in ("bf16", "int8"):
            if have[p]:
                return p
        raise GraphError(f"target supports neither int8 (i8, i32) nor bf16 (bf16, f32) matrix products: {pairs}")
    if not have[requested]:
        listed = ", ".join(p for p, ok in have.items() if ok) or "none"
        raise GraphError(f"precision {requested!r} is not supported by the target (supported: {listed})")
    return requested


def quantize_array(x: np.ndarray, scale: float | np.ndarray) -> np.ndarray:
    """Round half to even and saturate to [-127, 127] int8."""
    q = np.rint(np.asarray(x, np.float64) / np.asarray(scale, np.float64))
    return np.clip(q, -QMAX, QMAX).astype(np.int8)


def quantize_weight(w: np.ndarray, axis: int) -> WeightQuant:
    """Per-channel symmetric int8 weights along ``axis`` (the output-channel axis)."""
    w = np.asarray(w, np.float32)
    axis = axis % w.ndim
    red = tuple(i for i in range(w.ndim) if i != axis)
    amax = np.max(np.abs(w), axis=red) if red else np.abs(w)
    scale = np.where(amax > 0, amax / QMAX, 1.0).astype(np.float32)
    shape = [1] * w.ndim
    shape[axis] = -1
    return WeightQuant(quantize_array(w, scale.reshape(shape)), scale, axis)


def weight_axis(g: Graph, node: Node) -> tuple[str, int] | None:
    """(constant weight name, its output-channel axis) of a matrix-product node, or None when
    the node's weight operand is not a constant."""
    if node.op == "Conv":
        w = node.inputs[1]
        return (w, 0) if w in g.constants else None
    if node.op == "Gemm":
        w = node.inputs[1]
        return (w, 0 if node.attrs.get("transB", 0) else 1) if w in g.constants else None
    if node.op == "MatMul":
        w = node.inputs[1]
        return (w, -1) if w in g.constants and g.constants[w].ndim >= 2 else None
    return None


def _channel_axis(g: Graph, node: Node) -> int | None:
    """The input's channel (reduction) axis of a matrix-product node with a constant weight."""
    if weight_axis(g, node) is None:
        return None
    if node.op == "Conv":
        return 1
    if node.op == "Gemm" and node.attrs.get("transA", 0):
        return None
    return -1


def _weight_in_axis(g: Graph, node: Node) -> int:
    """The weight's input-channel axis (the one the smoothing factors scale)."""
    if node.op == "Conv":
        return 1
    if node.op == "Gemm":
        return 1 if node.attrs.get("transB", 0) else 0
    return 0


def calibrate(
    g: Graph, calibration: Sequence[Sequence[np.ndarray] | Mapping[str, np.ndarray]],
    method: str = "minmax", percentile: float = 99.99, channels: dict[str, np.ndarray] | None = None,
) -> dict[str, TensorQuant]:
    """Ranges and scales of every float value of ``g`` over the calibration inputs.

    ``minmax`` uses the largest ``|x|`` seen; ``percentile`` the given percentile of ``|x|``
    (per batch, then the largest over batches), which ignores rare outliers. When ``channels`` is
    given, the per-channel ``max |x|`` of every matrix-product input is stored there by node name."""
    if method not in ("minmax", "percentile"):
        raise GraphError(f"unknown calibration method {method!r} (choose from minmax, percentile)")
    if not calibration:
        raise GraphError("calibration needs at least one input set")
    if not 50.0 < percentile <= 100.0:
        raise GraphError(f"calibration percentile must be in (50, 100], got {percentile}")
    probe = g.copy()
    names = [v for v in g.inputs if g.types[v].dtype.is_float]
    names += [o for n in g.nodes for o in n.outputs if o and o in g.types and g.types[o].dtype.is_float]
    probe.outputs = list(dict.fromkeys(names))
    matrix_inputs = [(n, _channel_axis(g, n)) for n in g.nodes if n.op in MATRIX_OPS]
    lo: dict[str, float] = {}
    hi: dict[str, float] = {}
    amax: dict[str, float] = {}
    sq: dict[str, float] = {}
    count: dict[str, int] = {}
    rng = np.random.default_rng(0)
    for feeds in calibration:
        values = run_reference(probe, feeds)
        for name, v in values.items():
            v = np.asarray(v, np.float32)
            if v.size == 0:
                continue
            lo[name] = min(lo.get(name, np.inf), float(v.min()))
            hi[name] = max(hi.get(name, -np.inf), float(v.max()))
            sq[name] = sq.get(name, 0.0) + float(np.square(v, dtype=np.float64).sum())
            count[name] = count.get(name, 0) + v.size
            if method == "percentile":
                flat = np.abs(v.reshape(-1))
                if flat.size > _PERCENTILE_SAMPLES:
                    flat = rng.choice(flat, _PERCENTILE_SAMPLES, replace=False)
                a = float(np.percentile(flat, percentile))
            else:
                a = max(abs(lo[name]), abs(hi[name]))
            amax[name] = max(amax.get(name, 0.0), a)
        if channels is not None:
            for node, axis in matrix_inputs:
                x = values.get(node.inputs[0])
                if axis is None or x is None or x.ndim < 2:
                    continue
                red = tuple(i for i in range(x.ndim) if i != axis % x.ndim)
                cmax = np.abs(x).max(axis=red).astype(np.float64)
                csq = np.square(x, dtype=np.float64).mean(axis=red)
                prev = channels.get(node.name)
                # per channel: max |x|, and the mean square summed over calibration batches (+ count)
                stats = np.stack([cmax, csq, np.ones_like(csq)])
                channels[node.name] = stats if prev is None else np.stack(
                    [np.maximum(prev[0], cmax), prev[1] + csq, prev[2] + 1])
                if prev is None:  # a sample of input rows (channels last) to measure product errors on
                    rows = np.moveaxis(x, axis % x.ndim, -1).reshape(-1, x.shape[axis])
                    pick = rng.choice(rows.shape[0], min(_SAMPLE_ROWS, rows.shape[0]), replace=False)
                    channels[node.name + "#rows"] = rows[np.sort(pick)].astype(np.float32)
    return {n: TensorQuant(lo[n], hi[n], amax[n] / QMAX if amax[n] > 0 else 1.0, float(np.sqrt(sq[n] / count[n])))
            for n in amax}


def _product_error(rows: np.ndarray, w: np.ndarray, in_axis: int, x_scale: float, wq: WeightQuant,
                   factors: np.ndarray | None) -> float:
    """Relative error of the int8 product on sample input rows (``[P, C]``; a convolution's taps all see
    the same rows, a proxy that keeps the channel mix)."""
    wm = np.moveaxis(w, in_axis, -1)  # [..., C]
    qm = np.moveaxis(wq.q.astype(np.float64) * wq.scale.reshape([-1 if i == wq.axis else 1 for i in range(w.ndim)]),
                     in_axis, -1)
    if factors is not None:
        qm = qm / factors  # back to the unsmoothed weight's units
    x = rows.astype(np.float64)
    xs = x / factors if factors is not None else x
    xq = quantize_array(xs, x_scale).astype(np.float64) * x_scale * (factors if factors is not None else 1.0)
    ref = x @ wm.reshape(-1, wm.shape[-1]).T
    got = xq @ qm.reshape(-1, qm.shape[-1]).T
    return float(np.linalg.norm(got - ref) / max(np.linalg.norm(ref), 1e-300))


def _smoothing(g: Graph, node: Node, stats: np.ndarray, rows: np.ndarray, alpha: float,
               before: TensorQuant) -> Smoothing | None:
    """SmoothQuant factors for ``node``, or None when they would not lower the product's int8 error
    measured on the sample rows."""
    wa = weight_axis(g, node)
    axis = _channel_axis(g, node)
    if wa is None or axis is None:
        return None
    cmax, msq = stats[0], stats[1] / stats[2]
    w = np.asarray(g.constants[wa[0]], np.float32)
    in_axis = _weight_in_axis(g, node)
    if w.shape[in_axis] != cmax.size:
        return None
    red = tuple(i for i in range(w.ndim) if i != in_axis)
    wmax = np.abs(w).max(axis=red)
    ok = (cmax > 0) & (wmax > 0)
    f = np.ones(cmax.size, np.float64)
    f[ok] = cmax[ok] ** alpha / wmax[ok].astype(np.float64) ** (1 - alpha)
    f = f.astype(np.float32)
    if not np.all(np.isfinite(f)) or not np.all(f > 0):
        return None
    xmax = float((cmax / f).max())
    after = TensorQuant(-xmax, xmax, xmax / QMAX if xmax > 0 else 1.0, float(np.sqrt(np.mean(msq / f.astype(
        np.float64) ** 2))))
    shape = [1] * w.ndim
    shape[in_axis] = -1
    wq = quantize_weight(w * f.reshape(shape), wa[1])
    plain = _product_error(rows, w, in_axis, before.scale, quantize_weight(w, wa[1]), None)
    if _product_error(rows, w, in_axis, after.scale, wq, f.astype(np.float64)) >= plain:
        return None
    return Smoothing(f, axis, after, wq)


def quantize(
    g: Graph, calibration: Sequence[Sequence[np.ndarray] | Mapping[str, np.ndarray]],
    method: str = "minmax", percentile: float = 99.99, smooth: float | None = 0.7,
) -> QuantizationPlan:
    """Calibrate activations and quantize the weights of every Conv/MatMul/Gemm (module docstring).

    ``smooth`` = alpha of SmoothQuant (factor ``max|x_j|^alpha / max|w_j|^(1-alpha)`` per input channel
    ``j``), applied to a matrix product with a constant weight where it lowers the int8 product's error
    on a sample of calibration rows; None disables it."""
    channels: dict[str, np.ndarray] = {}
    plan = QuantizationPlan(calibrate(g, calibration, method, percentile, channels if smooth else None), {}, method)
    for node in g.nodes:
        if node.op in MATRIX_OPS:
            wa = weight_axis(g, node)
            if wa is not None and wa[0] not in plan.weights:
                plan.weights[wa[0]] = quantize_weight(g.constants[wa[0]], wa[1])
            if smooth is not None and node.name in channels and method == "minmax":
                sm = _smoothing(g, node, channels[node.name], channels[node.name + "#rows"], smooth,
                                plan.act(node.inputs[0]))
                if sm is not None:
                    plan.smoothing[node.name] = sm
    return plan


__all__ = [
    "PRECISIONS",
    "QuantizationPlan",
    "Smoothing",
    "TensorQuant",
    "WeightQuant",
    "calibrate",
    "choose_precision",
    "quantize",
    "quantize_array",
    "quantize_weight",
    "weight_axis",
]
