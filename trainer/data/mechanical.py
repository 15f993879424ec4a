"""Built-in mechanical fleet: drive-end bearing vibration in the CWRU format (12 kHz, 1 channel, g).

Physics (the design notes' DATA.md, "Bearing vibration"; McFadden & Smith 1984, Randall & Antoni 2011).

Defect frequencies for n rolling elements of diameter d on pitch diameter D, contact angle phi, shaft
rate f_r = rpm / 60:

    FTF  = (f_r / 2)       (1 - (d/D) cos phi)          cage
    BPFO = (n f_r / 2)     (1 - (d/D) cos phi)          outer race
    BPFI = (n f_r / 2)     (1 + (d/D) cos phi)          inner race
    BSF  = (D f_r / (2 d)) (1 - ((d/D) cos phi)^2)      ball spin; a ball defect strikes at 2 x BSF

Signal of one window (single-point-defect model):

    x(t) = g [ sum_k A_k h(t - t_k) + sum_{i=1,2} a_i cos(2 pi i f_r t + p_i) + a_l cos(2 pi 120 t + p_l) + n(t) ]

* impacts t_k = t_0 + k T + tau_k, T = 1 / f_fault (BPFO outer, BPFI inner, 2 x BSF ball), t_0 a random
  initial phase, tau_k ~ N(0, (j T)^2) slip jitter with j in 0.01-0.02;
* h(t) = exp(-zeta w_n t) sin(w_d t) u(t), w_d = w_n sqrt(1 - zeta^2): one SDOF structural resonance;
* A_k = A0 q_k (1 + 0.1 e_k): outer q = 1; inner q = 1 + m cos(2 pi f_r t_k + theta) (the defect rotates
  through the load zone); ball q = 1 + m cos(2 pi FTF t_k + theta) (the ball travels with the cage);
* n(t): Gaussian noise, part white and part passed through the same resonance (the structure also
  responds to broadband excitation), so healthy windows show the resonance hump too;
* g: the sensor gain of the device (mounting / calibration), which scales everything.

A0 is set from the wanted rms of the impact component (``fault_rms``) using the energy of one
response, int_0^inf h^2 dt = (1 - zeta^2) / (4 zeta w_n):

    A0 = fault_rms * sqrt(4 zeta w_n / ((1 - zeta^2) f_fault E[q^2] (1 + 0.1^2))),  E[q^2] = 1 + m^2 / 2.

At the nominal levels below, windows reproduce the CWRU measurements quoted in DATA.md: healthy
about 0.07 g rms and kurtosis 3, inner race 0.2-0.5 g and kurtosis 5-20, outer race 0.3-0.7 g and
kurtosis 7-24, ball 0.1-0.15 g and kurtosis 3-15.

Fleet: device i runs its own operating condition drawn from ``np.random.default_rng([seed, STREAM, 2, i + 1])``:
load (0-3 hp spread over the devices, rpm interpolated in CWRU's 1797/1772/1750/1730 table), fault
size 0.007/0.014/0.021 in (impact level x 0.45/0.7/1.0 of ``NOMINAL_FAULT_RMS``), outer-race defect
position (@6:00 in the load zone x 1, @3:00 x 0.6, @12:00 x 0.35), resonance frequency and damping
(sensor mounting), noise level, sensor gain (0.5-2, so the level alone does not classify). Within a
device the impact level varies from window to window (log-normal, sigma ``WINDOW_SPREAD``), so small
faults give some windows whose impacts sink into the noise: these, and the weak ball faults, are what
keeps a classifier below 100 %. The public pool (Phase 0) is drawn from conditions that no device
has: rpm below CWRU's 3 hp speed (1650-1720) and resonances below the devices' band (2.5-2.9 kHz).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import hilbert, lfilter

from .fleet import DataError, Fleet, Pool, class_counts, label_skew

CLASS_NAMES = ["normal", "inner_race", "outer_race", "ball"]
# Second word of this module's random streams ([seed, STREAM, purpose, ...]); see electrical.STREAM.
STREAM = 3
CHANNELS = ["DE_accel_g"]
SAMPLE_RATE_HZ = 12000.0
WINDOW = 1024
# Fixed front-end full scale (g): the model sees x / CHANNEL_SCALE. About 99.7 % of the generated samples
# (99 % of the outer-race ones, all healthy ones) lie within +-2.5 g; a larger scale would leave the
# 0.07 g healthy noise only a few INT8 steps.
CHANNEL_SCALE = np.array([2.5], dtype=np.float32)

FAULT_OF_CLASS = {"normal": None, "inner_race": "BPFI", "outer_race": "BPFO", "ball": "2xBSF"}


# --------------------------------------------------------------------------------------------------
# Bearing kinematics (pure)

@dataclass(frozen=True)
class BearingGeometry:
    """n rolling elements of diameter d on pitch diameter D (same length unit), contact angle phi (rad)."""

    n: int
    d: float
    D: float
    phi: float = 0.0


CWRU_DE = BearingGeometry(n=9, d=0.3126, D=1.537, phi=0.0)    # 6205-2RS JEM SKF, inches
CWRU_FE = BearingGeometry(n=8, d=0.2656, D=1.122, phi=0.0)    # 6203-2RS JEM SKF, inches

# CWRU's loads (hp) and the measured shaft speeds (rpm) of the drive-end records.
LOAD_HP = (0.0, 1.0, 2.0, 3.0)
LOAD_RPM = (1797.0, 1772.0, 1750.0, 1730.0)


def ftf(f_r, n: int, d: float, D: float, phi: float = 0.0):
    """Fundamental train (cage) frequency: FTF = (f_r / 2) (1 - (d/D) cos phi)."""
    return np.asarray(f_r, dtype=np.float64) / 2.0 * (1.0 - d / D * np.cos(phi))


def bpfo(f_r, n: int, d: float, D: float, phi: float = 0.0):
    """Ball pass frequency, outer race: BPFO = (n f_r / 2) (1 - (d/D) cos phi)."""
    return n * np.asarray(f_r, dtype=np.float64) / 2.0 * (1.0 - d / D * np.cos(phi))


def bpfi(f_r, n: int, d: float, D: float, phi: float = 0.0):
    """Ball pass frequency, inner race: BPFI = (n f_r / 2) (1 + (d/D) cos phi)."""
    return n * np.asarray(f_r, dtype=np.float64) / 2.0 * (1.0 + d / D * np.cos(phi))


def bsf(f_r, n: int, d: float, D: float, phi: float = 0.0):
    """Ball spin frequency: BSF = (D f_r / (2 d)) (1 - ((d/D) cos phi)^2)."""
    return D * np.asarray(f_r, dtype=np.float64) / (2.0 * d) * (1.0 - (d / D * np.cos(phi)) ** 2)


def ball_pass(f_r, n: int, d: float, D: float, phi: float = 0.0):
    """Ball-defect impact rate 2 x BSF (the defect strikes the inner and the outer race once per spin)."""
    return 2.0 * bsf(f_r, n, d, D, phi)


def defect_frequencies(rpm: float, geom: BearingGeometry = CWRU_DE) -> dict[str, float]:
    """Shaft rate and defect frequencies (Hz) at ``rpm``: keys f_r, FTF, BPFO, BPFI, BSF, 2xBSF."""
    f_r = float(rpm) / 60.0
    g = (geom.n, geom.d, geom.D, geom.phi)
    return {"f_r": f_r, "FTF": float(ftf(f_r, *g)), "BPFO": float(bpfo(f_r, *g)),
            "BPFI": float(bpfi(f_r, *g)), "BSF": float(bsf(f_r, *g)), "2xBSF": float(ball_pass(f_r, *g))}


def defect_multipliers(geom: BearingGeometry = CWRU_DE) -> dict[str, float]:
    """Defect frequencies in orders of the shaft rate (f_r = 1): FTF, BPFO, BPFI, BSF, 2xBSF."""
    f = defect_frequencies(60.0, geom)
    return {k: v for k, v in f.items() if k != "f_r"}


def rpm_at_load(load_hp):
    """Shaft speed (rpm) at a motor load (hp), linear between CWRU's four measured points."""
    return np.interp(load_hp, LOAD_HP, LOAD_RPM)


