"""Host twin of the board's trainable head (``firmware/compiled/ft_head.c``): NumPy float32, the
same operations in the same order, so it predicts the board's weights bit for bit.

The board keeps each window as the int8 codes q of the INT8 model's feature tensor (the frozen
extractor's output) and trains the model's float32 head on them:

    x  = s_f * float32(q - z_f)                              (the feature tensor's scale, zero point)
    z1 = b1 + sum_i x_i W1[i, :]     (i in order, one rounding per multiply and per add)
    h  = min(max(z1, 0), 6)
    z2 = b2 + sum_j h_j W2[j, :]
    p  = e / sum_c e_c,  e_c = expf(z2_c - max z2)           (``expf``: the board's exp)
    loss = -ln p_y                                           (``logf``: the board's ln)

One step on a batch of n windows (in the order of the shuffled training list):
    dz2 = (p - onehot(y)) * float32(1 / n)
    gW2[j, c] = sum_b h[b, j] dz2[b, c]          gb2[c] = sum_b dz2[b, c]
    dz1[b, j] = (sum_c W2[j, c] dz2[b, c])  where 0 < z1[b, j] < 6, else 0
    gW1[i, j] = sum_b x[b, i] dz1[b, j]          gb1[j] = sum_b dz1[b, j]
    v = mom * v - lr * g;   w = w + v            (SGD with momentum, every parameter)

Shuffling: a training call lists the training windows in the order they were sent, seeds a
xorshift32 stream with ``seed_state(seed)`` and, every epoch, shuffles that list in place
(Fisher-Yates: for i = n-1 .. 1, j = next() % (i + 1), swap i and j), then takes batches of
``batch`` in order (the last may be smaller).

The threshold: ``tune`` is ``fedtiny.trainer.threshold.tune_threshold`` itself, on the head's
float32 probabilities (scores 1 - P(normal) in float64, as the board computes them).

Parameters travel as one flat float32 vector: W1 (n_in x n_hidden, row-major), b1, W2
(n_hidden x K), b2: Keras' Dense kernels and biases in ``get_weights()`` order.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

F32 = np.float32
MASK32 = 0xFFFFFFFF


@dataclass(frozen=True)
class HeadShape:
    n_in: int
    n_hidden: int
    n_classes: int

    @property
    def n_params(self) -> int:
        return self.n_in * self.n_hidden + self.n_hidden + self.n_hidden * self.n_classes + self.n_classes


def flatten(arrays) -> np.ndarray:
    """[W1, b1, W2, b2] (Keras ``get_weights()`` of the two head layers) -> one float32 vector."""
    return np.concatenate([np.asarray(a, F32).reshape(-1) for a in arrays]).astype(F32)


def unflatten(flat: np.ndarray, shape: HeadShape) -> list[np.ndarray]:
    """The inverse of ``flatten``."""
    i, h, k = shape.n_in, shape.n_hidden, shape.n_classes
    flat = np.asarray(flat, F32)
    cuts = np.cumsum([i * h, h, h * k])
    w1, b1, w2, b2 = np.split(flat, cuts)
    return [w1.reshape(i, h), b1, w2.reshape(h, k), b2]


def expf(x: np.ndarray) -> np.ndarray:
    """The board's float32 exp for x <= 0 (ft_head.c ``ft_head_expf``): clamp at -87,
    k = round(x log2 e) by adding and subtracting 1.5 * 2^23, r = x - k ln2_hi - k ln2_lo,
    p = Horner(1/720, 1/120, 1/24, 1/6, 1/2, 1, 1) at r, result p * 2^k (2^k from its bits)."""
    x = np.maximum(np.asarray(x, F32), F32(-87.0))
    magic = F32(12582912.0)
    t = x * F32(1.44269504)
    t = t + magic
    k = t.view(np.int32) - np.array(magic, F32).view(np.int32)
    t = t - magic
    r = x - t * F32(0.693145752)
    r = r - t * F32(1.42860677e-06)
    p = np.full_like(r, F32(1.38888889e-03))
    for c in (8.33333333e-03, 4.16666667e-02, 1.66666667e-01, 0.5, 1.0, 1.0):
        p = p * r + F32(c)
    scale = ((k + 127).astype(np.uint32) << np.uint32(23)).view(F32)
    return (p * scale).astype(F32)


def logf(x: np.ndarray) -> np.ndarray:
    """The board's float32 ln (``ft_head_logf``): x floored at 1e-30, x = m 2^e with m in [1, 2),
    s = (m - 1) / (m + 1), ln x = e ln2 + 2 s (1 + s^2/3 + s^4/5 + s^6/7 + s^8/9) by Horner."""
    x = np.asarray(x, F32)
    x = np.where(x > F32(1e-30), x, F32(1e-30)).astype(F32)
    u = x.view(np.uint32)
    e = ((u >> np.uint32(23)) & np.uint32(0xFF)).astype(np.int32) - 127
    m = ((u & np.uint32(0x007FFFFF)) | np.uint32(0x3F800000)).view(F32)
    s = (m - F32(1.0)) / (m + F32(1.0))
    s2 = s * s
    q = np.full_like(s, F32(0.111111111))
    for c in (0.142857143, 0.2, 0.333333333, 1.0):
        q = q * s2 + F32(c)
    return (e.astype(F32) * F32(0.693147181) + F32(2.0) * s * q).astype(F32)


def dequantize_features(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """x = float32(q - z) * float32(scale), elementwise."""
    return ((np.asarray(q, np.int32) - int(zero_point)).astype(F32) * F32(scale)).astype(F32)


def _dense(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """b + sum_i x[:, i] w[i, :], summed in i order with one rounding per operation."""
    acc = np.broadcast_to(b, (len(x), w.shape[1])).astype(F32)
    for i in range(w.shape[0]):
        acc = acc + x[:, i:i + 1] * w[i][None, :]
    return acc


def forward(flat: np.ndarray, shape: HeadShape, x: np.ndarray):
    """(z1, h, p) of windows x (n, n_in) float32: module docstring."""
    w1, b1, w2, b2 = unflatten(flat, shape)
    z1 = _dense(x, w1, b1)
    h = np.minimum(np.maximum(z1, F32(0.0)), F32(6.0)).astype(F32)
    z2 = _dense(h, w2, b2)
    m = z2[:, 0]
    for c in range(1, shape.n_classes):
        m = np.where(z2[:, c] > m, z2[:, c], m)
    e = expf(z2 - m[:, None])
    s = np.zeros(len(x), F32)
    for c in range(shape.n_classes):
        s = s + e[:, c]
    return z1, h, (e / s[:, None]).astype(F32)


def _sum_rows(a: np.ndarray) -> np.ndarray:
    """sum over the first axis in order, starting from 0.0f."""
    acc = np.zeros(a.shape[1:], F32)
    for row in a:
        acc = acc + row
    return acc


def step(flat: np.ndarray, vel: np.ndarray, shape: HeadShape, x: np.ndarray, y: np.ndarray,
         lr: float, momentum: float) -> tuple[np.ndarray, np.ndarray, np.float32]:
    """One SGD-with-momentum step on the batch (x, y): returns (new flat, new velocity, summed
    loss of the batch). Formulas: module docstring."""
    n = len(y)
    z1, h, p = forward(flat, shape, x)
    loss = F32(0.0)
    for b in range(n):
        loss = F32(loss + logf(p[b, y[b]:y[b] + 1])[0])
    inv = F32(1.0) / F32(n)
    d = p.copy()
    d[np.arange(n), y] = d[np.arange(n), y] - F32(1.0)
    dz2 = (d * inv).astype(F32)
    _, _, w2, _ = unflatten(flat, shape)
    gw2 = _sum_rows(h[:, :, None] * dz2[:, None, :])
    gb2 = _sum_rows(dz2)
    dh = np.zeros((n, shape.n_hidden), F32)
    for c in range(shape.n_classes):
        dh = dh + w2[None, :, c] * dz2[:, c:c + 1]
    dz1 = np.where((z1 > F32(0.0)) & (z1 < F32(6.0)), dh, F32(0.0)).astype(F32)
    gw1 = _sum_rows(x[:, :, None] * dz1[:, None, :])
    gb1 = _sum_rows(dz1)
    g = flatten([gw1, gb1, gw2, gb2])
    v = (F32(momentum) * vel - F32(lr) * g).astype(F32)
    return (flat + v).astype(F32), v, F32(-loss)


def seed_state(seed: int) -> int:
    """The xorshift32 stream's first state: seed * 2654435761 + 0x6D2B79F5 (mod 2^32), 0 -> 1."""
    s = (int(seed) * 2654435761 + 0x6D2B79F5) & MASK32
    return s or 1


