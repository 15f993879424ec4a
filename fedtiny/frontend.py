"""The DSP front end: one definition of what the model sees, computed bit for bit alike on the host
(this module, pure NumPy) and on the board (``firmware/frontend/ft_frontend.h``, C99).

Kinds (``KINDS``):

- ``raw``: the window itself (the 1D CNN's input; nothing below applies).
- ``features``: per channel six time-domain statistics (``FEATURE_NAMES``).
- ``spectrum``: per channel the log energies of ``bands`` linear frequency bands of a Hann-windowed,
  zero-padded real FFT.

Contract (every step integer, so C and NumPy agree exactly; the only float steps are the final
quantization, which both sides compute with the same IEEE double operations):

1. Samples: the window in model units x (T, C), |x| <= 1, becomes int16
   ``s = clip(round_half_away(x * 32767), -32767, 32767)`` (host only: the board receives s).
2. Per channel c (all sums int64): ``S1 = sum s``, ``m = div_round(S1, T)`` (half away from zero),
   ``d = s - m``.
   features:
     mean      f0 = m
     std       f1 = (L(sum d^2) - L(T)) >> 1
     rms       f2 = (L(sum s^2) - L(T)) >> 1
     peak      f3 = L(max |s|)
     crest     f4 = f3 - f2
     kurtosis  f5 = L(T) + L(E4) - 2 L(E2), E2 = sum e^2, E4 = sum e^4, e = d >> sh,
               sh = max(0, bitlen(max |d|) - 12)   (|e| <= 4096, so E4 < 2^62 for T <= 16384);
               f5 = 0 when E2 = 0
   spectrum (N = fft_size(T), the least power of two >= T):
     v_t = (d_t * hann_t) >> 12 for t < T, 0 for T <= t < N, hann_t = round(32767 sin^2(pi t / T))
     (periodic Hann); radix-2 decimation-in-time FFT on int64 pairs, bit-reversed input, each
     butterfly ``t = (b * w) >> 15`` (complex, w = round(32767 e^{-2 pi i j / len})), outputs
     ``(a + t) >> 1`` and ``(a - t) >> 1`` (so the result is the DFT / N);
     P_k = re_k^2 + im_k^2 for k = 1 .. N/2; band b sums bins [1 + b*H//B, 1 + (b+1)*H//B)
     (H = N/2, B = bands(T) = min(16, H)); f_b = L(E_b).
   ``>>`` is the arithmetic (floor) shift on both sides.
   ``L(v)`` = log2(v) in Q16 (``ilog2_q16``): n = bitlen(v) - 1, the 16 bits below the leading one
   as g (0 <= g < 2^16), L = n * 2^16 + g + ((g * (2^16 - g) >> 16) * 22713 >> 16) (log2(1 + g)
   with its parabolic correction, error < 0.01); L(0) = 0.
3. Model input: z = (f - OFFSET[k]) * 2^-SHIFT[k] as float32 (exact: |f - OFFSET| < 2^24), the
   values the network trains on; the board quantizes z with the model's input scale exactly as
   ``trainer.quantize.quantize_input`` does (double division, round half away from zero).

The feature vector is channel-major: index c * per_channel + k. The model sees it as a (1, F) window
(one position of F channels), so the CNN's plan gives it kernel-1 layers: a small dense net.

Offsets and shifts are fixed constants of the contract (not fitted to any data): log features are
centred on 2^8 int16 LSB (-42 dBFS) and divided by 4, so one int8 scale serves all features.
"""
from __future__ import annotations

import numpy as np

KINDS = ("raw", "features", "spectrum")
FEATURE_NAMES = ("mean", "std", "rms", "peak", "crest", "kurtosis")
FULL_SCALE = 32767
MAX_WINDOW = 16384          # keeps the kurtosis' fourth-power sum inside int64
MAX_BANDS = 16
Q = 16                      # L() is log2 in Q16
LOG_C = 22713               # round(0.34657 * 2^16): the parabolic correction of log2(1 + g)
# z = (f - OFFSET) * 2^-SHIFT per feature (features) and for every band (spectrum)
FEATURE_OFFSET = (0, 8 << Q, 8 << Q, 8 << Q, 2 << Q, 2 << Q)
FEATURE_SHIFT = (13, Q + 2, Q + 2, Q + 2, Q + 1, Q + 1)
SPECTRUM_OFFSET = 24 << Q
SPECTRUM_SHIFT = Q + 3