# --------------------------------------------------------------------------------------------------
# Signal statistics (pure)

def kurtosis(x, axis: int = -1):
    """Pearson kurtosis E[(x - mean)^4] / E[(x - mean)^2]^2 (3 for a Gaussian), along ``axis``."""
    x = np.asarray(x, dtype=np.float64)
    c = x - x.mean(axis=axis, keepdims=True)
    m2 = np.mean(c ** 2, axis=axis)
    return np.mean(c ** 4, axis=axis) / np.maximum(m2, 1e-300) ** 2


def rms(x, axis: int = -1):
    """Root mean square sqrt(E[x^2]) along ``axis``."""
    x = np.asarray(x, dtype=np.float64)
    return np.sqrt(np.mean(x ** 2, axis=axis))


def envelope_spectrum(x, fs: float = SAMPLE_RATE_HZ, band=(2000.0, 4500.0)):
    """Envelope spectrum of the last axis: band-pass ``band`` by zeroing FFT bins outside it, take the
    Hilbert envelope |x_a(t)|, remove its mean and return (freqs, |FFT| / N) of the envelope."""
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[-1]
    spec = np.fft.rfft(x, axis=-1)
    f = np.fft.rfftfreq(n, 1.0 / fs)
    spec[..., (f < band[0]) | (f > band[1])] = 0.0
    env = np.abs(hilbert(np.fft.irfft(spec, n=n, axis=-1), axis=-1))
    env = env - env.mean(axis=-1, keepdims=True)
    return f, np.abs(np.fft.rfft(env, axis=-1)) / n