def xorshift32(state: int) -> int:
    """The next state (and output): x ^= x << 13; x ^= x >> 17; x ^= x << 5 (32 bits)."""
    x = state
    x ^= (x << 13) & MASK32
    x ^= x >> 17
    x ^= (x << 5) & MASK32
    return x & MASK32


def shuffle_in_place(order: list[int], state: int) -> int:
    """Fisher-Yates as the board does it; returns the stream's state after it."""
    for i in range(len(order) - 1, 0, -1):
        state = xorshift32(state)
        j = state % (i + 1)
        order[i], order[j] = order[j], order[i]
    return state


@dataclass
class Trained:
    flat: np.ndarray
    vel: np.ndarray
    losses: list[float]          # mean loss per epoch
    steps: int                   # batches per epoch


def train(flat: np.ndarray, vel: np.ndarray, shape: HeadShape, x: np.ndarray, y: np.ndarray,
          epochs: int, seed: int, lr: float, momentum: float, batch: int) -> Trained:
    """``epochs`` epochs of ``step`` over the training windows (x, y) in the order they were
    sent, shuffled as the module docstring says; the mean loss per epoch is
    float32(sum of batch losses) / float32(n)."""
    x = np.asarray(x, F32)
    y = np.asarray(y, np.int64)
    order = list(range(len(y)))
    state = seed_state(seed)
    flat, vel = np.asarray(flat, F32).copy(), np.asarray(vel, F32).copy()
    losses, steps = [], 0
    for _ in range(int(epochs)):
        state = shuffle_in_place(order, state)
        total, steps = F32(0.0), 0
        for s in range(0, len(order), batch):
            idx = np.asarray(order[s:s + batch])
            flat, vel, loss = step(flat, vel, shape, x[idx], y[idx], lr, momentum)
            total = F32(total + loss)
            steps += 1
        losses.append(float(F32(total / F32(len(order)))) if order else 0.0)
    return Trained(flat, vel, losses, steps)


def probabilities(flat: np.ndarray, shape: HeadShape, x: np.ndarray) -> np.ndarray:
    """The head's float32 softmax outputs (n, K)."""
    return forward(flat, shape, np.asarray(x, F32))[2]


def tune(flat: np.ndarray, shape: HeadShape, x_val: np.ndarray, y_val: np.ndarray,
         metric: str = "balanced_accuracy") -> tuple[float, float]:
    """(threshold, metric value): ``trainer.threshold.tune_threshold`` on the head's scores."""
    from fedtiny.trainer.threshold import tune_threshold

    return tune_threshold(probabilities(flat, shape, x_val), y_val, metric)


def decide(flat: np.ndarray, shape: HeadShape, x: np.ndarray, threshold: float) -> np.ndarray:
    """Classes under ``trainer.threshold.decide`` (the board's rule) of the head's outputs."""
    from fedtiny.trainer.threshold import decide as rule

    return rule(probabilities(flat, shape, x), threshold)
