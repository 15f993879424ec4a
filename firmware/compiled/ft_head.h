/* ft_head.h: the board's trainable float32 decision head (copied by fedtiny build
 * --trainable-head; do not edit).
 *
 * The INT8 compiled model runs up to its feature tensor (ft_model_features: the extractor, frozen);
 * the board keeps each window it is sent as those int8 feature codes, and fine-tunes the model's
 * head in float32 on them:
 *
 *   x  = feature_scale * (q - feature_zero_point)          (float32, the features tensor's scale)
 *   z1 = b1 + sum_i x[i] * W1[i][.]      h = min(max(z1, 0), 6)
 *   z2 = b2 + sum_j h[j] * W2[j][.]      p = softmax(z2)   (exp: ft_head_expf)
 *   loss = -ln p[y]; per batch of B windows dz2 = (p - onehot(y)) * (1/B), backpropagated
 *   SGD with momentum per parameter: v = mom * v - lr * g;  w = w + v
 *
 * Every sum runs in index order, one float32 rounding per operation (no fused multiply-add: the
 * file is compiled with fp-contract off), so the host twin fedtiny/headtwin.py, NumPy float32
 * in the same order, predicts the board's weights bit for bit. The memory plan (ft_head_config.h)
 * is fixed at build time: parameters, gradients and momentum (3 x FT_HEAD_N_PARAMS floats), one
 * batch, the window store and the threshold's candidate list.
 */
#ifndef FT_HEAD_H
#define FT_HEAD_H

#include <stdint.h>

#include "ft_board_config.h"   /* FT_CLOCK: before the protocol header */
#include "fedtiny_protocol.h"   /* ft_counts_t */
#include "ft_head_config.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FT_HEAD_SET_TRAIN 0
#define FT_HEAD_SET_VAL 1
#define FT_HEAD_SET_TEST 2

void ft_head_init(void);                  /* parameters back to the build's, momentum zero */
void ft_head_clear(void);                 /* forget every held window */
int ft_head_n_held(int set);              /* held windows of FT_HEAD_SET_TRAIN / _VAL */
/* keep one window's int8 features; returns its index, or -1 when the store is full */
int ft_head_add(const int8_t* features, int label, int set);
/* start a training call: the training windows in store order; returns how many */
int ft_head_begin(void);
/* one epoch: shuffle that order in place (Fisher-Yates, j = xorshift32(*rng) % (i + 1) for
 * i = n-1 .. 1), then batches of FT_HEAD_BATCH in order (the last one may be smaller);
 * returns the mean loss; *steps batches, *ticks board ticks spent in them */
float ft_head_epoch(uint32_t* rng, float lr, float momentum, int* steps, uint32_t* ticks);
uint32_t ft_head_seed(uint32_t seed);     /* the stream's first state for a seed */
/* threshold tuned on the validation windows (trainer/threshold.py's rule); 0 if none held */
int ft_head_tune(double* threshold, double* value);
void ft_head_set_threshold(double threshold);
double ft_head_threshold(void);
/* decide one window's features with the current threshold */
int ft_head_decide(const int8_t* features);
void ft_head_evaluate(int set, ft_counts_t* counts);   /* held train or val windows */
const float* ft_head_params(void);        /* FT_HEAD_N_PARAMS floats: W1, b1, W2, b2 */
/* parameters [offset, offset + n) from n floats' bytes (any alignment, this board's byte order);
 * momentum zeroed (a fresh optimizer) */
void ft_head_load(int offset, const void* bytes, int n);

#ifdef __cplusplus
}
#endif

#endif /* FT_HEAD_H */
