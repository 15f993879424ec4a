/* ft_kernels.h: the int8 kernels of fedtiny's compiled runtime (copied by fedtiny build; do not edit).
 *
 * TFLite's integer arithmetic, written for this project (fedtiny.codegen.compiled.qmath states
 * every formula and computes the constants at build time): SaturatingRoundingDoublingHighMul,
 * RoundingDivideByPOT, MultiplyByQuantizedMultiplier (double rounding, TFLite's default build),
 * an int8 dot product, and the kernels CONV_2D (VALID, dilation 1; FULLY_CONNECTED is a 1x1
 * convolution of one position), AVERAGE_POOL_2D (VALID), MEAN over all positions of each channel, and int8 SOFTMAX with
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

/* SXTB16 with ROR #8: bytes 1 and 3 of v, sign-extended into two int16 halves */
static inline uint32_t ft_sxtb16_ror8(uint32_t v) {
#if FT_KERNELS_DSP
  uint32_t r;
  __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(v));
  return r;
#else
  return v;   /* unused off the DSP path */
#endif
}

/* Weights are stored as int16, each group of four int8 weights (w0 w1 w2 w3) reordered to
 * (w0 w2 w1 w3): the two 32-bit words of a group pair with SXTB16(x) = (x0, x2) and
 * SXTB16(x ROR 8) = (x1, x3), so one SMLAD does two products (fedtiny.codegen.compiled.emit). */

/* acc_a += x . wa, acc_b += x . wb over n int8 inputs (n a multiple of 4; x need not be aligned,
 * wa and wb are 4-byte aligned int16 groups as above): two output channels share each input load */
static inline void ft_dot2_s8(const int8_t* x, const int16_t* wa, const int16_t* wb, int n,
                              int32_t* acc_a, int32_t* acc_b) {
  int32_t a = *acc_a, b = *acc_b;
#if FT_KERNELS_DSP
  for (int i = 0; i < n; i += 4) {
    uint32_t xv, a0, a1, b0, b1;
    memcpy(&xv, x + i, 4);                 /* an unaligned LDR on Cortex-M4 */
    memcpy(&a0, wa + i, 4);
    memcpy(&a1, wa + i + 2, 4);
    memcpy(&b0, wb + i, 4);
    memcpy(&b1, wb + i + 2, 4);
    const uint32_t xe = __sxtb16(xv), xo = ft_sxtb16_ror8(xv);
    a = __smlad(xe, a0, a);
    a = __smlad(xo, a1, a);
    b = __smlad(xe, b0, b);
    b = __smlad(xo, b1, b);
  }
#else
  for (int i = 0; i < n; i += 4) {
    a += x[i] * wa[i] + x[i + 2] * wa[i + 1] + x[i + 1] * wa[i + 2] + x[i + 3] * wa[i + 3];
    b += x[i] * wb[i] + x[i + 2] * wb[i + 1] + x[i + 1] * wb[i + 2] + x[i + 3] * wb[i + 3];
  }
#endif
  *acc_a = a;
  *acc_b = b;
}

/* acc += x . w (one channel; the odd last channel of a layer) */
static inline int32_t ft_dot_s8(const int8_t* x, const int16_t* w, int n, int32_t acc) {
#if FT_KERNELS_DSP
  for (int i = 0; i < n; i += 4) {
    uint32_t xv, w0, w1;
    memcpy(&xv, x + i, 4);
    memcpy(&w0, w + i, 4);
    memcpy(&w1, w + i + 2, 4);
    acc = __smlad(__sxtb16(xv), w0, acc);
    acc = __smlad(ft_sxtb16_ror8(xv), w1, acc);
  }
#else
  for (int i = 0; i < n; i += 4)
    acc += x[i] * w[i] + x[i + 2] * w[i + 1] + x[i + 1] * w[i + 2] + x[i + 3] * w[i + 3];
#endif
  return acc;
}

static inline int8_t ft_requant(int32_t acc, int32_t mult, int shift, int32_t out_zp, int32_t lo, int32_t hi) {
  return (int8_t)ft_clamp(ft_mbqm(acc, mult, shift) + out_zp, lo, hi);
}

/* CONV_2D, NHWC, VALID, batch 1. w: [oc][kh][row4] int16 groups (above), each kernel row
 * (kw * ic values) padded with zeros to row4 (a multiple of 4), so a row is one dot product over
 * contiguous input bytes. bias[c] already holds bias - input_zero_point * sum(w[c]).
 * Output: clamp(MBQM(acc, mult[c], shift[c]) + zp, lo, hi). */
static inline void ft_conv_s8(const int8_t* in, int8_t* out, int iw, int ic, int oh, int ow,
                              int oc, int kh, int row4, int sh, int sw, const int16_t* w,
                              const int32_t* bias, const int32_t* mult, const int8_t* shift,
                              int32_t out_zp, int32_t lo, int32_t hi) {
  const int in_row = iw * ic;
  const int w_channel = kh * row4;
  for (int y = 0; y < oh; ++y) {
    for (int x = 0; x < ow; ++x) {
      const int8_t* base = in + y * sh * in_row + x * sw * ic;
      int c = 0;
      for (; c + 1 < oc; c += 2) {
        int32_t acc_a = bias[c], acc_b = bias[c + 1];
        const int16_t* wa = w + c * w_channel;
        for (int r = 0; r < kh; ++r)
          ft_dot2_s8(base + r * in_row, wa + r * row4, wa + w_channel + r * row4, row4, &acc_a, &acc_b);
        out[c] = ft_requant(acc_a, mult[c], shift[c], out_zp, lo, hi);
        out[c + 1] = ft_requant(acc_b, mult[c + 1], shift[c + 1], out_zp, lo, hi);
      }
      if (c < oc) {
        int32_t acc = bias[c];
        const int16_t* wc = w + c * w_channel;
        for (int r = 0; r < kh; ++r) acc = ft_dot_s8(base + r * in_row, wc + r * row4, row4, acc);
        out[c] = ft_requant(acc, mult[c], shift[c], out_zp, lo, hi);
      }
      out += oc;
    }
  }
}

/* AVERAGE_POOL_2D, NHWC, VALID, batch 1, input and output quantization equal (TFLM's integer
 * kernel): per output position and channel, acc = sum of the fh x fw window's int8 values,
 * out = clamp(acc > 0 ? (acc + n / 2) / n : (acc - n / 2) / n, lo, hi), n = fh * fw, C division
 * truncating toward zero (so halves round away from zero). */
static inline void ft_avgpool_s8(const int8_t* in, int8_t* out, int iw, int c, int oh, int ow, int fh,
                                 int fw, int sh, int sw, int32_t lo, int32_t hi) {
  const int32_t n = (int32_t)(fh * fw);
  for (int y = 0; y < oh; ++y) {
    for (int x = 0; x < ow; ++x) {
      for (int j = 0; j < c; ++j) {
        int32_t acc = 0;
        for (int fy = 0; fy < fh; ++fy)
          for (int fx = 0; fx < fw; ++fx) acc += in[((y * sh + fy) * iw + x * sw + fx) * c + j];
        acc = acc > 0 ? (acc + n / 2) / n : (acc - n / 2) / n;
        *out++ = (int8_t)ft_clamp(acc, lo, hi);
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
