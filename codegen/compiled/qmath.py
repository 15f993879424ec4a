"""TFLite's integer quantization arithmetic as pure Python functions (int32 semantics, exact).

The compiled runtime folds every constant of the model at build time with these functions, and
its C kernels (``templates/ft_kernels.h.j2``) compute the per-element parts with the same
formulas, so that the generated firmware reproduces the TFLite Micro reference kernels bit for
bit. Every function states the formula it computes; all integers are Python ints that the
callers keep inside int32 (``wrap32`` reproduces two's-complement wrap-around where the C code
relies on it). Floats follow the C code's types: ``f32`` rounds to IEEE single precision.

Notation: SRDHM = SaturatingRoundingDoublingHighMul, RDBPOT = RoundingDivideByPOT (gemmlowp's
names, which TFLite uses); "Qm.n" = signed fixed point with m integer and n fraction bits.
"""
from __future__ import annotations

import math

import numpy as np

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1


def f32(x: float) -> float:
    """``x`` rounded to float32 (as a C ``float``), returned as a Python float."""
    return float(np.float32(x))


def wrap32(x: int) -> int:
    """Two's-complement wrap of ``x`` into int32."""
    x &= 0xFFFFFFFF
    return x - (1 << 32) if x & 0x80000000 else x


def round_half_away(x: float) -> int:
    """C ``round()`` / TfLiteRound: nearest integer, halves away from zero. ``|x| - floor(|x|)``
    is exact in floating point, so the comparison with 0.5 decides exactly as C does."""
    a = abs(x)
    r = math.floor(a)
    if a - r >= 0.5:
        r += 1
    return int(r if x >= 0 else -r)


def quantize_multiplier(real: float) -> tuple[int, int]:
    """TFLite QuantizeMultiplier: ``real ~= m * 2^(shift - 31)`` with m in [2^30, 2^31).

    ``(q, shift) = frexp(real)``, ``m = round(q * 2^31)``; if m == 2^31: m /= 2, shift += 1;
    if shift < -31: (m, shift) = (0, 0); real == 0 gives (0, 0). ``real`` is a double."""
    if real == 0.0:
        return 0, 0
    q, shift = math.frexp(real)
    m = round_half_away(q * float(1 << 31))
    if m > (1 << 31):
        raise ValueError(f"multiplier {real} cannot be quantized")
    if m == (1 << 31):
        m //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    return int(m), int(shift)


def srdhm(a: int, b: int) -> int:
    """SaturatingRoundingDoublingHighMul(a, b) of two int32: the high 32 bits of 2*a*b, rounded.

    ``(a*b + (2^30 if a*b >= 0 else 1 - 2^30)) / 2^31`` with C division (truncation toward
    zero); the one overflowing case a == b == INT32_MIN saturates to INT32_MAX."""
    if a == INT32_MIN and b == INT32_MIN:
        return INT32_MAX
    ab = a * b
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    num = ab + nudge
    q = abs(num) >> 31
    return q if num >= 0 else -q


def rdbpot(x: int, exponent: int) -> int:
    """RoundingDivideByPOT(x, e): x / 2^e rounded to nearest, halves away from zero.

    ``mask = 2^e - 1; r = x & mask; t = (mask >> 1) + (x < 0); (x >> e) + (r > t)``."""
    mask = (1 << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> exponent) + (1 if remainder > threshold else 0)


def mbqm(x: int, m: int, shift: int) -> int:
    """MultiplyByQuantizedMultiplier(x, m, shift), TFLite's double-rounding form (the default
    build, TFLITE_SINGLE_ROUNDING off): ``RDBPOT(SRDHM(x * 2^max(shift, 0), m), max(-shift, 0))``."""
    left = shift if shift > 0 else 0
    right = -shift if shift < 0 else 0
    return rdbpot(srdhm(wrap32(x * (1 << left)), m), right)


def sat_shift_left(x: int, e: int) -> int:
    """gemmlowp SaturatingRoundingMultiplyByPOT<e> for e > 0 on int32: ``x * 2^e``, saturated:
    x > 2^(31-e) - 1 gives INT32_MAX, x < -(2^(31-e) - 1) gives INT32_MIN."""
    t = (1 << (31 - e)) - 1
    if x > t:
        return INT32_MAX
    if x < -t:
        return INT32_MIN
    return x << e


def conv_multiplier(input_scale: float, filter_scale: float, output_scale: float) -> tuple[int, int]:
    """Per-channel CONV_2D / per-channel FULLY_CONNECTED requantization (TFLM
    PopulateConvolutionQuantizationParams): ``QuantizeMultiplier(double(s_in) * double(s_w[c]) /
    double(s_out))``, each scale a float32."""
    return quantize_multiplier(f32(input_scale) * f32(filter_scale) / f32(output_scale))


