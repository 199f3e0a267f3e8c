"""C types, literals and the module prelude (includes, vector typedefs, helpers)."""

from __future__ import annotations

import math
import re

import numpy as np

C_TYPES: dict[str, str] = {
    "f32": "float", "f64": "double",
    "i8": "int8_t", "i16": "int16_t", "i32": "int32_t", "i64": "int64_t",
    "u8": "uint8_t", "u16": "uint16_t", "u32": "uint32_t", "u64": "uint64_t",
    "bool": "uint8_t",
    # 16-bit floats are stored as their bit patterns and only converted (see half_cast)
    "f16": "uint16_t", "bf16": "uint16_t",
}
WIDTH: dict[str, int] = {"f32": 4, "f64": 8, "i8": 1, "i16": 2, "i32": 4, "i64": 8, "u8": 1, "u16": 2, "u32": 4,
                         "u64": 8, "bool": 1, "f16": 2, "bf16": 2}
FLOATS = ("f32", "f64")
HALF = ("f16", "bf16")
SIGNED = ("i8", "i16", "i32", "i64")
UNSIGNED = ("u8", "u16", "u32", "u64")
NARROW = ("i8", "i16", "u8", "u16")  # C promotes these to int: results are cast back to wrap
VECTOR_BYTES = (16, 32, 64)
_VECTOR_DTYPES = ("f32", "f64", *SIGNED, *UNSIGNED)
_INT_OF_WIDTH = {1: "i8", 2: "i16", 4: "i32", 8: "i64"}

IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_C_KEYWORDS = frozenset(
    "auto break case char const continue default do double else enum extern float for goto if inline int long "
    "register restrict return short signed sizeof static struct switch typedef union unsigned void volatile while "
    "_Bool _Complex _Imaginary".split())


def check_ident(name: str, what: str) -> str:
    """Return ``name`` if it is a safe C identifier, else raise ValueError."""
    if not isinstance(name, str) or not IDENT.match(name) or name in _C_KEYWORDS or name.startswith("tsr_"):
        raise ValueError(f"unsafe {what} name {name!r}: must match {IDENT.pattern}, not be a C keyword "
                         "and not start with 'tsr_'")
    return name


def c_type(dtype: str) -> str:
    """C element type of a dtype (bool is stored as uint8_t, float16/bfloat16 as uint16_t bits)."""
    try:
        return C_TYPES[dtype]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}") from None


def vec_type(dtype: str, lanes: int, unaligned: bool = False) -> str:
    """Name of the GCC vector type with ``lanes`` elements of ``dtype`` (bool masks use ints)."""
    return f"tsr_{dtype}x{lanes}" + ("u" if unaligned else "")


def mask_dtype(width: int) -> str:
    return _INT_OF_WIDTH[width]


def vector_ok(dtype: str, lanes: int) -> bool:
    return dtype in _VECTOR_DTYPES and lanes > 1 and WIDTH[dtype] * lanes in VECTOR_BYTES


def literal(value: int | float | bool, dtype: str) -> str:
    """A C literal of exactly ``dtype``'s value (float32 constants are rounded to float32 first)."""
    c_type(dtype)
    if dtype in HALF:
        from tessera.graph.dtypes import DType

        bits = int(np.array(value, DType.parse(dtype).np).view(np.uint16))
        return f"((uint16_t){bits:#06x})"
    if dtype in FLOATS:
        v = float(value)
        cast = "(float)" if dtype == "f32" else "(double)"
        if math.isnan(v):
            return f"({cast}NAN)"
        if math.isinf(v):
            return f"({cast}{'-' if v < 0 else ''}INFINITY)"
        s = f"{str(np.float32(v))}f" if dtype == "f32" else repr(v)
        return f"({s})" if s.startswith("-") else s
    v = int(value)
    if dtype == "bool":
        return "1" if v else "0"
    if dtype in UNSIGNED:
        v %= 2 ** (8 * WIDTH[dtype])
        return str(v) if v < 2**31 else f"UINT64_C({v})"
    if -(2**31) < v < 2**31:
        return f"({v})" if v < 0 else str(v)
    if v == -(2**63):
        return "(-INT64_C(9223372036854775807) - 1)"
    return f"INT64_C({v})" if v >= 0 else f"(-INT64_C({-v}))"


def half_cast(a: str, src: str, dst: str) -> str:
    """C text converting ``a`` (of dtype ``src``) to ``dst`` where either is float16/bfloat16:
    half values widen to float exactly; conversions to half round to nearest even, once
    (float16 from double directly, as NumPy; bfloat16 through float, as ml_dtypes)."""
    if src in HALF:
        a = f"tsr_{src}_to_f32({a})"
        src = "f32"
        if dst == "f32":
            return a
        if dst not in HALF:
            if dst == "bool":
                return f"({a} != 0)"
            return f"tsr_f2{dst}((double)({a}))" if dst in SIGNED or dst in UNSIGNED else f"(({c_type(dst)})({a}))"
    if dst not in HALF:
        raise ValueError(f"half_cast: neither {src} nor {dst} is a 16-bit float")
    wide = "f32" if src == "f32" else "f64"
    return f"tsr_{wide}_to_{dst}({a if src == wide else f'(double)({a})'})"


