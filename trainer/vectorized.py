"""Vectorized local training: K clients' copies of the model trained together.

Every weight array carries a leading client axis (shape (K, ...), the order of
``model.get_weights()``: conv kernels (k, C_in, F) and biases, dense kernels and biases). The
forward pass is the Keras model's, written out per client:

    conv (kernel k, stride s, valid padding):  frames = frame(h, k, s)            (K, B, T', k, C)
                                               h = relu6(einsum("kbtjc,kjcf->kbtf", frames, W) + b)
    global average pooling:                    f = mean_t h                        (K, B, F)
    head:                                      z = relu6(f W1 + b1) W2 + b2        (logits)
    loss of client k on its batch B_k:         L_k = mean_{i in B_k} CE(y_i, softmax(z_i))
                                                     + (mu / 2) sum_l ||theta_l - anchor_l||^2

(cross-entropy from the logits, as Keras computes it for a softmax output). Gradients of
sum_k L_k with respect to the stacked weights are each client's own gradients.

Adam, per client, exactly as Keras 3 (``keras/src/optimizers/adam.py``, float32, defaults
beta_1 = 0.9, beta_2 = 0.999, epsilon = 1e-7, no amsgrad), with t the client's own step count
(starting at 1 after a reset):

    m <- m + (g - m) (1 - beta_1)
    v <- v + (g^2 - v) (1 - beta_2)
    alpha = lr sqrt(1 - beta_2^t) / (1 - beta_1^t)
    theta <- theta - (m alpha) / (sqrt(v) + epsilon)

Batches: client k with n_k windows draws, per epoch, ``np.random.default_rng(key_k)``'s next
permutation of n_k (one generator per fit, as ``engine.Engine.fit``) and cuts it into batches of
``batch_size`` with a last partial batch. All clients step together: step s of client k is its
batch s, or nothing once its batches are done (its weights, moments and t are then left as they
are). A batch is padded to ``batch_size`` with masked windows, and its mean CE is taken over the
real windows only. All epochs of one fit are one compiled call per chunk of clients (chunks are
fixed by position in the task list, so a run repeats itself exactly).

Head-only (Phase 3): only the head arrays are differentiated and updated; the extractor arrays
pass through untouched (bit-identical).

Evaluation of all clients at once: softmax outputs per client, then the same NumPy formulas as
``Engine.evaluate`` (float64 CE of the clipped true-class probability, argmax accuracy).

Numbers: the einsum convolution sums in another order than Keras' Conv1D kernel, so weights agree
with the per-device engine to float32 rounding (tests/test_vectorized.py states the tolerance),
not bit for bit.
"""
from __future__ import annotations

import math
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from .model import ModelSpec  # noqa: E402

BETA_1, BETA_2, EPSILON = 0.9, 0.999, 1e-7     # keras.optimizers.Adam defaults
N_EXTRACTOR = 6                                 # 3 conv layers x (kernel, bias)


def batch_plan(sizes: list[int], keys: list, epochs: int, batch_size: int):
    """Index plan of one fit for clients of ``sizes`` windows (pure NumPy).

    Returns ``idx`` (S, K, B) int32 (local window indices, 0 where padded), ``mask`` (S, K, B)
    float32 (1 for a real window), ``active`` (S, K) float32 (1 when client k takes step s) and
    ``counts`` (S, K) int (windows in that batch). S = epochs * max_k ceil(n_k / B); epoch e
    occupies steps [e * S_e, (e + 1) * S_e). Client k's epoch-e order is the e-th
    ``default_rng(keys[k]).permutation(n_k)``, exactly as the per-device loop draws it."""
    K = len(sizes)
    per_epoch = max([math.ceil(n / batch_size) for n in sizes] + [0])
    S = epochs * per_epoch
    idx = np.zeros((S, K, batch_size), np.int32)
    mask = np.zeros((S, K, batch_size), np.float32)
    counts = np.zeros((S, K), np.int64)
    for k, (n, kk) in enumerate(zip(sizes, keys)):
        rng = np.random.default_rng(kk)
        nb = math.ceil(n / batch_size)
        for e in range(epochs):
            order = rng.permutation(n)
            pad = np.zeros(nb * batch_size, np.int64)
            pad[:n] = order
            s0 = e * per_epoch
            idx[s0:s0 + nb, k] = pad.reshape(nb, batch_size)
            m = np.zeros(nb * batch_size, np.float32)
            m[:n] = 1.0
            mask[s0:s0 + nb, k] = m.reshape(nb, batch_size)
            counts[s0:s0 + nb, k] = m.reshape(nb, batch_size).sum(axis=1)
    return idx, mask, (counts > 0).astype(np.float32), counts, per_epoch