def fc_multiplier(input_scale: float, filter_scale: float, output_scale: float) -> tuple[int, int]:
    """Per-tensor FULLY_CONNECTED requantization (TFLite GetQuantizedConvolutionMultipler): the
    product ``s_in * s_w`` is taken in float32, then ``QuantizeMultiplier(double(product) /
    double(s_out))``."""
    product = f32(f32(input_scale) * f32(filter_scale))
    return quantize_multiplier(product / f32(output_scale))


def quantize_value(scale: float, zero_point: int, value: float) -> int:
    """TFLite's Quantize for activation bounds: ``zp + round(f32(value) / f32(scale))``, the
    division in float32."""
    tmp = f32(np.float32(value) / np.float32(scale))
    return int(zero_point) + round_half_away(tmp)


ACTIVATIONS = ("NONE", "RELU", "RELU6", "RELU_N1_TO_1")


def activation_range(activation: str, scale: float, zero_point: int) -> tuple[int, int]:
    """CalculateActivationRangeQuantized for an int8 output: the clamp [lo, hi] of a fused
    activation. NONE: [-128, 127]; RELU: [max(-128, q(0)), 127]; RELU6: [max(-128, q(0)),
    min(127, q(6))]; RELU_N1_TO_1: [max(-128, q(-1)), min(127, q(1))] with q = quantize_value."""
    lo, hi = -128, 127
    if activation == "NONE":
        return lo, hi
    if activation == "RELU":
        return max(lo, quantize_value(scale, zero_point, 0.0)), hi
    if activation == "RELU6":
        return (max(lo, quantize_value(scale, zero_point, 0.0)),
                min(hi, quantize_value(scale, zero_point, 6.0)))
    if activation == "RELU_N1_TO_1":
        return (max(lo, quantize_value(scale, zero_point, -1.0)),
                min(hi, quantize_value(scale, zero_point, 1.0)))
    raise ValueError(f"fused activation {activation} is not supported")


def mean_multiplier(input_scale: float, output_scale: float, n: int) -> tuple[int, int]:
    """int8 MEAN (TFLite QuantizedMeanOrSum): ``(m, s) = QuantizeMultiplier(double(s_in) /
    double(s_out))``, then the 1/n factor is folded in: ``k = min(63 - clz64(n), 32, 31 + s)``,
    ``m' = (m << k) // n`` (int64, truncating), ``s' = s - k``. The output is
    ``clamp(MBQM(sum(x) - zp_in * n, m', s') + zp_out)``."""
    m, s = quantize_multiplier(f32(input_scale) / f32(output_scale))
    k = min(n.bit_length() - 1, 32, 31 + s)
    m2 = (m << k) // n if k >= 0 else m // n
    return int(m2), int(s - k)


# ----------------------------------------------------------------------------- softmax

SOFTMAX_DIFF_INT_BITS = 5       # input differences in Q5.26
SOFTMAX_ACCUM_INT_BITS = 12     # sum of exponentials in Q12.19


def softmax_params(beta: float, input_scale: float) -> tuple[int, int, int]:
    """int8 SOFTMAX preprocessing (PreprocessSoftmaxScaling, CalculateInputRadius):
    ``real = min(double(beta) * double(s_in) * 2^(31 - 5), 2^31 - 1)``, ``(m, left) =
    QuantizeMultiplier(real)`` (left >= 0), ``diff_min = -floor(31 * 2^26 / 2^left)``.
    Returns ``(m, left, diff_min)``."""
    real = min(f32(beta) * f32(input_scale) * float(1 << (31 - SOFTMAX_DIFF_INT_BITS)),
               float((1 << 31) - 1))
    m, left = quantize_multiplier(real)
    if left < 0:
        raise ValueError("softmax input multiplier below one")
    radius = math.floor(((1 << SOFTMAX_DIFF_INT_BITS) - 1) * float(1 << (31 - SOFTMAX_DIFF_INT_BITS))
                        / float(1 << left))
    return m, left, -int(radius)


def _exp_quarter_interval(a: int) -> int:
    """gemmlowp exp on [-1/4, 0) in Q0.31: Taylor series around -1/8:
    ``x = a + 1/8; e^(-1/8) * (1 + x + x^2/2 + x^3/6 + x^4/24)`` with
    ``c = 1895147668`` (e^(-1/8) in Q0.31) and ``1/3 = 715827883``, every product an SRDHM:
    ``t = RDBPOT(SRDHM(RDBPOT(x^4, 2) + x^3, 1/3) + x^2, 1)``, result ``c + SRDHM(c, x + t)``.
    (gemmlowp adds x inside: the series is c + c*(x + t).)"""
    c = 1895147668
    one_third = 715827883
    x = wrap32(a + (1 << 28))
    x2 = srdhm(x, x)
    x3 = srdhm(x2, x)
    x4 = srdhm(x2, x2)
    x4_over_4 = rdbpot(x4, 2)
    t = rdbpot(wrap32(srdhm(wrap32(x4_over_4 + x3), one_third) + x2), 1)
    return wrap32(c + srdhm(c, wrap32(x + t)))


