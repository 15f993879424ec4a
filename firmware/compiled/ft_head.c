/* ft_head.c: the board's trainable float32 head (copied by fedtiny build --trainable-head; do not
 * edit). Formulas: ft_head.h. The host twin, operation for operation: fedtiny/headtwin.py.
 */
#if defined(__GNUC__) && !defined(__clang__)
/* one rounding per float operation, as NumPy does: no fused multiply-add (vfma) */
#pragma GCC optimize("fp-contract=off")
#endif
#include <stdint.h>
#include <string.h>

#include "ft_board_config.h"   /* FT_BOARD_TICK_MASK */
#include "ft_board.h"
#include "ft_head.h"

#define IN FT_HEAD_IN
#define HID FT_HEAD_HIDDEN
#define K FT_HEAD_CLASSES
#define B FT_HEAD_BATCH
#define OFF_B1 (IN * HID)
#define OFF_W2 (OFF_B1 + HID)
#define OFF_B2 (OFF_W2 + HID * K)

/* the memory plan (FT_HEAD_PLAN_BYTES, fedtiny.codegen.compiled.head.HeadPlan) */
static float g_w[FT_HEAD_N_PARAMS];         /* parameters */
static float g_g[FT_HEAD_N_PARAMS];         /* gradients of one batch */
static float g_v[FT_HEAD_N_PARAMS];         /* momentum */
static float g_x[B][IN];                    /* one batch: inputs, */
static float g_z1[B][HID];                  /*   pre-activations (then their gradients), */
static float g_h[B][HID];                   /*   hidden outputs, */
static float g_p[B][K];                     /*   probabilities (then dL/dz2) */
static int8_t g_feat[FT_HEAD_MAX_WINDOWS][IN];   /* held windows: int8 feature codes, */
static uint8_t g_label[FT_HEAD_MAX_WINDOWS];     /*   label, */
static uint8_t g_set[FT_HEAD_MAX_WINDOWS];       /*   train or validation */
static uint16_t g_order[FT_HEAD_MAX_WINDOWS];    /* training order (shuffled in place) */
static double g_score[FT_HEAD_MAX_WINDOWS];      /* validation scores 1 - P(normal), */
static double g_cand[FT_HEAD_MAX_WINDOWS + 2];   /*   threshold candidates */
static int g_n;                             /* held windows */
static int g_n_order;                       /* training windows in g_order */
static double g_threshold = FT_HEAD_DEFAULT_THRESHOLD;

/* ---------------------------------------------------------------- float32 exp and ln */

static float bits_to_float(uint32_t u) { float f; memcpy(&f, &u, sizeof f); return f; }
static uint32_t float_to_bits(float f) { uint32_t u; memcpy(&u, &f, sizeof u); return u; }

/* exp(x) for x <= 0 (softmax arguments): k = round(x / ln2) by the 1.5 * 2^23 trick, r = x - k ln2
 * (ln2 split in two), Horner polynomial of degree 6, times 2^k built from its bits. */
static float ft_head_expf(float x) {
  const float magic = 12582912.0f;
  if (x < -87.0f) x = -87.0f;
  float t = x * 1.44269504f;
  t = t + magic;
  const int32_t k = (int32_t)(float_to_bits(t) - float_to_bits(magic));
  t = t - magic;
  float r = x - t * 0.693145752f;
  r = r - t * 1.42860677e-06f;
  float p = 1.38888889e-03f;
  p = p * r + 8.33333333e-03f;
  p = p * r + 4.16666667e-02f;
  p = p * r + 1.66666667e-01f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  return p * bits_to_float((uint32_t)(k + 127) << 23);
}

/* ln(x) for x > 0: x = m 2^e with m in [1, 2), ln m = 2 atanh((m - 1) / (m + 1)) (series to s^9) */
static float ft_head_logf(float x) {
  if (!(x > 1e-30f)) x = 1e-30f;
  const uint32_t u = float_to_bits(x);
  const int32_t e = (int32_t)((u >> 23) & 0xFFu) - 127;
  const float m = bits_to_float((u & 0x007FFFFFu) | 0x3F800000u);
  const float s = (m - 1.0f) / (m + 1.0f);
  const float s2 = s * s;
  float q = 0.111111111f;
  q = q * s2 + 0.142857143f;
  q = q * s2 + 0.2f;
  q = q * s2 + 0.333333333f;
  q = q * s2 + 1.0f;
  return (float)e * 0.693147181f + 2.0f * s * q;
}

/* ---------------------------------------------------------------- forward */

static void features_to_x(const int8_t* q, float* x) {
  for (int i = 0; i < IN; ++i) x[i] = (float)((int)q[i] - FT_HEAD_FEATURE_ZP) * FT_HEAD_FEATURE_SCALE;
}