class FrontendError(ValueError):
    """A window or configuration the front end cannot handle (one clear sentence)."""


def fft_size(t: int) -> int:
    """The least power of two >= t (the zero-padded FFT length)."""
    return 1 << max(0, (int(t) - 1).bit_length())


def bands(t: int) -> int:
    """Number of spectrum bands for a window of t samples: min(16, N/2)."""
    return min(MAX_BANDS, fft_size(t) // 2)


def check(kind: str, window: int, channels: int) -> None:
    """Raise FrontendError when ``kind`` cannot run on (window, channels) windows."""
    if kind not in KINDS:
        raise FrontendError(f"unknown front end {kind!r}; choose one of {', '.join(KINDS)}")
    if kind == "raw":
        return
    if not 1 <= window <= MAX_WINDOW:
        raise FrontendError(f"the {kind} front end needs windows of 1 to {MAX_WINDOW} samples, got {window}")
    if kind == "spectrum" and window < 8:
        raise FrontendError(f"the spectrum front end needs windows of at least 8 samples, got {window} "
                            f"(use --frontend features, or longer windows)")
    if channels < 1:
        raise FrontendError("the front end needs at least one channel")


def n_features(kind: str, window: int, channels: int) -> int:
    """F, the length of the feature vector."""
    per = len(FEATURE_NAMES) if kind == "features" else bands(window)
    return per * channels


def describe(kind: str, window: int, channels: int, rate_hz: float) -> dict:
    """The front end's configuration as recorded in device.json (codegen rebuilds every table from
    it): kind, window, channels, rate_hz, n_features, and for the spectrum fft_size and the band
    edges in bins and Hz."""
    check(kind, window, channels)
    d = {"kind": kind, "window": int(window), "channels": int(channels), "rate_hz": float(rate_hz)}
    if kind == "raw":
        return d
    d["n_features"] = n_features(kind, window, channels)
    if kind == "features":
        d["names"] = list(FEATURE_NAMES)
        d["offset"], d["shift"] = list(FEATURE_OFFSET), list(FEATURE_SHIFT)
    else:
        n = fft_size(window)
        edges = band_edges(window)
        d.update(fft_size=n, bands=bands(window), band_bins=edges.tolist(),
                 band_hz=[round(float(k) * rate_hz / n, 3) for k in edges], offset=SPECTRUM_OFFSET,
                 shift=SPECTRUM_SHIFT)
    return d


# ----------------------------------------------------------------------------- integer helpers

def to_int16(x: np.ndarray) -> np.ndarray:
    """Model-unit samples -> int16: clip(round_half_away(x * 32767), -32767, 32767)."""
    v = np.asarray(x, dtype=np.float64) * FULL_SCALE
    r = np.sign(v) * np.floor(np.abs(v) + 0.5)
    return np.clip(r, -FULL_SCALE, FULL_SCALE).astype(np.int16)


def div_round(a: np.ndarray, b: int) -> np.ndarray:
    """a / b (b > 0) rounded half away from zero, integer arithmetic (C: ft_div_round)."""
    a = np.asarray(a, dtype=np.int64)
    half = np.int64(b // 2)
    return np.where(a >= 0, (a + half) // b, -((-a + half) // b))


def bitlen(v: np.ndarray) -> np.ndarray:
    """Number of bits of non-negative int64 values (0 for 0)."""
    v = np.asarray(v, dtype=np.uint64).copy()
    n = np.zeros(v.shape, np.int64)
    for s in (32, 16, 8, 4, 2, 1):
        big = v >= (np.uint64(1) << np.uint64(s))
        v = np.where(big, v >> np.uint64(s), v)
        n += big * s
    return n + (v > 0)


def ilog2_q16(v: np.ndarray) -> np.ndarray:
    """L(v): log2(v) in Q16 for non-negative int64 v (module docstring); L(0) = L(1) = 0."""
    v = np.asarray(v, dtype=np.int64)
    n = bitlen(v) - 1
    nn = np.maximum(n, 0)
    u = v.astype(np.uint64)
    top = np.where(nn >= Q, u >> np.maximum(nn - Q, 0).astype(np.uint64),
                   u << np.maximum(Q - nn, 0).astype(np.uint64)).astype(np.int64)
    g = top - (1 << Q)
    corr = ((g * ((1 << Q) - g)) >> Q) * LOG_C >> Q
    return np.where(v > 0, nn * (1 << Q) + g + corr, 0)


def hann_q15(t: int) -> np.ndarray:
    """Periodic Hann window in Q15: round(32767 sin^2(pi i / t)), i < t (float64, host side;
    the board receives the table)."""
    i = np.arange(t, dtype=np.float64)
    return np.floor(FULL_SCALE * np.sin(np.pi * i / t) ** 2 + 0.5).astype(np.int64)


def twiddles_q15(n: int) -> tuple[np.ndarray, np.ndarray]:
    """cos and -sin of 2 pi j / n in Q15, j < n / 2 (round half away from zero)."""
    j = np.arange(max(n // 2, 1), dtype=np.float64)
    ang = 2.0 * np.pi * j / n

    def rnd(a):
        return (np.sign(a) * np.floor(np.abs(a) * FULL_SCALE + 0.5)).astype(np.int64)

    return rnd(np.cos(ang)), rnd(-np.sin(ang))


def bit_reverse(n: int) -> np.ndarray:
    bits = max(0, n.bit_length() - 1)
    return np.array([int(format(i, f"0{bits}b")[::-1], 2) if bits else 0 for i in range(n)], np.int64)


def band_edges(t: int) -> np.ndarray:
    """B + 1 bin edges: band b holds bins [edge[b], edge[b + 1]) of 1 .. N/2."""
    h, b = fft_size(t) // 2, bands(t)
    return np.array([1 + (i * h) // b for i in range(b + 1)], np.int64)


# ----------------------------------------------------------------------------- the front end

def _center(s: np.ndarray):
    t = s.shape[1]
    m = div_round(s.sum(axis=1), t)                       # (n, C)
    return m, s - m[:, None, :]


def features_int(s: np.ndarray) -> np.ndarray:
    """The ``features`` integers f (n, C * 6) of int16 windows s (n, T, C)."""
    s = np.asarray(s, dtype=np.int64)
    n, t, c = s.shape
    m, d = _center(s)
    lt = int(ilog2_q16(np.int64(t)))
    std = (ilog2_q16((d * d).sum(axis=1)) - lt) >> 1
    rms = (ilog2_q16((s * s).sum(axis=1)) - lt) >> 1
    peak = ilog2_q16(np.abs(s).max(axis=1))
    crest = peak - rms
    sh = np.maximum(bitlen(np.abs(d).max(axis=1)) - 12, 0)    # (n, C)
    e = d >> sh[:, None, :]
    e2 = (e * e).sum(axis=1)
    e4 = (e * e * e * e).sum(axis=1)
    kurt = np.where(e2 > 0, lt + ilog2_q16(e4) - 2 * ilog2_q16(e2), 0)
    f = np.stack([m, std, rms, peak, crest, kurt], axis=2)      # (n, C, 6)
    return f.reshape(n, c * len(FEATURE_NAMES))


def spectrum_int(s: np.ndarray) -> np.ndarray:
    """The ``spectrum`` integers f (n, C * B) of int16 windows s (n, T, C)."""
    s = np.asarray(s, dtype=np.int64)
    n, t, c = s.shape
    big_n = fft_size(t)
    _, d = _center(s)
    v = np.zeros((n, c, big_n), np.int64)
    v[:, :, :t] = (np.transpose(d, (0, 2, 1)) * hann_q15(t)) >> 12
    re = v[:, :, bit_reverse(big_n)]
    im = np.zeros_like(re)
    wr_all, wi_all = twiddles_q15(big_n)
    size = 2
    while size <= big_n:
        half = size // 2
        wr = wr_all[::big_n // size][:half]
        wi = wi_all[::big_n // size][:half]
        r = re.reshape(n, c, big_n // size, size)
        i = im.reshape(n, c, big_n // size, size)
        ar, ai, br, bi = r[..., :half], i[..., :half], r[..., half:], i[..., half:]
        tr = (br * wr - bi * wi) >> 15
        ti = (br * wi + bi * wr) >> 15
        re = np.concatenate([(ar + tr) >> 1, (ar - tr) >> 1], axis=-1).reshape(n, c, big_n)
        im = np.concatenate([(ai + ti) >> 1, (ai - ti) >> 1], axis=-1).reshape(n, c, big_n)
        size *= 2
    p = re * re + im * im
    edges = band_edges(t)
    e = np.stack([p[:, :, edges[b]:edges[b + 1]].sum(axis=2) for b in range(len(edges) - 1)], axis=2)
    return ilog2_q16(e).reshape(n, c * (len(edges) - 1))


def offsets_shifts(kind: str, window: int, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """(OFFSET, SHIFT) per feature index (length F)."""
    if kind == "features":
        return np.tile(FEATURE_OFFSET, channels).astype(np.int64), np.tile(FEATURE_SHIFT, channels).astype(np.int64)
    f = n_features(kind, window, channels)
    return np.full(f, SPECTRUM_OFFSET, np.int64), np.full(f, SPECTRUM_SHIFT, np.int64)


def compute_int(kind: str, s: np.ndarray) -> np.ndarray:
    """The front end's integers f (n, F) of int16 windows s (n, T, C)."""
    s = np.asarray(s)
    if s.ndim != 3:
        raise FrontendError(f"windows must be (n, T, C), got shape {s.shape}")
    check(kind, s.shape[1], s.shape[2])
    if kind == "features":
        return features_int(s)
    if kind == "spectrum":
        return spectrum_int(s)
    raise FrontendError("the raw front end has no feature integers")


def scale(kind: str, f: np.ndarray, window: int, channels: int) -> np.ndarray:
    """z = (f - OFFSET) * 2^-SHIFT as float32 (exact)."""
    off, sh = offsets_shifts(kind, window, channels)
    diff = np.asarray(f, dtype=np.int64) - off
    if np.abs(diff).max(initial=0) >= (1 << 24):
        raise FrontendError("a front-end value does not fit float32 exactly")
    return np.ldexp(diff.astype(np.float64), -sh).astype(np.float32)


def compute(kind: str, x: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """The model's float input z (n, F) float32 for windows ``x`` (n, T, C) in model units
    (|x| <= 1): ``scale(compute_int(to_int16(x)))``. Batched in chunks of ``chunk`` windows.
    This is the call for anything that wants the features of a batch (e.g. a classical reference)."""
    x = np.asarray(x)
    if x.ndim != 3:
        raise FrontendError(f"windows must be (n, T, C), got shape {x.shape}")
    _, t, c = x.shape
    check(kind, t, c)
    if kind == "raw":
        return x.reshape(len(x), -1).astype(np.float32)
    out = [scale(kind, compute_int(kind, to_int16(x[i:i + chunk])), t, c) for i in range(0, len(x), chunk)]
    return np.concatenate(out) if out else np.zeros((0, n_features(kind, t, c)), np.float32)


def quantize(z: np.ndarray, input_scale: float, input_zero_point: int) -> np.ndarray:
    """The board's int8 model input: clip(round_half_away(double(z) / scale) + zp, -128, 127)
    (the same operations as trainer.quantize.quantize_input)."""
    v = np.asarray(z, dtype=np.float64) / float(input_scale)
    return np.clip(np.sign(v) * np.floor(np.abs(v) + 0.5) + int(input_zero_point), -128, 127).astype(np.int8)


def raw_input(s: np.ndarray, input_scale: float, input_zero_point: int) -> np.ndarray:
    """int8 model inputs of a raw model from int16 samples s (n, T, C), the board's live step:
    ``quantize(double(s) / 32767)`` (the C twin: ft_frontend_raw)."""
    s = np.asarray(s)
    return quantize(s.astype(np.float64) / FULL_SCALE, input_scale, input_zero_point).reshape(len(s), -1)


def model_input(kind: str, s: np.ndarray, input_scale: float, input_zero_point: int) -> np.ndarray:
    """int8 model inputs (n, F) of int16 windows s (n, T, C): the host twin of ft_frontend_run."""
    _, t, c = np.asarray(s).shape
    return quantize(scale(kind, compute_int(kind, s), t, c), input_scale, input_zero_point)


def tables(kind: str, window: int) -> dict[str, np.ndarray]:
    """The constant tables the C front end needs (emitted by codegen): for the spectrum the Hann
    window, the twiddles, the bit-reversal permutation and the band edges; nothing for features."""
    if kind != "spectrum":
        return {}
    n = fft_size(window)
    wr, wi = twiddles_q15(n)
    return {"hann": hann_q15(window), "cos": wr, "msin": wi, "bitrev": bit_reverse(n),
            "edges": band_edges(window)}