# --------------------------------------------------------------------------------------------------
# Signal model

def impact_amplitude(fault_rms, rate_hz: float, resonance_hz: float, damping: float,
                     mod_depth: float = 0.0, amp_jitter: float = 0.1):
    """A0 giving an impact component of rms ``fault_rms`` (see the module doc):
    A0 = fault_rms sqrt(4 zeta w_n / ((1 - zeta^2) rate (1 + m^2/2) (1 + amp_jitter^2)))."""
    wn = 2.0 * np.pi * resonance_hz
    energy = (1.0 - damping ** 2) / (4.0 * damping * wn)            # int h^2 dt of one impact
    power_per_a2 = rate_hz * energy * (1.0 + mod_depth ** 2 / 2.0) * (1.0 + amp_jitter ** 2)
    return np.asarray(fault_rms, dtype=np.float64) / np.sqrt(power_per_a2)


def _resonance_pole(resonance_hz: float, damping: float, fs: float) -> tuple[complex, complex]:
    """Continuous pole s = -zeta w_n + i w_d and its discrete image z = exp(s / fs)."""
    wn = 2.0 * np.pi * resonance_hz
    s = complex(-damping * wn, wn * np.sqrt(1.0 - damping ** 2))
    return s, np.exp(s / fs)


def bearing_signal(fault: str, n: int, rng: np.random.Generator, *, rpm=1797.0,
                   resonance_hz: float = 3200.0, damping: float = 0.05, fault_rms=0.4,
                   noise_rms: float = 0.07, gain: float = 1.0, jitter: float = 0.015,
                   mod_depth: float = 0.6, shaft_g=(0.015, 0.012), line_g: float = 0.005,
                   structural_noise: float = 0.35, amp_jitter: float = 0.1,
                   n_samples: int = WINDOW, fs: float = SAMPLE_RATE_HZ,
                   geom: BearingGeometry = CWRU_DE) -> np.ndarray:
    """``n`` independent windows (n, n_samples) in g of the model in the module doc.

    ``fault`` is a class name (normal / inner_race / outer_race / ball); ``rpm`` and ``fault_rms`` may be
    scalars or per-window arrays (n,). Each impact's response is evaluated exactly at its fractional
    time: h(t - t_k) = Im(exp(s (t - t_k))), s = -zeta w_n + i w_d, so a complex weight A_k exp(s f_k / fs)
    at the next sample followed by the one-pole filter 1 / (1 - exp(s / fs) z^-1) gives the train."""
    if fault not in FAULT_OF_CLASS:
        raise DataError(f"unknown bearing condition {fault!r}; choose one of {', '.join(FAULT_OF_CLASS)}")
    rpm = np.broadcast_to(np.asarray(rpm, dtype=np.float64), (n,))
    f_r = rpm / 60.0
    t = np.arange(n_samples) / fs
    s, z = _resonance_pole(resonance_hz, damping, fs)

    # broadband noise: white part plus a part shaped by the structural resonance, total rms noise_rms
    w = rng.standard_normal((n, n_samples + 512))
    shaped = lfilter([1.0], [1.0, -z], w, axis=1).imag[:, 512:]
    h_energy = np.sum(np.imag(z ** np.arange(4096)) ** 2)
    x = noise_rms * (np.sqrt(1.0 - structural_noise) * rng.standard_normal((n, n_samples))
                     + np.sqrt(structural_noise) * shaped / np.sqrt(h_energy))

    # shaft harmonics and line-frequency term, random phases
    ph = rng.uniform(0.0, 2.0 * np.pi, size=(n, 3))
    for i, a in enumerate(shaft_g, start=1):
        x += a * np.cos(2 * np.pi * i * f_r[:, None] * t[None, :] + ph[:, i - 1:i])
    if line_g:
        x += line_g * np.cos(2 * np.pi * 120.0 * t[None, :] + ph[:, 2:3])

    kind = FAULT_OF_CLASS[fault]
    if kind is not None:
        freqs = {"BPFO": bpfo, "BPFI": bpfi, "2xBSF": ball_pass}
        rate = freqs[kind](f_r, geom.n, geom.d, geom.D, geom.phi)                 # (n,)
        period = 1.0 / rate
        pre = int(round(0.03 * fs))                                              # decayed tails
        total = pre + n_samples
        n_imp = int(np.ceil(total / fs / period.min())) + 2
        k = np.arange(n_imp)[None, :]
        t_k = (rng.uniform(0.0, 1.0, (n, 1)) + k) * period[:, None] \
            + rng.normal(0.0, 1.0, (n, n_imp)) * (jitter * period[:, None])
        m = mod_depth if kind != "BPFO" else 0.0
        if kind == "BPFI":
            q = 1.0 + m * np.cos(2 * np.pi * f_r[:, None] * t_k + rng.uniform(0, 2 * np.pi, (n, 1)))
        elif kind == "2xBSF":
            cage = ftf(f_r, geom.n, geom.d, geom.D, geom.phi)
            q = 1.0 + m * np.cos(2 * np.pi * cage[:, None] * t_k + rng.uniform(0, 2 * np.pi, (n, 1)))
        else:
            q = np.ones_like(t_k)
        a0 = impact_amplitude(np.broadcast_to(np.asarray(fault_rms, np.float64), (n,)), rate,
                              resonance_hz, damping, m, amp_jitter)
        amp = a0[:, None] * q * np.clip(1.0 + amp_jitter * rng.standard_normal((n, n_imp)), 0.0, None)
        pos = t_k * fs
        idx = np.floor(pos).astype(np.int64) + 1          # first sample strictly after the impact
        frac = idx - pos                                  # (0, 1]
        ok = (idx >= 0) & (idx < total)
        u = np.zeros((n, total), dtype=np.complex128)
        rows = np.broadcast_to(np.arange(n)[:, None], idx.shape)
        np.add.at(u, (rows[ok], idx[ok]), amp[ok] * np.exp(s * frac[ok] / fs))
        x += lfilter([1.0], [1.0, -z], u, axis=1).imag[:, pre:]
    return gain * x