/* one window: x -> z1, h, p */
static void forward(const float* x, float* z1, float* h, float* p) {
  for (int j = 0; j < HID; ++j) {
    float acc = g_w[OFF_B1 + j];
    for (int i = 0; i < IN; ++i) acc = acc + x[i] * g_w[i * HID + j];
    z1[j] = acc;
    h[j] = acc < 0.0f ? 0.0f : (acc > 6.0f ? 6.0f : acc);
  }
  float z2[K];
  for (int c = 0; c < K; ++c) {
    float acc = g_w[OFF_B2 + c];
    for (int j = 0; j < HID; ++j) acc = acc + h[j] * g_w[OFF_W2 + j * K + c];
    z2[c] = acc;
  }
  float m = z2[0];
  for (int c = 1; c < K; ++c) if (z2[c] > m) m = z2[c];
  float s = 0.0f;
  for (int c = 0; c < K; ++c) {
    p[c] = ft_head_expf(z2[c] - m);
    s = s + p[c];
  }
  for (int c = 0; c < K; ++c) p[c] = p[c] / s;
}

/* ---------------------------------------------------------------- store */

void ft_head_init(void) {
  memcpy(g_w, kFtHeadInit, sizeof g_w);
  memset(g_v, 0, sizeof g_v);
  g_threshold = FT_HEAD_DEFAULT_THRESHOLD;
}

void ft_head_clear(void) { g_n = 0; }

int ft_head_n_held(int set) {
  int n = 0;
  for (int i = 0; i < g_n; ++i) n += g_set[i] == (uint8_t)set;
  return n;
}

int ft_head_add(const int8_t* features, int label, int set) {
  if (g_n >= FT_HEAD_MAX_WINDOWS) return -1;
  memcpy(g_feat[g_n], features, IN);
  g_label[g_n] = (uint8_t)label;
  g_set[g_n] = (uint8_t)set;
  return g_n++;
}

const float* ft_head_params(void) { return g_w; }

void ft_head_load(int offset, const void* bytes, int n) {
  memcpy(g_w + offset, bytes, (size_t)n * sizeof(float));
  memset(g_v, 0, sizeof g_v);
}

/* ---------------------------------------------------------------- training */

uint32_t ft_head_seed(uint32_t seed) {
  uint32_t s = seed * 2654435761u + 0x6D2B79F5u;
  return s != 0u ? s : 1u;
}

static uint32_t rng_next(uint32_t* s) {
  uint32_t x = *s;
  x ^= x << 13;
  x ^= x >> 17;
  x ^= x << 5;
  *s = x;
  return x;
}

/* one batch of n windows g_order[first..first+n): gradients, then the momentum update;
 * returns the batch's summed loss */
static float step(int first, int n, float lr, float momentum) {
  float loss = 0.0f;
  const float inv = 1.0f / (float)n;
  for (int b = 0; b < n; ++b) {
    const int w = g_order[first + b];
    features_to_x(g_feat[w], g_x[b]);
    forward(g_x[b], g_z1[b], g_h[b], g_p[b]);
    loss = loss + ft_head_logf(g_p[b][g_label[w]]);
    for (int c = 0; c < K; ++c) {
      const float d = c == (int)g_label[w] ? g_p[b][c] - 1.0f : g_p[b][c];
      g_p[b][c] = d * inv;                              /* dL/dz2 */
    }
  }
  for (int j = 0; j < HID; ++j) {
    for (int c = 0; c < K; ++c) {
      float acc = 0.0f;
      for (int b = 0; b < n; ++b) acc = acc + g_h[b][j] * g_p[b][c];
      g_g[OFF_W2 + j * K + c] = acc;
    }
  }
  for (int c = 0; c < K; ++c) {
    float acc = 0.0f;
    for (int b = 0; b < n; ++b) acc = acc + g_p[b][c];
    g_g[OFF_B2 + c] = acc;
  }
  for (int b = 0; b < n; ++b) {
    for (int j = 0; j < HID; ++j) {
      float acc = 0.0f;
      for (int c = 0; c < K; ++c) acc = acc + g_w[OFF_W2 + j * K + c] * g_p[b][c];
      const float z = g_z1[b][j];
      g_z1[b][j] = (z > 0.0f && z < 6.0f) ? acc : 0.0f;  /* dL/dz1 (ReLU6) */
    }
  }
  for (int i = 0; i < IN; ++i) {
    for (int j = 0; j < HID; ++j) {
      float acc = 0.0f;
      for (int b = 0; b < n; ++b) acc = acc + g_x[b][i] * g_z1[b][j];
      g_g[i * HID + j] = acc;
    }
  }
  for (int j = 0; j < HID; ++j) {
    float acc = 0.0f;
    for (int b = 0; b < n; ++b) acc = acc + g_z1[b][j];
    g_g[OFF_B1 + j] = acc;
  }
  for (int t = 0; t < FT_HEAD_N_PARAMS; ++t) {
    const float v = momentum * g_v[t] - lr * g_g[t];
    g_v[t] = v;
    g_w[t] = g_w[t] + v;
  }
  return -loss;
}

int ft_head_begin(void) {
  g_n_order = 0;
  for (int i = 0; i < g_n; ++i) if (g_set[i] == FT_HEAD_SET_TRAIN) g_order[g_n_order++] = (uint16_t)i;
  return g_n_order;
}