_EXP_BARREL = ((-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308),
               (2, 39332535), (3, 720401), (4, 242))


def exp_on_negative_values(a: int, integer_bits: int = SOFTMAX_DIFF_INT_BITS) -> int:
    """gemmlowp exp_on_negative_values: e^a for a <= 0 given in Q(integer_bits).(31 - integer_bits),
    result in Q0.31. ``a = -k/4 - r`` with r in (0, 1/4]: ``e^a = exp_quarter(-r) *
    prod(e^(-2^j) for each set bit j of the remainder)`` (multipliers e^(-1/4) ... e^(-16) in Q0.31,
    applied by SRDHM); a == 0 gives INT32_MAX (one)."""
    frac_bits = 31 - integer_bits
    quarter = 1 << (frac_bits - 2)
    mask = quarter - 1
    a_mod = wrap32((a & mask) - quarter)
    result = _exp_quarter_interval(sat_shift_left(a_mod, integer_bits))
    remainder = wrap32(a_mod - a)
    for exponent, multiplier in _EXP_BARREL:
        if integer_bits > exponent:
            if remainder & (1 << (frac_bits + exponent)):
                result = srdhm(result, multiplier)
    if integer_bits > 5:
        clamp = -(1 << (36 - integer_bits))
        if a < clamp:
            result = 0
    if a == 0:
        result = INT32_MAX
    return result


def softmax_exp_table(beta: float, input_scale: float) -> list[int]:
    """``E[d]`` for d = 0..255 (d = max of the row - x, an int8 difference): the Q0.31 value of
    exp(-d * s_in * beta) that TFLite's int8 softmax computes for that difference:
    ``E[d] = exp_on_negative_values(SRDHM(-d * 2^left, m))`` if -d >= diff_min, else 0 (a
    skipped element: contributes 0 to the sum and its output is -128, which 0 also yields)."""
    m, left, diff_min = softmax_params(beta, input_scale)
    table = []
    for d in range(256):
        diff = -d
        if diff >= diff_min:
            table.append(exp_on_negative_values(srdhm(wrap32(diff * (1 << left)), m)))
        else:
            table.append(0)
    return table


def one_over_one_plus_x(a: int) -> int:
    """gemmlowp one_over_one_plus_x_for_x_in_0_1: 1/(1+a) for a in [0, 1) in Q0.31, by three
    Newton-Raphson steps in Q2.29 from ``x0 = 48/17 - 32/17 * d`` with ``d = (a + 1) / 2``
    (``RoundingHalfSum``); ``x += 4 * SRDHM(x, 1 - SRDHM(d, x))`` (saturating x4), result
    ``2 * x`` saturated (Q2.29 -> Q1.30 halving -> Q0.31)."""
    s = a + INT32_MAX
    half = (s + (1 if s >= 0 else -1))
    half = abs(half) // 2 * (1 if half >= 0 else -1)      # C int64 division by 2
    c48_17 = 1515870810
    cneg32_17 = -1010580540
    x = wrap32(c48_17 + srdhm(half, cneg32_17))
    one_q2 = 1 << 29
    for _ in range(3):
        hx = srdhm(half, x)
        x = wrap32(x + sat_shift_left(srdhm(x, wrap32(one_q2 - hx)), 2))
    return sat_shift_left(x, 1)


def softmax_int8(q: list[int], table: list[int]) -> list[int]:
    """The int8 softmax of one row (output scale 1/256, zero point -128), as the C kernel does it:
    ``sum = sum_c RDBPOT(E[max - q_c], 12)`` (Q12.19); ``h = clz32(sum)``, ``bits = 12 - h``,
    ``r = 1/(1 + (sum << h) - 1)`` (one_over_one_plus_x); ``out_c = clamp(RDBPOT(SRDHM(r,
    E[max - q_c]), bits + 23) - 128, -128, 127)``. Used by the tests as an oracle."""
    mx = max(q)
    total = 0
    for v in q:
        total += rdbpot(table[mx - v], SOFTMAX_ACCUM_INT_BITS)
    h = 32 - total.bit_length()
    bits = SOFTMAX_ACCUM_INT_BITS - h
    shifted = wrap32(((total << h) & 0xFFFFFFFF) - (1 << 31))
    r = one_over_one_plus_x(shifted)
    exponent = bits + 31 - 8
    out = []
    for v in q:
        o = rdbpot(srdhm(r, table[mx - v]), exponent) - 128
        out.append(max(-128, min(127, o)))
    return out
