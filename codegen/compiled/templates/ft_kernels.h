/* ft_kernels.h: the int8 kernels of fedtiny's compiled runtime (copied by fedtiny build; do not edit).
 *
 * TFLite's integer arithmetic, written for this project (fedtiny.codegen.compiled.qmath states
 * every formula and computes the constants at build time): SaturatingRoundingDoublingHighMul,
 * RoundingDivideByPOT, MultiplyByQuantizedMultiplier (double rounding, TFLite's default build),
 * an int8 dot product, and the kernels CONV_2D (VALID, dilation 1; FULLY_CONNECTED is a 1x1
 * convolution of one position), MEAN over all positions of each channel, and int8 SOFTMAX with
 * the exponential of every possible input difference precomputed in a 256-entry table.
 *
 * On a Cortex-M with the DSP extension (__ARM_FEATURE_DSP, e.g. -mcpu=cortex-m4) the dot product
 * uses the ACLE intrinsics __sxtb16 and __smlad (arm_acle.h; the byte rotation is plain C that
 * GCC folds into SXTB16's ROR #8): four int8 products per two SMLAD instructions. Elsewhere (the host tests) a plain C loop computes the same integers.
 * C99, no libc calls, no heap.
 */
#ifndef FT_KERNELS_H
#define FT_KERNELS_H

#include <stdint.h>
#include <string.h>

#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
#include <arm_acle.h>
#define FT_KERNELS_DSP 1
#else
#define FT_KERNELS_DSP 0
#endif

/* high 32 bits of 2*a*b, rounded (nudge 2^30 or 1-2^30, C division by 2^31); saturates a=b=INT32_MIN */
static inline int32_t ft_srdhm(int32_t a, int32_t b) {
  if (a == b && a == INT32_MIN) return INT32_MAX;
  const int64_t ab = (int64_t)a * (int64_t)b;
  const int64_t nudge = ab >= 0 ? (int64_t)(1 << 30) : (int64_t)(1 - (1 << 30));
  return (int32_t)((ab + nudge) / ((int64_t)1 << 31));
}

/* x / 2^e, rounded to nearest with halves away from zero (0 <= e <= 31) */
static inline int32_t ft_rdbpot(int32_t x, int e) {
  const int32_t mask = (int32_t)((1u << e) - 1u);
  const int32_t remainder = x & mask;
  const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
  return (x >> e) + (remainder > threshold ? 1 : 0);
}

/* x * m * 2^(shift - 31): RDBPOT(SRDHM(x * 2^max(shift,0), m), max(-shift,0)) */
static inline int32_t ft_mbqm(int32_t x, int32_t m, int shift) {
  const int left = shift > 0 ? shift : 0;
  const int right = shift > 0 ? 0 : -shift;
  return ft_rdbpot(ft_srdhm((int32_t)((uint32_t)x << left), m), right);
}

/* x * 2^e saturated to int32 (gemmlowp SaturatingRoundingMultiplyByPOT, e > 0) */
static inline int32_t ft_sat_shl(int32_t x, int e) {
  const int32_t t = (int32_t)((1u << (31 - e)) - 1u);
  if (x > t) return INT32_MAX;
  if (x < -t) return INT32_MIN;
  return (int32_t)((uint32_t)x << e);
}

static inline int32_t ft_clamp(int32_t v, int32_t lo, int32_t hi) {
  return v < lo ? lo : (v > hi ? hi : v);
}

/* rotate right by 8 (the compiler folds it into SXTB16's ROR #8 operand) */
static inline uint32_t ft_ror8(uint32_t v) { return (v >> 8) | (v << 24); }

/* sum of x[i] * w[i] for i < n, n a multiple of 4; w is 4-byte aligned, x need not be */
static inline int32_t ft_dot_s8(const int8_t* x, const int8_t* w, int n, int32_t acc) {
#if FT_KERNELS_DSP
  for (int i = 0; i < n; i += 4) {
    uint32_t xv, wv;
    memcpy(&xv, x + i, 4);                 /* an unaligned LDR on Cortex-M4 */
    memcpy(&wv, w + i, 4);
    acc = __smlad(__sxtb16(xv), __sxtb16(wv), acc);                          /* bytes 0, 2 */
    acc = __smlad(__sxtb16(ft_ror8(xv)), __sxtb16(ft_ror8(wv)), acc);        /* bytes 1, 3 */
  }
#else
  for (int i = 0; i < n; ++i) acc += (int32_t)x[i] * (int32_t)w[i];
#endif
  return acc;
}