def _vector_typedefs() -> list[str]:
    out = []
    for dt in _VECTOR_DTYPES:
        ct, w = C_TYPES[dt], WIDTH[dt]
        for nbytes in VECTOR_BYTES:
            n = nbytes // w
            out.append(f"typedef {ct} {vec_type(dt, n)} __attribute__((vector_size({nbytes})));")
            # may_alias: vector loads/stores through these pointers alias the scalar arrays
            out.append(f"typedef {ct} {vec_type(dt, n, True)} __attribute__((vector_size({nbytes}), aligned({w}), "
                       "may_alias));")
    return out


_HELPERS = r"""
/* b == -1 is done by negating in unsigned arithmetic: INT64_MIN / -1 traps (SIGFPE) in C and wraps in NumPy */
static inline int64_t tsr_floordiv_i64(int64_t a, int64_t b) {
  if (b == 0) return 0;
  if (b == -1) return (int64_t)(0 - (uint64_t)a);
  int64_t q = a / b;
  return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}
static inline int64_t tsr_mod_i64(int64_t a, int64_t b) {
  if (b == 0 || b == -1) return 0;
  int64_t r = a % b;
  return (r != 0 && ((r < 0) != (b < 0))) ? r + b : r;
}
static inline int64_t tsr_fmod_i64(int64_t a, int64_t b) { return (b == 0 || b == -1) ? 0 : a % b; }
static inline int64_t tsr_div_i64(int64_t a, int64_t b) {
  return b == 0 ? 0 : b == -1 ? (int64_t)(0 - (uint64_t)a) : a / b;
}
static inline uint64_t tsr_div_u64(uint64_t a, uint64_t b) { return b == 0 ? 0 : a / b; }
static inline uint64_t tsr_mod_u64(uint64_t a, uint64_t b) { return b == 0 ? 0 : a % b; }
static inline int64_t tsr_min_i64(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t tsr_max_i64(int64_t a, int64_t b) { return a > b ? a : b; }
static inline uint64_t tsr_min_u64(uint64_t a, uint64_t b) { return a < b ? a : b; }
static inline uint64_t tsr_max_u64(uint64_t a, uint64_t b) { return a > b ? a : b; }
static inline int64_t tsr_abs_i64(int64_t a) { return a < 0 ? (int64_t)(0 - (uint64_t)a) : a; }
static inline int64_t tsr_sign_i64(int64_t a) { return (a > 0) - (a < 0); }
static inline int64_t tsr_pow_i64(int64_t a, int64_t b) {
  if (b < 0) return a == 1 ? 1 : a == -1 ? ((b & 1) ? -1 : 1) : 0;
  uint64_t r = 1, x = (uint64_t)a;  /* unsigned: overflow wraps, as NumPy's integer power */
  while (b) { if (b & 1) r *= x; x *= x; b >>= 1; }
  return (int64_t)r;
}
#define TSR_FLOAT_HELPERS(T, S, FMOD, FLOOR, COPYSIGN) \
static inline T tsr_min_##S(T a, T b) { T m = a < b ? a : b; return a != a ? a : m; } \
static inline T tsr_max_##S(T a, T b) { T m = a > b ? a : b; return a != a ? a : m; } \
static inline T tsr_sign_##S(T a) { return a > 0 ? (T)1 : a < 0 ? (T)-1 : a != a ? a : (T)0; } \
static inline T tsr_mod_##S(T a, T b) { \
  if (b == 0) return FMOD(a, b); \
  T m = FMOD(a, b); \
  if (m != 0) { if ((b < 0) != (m < 0)) m += b; } else m = COPYSIGN((T)0, b); \
  return m; \
} \
static inline T tsr_floordiv_##S(T a, T b) { \
  if (b == 0) return a / b; \
  T m = FMOD(a, b); \
  T d = (a - m) / b; \
  if (m != 0 && ((b < 0) != (m < 0))) d -= (T)1; \
  if (d == 0) return COPYSIGN((T)0, a / b); \
  T f = FLOOR(d); \
  return (d - f > (T)0.5) ? f + (T)1 : f; \
}
TSR_FLOAT_HELPERS(float, f32, fmodf, floorf, copysignf)
TSR_FLOAT_HELPERS(double, f64, fmod, floor, copysign)
/* float to integer, defined for every value (a C cast of NaN or of a value out of range is undefined):
   truncation; NaN -> 0; beyond a signed type's range: its min/max; to an unsigned type, a negative value
   wraps as its int64 value (as NumPy), below -2**63 gives 0, above the max saturates
   (the reference's graph.ops.elementwise.float_to_int) */
#define TSR_F2S(T, S, LO, MAX, MIN) \
static inline T tsr_f2##S(double x) { return x != x ? (T)0 : x >= -(LO) ? MAX : x < (LO) ? MIN : (T)x; }
#define TSR_F2U(T, S, TOP, MAX) \
static inline T tsr_f2##S(double x) { \
  return x != x ? (T)0 : x >= (TOP) ? MAX : x >= 0 ? (T)x : x >= -9223372036854775808.0 ? (T)(int64_t)x : (T)0; \
}
TSR_F2S(int8_t, i8, -128.0, INT8_MAX, INT8_MIN)
TSR_F2S(int16_t, i16, -32768.0, INT16_MAX, INT16_MIN)
TSR_F2S(int32_t, i32, -2147483648.0, INT32_MAX, INT32_MIN)
TSR_F2S(int64_t, i64, -9223372036854775808.0, INT64_MAX, INT64_MIN)
TSR_F2U(uint8_t, u8, 256.0, UINT8_MAX)
TSR_F2U(uint16_t, u16, 65536.0, UINT16_MAX)
TSR_F2U(uint32_t, u32, 4294967296.0, UINT32_MAX)
TSR_F2U(uint64_t, u64, 18446744073709551616.0, UINT64_MAX)
static inline float tsr_bf16_to_f32(uint16_t h) {
  uint32_t u = (uint32_t)h << 16; float f; memcpy(&f, &u, 4); return f;
}
static inline uint16_t tsr_f32_to_bf16(float x) {
  uint32_t u; memcpy(&u, &x, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);  /* quiet NaN */
  u += 0x7fffu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}
static inline uint16_t tsr_f64_to_bf16(double x) { return tsr_f32_to_bf16((float)x); }
#ifdef __FLT16_MAX__
static inline float tsr_f16_to_f32(uint16_t h) { _Float16 f; memcpy(&f, &h, 2); return (float)f; }
static inline uint16_t tsr_f64_to_f16(double x) { _Float16 f = (_Float16)x; uint16_t h; memcpy(&h, &f, 2); return h; }
static inline uint16_t tsr_f32_to_f16(float x) { _Float16 f = (_Float16)x; uint16_t h; memcpy(&h, &f, 2); return h; }
#else
static inline float tsr_f16_to_f32(uint16_t h) {
  uint32_t s = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu, u;
  if (e == 0x1f) u = s | 0x7f800000u | (m << 13);
  else if (e) u = s | ((e + 112) << 23) | (m << 13);
  else if (!m) u = s;
  else { float f = (float)m * 5.9604644775390625e-8f; memcpy(&u, &f, 4); u |= s; }
  float f; memcpy(&f, &u, 4); return f;
}
static inline uint16_t tsr_f32_to_f16(float x) {
  uint32_t u; memcpy(&u, &x, 4);
  uint16_t s = (uint16_t)((u >> 16) & 0x8000u);
  uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return s | 0x7e00u;
  if (a >= 0x477ff000u) return s | 0x7c00u;  /* rounds to infinity */
  if (a < 0x38800000u) {  /* subnormal or zero: adding 0.5 aligns the mantissa, rounding to even */
    float f; memcpy(&f, &a, 4); f += 0.5f; uint32_t b; memcpy(&b, &f, 4);
    return s | (uint16_t)(b - 0x3f000000u);
  }
  a += ((uint32_t)(15 - 127) << 23) + 0xfffu + ((a >> 13) & 1u);
  return s | (uint16_t)(a >> 13);
}
static inline uint16_t tsr_f64_to_f16(double x) { return tsr_f32_to_f16((float)x); }
#endif
static inline void* tsr_alloc(size_t n) {
  void* p = aligned_alloc(64, n == 0 ? 64 : (n + 63) / 64 * 64);
  if (!p) abort();
  return p;
}
"""


def prelude() -> str:
    """Includes, vector typedefs and scalar helpers shared by all kernels of a module."""
    head = ["#include <stddef.h>", "#include <stdint.h>", "#include <stdlib.h>", "#include <string.h>",
            "#include <math.h>", ""]
    return "\n".join([*head, _SIMD_MATH, *_vector_typedefs(), _HELPERS])


# glibc's libmvec provides vector variants of these (x86-64); declaring them lets GCC vectorize
# loops that call them (``#pragma omp simd``) without -ffast-math, i.e. keeping IEEE semantics
# for everything else. Targets link -lmvec (see their descriptions).
_SIMD_MATH = "\n".join([
    "#if defined(__x86_64__) && defined(__GLIBC__) && defined(TSR_LIBMVEC)",
    *[f"#pragma omp declare simd notinbranch\nextern float {fn}(float);" for fn in
      ("expf", "logf", "erff", "tanhf", "sinf", "cosf", "expm1f", "log1pf")],
    "#endif",
])