def np_evaluate(p: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(mean CE, accuracy) of softmax outputs ``p`` as ``Engine.evaluate`` computes them."""
    if len(y) == 0:
        return float("nan"), float("nan")
    p = np.asarray(p, dtype=np.float64)
    ce = float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], 1e-12, None))))
    return ce, float(np.mean(np.argmax(p, axis=1) == y))


class VectorTrainer:
    """Compiled vectorized fit / predict for one architecture (module doc)."""

    def __init__(self, spec: ModelSpec, lr: float = 2e-3, head_lr: float = 2e-3, batch_size: int = 32,
                 chunk: int | None = None):
        from .tfquiet import import_tensorflow

        self.tf = import_tensorflow()
        self.spec = spec
        self.lr, self.head_lr, self.batch_size = float(lr), float(head_lr), int(batch_size)
        self.plan = spec.conv_plan()
        self.chunk = int(chunk) if chunk else self.default_chunk(spec, batch_size)
        self._fns: dict = {}
        self._pred = None

    @staticmethod
    def default_chunk(spec: ModelSpec, batch_size: int) -> int:
        """Clients per compiled call: the first layer's framed batch stays near 64 MB per call
        (a function of the architecture only, so every machine chunks a run alike)."""
        t, c = spec.input_shape
        f, k, s = spec.conv_plan()[0]
        t1 = (t - k) // s + 1
        per_client = batch_size * t1 * max(k * c, f) * 4
        return int(max(8, min(1024, (64 << 20) // max(per_client, 1))))

    # --- the model, per client ---------------------------------------------------------------
    def _forward(self, w, x):
        """Logits (K, B, n_classes) of stacked weights ``w`` on ``x`` (K, B, T, C)."""
        tf = self.tf
        h = x
        for i, (_, k, s) in enumerate(self.plan):
            fr = tf.signal.frame(h, k, s, axis=2)                      # (K, B, T', k, C)
            h = tf.einsum("kbtjc,kjcf->kbtf", fr, w[2 * i]) + w[2 * i + 1][:, None, None, :]
            h = tf.nn.relu6(h)
        f = tf.reduce_mean(h, axis=2)
        d = tf.nn.relu6(tf.einsum("kbi,kio->kbo", f, w[6]) + w[7][:, None, :])
        return tf.einsum("kbi,kio->kbo", d, w[8]) + w[9][:, None, :]

    def _fit_fn(self, head_only: bool):
        if head_only in self._fns:
            return self._fns[head_only]
        tf = self.tf
        n_w = 10
        train_ids = list(range(N_EXTRACTOR, n_w)) if head_only else list(range(n_w))
        lr = self.head_lr if head_only else self.lr
        B = self.batch_size
        T, C = self.spec.input_shape

        def fit(X, Y, idx, mask, active, W, M, V, t, A, mu):
            S = tf.shape(idx)[0]
            K = tf.shape(idx)[1]
            ce_all = tf.TensorArray(tf.float32, size=S)
            lr_t = tf.constant(lr, tf.float32)

            def body(s, W, M, V, t, ce_all):
                ii, mm, act = idx[s], mask[s], active[s]                # (K,B), (K,B), (K,)
                xb = tf.gather(X, ii)                                   # (K, B, T, C)
                yb = tf.gather(Y, ii)
                cnt = tf.reduce_sum(mm, axis=1)
                with tf.GradientTape() as tape:
                    tv = [W[i] for i in train_ids]
                    tape.watch(tv)
                    logits = self._forward(W, xb)
                    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=yb, logits=logits)
                    ce_b = tf.reduce_sum(ce * mm, axis=1) / tf.maximum(cnt, 1.0)      # (K,)
                    prox = tf.add_n([tf.reduce_sum(tf.reshape(tf.square(W[i] - A[i]), [K, -1]), axis=1)
                                     for i in range(n_w)])
                    loss = tf.reduce_sum(ce_b + 0.5 * mu * prox)
                grads = tape.gradient(loss, tv)
                t_new = t + act
                b1p = tf.pow(tf.constant(BETA_1, tf.float32), t_new)
                b2p = tf.pow(tf.constant(BETA_2, tf.float32), t_new)
                alpha = lr_t * tf.sqrt(1 - b2p) / (1 - b1p)                           # (K,)
                W2, M2, V2 = list(W), list(M), list(V)
                for j, (i, g) in enumerate(zip(train_ids, grads)):
                    shape = [K] + [1] * (len(W[i].shape) - 1)
                    a = tf.reshape(alpha, shape)
                    on = tf.reshape(act, shape) > 0
                    m = M[j] + (g - M[j]) * (1 - BETA_1)
                    v = V[j] + (tf.square(g) - V[j]) * (1 - BETA_2)
                    w = W[i] - (m * a) / (tf.sqrt(v) + EPSILON)
                    W2[i] = tf.where(on, w, W[i])
                    M2[j] = tf.where(on, m, M[j])
                    V2[j] = tf.where(on, v, V[j])
                return s + 1, tuple(W2), tuple(M2), tuple(V2), t_new, ce_all.write(s, ce_b)

            _, W, M, V, t, ce_all = tf.while_loop(lambda s, *a: s < S, body,
                                                  (tf.constant(0), tuple(W), tuple(M), tuple(V), t, ce_all))
            return W, ce_all.stack()

        shapes = self._shapes()
        wspec = tuple(tf.TensorSpec((None,) + s, tf.float32) for s in shapes)
        mspec = tuple(wspec[i] for i in train_ids)
        sig = [tf.TensorSpec((None, T, C), tf.float32), tf.TensorSpec((None,), tf.int32),
               tf.TensorSpec((None, None, B), tf.int32), tf.TensorSpec((None, None, B), tf.float32),
               tf.TensorSpec((None, None), tf.float32), wspec, mspec, mspec,
               tf.TensorSpec((None,), tf.float32), wspec, tf.TensorSpec((), tf.float32)]
        fn = tf.function(fit, input_signature=sig)
        self._fns[head_only] = (fn, train_ids)
        return self._fns[head_only]

    def _shapes(self) -> list[tuple]:
        t, c = self.spec.input_shape
        out, cin = [], c
        for f, k, _ in self.plan:
            out += [(k, cin, f), (f,)]
            cin = f
        h, n = self.spec.head_units, self.spec.n_classes
        return out + [(cin, h), (h,), (h, n), (n,)]

    # --- public API ----------------------------------------------------------------------------
    def fit(self, weights: list[list[np.ndarray]], data: list[tuple[np.ndarray, np.ndarray]], epochs: int,
            keys: list, *, head_only: bool = False, mu: float = 0.0, anchors=None):
        """Train client k from ``weights[k]`` on ``data[k] = (x, y)`` with key ``keys[k]``;
        returns (list of weight lists, list of last-epoch mean CE). ``anchors[k]`` (default: the
        starting weights) is client k's FedProx anchor."""
        out_w, out_l = [], []
        for c0 in range(0, len(data), self.chunk):
            sl = slice(c0, c0 + self.chunk)
            w, l = self._fit_chunk(weights[sl], data[sl], epochs, keys[sl], head_only, mu,
                                   None if anchors is None else anchors[sl])
            out_w += w
            out_l += l
        return out_w, out_l

    def _fit_chunk(self, weights, data, epochs, keys, head_only, mu, anchors):
        tf = self.tf
        fn, train_ids = self._fit_fn(head_only)
        sizes = [len(y) for _, y in data]
        K = len(data)
        idx, mask, active, counts, per_epoch = batch_plan(sizes, keys, int(epochs), self.batch_size)
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int32)
        idx = idx + offsets[None, :, None]
        T, C = self.spec.input_shape
        X = np.concatenate([np.asarray(x, np.float32).reshape(-1, T, C) for x, _ in data]) if sum(sizes) \
            else np.zeros((1, T, C), np.float32)
        Y = np.concatenate([np.asarray(y, np.int32) for _, y in data]) if sum(sizes) else np.zeros(1, np.int32)
        W = tuple(np.stack([np.asarray(w[i], np.float32) for w in weights]) for i in range(10))
        A = W if anchors is None else tuple(np.stack([np.asarray(a[i], np.float32) for a in anchors])
                                            for i in range(10))
        Z = tuple(np.zeros_like(W[i]) for i in train_ids)
        if idx.shape[0] == 0:
            Wn, ce = W, np.zeros((0, K), np.float32)
        else:
            Wn, ce = fn(tf.constant(X), tf.constant(Y), tf.constant(idx), tf.constant(mask), tf.constant(active),
                        W, Z, Z, tf.zeros((K,), tf.float32), A, tf.constant(float(mu), tf.float32))
            Wn = [np.asarray(w) for w in Wn]
            ce = np.asarray(ce)
        losses = []
        s0 = (int(epochs) - 1) * per_epoch
        for k, n in enumerate(sizes):
            if int(epochs) < 1 or n == 0:
                losses.append(float("nan"))
                continue
            parts = [float(ce[s, k]) * int(counts[s, k]) for s in range(s0, s0 + per_epoch) if counts[s, k] > 0]
            losses.append(sum(parts) / max(n, 1))
        out = [[np.array(Wn[i][k]) for i in range(10)] for k in range(K)]
        if head_only:      # the extractor passes through untouched: hand back the very arrays
            for k in range(K):
                out[k][:N_EXTRACTOR] = [np.array(weights[k][i]) for i in range(N_EXTRACTOR)]
        return out, losses

    def _pred_fn(self):
        if self._pred is None:
            tf = self.tf
            T, C = self.spec.input_shape
            wspec = tuple(tf.TensorSpec((None,) + s, tf.float32) for s in self._shapes())
            self._pred = tf.function(lambda W, x: tf.nn.softmax(self._forward(W, x)),
                                     input_signature=[wspec, tf.TensorSpec((None, None, T, C), tf.float32)])
        return self._pred

    def predict(self, weights: list[list[np.ndarray]], xs: list[np.ndarray]) -> list[np.ndarray]:
        """Softmax outputs (n_k, n_classes) float32 of client k's weights on ``xs[k]``."""
        fn = self._pred_fn()
        T, C = self.spec.input_shape
        out = []
        step = max(1, self.chunk)
        for c0 in range(0, len(xs), step):
            ws, xx = weights[c0:c0 + step], xs[c0:c0 + step]
            nmax = max([len(x) for x in xx] + [1])
            X = np.zeros((len(xx), nmax, T, C), np.float32)
            for k, x in enumerate(xx):
                X[k, :len(x)] = x
            W = tuple(np.stack([np.asarray(w[i], np.float32) for w in ws]) for i in range(10))
            P = np.asarray(fn(W, X))
            out += [P[k, :len(x)] for k, x in enumerate(xx)]
        return out

    def evaluate(self, weights, data) -> list[tuple[float, float]]:
        """(mean CE, accuracy) per client, as ``Engine.evaluate``."""
        ps = self.predict(weights, [x for x, _ in data])
        return [np_evaluate(p, y) for p, (_, y) in zip(ps, data)]