# --------------------------------------------------------------------------------------------------
# Fleet generator

# rms (g) of the impact component at the nominal (0.021 in) fault size; ball faults are weaker.
NOMINAL_FAULT_RMS = {"inner_race": 0.32, "outer_race": 0.45, "ball": 0.09}
FAULT_SIZES_IN = (0.007, 0.014, 0.021)
SIZE_FACTOR = {0.007: 0.45, 0.014: 0.7, 0.021: 1.0}
# outer-race defect position: @6:00 sits in the load zone; @3:00 and @12:00 see a fraction of the load
OR_POSITION_FACTOR = {"6:00": 1.0, "3:00": 0.6, "12:00": 0.35}
WINDOW_SPREAD = 0.55            # log-normal sigma of the impact level from window to window

DEVICE_RANGES = {"resonance_hz": (3000.0, 3600.0), "damping": (0.035, 0.055), "noise_rms_g": (0.055, 0.085),
                 "sensor_gain": (0.5, 2.0), "rpm": (1730.0, 1797.0)}
PUBLIC_RANGES = {"resonance_hz": (2500.0, 2900.0), "damping": (0.035, 0.055), "noise_rms_g": (0.055, 0.085),
                 "sensor_gain": (0.5, 2.0), "rpm": (1650.0, 1720.0)}


