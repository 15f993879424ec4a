/* ft_frontend.h: fedtiny's DSP front end on the board (copied by fedtiny build; do not edit).
 *
 * The C twin of fedtiny/frontend.py (its module docstring is the contract; every step below is
 * the same integer operation in the same order, so the int8 model input equals the host's bit
 * for bit). Used by the TFLM sketch and the compiled runtime alike; the per-device constants and
 * tables come from the generated ft_frontend_config.h (ft_frontend_t below).
 *
 *   features (per channel): mean, std, rms, peak, crest factor, kurtosis, in log2 Q16 except mean
 *   spectrum (per channel): log2 Q16 energies of linear bands of a Hann-windowed radix-2 FFT
 * then z = (f - offset) / 2^shift and q = clamp(round_half_away(z / input_scale) + zp): in IEEE
 * double (software on Cortex-M4: correctly rounded, as on the host), no libm.
 *
 * ">>" on negative values is the arithmetic shift (GCC and Clang define it so; NumPy's >> is the
 * same floor shift). C99 and C++, no heap, no libc beyond <stdint.h>.
 */
#ifndef FT_FRONTEND_H
#define FT_FRONTEND_H

#include <stdint.h>

#define FT_FRONTEND_RAW 0
#define FT_FRONTEND_FEATURES 1
#define FT_FRONTEND_SPECTRUM 2
#define FT_FRONTEND_PER_CHANNEL_FEATURES 6

typedef struct {
  int kind;                 /* FT_FRONTEND_FEATURES or FT_FRONTEND_SPECTRUM */
  int window;               /* T samples per channel */
  int channels;             /* C; a window is int16 [T][C], row-major */
  int n_features;           /* F */
  int fft_size;             /* N (spectrum) */
  int bands;                /* B (spectrum) */
  const int16_t* hann;      /* [T] Q15 (spectrum) */
  const int16_t* cos_q15;   /* [N/2] cos(2 pi j / N) in Q15 (spectrum) */
  const int16_t* msin_q15;  /* [N/2] -sin(2 pi j / N) in Q15 (spectrum) */
  const uint16_t* bitrev;   /* [N] (spectrum) */
  const uint16_t* edges;    /* [B + 1] bin edges (spectrum) */
  const int32_t* offset;    /* [F] */
  const uint8_t* shift;     /* [F] */
  double input_scale;       /* the model's input quantization */
  int32_t input_zero_point;
  int32_t* work_re;         /* [N] scratch (spectrum) */
  int32_t* work_im;         /* [N] scratch (spectrum) */
} ft_frontend_t;

/* a / b (b > 0) rounded half away from zero */
static inline int64_t ft_fe_div_round(int64_t a, int64_t b) {
  return a >= 0 ? (a + b / 2) / b : -((-a + b / 2) / b);
}

static inline int ft_fe_bitlen(uint64_t v) {
  int n = 0;
  while (v != 0u) { v >>= 1; ++n; }
  return n;
}

/* log2(v) in Q16 with the parabolic correction of log2(1 + g); 0 for v = 0 */
static inline int32_t ft_fe_ilog2_q16(int64_t v) {
  if (v <= 0) return 0;
  const int n = ft_fe_bitlen((uint64_t)v) - 1;
  const int64_t top = n >= 16 ? (int64_t)((uint64_t)v >> (n - 16)) : (int64_t)((uint64_t)v << (16 - n));
  const int64_t g = top - 65536;
  const int64_t corr = (((g * (65536 - g)) >> 16) * 22713) >> 16;
  return (int32_t)((int64_t)n * 65536 + g + corr);
}

static inline int32_t ft_fe_mean(const int16_t* x, int t, int c, int ch) {
  int64_t s1 = 0;
  for (int i = 0; i < t; ++i) s1 += x[i * c + ch];
  return (int32_t)ft_fe_div_round(s1, t);
}

/* the six statistics of channel ch into f[0..5] */
static inline void ft_fe_features(const int16_t* x, int t, int c, int ch, int32_t* f) {
  const int32_t m = ft_fe_mean(x, t, c, ch);
  int64_t sd2 = 0, ss2 = 0;
  int32_t peak = 0, maxd = 0;
  for (int i = 0; i < t; ++i) {
    const int32_t v = x[i * c + ch];
    const int32_t d = v - m;
    sd2 += (int64_t)d * d;
    ss2 += (int64_t)v * v;
    const int32_t av = v < 0 ? -v : v, ad = d < 0 ? -d : d;
    if (av > peak) peak = av;
    if (ad > maxd) maxd = ad;
  }
  int sh = ft_fe_bitlen((uint64_t)maxd) - 12;
  if (sh < 0) sh = 0;
  int64_t e2 = 0, e4 = 0;
  for (int i = 0; i < t; ++i) {
    const int64_t e = (int64_t)((x[i * c + ch] - m) >> sh);
    const int64_t ee = e * e;
    e2 += ee;
    e4 += ee * ee;
  }
  const int32_t lt = ft_fe_ilog2_q16(t);
  f[0] = m;
  f[1] = (ft_fe_ilog2_q16(sd2) - lt) >> 1;
  f[2] = (ft_fe_ilog2_q16(ss2) - lt) >> 1;
  f[3] = ft_fe_ilog2_q16(peak);
  f[4] = f[3] - f[2];
  f[5] = e2 > 0 ? lt + ft_fe_ilog2_q16(e4) - 2 * ft_fe_ilog2_q16(e2) : 0;
}