float ft_head_epoch(uint32_t* rng, float lr, float momentum, int* steps, uint32_t* ticks) {
  const int n = g_n_order;
  for (int i = n - 1; i > 0; --i) {
    const int j = (int)(rng_next(rng) % (uint32_t)(i + 1));
    const uint16_t t = g_order[i];
    g_order[i] = g_order[j];
    g_order[j] = t;
  }
  float total = 0.0f;
  *steps = 0;
  *ticks = 0u;
  for (int s = 0; s < n; s += B) {
    const int m = n - s < B ? n - s : B;
    const uint32_t t0 = ft_board_ticks();
    total = total + step(s, m, lr, momentum);
    *ticks += (ft_board_ticks() - t0) & (uint32_t)FT_BOARD_TICK_MASK;
    *steps += 1;
  }
  return n > 0 ? total / (float)n : 0.0f;
}

/* ---------------------------------------------------------------- decisions and threshold */

static float p_normal(const int8_t* q, float* p) {
  float x[IN], z1[HID], h[HID];
  features_to_x(q, x);
  forward(x, z1, h, p);
  return p[0];
}

int ft_head_decide(const int8_t* features) {
  float p[K];
  p_normal(features, p);
  if (!(1.0 - (double)p[0] >= g_threshold)) return 0;
  int best = 1;
  for (int c = 2; c < K; ++c) if (p[c] > p[best]) best = c;
  return best;
}

void ft_head_evaluate(int set, ft_counts_t* counts) {
  memset(counts, 0, sizeof *counts);
  for (int i = 0; i < g_n; ++i) {
    if (g_set[i] == (uint8_t)set) ft_counts_add(counts, ft_head_decide(g_feat[i]), g_label[i]);
  }
}

/* trainer/threshold.py count_metric, in double */
static double metric(int tp, int fp, int tn, int fn) {
#if FT_HEAD_METRIC == 0
  const double tpr = tp + fn ? (double)tp / (double)(tp + fn) : 1.0;
  const double tnr = tn + fp ? (double)tn / (double)(tn + fp) : 1.0;
  return (tpr + tnr) / 2.0;
#elif FT_HEAD_METRIC == 1
  const int n = tp + fp + tn + fn;
  return (double)(tp + tn) / (double)(n > 1 ? n : 1);
#else
  const int den = 2 * tp + fp + fn;
  (void)tn;
  return den ? (double)(2 * tp) / (double)den : 1.0;
#endif
}


static double fabs_d(double v) { return v < 0.0 ? -v : v; }

/* trainer/threshold.py tune_threshold: candidates {0.5, just above the largest score} U scores,
 * visited in ascending order without repeats; keep t when its metric beats the best by > 1e-12,
 * or ties it (within 1e-12) and lies closer to 0.5 by > 1e-12 */
int ft_head_tune(double* threshold, double* value) {
  int n = 0;
  double top = 0.0;
  for (int i = 0; i < g_n; ++i) {
    if (g_set[i] != FT_HEAD_SET_VAL) continue;
    float p[K];
    const double s = 1.0 - (double)p_normal(g_feat[i], p);
    if (n == 0 || s > top) top = s;
    g_score[n] = s;
    g_cand[n++] = s;
  }
  if (n == 0) return 0;
  const int n_val = n;
  uint64_t bits;
  memcpy(&bits, &top, sizeof bits);
  bits += 1u;                                   /* nextafter(top, +inf) for top >= 0 */
  double above;
  memcpy(&above, &bits, sizeof above);
  if (above > 1.0) above = 1.0;
  g_cand[n++] = 0.5;
  g_cand[n++] = above;
  for (int i = 1; i < n; ++i) {                 /* insertion sort, ascending */
    const double v = g_cand[i];
    int j = i - 1;
    while (j >= 0 && g_cand[j] > v) { g_cand[j + 1] = g_cand[j]; --j; }
    g_cand[j + 1] = v;
  }
  double best_t = 0.5, best_v = -1.0;
  for (int c = 0; c < n; ++c) {
    const double t = g_cand[c];
    if (c > 0 && t == g_cand[c - 1]) continue;
    int tp = 0, fp = 0, tn = 0, fn = 0;
    for (int i = 0, v = 0; i < g_n && v < n_val; ++i) {
      if (g_set[i] != FT_HEAD_SET_VAL) continue;
      const int fault = g_label[i] != 0, called = g_score[v++] >= t;
      if (fault) { if (called) ++tp; else ++fn; }
      else { if (called) ++fp; else ++tn; }
    }
    const double v = metric(tp, fp, tn, fn);
    if (v > best_v + 1e-12 || (fabs_d(v - best_v) <= 1e-12 && fabs_d(t - 0.5) < fabs_d(best_t - 0.5) - 1e-12)) {
      best_t = t;
      best_v = v;
    }
  }
  *threshold = best_t;
  *value = best_v;
  return 1;
}

void ft_head_set_threshold(double threshold) { g_threshold = threshold; }

double ft_head_threshold(void) { return g_threshold; }