def _condition(rng: np.random.Generator, rpm: float, ranges: dict) -> dict:
    """One operating condition (plain numbers, JSON-serialisable)."""
    lo, hi = ranges["sensor_gain"]
    size = float(FAULT_SIZES_IN[int(rng.integers(len(FAULT_SIZES_IN)))])
    cond = {
        "rpm": float(rpm),
        "fault_size_in": size,
        "severity": SIZE_FACTOR[size],
        "or_position": list(OR_POSITION_FACTOR)[int(rng.integers(len(OR_POSITION_FACTOR)))],
        "resonance_hz": float(rng.uniform(*ranges["resonance_hz"])),
        "damping": float(rng.uniform(*ranges["damping"])),
        "noise_rms_g": float(rng.uniform(*ranges["noise_rms_g"])),
        "sensor_gain": float(np.exp(rng.uniform(np.log(lo), np.log(hi)))),
        "jitter": float(rng.uniform(0.01, 0.02)),
        "mod_depth": float(rng.uniform(0.3, 0.7)),
        "structural_noise": float(rng.uniform(0.2, 0.5)),
    }
    cond["defect_hz"] = {k: round(v, 4) for k, v in defect_frequencies(rpm).items()}
    return cond


def _windows(cond: dict, counts, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Windows (sum(counts), WINDOW, 1) float32 of one condition with ``counts[k]`` of class k, shuffled."""
    xs, ys = [], []
    for k, cnt in enumerate(counts):
        cnt = int(cnt)
        if cnt == 0:
            continue
        name = CLASS_NAMES[k]
        level = NOMINAL_FAULT_RMS.get(name, 0.0) * cond["severity"]
        if name == "outer_race":
            level *= OR_POSITION_FACTOR[cond["or_position"]]
        fault_rms = level * np.exp(WINDOW_SPREAD * rng.standard_normal(cnt))
        x = bearing_signal(name, cnt, rng, rpm=cond["rpm"], resonance_hz=cond["resonance_hz"],
                           damping=cond["damping"], fault_rms=fault_rms, noise_rms=cond["noise_rms_g"],
                           gain=cond["sensor_gain"], jitter=cond["jitter"], mod_depth=cond["mod_depth"],
                           structural_noise=cond["structural_noise"])
        xs.append(x)
        ys.append(np.full(cnt, k, np.int64))
    x = np.concatenate(xs).astype(np.float32)[:, :, None]
    y = np.concatenate(ys)
    order = rng.permutation(len(y))
    return x[order], y[order]


def device_condition(seed: int, i: int, n_devices: int) -> dict:
    """Operating condition of device i: load spread evenly over 0-3 hp (exactly 0/1/2/3 hp for four
    devices), the rest drawn from ``default_rng([seed, STREAM, 2, i + 1])``."""
    load = 3.0 * i / (n_devices - 1) if n_devices > 1 else 0.0
    cond = _condition(np.random.default_rng([seed, STREAM, 2, i + 1]), float(rpm_at_load(load)), DEVICE_RANGES)
    return {"device": i, "load_hp": round(load, 4), **cond}


def generate(n_devices: int = 10, alpha: float = 0.5, seed: int = 0, samples_per_device: int = 400,
             public_samples: int = 1200, n_public_conditions: int = 4, progress=None) -> Fleet:
    """Mechanical fleet: device i gets ``class_counts(samples_per_device, P[i])`` windows with
    P = label_skew(n_devices, 4, alpha, default_rng([seed, STREAM, 1])), under its own operating condition; the
    public pool is class-balanced over ``n_public_conditions`` conditions outside the devices' rpm and
    resonance ranges. x is in g, groups are unique window ids (every window is independent)."""
    if n_devices < 1:
        raise DataError("the mechanical generator needs at least one device")
    if samples_per_device < 1 or public_samples < 0:
        raise DataError("samples_per_device must be >= 1 and public_samples >= 0")
    k = len(CLASS_NAMES)
    P = label_skew(n_devices, k, alpha, np.random.default_rng([seed, STREAM, 1]))

    # public pool: conditions no device has
    prng = np.random.default_rng([seed, 1_000_003])
    subs = []
    px, py = [np.zeros((0, WINDOW, 1), np.float32)], [np.zeros(0, np.int64)]
    per_sub = np.full(n_public_conditions, public_samples // n_public_conditions)
    per_sub[: public_samples % n_public_conditions] += 1
    for j in range(n_public_conditions):
        cond = _condition(prng, float(prng.uniform(*PUBLIC_RANGES["rpm"])), PUBLIC_RANGES)
        subs.append(cond)
        if per_sub[j]:
            xj, yj = _windows(cond, class_counts(int(per_sub[j]), np.ones(k), min_per_class=0), prng)
            px.append(xj)
            py.append(yj)
    x_pub, y_pub = np.concatenate(px), np.concatenate(py)
    public = Pool(x_pub, y_pub, np.arange(len(y_pub)),
                  {"source": "public", "conditions": subs,
                   "ranges": {k2: list(v) for k2, v in PUBLIC_RANGES.items()}})

    devices = []
    start = len(y_pub)
    for i in range(n_devices):
        cond = device_condition(seed, i, n_devices)
        counts = class_counts(samples_per_device, P[i])
        x, y = _windows(cond, counts, np.random.default_rng([seed, STREAM, 3, i + 1]))
        devices.append(Pool(x, y, start + np.arange(len(y)), cond))
        start += len(y)
        if progress is not None:
            progress()

    info = {
        "generator": "mechanical",
        "model": "McFadden-Smith single-point defect, SDOF resonance, slip jitter",
        "bearing": {"n": CWRU_DE.n, "d_in": CWRU_DE.d, "D_in": CWRU_DE.D, "phi_rad": CWRU_DE.phi},
        "multipliers": {k2: round(v, 5) for k2, v in defect_multipliers().items()},
        "nominal_fault_rms_g": dict(NOMINAL_FAULT_RMS),
        "window_spread": WINDOW_SPREAD,
        "device_ranges": {k2: list(v) for k2, v in DEVICE_RANGES.items()},
        "public_ranges": {k2: list(v) for k2, v in PUBLIC_RANGES.items()},
        "alpha": float(alpha), "seed": int(seed),
        "class_proportions": np.round(P, 4).tolist(),
    }
    return Fleet(name="mechanical", class_names=list(CLASS_NAMES), channel_names=list(CHANNELS),
                 sample_rate_hz=SAMPLE_RATE_HZ, channel_scale=CHANNEL_SCALE.copy(), public=public,
                 devices=devices, info=info)