/* the band energies of channel ch into f[0..B-1] */
static inline void ft_fe_spectrum(const ft_frontend_t* fe, const int16_t* x, int ch, int32_t* f) {
  const int t = fe->window, c = fe->channels, n = fe->fft_size;
  int32_t* re = fe->work_re;
  int32_t* im = fe->work_im;
  const int32_t m = ft_fe_mean(x, t, c, ch);
  for (int i = 0; i < n; ++i) { re[i] = 0; im[i] = 0; }
  for (int i = 0; i < t; ++i)
    re[fe->bitrev[i]] = (int32_t)(((int64_t)(x[i * c + ch] - m) * fe->hann[i]) >> 12);
  for (int size = 2; size <= n; size <<= 1) {
    const int half = size >> 1, step = n / size;
    for (int i0 = 0; i0 < n; i0 += size) {
      for (int j = 0; j < half; ++j) {
        const int64_t wr = fe->cos_q15[j * step], wi = fe->msin_q15[j * step];
        const int a = i0 + j, b = a + half;
        const int64_t br = re[b], bi = im[b], ar = re[a], ai = im[a];
        const int64_t tr = (br * wr - bi * wi) >> 15;
        const int64_t ti = (br * wi + bi * wr) >> 15;
        re[a] = (int32_t)((ar + tr) >> 1);
        im[a] = (int32_t)((ai + ti) >> 1);
        re[b] = (int32_t)((ar - tr) >> 1);
        im[b] = (int32_t)((ai - ti) >> 1);
      }
    }
  }
  for (int band = 0; band < fe->bands; ++band) {
    int64_t e = 0;
    for (int k = fe->edges[band]; k < fe->edges[band + 1]; ++k)
      e += (int64_t)re[k] * re[k] + (int64_t)im[k] * im[k];
    f[band] = ft_fe_ilog2_q16(e);
  }
}

/* clamp(round_half_away(((f - offset) / 2^shift) / scale) + zp, -128, 127) */
static inline int8_t ft_fe_quantize(int32_t f, int32_t offset, int shift, double scale, int32_t zp) {
  const double z = (double)(f - offset) / (double)((int32_t)1 << shift);
  const double v = z / scale;
  double a = v < 0 ? -v : v;
  if (a > 1000.0) a = 1000.0;                 /* far outside int8 either way */
  int32_t r = (int32_t)(a + 0.5);             /* floor(a + 0.5) for a >= 0 */
  if (v < 0) r = -r;
  r += zp;
  return (int8_t)(r < -128 ? -128 : (r > 127 ? 127 : r));
}

/* The raw front end on live int16 samples (a raw model's input is the window itself):
 * q = clamp(round_half_away((s / 32767) / scale) + zp, -128, 127), every step in IEEE double
 * (host twin: fedtiny.frontend.raw_input). n = T * C values. */
static inline void ft_frontend_raw(const int16_t* window, int n, double scale, int32_t zp, int8_t* q) {
  for (int i = 0; i < n; ++i) {
    const double v = ((double)window[i] / 32767.0) / scale;
    double a = v < 0 ? -v : v;
    if (a > 1000.0) a = 1000.0;                 /* far outside int8 either way */
    int32_t r = (int32_t)(a + 0.5);             /* floor(a + 0.5) for a >= 0 */
    if (v < 0) r = -r;
    r += zp;
    q[i] = (int8_t)(r < -128 ? -128 : (r > 127 ? 127 : r));
  }
}

/* Runs the front end on one int16 window [T][C]: the integers into f[F] (may be 0) and the int8
 * model input into q[F]. Returns 0, or -1 for an unknown kind. */
static inline int ft_frontend_run(const ft_frontend_t* fe, const int16_t* window, int32_t* f, int8_t* q) {
  int32_t tmp[16];
  const int per = fe->kind == FT_FRONTEND_FEATURES ? FT_FRONTEND_PER_CHANNEL_FEATURES : fe->bands;
  if ((fe->kind != FT_FRONTEND_FEATURES && fe->kind != FT_FRONTEND_SPECTRUM) || per > 16) return -1;
  for (int ch = 0; ch < fe->channels; ++ch) {
    if (fe->kind == FT_FRONTEND_FEATURES)
      ft_fe_features(window, fe->window, fe->channels, ch, tmp);
    else
      ft_fe_spectrum(fe, window, ch, tmp);
    for (int k = 0; k < per; ++k) {
      const int i = ch * per + k;
      if (f != 0) f[i] = tmp[k];
      q[i] = ft_fe_quantize(tmp[k], fe->offset[i], fe->shift[i], fe->input_scale, fe->input_zero_point);
    }
  }
  return 0;
}

#endif /* FT_FRONTEND_H */