/* CONV_2D, NHWC, VALID, batch 1. w: [oc][kh][row4], each kernel row (kw * ic values) padded with
 * zeros to row4 (a multiple of 4), so a row is one dot product over contiguous input bytes.
 * bias[c] already holds bias - input_zero_point * sum(w[c]). Output: clamp(MBQM(acc) + zp). */
static inline void ft_conv_s8(const int8_t* in, int8_t* out, int iw, int ic, int oh, int ow,
                              int oc, int kh, int row4, int sh, int sw, const int8_t* w,
                              const int32_t* bias, const int32_t* mult, const int8_t* shift,
                              int32_t out_zp, int32_t lo, int32_t hi) {
  const int in_row = iw * ic;
  for (int y = 0; y < oh; ++y) {
    for (int x = 0; x < ow; ++x) {
      const int8_t* base = in + y * sh * in_row + x * sw * ic;
      const int8_t* wc = w;
      for (int c = 0; c < oc; ++c) {
        int32_t acc = bias[c];
        for (int r = 0; r < kh; ++r, wc += row4) acc = ft_dot_s8(base + r * in_row, wc, row4, acc);
        *out++ = (int8_t)ft_clamp(ft_mbqm(acc, mult[c], shift[c]) + out_zp, lo, hi);
      }
    }
  }
}

/* MEAN over n positions of c channels: clamp(MBQM(sum - zp_in * n, m, s) + zp_out), where
 * (m, s) already include the 1/n factor (QuantizedMeanOrSum). offset = -zp_in * n. */
static inline void ft_mean_s8(const int8_t* in, int8_t* out, int n, int c, int32_t offset,
                              int32_t mult, int shift, int32_t out_zp) {
  for (int j = 0; j < c; ++j) {
    int32_t s = offset;
    for (int i = 0; i < n; ++i) s += in[i * c + j];
    out[j] = (int8_t)ft_clamp(ft_mbqm(s, mult, shift) + out_zp, -128, 127);
  }
}

/* 1/(1+a) for a in [0,1) in Q0.31: Newton-Raphson in Q2.29 from 48/17 - 32/17 * (1+a)/2 */
static inline int32_t ft_one_over_one_plus_x(int32_t a) {
  const int64_t s = (int64_t)a + (int64_t)INT32_MAX;
  const int32_t half = (int32_t)((s + (s >= 0 ? 1 : -1)) / 2);
  int32_t x = (int32_t)((uint32_t)1515870810 + (uint32_t)ft_srdhm(half, -1010580540));
  for (int i = 0; i < 3; ++i) {
    const int32_t hx = ft_srdhm(half, x);
    const int32_t one_minus = (int32_t)((uint32_t)(1 << 29) - (uint32_t)hx);
    x = (int32_t)((uint32_t)x + (uint32_t)ft_sat_shl(ft_srdhm(x, one_minus), 2));
  }
  return ft_sat_shl(x, 1);
}

static inline int ft_clz32(uint32_t v) {
  int n = 0;
  if (v == 0u) return 32;
  while (!(v & 0x80000000u)) { v <<= 1; ++n; }
  return n;
}

/* int8 SOFTMAX of one row (output scale 1/256, zero point -128). table[d] = exp(-d * beta *
 * s_in) in Q0.31 for d = max - x (0 for differences below TFLite's diff_min). */
static inline void ft_softmax_s8(const int8_t* in, int8_t* out, int depth, const int32_t* table) {
  int mx = -128;
  for (int c = 0; c < depth; ++c) if (in[c] > mx) mx = in[c];
  int32_t sum = 0;                                           /* Q12.19 */
  for (int c = 0; c < depth; ++c) sum += ft_rdbpot(table[mx - in[c]], 12);
  const int headroom = ft_clz32((uint32_t)sum);
  const int32_t shifted = (int32_t)(((uint32_t)sum << headroom) - 0x80000000u);
  const int32_t recip = ft_one_over_one_plus_x(shifted);    /* Q0.31 */
  const int exponent = (12 - headroom) + 31 - 8;
  for (int c = 0; c < depth; ++c) {
    const int32_t v = ft_rdbpot(ft_srdhm(recip, table[mx - in[c]]), exponent) - 128;
    out[c] = (int8_t)ft_clamp(v, -128, 127);
  }
}

#endif /* FT_KERNELS_H */
