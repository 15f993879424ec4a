"""Built-in electrical fleet and the loader for the public ``classData.csv`` format.

Six classes on six channels ``[Ia, Ib, Ic, Va, Vb, Vc]`` (currents in A, line-to-line voltages
Vab, Vbc, Vca in pu of the 11 kV line-to-line peak), one 50 Hz cycle per window at 2 kHz (40 x 6).

Network (the design notes' DATA.md, "Three-phase line faults"), all referred to 11 kV, w = 2 pi 50:

    node L: sources Z_SL = (12 + j w 16.58 mH) / 2 / s  and load R_L = 10 ohm / m  to ground
    node R: source  Z_SR = (8.4 + j w 16.58 mH) / s     and load R_R = 12.1 ohm / m to ground
    L -- F: Z_T + p * 66 km * z_line      F -- R: Z_T + (1 - p) * 66 km * z_line
    Z_T = 2 (0.002 + j0.05) * 1.21 ohm,   z_line1 = (0.0132 + j w 0.9337e-3) / 12^2 ohm/km,
                                           z_line0 = (0.132  + j w 4.1264e-3) / 12^2 ohm/km

with the knobs p (fault location as a fraction of the 66 km from L to R; p = 0.5 is the nominal
33 + 33 km), s (source strength: impedances divided by s) and m (load multiplier: load power times
m). Sources and loads are Y-grounded and the transformers Yg-Yg, so the zero-sequence network has
the same shunt elements and only the line impedance changes. The negative-sequence network equals
the positive one.

    Y_k (3 x 3 nodal admittance, sequence k) -> Z_k = Y_k^-1,  V_pre = Z_1 [E/Z_SL, 0, E/Z_SR]^T,
    E = 11 kV / sqrt(3) (rms, phase).  Thevenin at F: Z1 = Z2 = Z_1[F,F], Z0 = Z_0[F,F], V_F = V_pre[F].

Sequence fault currents with fault resistance Z_f (formulas written for the reference phase a):

    LG  (a-g)   I1 = I2 = I0 = V_F / (Z1 + Z2 + Z0 + 3 Z_f)
    LL  (b-c)   I1 = -I2 = V_F / (Z1 + Z2 + Z_f),  I0 = 0
    LLG (b-c-g) I1 = V_F / (Z1 + Z2 || (Z0 + 3 Z_f)),  I2 = -I1 (Z0 + 3 Z_f) / (Z2 + Z0 + 3 Z_f),
                I0 = -I1 Z2 / (Z2 + Z0 + 3 Z_f)
    LLL         I1 = V_F / (Z1 + Z_f),  I2 = I0 = 0       (balanced, no ground path)
    LLLG        each phase to ground through its own resistance Z_f (1 + e_k), e_k ~ U(-d, d) with d a
                few percent. With the fault admittance Y_f = diag(1 / Z_fk) (phase domain) and
                Y_s = A^-1 Y_f A (sequence domain), the fault-point sequence voltages solve
                (1 + Z_seq Y_s) V_seq = [0, V_F, 0]^T, Z_seq = diag(Z0, Z1, Z2), and I_seq = Y_s V_seq.
                With equal resistances this is exactly the LLL formula; the unequal ones let a small
                zero-sequence (neutral) current flow, a few percent of the fault current when Z_f is
                comparable to the network impedance and vanishing for bolted faults. That makes
                LLL / LLLG the hard pair, as in the real data.

Node voltages V_1 = V_pre - Z_1[:, F] I1, V_2 = -Z_1[:, F] I2, V_0 = -Z_0[:, F] I0; the meter sits on
the 11 kV side of the right transformer (node R) and measures the current from F towards R:
I_k = (V_k[F] - V_k[R]) / Z_br,k(F-R). Phases: [x_a, x_b, x_c] = A [x0, x1, x2], A = [[1,1,1],
[1,a^2,a],[1,a,a^2]], a = e^{j 2 pi / 3}. The formulas' reference phase is moved onto the wanted
phase by ``rotate_phases`` (ABG: the b-c-g result relabelled (a', b', c') -> (C, A, B) times a, which
keeps the prefault set in place). Outputs: Vab = Va - Vb, Vbc, Vca at R.

Time domain (one window): x(t) = sqrt(2) |X| sin(w t + angle(X) + alpha), fault inception at t = 0
with a random inception angle alpha. Multi-phase faults evolve (``fault_stages``): the phases do not
make contact at the same instant, so LLG and LLLG start as a single-phase-to-ground arc and LLL as a
phase-to-phase clash, and the labelled fault is complete after d (up to 12-20 ms). Currents stay
continuous at inception and at each later contact: a decaying term (i_before - i_after) e^{-t / tau}
with tau = X / (w R) of the faulted loop (about 1 ms: the DC offset is a few percent of the first
cycle and gone within it). A triggered recorder starts the window 2 cycles * u^5 (u ~ U(0, 1)) after
inception, i.e. between 0 and 2 cycles, mostly within the first few ms, so most fault windows show the
inception transient and the evolution. The front end acquires at 20 kHz; each window is 400 such
samples block-averaged by 10 to 40 samples at 2 kHz (the decimation ``load_csv`` applies to the real
file). Sensor model per channel: y = g_c x + o_c + n, n Gaussian with a standard deviation (for the
decimated samples) given as a fraction of the channel full scale ``CHANNEL_SCALE``. Before noise, gain
and offset, Va + Vb + Vc = 0 exactly and Ia + Ib + Ic = 3 I0 (zero for LL and LLL).

At the nominal network, bolted faults reproduce DATA.md's model table (``nominal_phasors``):
NF 63 A / 0.598 pu, AG 893/65/63 A, BC 63/753/803 A, ABG 886/905/65 A, ABC 898 A x 3 and 0.019 pu.

Fleet (``generate``): device i draws its condition from ``default_rng([seed, STREAM, 2, i + 1])``: source strength
s (0.5-0.75 or 1.35-2 times nominal, +-20 % window to window), load m (0.5-0.8 or 1.25-1.6, +-40 %),
a fault-location band of width 0.16 in p = 0.02-0.98 away from mid-line, fault resistance log-uniform
on [r_lo, r_hi] with r_lo in 0.1-3 ohm and r_hi in 20-50 ohm (high-resistance faults pull the
currents towards load level), noise 0.5-2 % of full scale, a current and a voltage calibration gain
in 0.9-1.1 (1 % channel mismatch), offsets up to 1 % of full scale, LLLG resistance spread 2-6 % and
an arc-spread time of 12-20 ms. The public pool is the nominal network (s 0.95-1.05), mid-line faults
(p 0.42-0.58), bolted faults (0.001-0.1 ohm) and calibrated sensors: its source, location and
fault-resistance ranges lie outside every device's (its load range overlaps).

Difficulty (docs/explanation/results.md, ``fedtiny compare --dataset electrical --seeds 0,1,2``): centralized on
the pooled devices 91.8 % INT8, local-only 85.9 %. The errors are LLL vs LLLG (only the evolution and a small
neutral current tell them apart), evolving LLG / LLLG windows vs LG, and high-resistance faults vs
no fault; the local models lack the examples to learn the rarer of these.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from .fleet import DataError, Fleet, Pool, assign_groups, class_counts, label_skew

CLASS_NAMES = ["no_fault", "LG", "LL", "LLG", "LLL", "LLLG"]
CHANNELS = ["Ia", "Ib", "Ic", "Va", "Vb", "Vc"]
# Fixed front-end full scale: 1000 A for currents, 1 pu for voltages; the model sees x / CHANNEL_SCALE.
CHANNEL_SCALE = np.array([1000, 1000, 1000, 1, 1, 1], dtype=np.float32)
FAULT_PHASES = ["none", "AG", "BC", "ABG", "ABC", "ABCG"]      # dataset phases of each class
NF, LG, LL, LLG, LLL, LLLG = range(6)
# Second word of this module's random streams ([seed, STREAM, purpose, ...]): no trailing zeros and
# no overlap with the trainer's or the mechanical generator's streams (NumPy's SeedSequence treats
# [s, 0] as [s], so plain [seed, i] keys would coincide across modules).
STREAM = 2

F0 = 50.0
OMEGA = 2 * math.pi * F0
FS_ACQ = 20000.0            # acquisition rate (the real set's 50 us step)
DECIMATION = 10
SAMPLE_RATE_HZ = FS_ACQ / DECIMATION
WINDOW = int(round(SAMPLE_RATE_HZ / F0))            # 40 samples = one cycle
WINDOW_ACQ = WINDOW * DECIMATION                    # 400 samples at 20 kHz

V_LL = 11e3
E_PHASE = V_LL / math.sqrt(3)
Z_BASE = 11.0 ** 2 / 100.0
Z_SL = (12.0 + 1j * OMEGA * 16.58e-3) / 2
Z_SR = 8.4 + 1j * OMEGA * 16.58e-3
R_LOAD_L = 10.0
R_LOAD_R = 12.1
Z_T = 2 * (0.002 + 0.05j) * Z_BASE
LINE_KM = 66.0
Z_LINE1_KM = (0.0132 + 1j * OMEGA * 0.9337e-3) / 12 ** 2
Z_LINE0_KM = (0.132 + 1j * OMEGA * 4.1264e-3) / 12 ** 2
_A_OP = np.exp(2j * math.pi / 3)
A_MAT = np.array([[1, 1, 1], [1, _A_OP ** 2, _A_OP], [1, _A_OP, _A_OP ** 2]])
A_INV = np.linalg.inv(A_MAT)
L_NODE, F_NODE, R_NODE = 0, 1, 2

# [G C B A] label codes of classData.csv
CSV_COLUMNS = ["G", "C", "B", "A", "Ia", "Ib", "Ic", "Va", "Vb", "Vc"]
LABEL_CODES = {"0000": NF, "1001": LG, "0110": LL, "1011": LLG, "0111": LLL, "1111": LLLG}
_CODES_TEXT = "0000 no fault, 1001 LG, 0110 LL (B-C), 1011 LLG, 0111 LLL, 1111 LLLG"


# --------------------------------------------------------------------------------------------------
# Network (pure, vectorised over parameter arrays of one shape (n,))

def branch_impedances(p, seq: int) -> tuple[np.ndarray, np.ndarray]:
    """Series impedances (ohm, at 11 kV) of the L-F and F-R branches of sequence ``seq`` (0 or 1):
    Z_T + p * 66 km * z_line and Z_T + (1 - p) * 66 km * z_line."""
    p = np.asarray(p, dtype=float)
    z_km = Z_LINE0_KM if seq == 0 else Z_LINE1_KM
    return Z_T + p * LINE_KM * z_km, Z_T + (1 - p) * LINE_KM * z_km


def bus_admittance(p, source=1.0, load=1.0, seq: int = 1) -> np.ndarray:
    """Nodal admittance matrices (n, 3, 3) on nodes (L, F, R) for sequence ``seq``.

    Shunts: y_L = s / Z_SL + m / R_L, y_R = s / Z_SR + m / R_R (the same in every sequence: Y-grounded
    sources and loads); branches 1 / Z_LF, 1 / Z_FR of that sequence."""
    p, s, m = np.broadcast_arrays(np.atleast_1d(np.asarray(p, float)), np.asarray(source, float),
                                  np.asarray(load, float))
    z_lf, z_fr = branch_impedances(p, seq)
    y_lf, y_fr = 1 / z_lf, 1 / z_fr
    y = np.zeros(p.shape + (3, 3), dtype=complex)
    y[..., 0, 0] = s / Z_SL + m / R_LOAD_L + y_lf
    y[..., 1, 1] = y_lf + y_fr
    y[..., 2, 2] = s / Z_SR + m / R_LOAD_R + y_fr
    y[..., 0, 1] = y[..., 1, 0] = -y_lf
    y[..., 1, 2] = y[..., 2, 1] = -y_fr
    return y


def prefault_voltages(z1_bus: np.ndarray, source=1.0) -> np.ndarray:
    """V_pre = Z_1bus I_inj, I_inj = [E s / Z_SL, 0, E s / Z_SR] (Norton sources); (n, 3) rms phase V."""
    s = np.broadcast_to(np.asarray(source, float), z1_bus.shape[:-2])
    inj = np.stack([E_PHASE * s / Z_SL, np.zeros_like(s, dtype=complex), E_PHASE * s / Z_SR], axis=-1)
    return np.einsum("...ij,...j->...i", z1_bus, inj)


def fault_sequence_currents(kind, v_f, z1, z0, z_f, imbalance=None) -> np.ndarray:
    """Sequence currents [I0, I1, I2] (n, 3) into the fault for class ids ``kind`` (see module doc;
    LG a-g, LL b-c, LLG b-c-g, LLL, LLLG with per-phase resistances Z_f (1 + imbalance[:, k]));
    Z2 = Z1. No-fault rows get zeros."""
    kind = np.atleast_1d(np.asarray(kind))
    v_f, z1, z0, z_f = np.broadcast_arrays(*(np.atleast_1d(np.asarray(v, complex)) for v in (v_f, z1, z0, z_f)))
    z2 = z1
    out = np.zeros(kind.shape + (3,), dtype=complex)
    m = kind == LG
    i = v_f[m] / (z1[m] + z2[m] + z0[m] + 3 * z_f[m])
    out[m] = np.stack([i, i, i], axis=-1)
    m = kind == LL
    i = v_f[m] / (z1[m] + z2[m] + z_f[m])
    out[m] = np.stack([np.zeros_like(i), i, -i], axis=-1)
    m = kind == LLG
    zg = z0[m] + 3 * z_f[m]
    i1 = v_f[m] / (z1[m] + z2[m] * zg / (z2[m] + zg))
    out[m] = np.stack([-i1 * z2[m] / (z2[m] + zg), i1, -i1 * zg / (z2[m] + zg)], axis=-1)
    m = kind == LLL
    i1 = v_f[m] / (z1[m] + z_f[m])
    out[m] = np.stack([np.zeros_like(i1), i1, np.zeros_like(i1)], axis=-1)
    m = kind == LLLG
    if m.any():
        eps = np.zeros((int(m.sum()), 3)) if imbalance is None else np.asarray(imbalance, float)[m]
        y_f = 1.0 / (np.maximum(z_f[m].real, 1e-6)[:, None] * (1.0 + eps))                          # (k, 3) phase admittances
        y_s = np.einsum("ij,kj,jl->kil", A_INV, y_f, A_MAT)                   # A^-1 diag(y_f) A
        z_seq = np.stack([z0[m], z1[m], z2[m]], axis=-1)
        lhs = np.eye(3) + z_seq[:, :, None] * y_s
        rhs = np.stack([np.zeros_like(v_f[m]), v_f[m], np.zeros_like(v_f[m])], axis=-1)
        v_seq = np.linalg.solve(lhs, rhs[..., None])[..., 0]
        out[m] = np.einsum("kij,kj->ki", y_s, v_seq)
    return out


def fault_loop_tau(kind, z1, z0, z_f) -> np.ndarray:
    """DC time constant tau = X / (w R) (s) of the faulted loop: LG Z1 + Z2 + Z0 + 3 Z_f, LL Z1 + Z2 + Z_f,
    LLG Z1 + Z2 || (Z0 + 3 Z_f), LLL / LLLG Z1 + Z_f; 0 for no fault."""
    kind = np.atleast_1d(np.asarray(kind))
    z1, z0, z_f = np.broadcast_arrays(*(np.atleast_1d(np.asarray(v, complex)) for v in (z1, z0, z_f)))
    zg = z0 + 3 * z_f
    loop = np.select([kind == LG, kind == LL, kind == LLG, kind >= LLL],
                     [2 * z1 + z0 + 3 * z_f, 2 * z1 + z_f, z1 + z1 * zg / (z1 + zg), z1 + z_f], 1.0 + 0j)
    return np.where(kind == NF, 0.0, loop.imag / (OMEGA * np.maximum(loop.real, 1e-12)))


DATASET_PHASE = {NF: 0, LG: 0, LL: 0, LLG: 2, LLL: 0, LLLG: 0}


def rotate_phases(x_abc: np.ndarray, ref) -> np.ndarray:
    """Put the formulas' reference phase a' on physical phase ``ref`` (0 = A, 1 = B, 2 = C), per row:
    out[j] = a^-ref x[(j - ref) mod 3], which keeps a balanced prefault set in place. ref = 2 turns the
    b-c-g formula into the dataset's ABG fault ([A, B, C] = a [b', c', a']); AG, BC, ABC and ABCG
    use ref = 0. (The faulted phase of LG, the healthy phase of LL / LLG, is the reference.)"""
    x = np.asarray(x_abc, dtype=complex)
    ref = np.broadcast_to(np.asarray(ref, dtype=np.int64), x.shape[:-1])
    j = np.arange(3)
    idx = (j[None, :] - ref.reshape(-1, 1)) % 3
    rows = np.take_along_axis(x.reshape(-1, 3), idx, axis=-1)
    return (rows * (_A_OP ** (-ref.reshape(-1, 1)))).reshape(x.shape)


def line_to_line(v_abc: np.ndarray) -> np.ndarray:
    """[Vab, Vbc, Vca] from phase voltages along the last axis (they sum to zero exactly)."""
    return v_abc - np.roll(v_abc, -1, axis=-1)


def measured_phasors(kind, p=0.5, source=1.0, load=1.0, z_f=0.0, imbalance=None, ref=None) -> dict:
    """Steady-state 50 Hz phasors seen by the meter at the right transformer, as peak values in output
    units: ``I`` (n, 3) A on [Ia, Ib, Ic], ``V`` (n, 3) pu of the 11 kV L-L peak on [Vab, Vbc, Vca]
    (rms L-L / 11 kV), ``I_pre`` (n, 3) prefault currents, ``tau`` (n,) DC time constant (s).
    ``ref`` (n,) places the fault on other phases (see ``rotate_phases``); default: the dataset's
    phases (AG, BC, ABG, ABC, ABCG)."""
    kind = np.atleast_1d(np.asarray(kind, dtype=np.int64))
    p, s, m, z_f = np.broadcast_arrays(*(np.asarray(v, float) for v in (p, source, load, z_f)),
                                       np.empty(kind.shape))[:4]
    z1_bus = np.linalg.inv(bus_admittance(p, s, m, seq=1))
    z0_bus = np.linalg.inv(bus_admittance(p, s, m, seq=0))
    _, z_fr1 = branch_impedances(p, 1)
    _, z_fr0 = branch_impedances(p, 0)
    v_pre = prefault_voltages(z1_bus, s)
    z1, z0, v_f = z1_bus[:, F_NODE, F_NODE], z0_bus[:, F_NODE, F_NODE], v_pre[:, F_NODE]
    i_seq = fault_sequence_currents(kind, v_f, z1, z0, z_f, imbalance)
    v1 = v_pre - z1_bus[:, :, F_NODE] * i_seq[:, 1:2]
    v2 = -z1_bus[:, :, F_NODE] * i_seq[:, 2:3]
    v0 = -z0_bus[:, :, F_NODE] * i_seq[:, 0:1]
    i_meas = np.stack([(v0[:, F_NODE] - v0[:, R_NODE]) / z_fr0, (v1[:, F_NODE] - v1[:, R_NODE]) / z_fr1,
                       (v2[:, F_NODE] - v2[:, R_NODE]) / z_fr1], axis=-1)
    v_meas = np.stack([v0[:, R_NODE], v1[:, R_NODE], v2[:, R_NODE]], axis=-1)
    if ref is None:
        ref = np.vectorize(DATASET_PHASE.get, otypes=[np.int64])(kind)
    i_abc = rotate_phases(i_meas @ A_MAT.T, ref)
    v_abc = rotate_phases(v_meas @ A_MAT.T, ref)
    i_pre1 = (v_pre[:, F_NODE] - v_pre[:, R_NODE]) / z_fr1
    i_pre = i_pre1[:, None] * A_MAT[:, 1][None, :]
    return {"I": math.sqrt(2) * i_abc, "V": line_to_line(v_abc) / V_LL, "I_pre": math.sqrt(2) * i_pre,
            "tau": fault_loop_tau(kind, z1, z0, z_f)}


def nominal_phasors(fault: str | int, z_f: float = 0.0, p: float = 0.5, source: float = 1.0,
                    load: float = 1.0, imbalance=None) -> dict:
    """Peak magnitudes for one case (default: nominal network, bolted): ``I`` [Ia, Ib, Ic] in A and
    ``V`` [Vab, Vbc, Vca] in pu. ``fault`` is a class name or id, or a phase name (AG, BC, ABG, ABC, ABCG, NF)."""
    names = {n.upper(): i for i, n in enumerate(CLASS_NAMES)}
    names.update({ph: i for i, ph in enumerate(FAULT_PHASES)}, NF=NF, NONE=NF)
    kind = names[fault.upper()] if isinstance(fault, str) else int(fault)
    imb = None if imbalance is None else np.asarray(imbalance, float)[None, :]
    ph = measured_phasors([kind], p, source, load, z_f, imb)
    return {"I": np.abs(ph["I"][0]), "V": np.abs(ph["V"][0]), "tau": float(ph["tau"][0])}


# --------------------------------------------------------------------------------------------------
# Time domain

def fault_stages(y, rng: np.random.Generator, scatter) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Evolving faults: the phases of a multi-phase fault do not make contact at the same instant (arc
    ignition scatter). Returns per window (n, 2) stage class ids, stage reference phases (see
    ``rotate_phases``) and stage start times (s; stage 0 at inception t = 0, an unused stage at +inf):

        no fault, LG (AG), LL (BC)   one stage
        LLG  (ABG)                   LG on A or B, then ABG from t = d
        LLL  (ABC)                   LL on a random phase pair, then ABC from t = d
        LLLG (ABCG)                  LG on a random phase, then ABCG from t = d

    with d ~ U(SCATTER_MIN_FRACTION, 1) * scatter (scatter: the device's arc-spread time).

    The final stage is the labelled fault; LLL and LLLG differ only while the fault evolves (as in the
    real data, where they differ "only during the transient") and by LLLG's small neutral current."""
    y = np.asarray(y, dtype=np.int64)
    n = len(y)
    scatter = np.broadcast_to(np.asarray(scatter, float), (n,))
    kinds = np.repeat(y[:, None], 2, axis=1)
    refs = np.repeat(np.vectorize(DATASET_PHASE.get, otypes=[np.int64])(y)[:, None], 2, axis=1)
    times = np.full((n, 2), np.inf)
    times[:, 0] = 0.0
    d = rng.uniform(SCATTER_MIN_FRACTION, 1.0, n) * scatter      # time of the last contact
    first = rng.integers(0, 3, n)                                 # phase of the first contact
    m = y == LLG                                                  # A or B to ground, then ABG
    kinds[m, 0], refs[m, 0], times[m, 1] = LG, rng.integers(0, 2, n)[m], d[m]
    m = y == LLL                                                  # a phase pair clashes, then ABC
    kinds[m, 0], refs[m, 0], times[m, 1] = LL, first[m], d[m]
    m = y == LLLG                                                 # one phase to ground, then ABCG
    kinds[m, 0], refs[m, 0], times[m, 1] = LG, first[m], d[m]
    return kinds, refs, times


def waveforms(stages: list[dict], times: np.ndarray, alpha, delay, decimation: int = DECIMATION) -> np.ndarray:
    """Noise-free windows (n, 40, 6) in A and pu.

    ``stages[s]`` are the ``measured_phasors`` of stage s (all share the prefault ``I_pre``), active from
    ``times[:, s]`` (s after inception) to the next stage. 400 samples at 20 kHz from t = delay:
    x_s(t) = Im(P_s e^{j(w t + alpha)}); currents stay continuous at every switching instant T_s through
    a decaying term D_s e^{-(t - T_s) / tau_s}, D_s = i(T_s^-) - Im(P_s e^{j(w T_s + alpha)}) (the first
    one is -(i_post(0) - i_pre(0)) for a simultaneous fault). Line voltages follow the stage phasors.
    Finally each run of ``decimation`` samples is averaged (10: to 2 kHz; 1 keeps the 20 kHz samples)."""
    alpha = np.asarray(alpha, float)
    n = len(alpha)
    t = np.asarray(delay, float)[:, None] + np.arange(WINDOW_ACQ)[None, :] / FS_ACQ       # (n, 400)
    theta = OMEGA * t + alpha[:, None]
    sin, cos = np.sin(theta), np.cos(theta)

    def at(p, tt):                                  # Im(P e^{j(w tt + alpha)}), p (n, c), tt (n,)
        return np.imag(p * np.exp(1j * (OMEGA * tt + alpha))[:, None])

    x = np.zeros((n, WINDOW_ACQ, 6))
    p_prev, d_prev, t_prev, tau_prev = stages[0]["I_pre"], np.zeros((n, 3)), np.zeros(n), np.ones(n)
    for s, ph in enumerate(stages):
        ts = times[:, s]
        used = np.isfinite(ts)
        tsu = np.where(used, ts, 0.0)
        dc_prev = d_prev * np.exp(-np.maximum(tsu - t_prev, 0.0) / np.maximum(tau_prev, 1e-9))[:, None]
        d_s = np.where(used[:, None], at(p_prev, tsu) + dc_prev - at(ph["I"], tsu), 0.0)
        tau = np.asarray(ph["tau"], float)
        t_next = times[:, s + 1] if s + 1 < len(stages) else np.full(n, np.inf)
        active = (t >= tsu[:, None]) & (t < t_next[:, None]) & used[:, None]
        p = np.concatenate([ph["I"], ph["V"]], axis=-1)
        steady = sin[:, :, None] * p.real[:, None, :] + cos[:, :, None] * p.imag[:, None, :]
        decay = np.exp(-np.maximum(t - tsu[:, None], 0.0) / np.maximum(tau, 1e-9)[:, None]) * (tau > 0)[:, None]
        steady[:, :, :3] += decay[:, :, None] * d_s[:, None, :]
        x += np.where(active[:, :, None], steady, 0.0)
        upd = used
        p_prev = np.where(upd[:, None], ph["I"], p_prev)
        d_prev = np.where(upd[:, None], d_s, d_prev)
        t_prev = np.where(upd, tsu, t_prev)
        tau_prev = np.where(upd, np.maximum(tau, 1e-9), tau_prev)
    return x.reshape(n, WINDOW_ACQ // decimation, decimation, 6).mean(axis=2)


def sensor(x: np.ndarray, rng: np.random.Generator, noise, gain, offset) -> np.ndarray:
    """y = gain_c x + offset_c + N(0, (noise CHANNEL_SCALE_c)^2); gain, offset (6,) or (n, 6)."""
    gain = np.asarray(gain, float)
    offset = np.asarray(offset, float)
    if gain.ndim == 2:
        gain = gain[:, None, :]
    if offset.ndim == 2:
        offset = offset[:, None, :]
    noise = np.asarray(noise, float).reshape(-1, 1, 1) if np.ndim(noise) else float(noise)
    n = rng.standard_normal(x.shape) * (noise * CHANNEL_SCALE.astype(float))
    return x * gain + offset + n


# --------------------------------------------------------------------------------------------------
# Fleet generator

# Operating conditions. A condition holds per-window ranges: source strength s and load multiplier m
# uniform on source_range / load_range, fault location p uniform on ``location``, fault resistance
# log-uniform on ``r_fault`` (ohm). Difficulty (see the module doc) was tuned with these values.
DEVICE_SOURCE_BANDS = ((0.5, 0.75), (1.35, 2.0))     # device's centre s; window s = centre * U(1 -+ 0.2)
SOURCE_SPREAD = 0.2
DEVICE_LOAD_BANDS = ((0.5, 0.8), (1.25, 1.6))        # device's centre m; window m = centre * U(1 -+ 0.4)
LOAD_SPREAD = 0.4                                    # demand varies a lot from window to window
DEVICE_LOCATION_CENTRES = ((0.1, 0.3), (0.7, 0.9))   # p range = centre -+ 0.08
DEVICE_LOCATION_HALF_WIDTH = 0.08
DEVICE_R_LO = (0.1, 3.0)            # a device's fault resistances are log-uniform on [r_lo, r_hi] (ohm),
DEVICE_R_HI = (20.0, 50.0)          # r_lo and r_hi themselves log-uniform on these ranges
DEVICE_NOISE = (0.005, 0.02)        # noise std as a fraction of full scale
DEVICE_GAIN = (0.9, 1.1)            # current / voltage front-end calibration
GAIN_MISMATCH = 0.01                # per-channel mismatch within a front end
DEVICE_OFFSET = 0.01                # per-channel offset, fraction of full scale
IMBALANCE = (0.02, 0.06)            # LLLG per-phase resistance spread d of a device
SCATTER_MS = (12.0, 20.0)           # a device's arc-spread time (ms), see ``fault_stages``
SCATTER_MIN_FRACTION = 0.2
MAX_DELAY = 2.0 / F0                # fault windows start 0..2 cycles after inception,
DELAY_POWER = 5.0                   # at MAX_DELAY u^5: a triggered recorder starts most windows early
R_FAULT_RANGE = (1e-3, 50.0)
# Phase 0's pool: nominal network, mid-line faults, bolted (low-resistance) faults, calibrated sensors,
# like the public simulation. Source, location and fault resistance lie outside every device's range.
PUBLIC = {"source_range": (0.95, 1.05), "load_range": (0.6, 1.4), "location": (0.42, 0.58),
          "r_fault": (1e-3, 0.1), "noise": 0.005, "imbalance": 0.04, "scatter_ms": 16.0}


def _banded(rng: np.random.Generator, bands) -> float:
    lo, hi = bands[int(rng.integers(len(bands)))]
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _gains(rng: np.random.Generator) -> list[float]:
    """Per-channel sensor gains: one calibration factor for the current and one for the voltage front
    end, each U(DEVICE_GAIN), times a small per-channel mismatch U(1 -+ GAIN_MISMATCH)."""
    group = np.repeat(rng.uniform(*DEVICE_GAIN, 2), 3)
    return [float(g) for g in group * rng.uniform(1 - GAIN_MISMATCH, 1 + GAIN_MISMATCH, 6)]


def device_condition(rng: np.random.Generator) -> dict:
    """One device's operating condition (plain floats / lists, JSON-serialisable)."""
    src = _banded(rng, DEVICE_SOURCE_BANDS)
    load = _banded(rng, DEVICE_LOAD_BANDS)
    lo_c, hi_c = DEVICE_LOCATION_CENTRES[int(rng.integers(len(DEVICE_LOCATION_CENTRES)))]
    c = float(rng.uniform(lo_c, hi_c))
    r_lo = float(np.exp(rng.uniform(*np.log(DEVICE_R_LO))))
    r_hi = float(np.exp(rng.uniform(*np.log(DEVICE_R_HI))))
    return {
        "source_range": [src * (1 - SOURCE_SPREAD), src * (1 + SOURCE_SPREAD)],
        "load_range": [load * (1 - LOAD_SPREAD), load * (1 + LOAD_SPREAD)],
        "location": [c - DEVICE_LOCATION_HALF_WIDTH, c + DEVICE_LOCATION_HALF_WIDTH],
        "r_fault": [r_lo, r_hi],
        "noise": float(rng.uniform(*DEVICE_NOISE)),
        "gain": _gains(rng),
        "offset": [float(o) for o in rng.uniform(-DEVICE_OFFSET, DEVICE_OFFSET, 6) * CHANNEL_SCALE],
        "imbalance": float(rng.uniform(*IMBALANCE)),
        "scatter_ms": float(rng.uniform(*SCATTER_MS)),
    }


def public_condition() -> dict:
    """The Phase-0 pool's condition (``PUBLIC``): nominal network, faults near mid-line, bolted faults
    (0.001-0.1 ohm), calibrated sensors (gain 1, no offset, 0.5 % noise)."""
    return {"source_range": list(PUBLIC["source_range"]), "load_range": list(PUBLIC["load_range"]),
            "location": list(PUBLIC["location"]), "r_fault": list(PUBLIC["r_fault"]),
            "noise": PUBLIC["noise"], "gain": [1.0] * 6, "offset": [0.0] * 6,
            "imbalance": PUBLIC["imbalance"], "scatter_ms": PUBLIC["scatter_ms"]}


def synthesize(y: np.ndarray, cond: dict, rng: np.random.Generator) -> np.ndarray:
    """Windows (n, 40, 6) float32 in A / pu for labels ``y`` under condition ``cond``: per window draw
    s, m, p, Z_f, the LLLG imbalance, the inception angle, the evolution (``fault_stages``) and the
    window start, then ``measured_phasors`` per stage -> ``waveforms`` -> ``sensor``."""
    y = np.asarray(y, dtype=np.int64)
    n = len(y)
    src = rng.uniform(*cond["source_range"], n)
    load = rng.uniform(*cond["load_range"], n)
    p = rng.uniform(*cond["location"], n)
    r_f = np.exp(rng.uniform(*np.log(cond["r_fault"]), n))
    imb = rng.uniform(-cond["imbalance"], cond["imbalance"], (n, 3))
    alpha = rng.uniform(0, 2 * np.pi, n)
    delay = MAX_DELAY * rng.uniform(0, 1, n) ** DELAY_POWER
    kinds, refs, times = fault_stages(y, rng, cond["scatter_ms"] * 1e-3)
    stages = [measured_phasors(kinds[:, s], p, src, load, r_f, imb, refs[:, s]) for s in range(times.shape[1])]
    x = waveforms(stages, times, alpha, delay)
    x = sensor(x, rng, cond["noise"], cond["gain"], cond["offset"])
    return x.astype(np.float32)


def _balanced_labels(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    y = np.arange(n) % k
    return y[rng.permutation(n)]


def generate(n_devices: int = 10, alpha: float = 0.5, seed: int = 0, samples_per_device: int = 400,
             public_samples: int = 1200, progress=None) -> Fleet:
    """Built-in electrical fleet. Class proportions P = label_skew(n_devices, 6, alpha,
    default_rng([seed, STREAM, 1])); device i draws its condition and its
    ``class_counts(samples_per_device, P[i])`` windows from ``default_rng([seed, STREAM, 2, i + 1])``; the public pool (balanced classes) from ``default_rng([seed, 10**6])``
    under ``public_condition()``. Every window is its own group (groups are unique fleet-wide)."""
    if n_devices < 1:
        raise DataError(f"n_devices must be at least 1, got {n_devices}")
    if public_samples < len(CLASS_NAMES):
        raise DataError(f"public_samples must be at least {len(CLASS_NAMES)}, got {public_samples}")
    k = len(CLASS_NAMES)
    props = label_skew(n_devices, k, alpha, np.random.default_rng([seed, STREAM, 1]))
    prng = np.random.default_rng([seed, 10 ** 6])
    pcond = public_condition()
    y_pub = _balanced_labels(public_samples, k, prng)
    public = Pool(synthesize(y_pub, pcond, prng), y_pub, np.arange(public_samples), pcond)
    devices = []
    start = public_samples
    for i in range(n_devices):
        rng = np.random.default_rng([seed, STREAM, 2, i + 1])
        cond = device_condition(rng)
        counts = class_counts(samples_per_device, props[i])
        y = np.repeat(np.arange(k), counts)[rng.permutation(int(counts.sum()))]
        devices.append(Pool(synthesize(y, cond, rng), y, start + np.arange(len(y)), cond))
        start += len(y)
        if progress is not None:
            progress()
    info = {"generator": "electrical", "seed": seed, "alpha": alpha, "proportions": props.tolist(),
            "acquisition_rate_hz": FS_ACQ, "decimation": DECIMATION, "fault_phases": FAULT_PHASES,
            "units": "currents in A, line-to-line voltages in pu of the 11 kV line-to-line peak"}
    return Fleet(name="electrical", class_names=list(CLASS_NAMES), channel_names=list(CHANNELS),
                 sample_rate_hz=SAMPLE_RATE_HZ, channel_scale=CHANNEL_SCALE.copy(), public=public,
                 devices=devices, info=info)


# --------------------------------------------------------------------------------------------------
# Real data: the public "Electrical Fault detection and classification" CSV files
#
# Two forms, told apart by the header:
#   classData.csv       G,C,B,A,Ia,Ib,Ic,Va,Vb,Vc        six classes from [G C B A] (LABEL_CODES)
#   detect_dataset.csv  Output (S),Ia,Ib,Ic,Va,Vb,Vc     two classes, 0 no fault / 1 fault (the public
#                                                        copy ends every line with two empty columns)
# Both are one 0.6 s simulation at 20 kHz in which every class is one (or a few) contiguous runs.

MIN_DEVICE_WINDOWS = 2
DETECT_COLUMNS = ["Output (S)", "Ia", "Ib", "Ic", "Va", "Vb", "Vc"]
DETECT_CLASS_NAMES = ["no_fault", "fault"]
CSV_LOADER_VERSION = 2

# Defaults of the CSV windowing (docs/how-to/electrical-dataset.md gives the reasons):
WINDOW_MS = 10.0      # half a 50 Hz cycle: the shortest span over which a 50 Hz magnitude is defined
                      # (the classic half-cycle relay window); leaves room for several blocks per event
BLOCK_MS = 12.5       # a block holds 1.25 windows: 6 overlapping windows at the default hop, and the
                      # shortest fault event of the public file (2.5 cycles, 50 ms) still yields 4 blocks
GUARD_MS = 0.5        # one model sample (10 raw rows) between blocks: no block-averaged sample of one
                      # block touches a raw row next to another block's
PUBLIC_FRACTION = 0.2


def _parse_csv(path: Path, columns: list[str]) -> np.ndarray:
    """Rows of ``columns`` (found by name, whitespace stripped; trailing unnamed empty columns
    ignored; CRLF or LF; blank lines skipped) as a float array (n, len(columns)). DataError names
    the problem: unreadable file, missing / extra / duplicate columns, a row of the wrong length, a
    non-numeric or non-finite value (row and column)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"cannot read {path}: {e}") from None
    rows = [r for r in rows if any(c.strip() for c in r)]
    if not rows:
        raise DataError(f"{path} is empty; expected the header {','.join(columns)}")
    header = [c.strip() for c in rows[0]]
    # trailing unnamed columns that stay empty (a spreadsheet artefact) are ignored
    keep = [i for i, h in enumerate(header)
            if h or any(i < len(r) and r[i].strip() for r in rows[1:])]
    names = [header[i] for i in keep]
    missing = [c for c in columns if c not in names]
    extra = [c if c else f"(unnamed column {i + 1})" for i, c in zip(keep, names) if c not in columns]
    dup = sorted({c for c in names if names.count(c) > 1 and c in columns})
    if missing:
        raise DataError(f"{path.name}: missing column(s) {', '.join(missing)}; "
                        f"expected the header {','.join(columns)}")
    if extra:
        raise DataError(f"{path.name}: unexpected column(s) {', '.join(extra)}; "
                        f"expected the header {','.join(columns)}")
    if dup:
        raise DataError(f"{path.name}: duplicate column(s) {', '.join(dup)}")
    col = {c: keep[names.index(c)] for c in columns}
    n_fields = len(header)
    data = np.empty((len(rows) - 1, len(columns)))
    for r, row in enumerate(rows[1:], start=1):
        if len(row) < max(col.values()) + 1 or (len(row) > n_fields and any(c.strip() for c in row[n_fields:])):
            raise DataError(f"{path.name}: row {r} has {len(row)} fields, the header has {n_fields}")
        for j, c in enumerate(columns):
            text = row[col[c]].strip()
            try:
                v = float(text)
            except ValueError:
                raise DataError(f"{path.name}: row {r}, column {c}: {text!r} is not a number") from None
            if not math.isfinite(v):
                raise DataError(f"{path.name}: row {r}, column {c}: non-finite value {text!r}")
            data[r - 1, j] = v
    if len(data) == 0:
        raise DataError(f"{path.name} has a header but no data rows")
    return data


def read_class_csv(path) -> tuple[np.ndarray, np.ndarray]:
    """Rows of a ``classData.csv``-format file: x (n, 6) float64 [Ia, Ib, Ic, Va, Vb, Vc] and class ids
    y (n,) from the [G C B A] columns (see ``LABEL_CODES``). Raises DataError naming the problem
    (see ``_parse_csv``; also an unknown label pattern, with the pattern and row)."""
    path = Path(path)
    data = _parse_csv(path, CSV_COLUMNS)
    bits = data[:, :4]
    codes = ["".join(_bit(b) for b in row) for row in bits]
    y = np.empty(len(data), dtype=np.int64)
    for r, code in enumerate(codes):
        k = LABEL_CODES.get(code)
        if k is None:
            shown = " ".join(_fmt(b) for b in bits[r])
            raise DataError(f"{path.name}: row {r + 1}: unknown label pattern [G C B A] = [{shown}] (code {code}); "
                            f"valid: {_CODES_TEXT}")
        y[r] = k
    return data[:, 4:], y


def read_detect_csv(path) -> tuple[np.ndarray, np.ndarray]:
    """Rows of a ``detect_dataset.csv``-format file (header ``Output (S),Ia,Ib,Ic,Va,Vb,Vc``, trailing
    empty columns allowed): x (n, 6) and y (n,) with 0 = no fault, 1 = fault."""
    path = Path(path)
    data = _parse_csv(path, DETECT_COLUMNS)
    out = data[:, 0]
    bad = np.flatnonzero((out != 0) & (out != 1))
    if len(bad):
        raise DataError(f"{path.name}: row {bad[0] + 1}: Output (S) is {_fmt(out[bad[0]])}; "
                        "valid: 0 no fault, 1 fault")
    return data[:, 1:], out.astype(np.int64)


def csv_form(path) -> str:
    """``"detect"`` when the file's header names an ``Output (S)`` column, else ``"classData"``."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            first = next(csv.reader(fh), [])
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"cannot read {path}: {e}") from None
    return "detect" if "Output (S)" in [c.strip() for c in first] else "classData"


def read_fault_csv(path) -> tuple[np.ndarray, np.ndarray, str]:
    """(x, y, form) of either public form, detected by its header (``csv_form``)."""
    form = csv_form(path)
    x, y = read_detect_csv(path) if form == "detect" else read_class_csv(path)
    return x, y, form


def _bit(v: float) -> str:
    return "1" if v == 1 else "0" if v == 0 else "?"


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def label_runs(y: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs of equal labels as (start, stop) row ranges, in file order."""
    y = np.asarray(y)
    if len(y) == 0:
        return []
    cuts = np.flatnonzero(np.diff(y) != 0) + 1
    starts = np.concatenate([[0], cuts])
    stops = np.concatenate([cuts, [len(y)]])
    return list(zip(starts.tolist(), stops.tolist()))


def window_rows(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cut every same-label run into non-overlapping one-cycle windows of 400 rows (20 kHz), dropping
    the partial tail, and block-average each window by 10 to 40 x 6 at 2 kHz. A window never straddles
    a label change. Returns windows (m, 40, 6) and labels (m,)."""
    xw, yw, _, _ = cut_windows(x, y, WINDOW_ACQ, WINDOW_ACQ, WINDOW_ACQ, 0, DECIMATION)
    return xw, yw


def ms_to_rows(ms: float) -> int:
    """Rows of the 20 kHz file in ``ms`` milliseconds: round(ms * 20)."""
    return int(round(float(ms) * FS_ACQ / 1000.0))


def cut_windows(x: np.ndarray, y: np.ndarray, width: int, hop: int, block: int, guard: int,
                decimation: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Windows of every same-label run (``label_runs``), cut inside contiguous time blocks
    (``blocks.blocked_windows``: blocks of ``block`` rows, ``guard`` rows between blocks, windows of
    ``width`` rows every ``hop`` rows, none across a block or label boundary), each block-averaged by
    ``decimation`` (x_m[t] = mean of rows t d .. t d + d - 1 of the window; 10: 20 kHz -> 2 kHz, the
    built-in generator's front end). Returns windows (m, width / decimation, 6), labels (m,), group ids
    (m,: the block's number in file order) and raw row spans (m, 3) [0, start, stop)."""
    from .blocks import blocked_windows

    xs, ys, gs, sp = [], [], [], []
    next_group = 0
    for a, b in label_runs(y):
        starts, blk = blocked_windows(a, b, block, guard, width, hop)
        if len(starts) == 0:
            continue
        idx = starts[:, None] + np.arange(width)[None, :]
        w = x[idx]                                                   # (m, width, 6)
        xs.append(w.reshape(len(starts), width // decimation, decimation, x.shape[1]).mean(axis=2))
        ys.append(np.full(len(starts), y[a], np.int64))
        gs.append(next_group + blk)
        sp.append(np.stack([np.zeros_like(starts), starts, starts + width], axis=1))
        next_group += int(blk.max()) + 1
    if not xs:
        return (np.zeros((0, max(1, width // decimation), x.shape[1])), np.zeros(0, np.int64),
                np.zeros(0, np.int64), np.zeros((0, 3), np.int64))
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(gs), np.concatenate(sp)


def csv_geometry(window_ms: float = WINDOW_MS, hop_ms: float | None = None, block_ms: float = BLOCK_MS,
                 guard_ms: float = GUARD_MS) -> dict:
    """Rows of the window, hop, block and guard at 20 kHz, and the decimation, from the options.

    window_ms > 0: windows of round(20 window_ms) rows (a multiple of 10), averaged by 10 to the 2 kHz
    model rate; hop default one model sample (0.5 ms = 10 rows). window_ms = 0: per-sample mode, every
    window is one raw row (a 6-value vector, model input (1, 6)), no averaging, hop default one row.
    Raises DataError for values that cannot be cut."""
    if not (window_ms >= 0):
        raise DataError(f"--window-ms must be >= 0 (0: one row per sample), got {window_ms}")
    per_sample = window_ms == 0
    width = 1 if per_sample else ms_to_rows(window_ms)
    dec = 1 if per_sample else DECIMATION
    if not per_sample and (width < DECIMATION or width % DECIMATION
                           or abs(width - float(window_ms) * FS_ACQ / 1000.0) > 1e-6):
        raise DataError(f"--window-ms must be a multiple of 0.5 ms (10 rows at 20 kHz, one 2 kHz model "
                        f"sample), got {window_ms}")
    if hop_ms is None:
        hop = 1 if per_sample else DECIMATION
    else:
        hop = ms_to_rows(hop_ms)
        if not (hop_ms > 0) or hop < 1:
            raise DataError(f"--hop-ms must be at least 0.05 ms (one row at 20 kHz), got {hop_ms}")
    block = ms_to_rows(block_ms)
    if not (block_ms > 0) or block < width:
        raise DataError(f"--block-ms ({block_ms}) must be at least the window ({width / 20:g} ms)")
    if not (guard_ms >= 0):
        raise DataError(f"--guard-ms must be >= 0, got {guard_ms}")
    return {"width": width, "hop": hop, "block": block, "guard": ms_to_rows(guard_ms), "decimation": dec,
            "per_sample": per_sample}


def load_csv(path, n_devices: int = 10, alpha: float = 0.5, seed: int = 0,
             public_fraction: float = PUBLIC_FRACTION, window_ms: float = WINDOW_MS, hop_ms: float | None = None,
             block_ms: float = BLOCK_MS, guard_ms: float = GUARD_MS, min_device_samples: int = MIN_DEVICE_WINDOWS,
             cache: bool = True) -> Fleet:
    """Fleet from a file in either public CSV form (``read_fault_csv``; 20 kHz rows).

    The file is one contiguous simulation in which each class is a contiguous run, so rows are never
    split at random. Each run is cut into contiguous time blocks with guard gaps, windows are cut
    inside the blocks (``cut_windows``, geometry from ``csv_geometry``) and a block is the group: a
    split never puts windows of one block on both sides, and no raw row belongs to two blocks. Test
    windows therefore come from *other time blocks of the same fault event* as the training windows.

    Per class, ``public_groups(public_fraction)`` blocks (``default_rng([seed, STREAM, 3])``) form the
    public pool; the rest are dealt to devices by ``deal_devices`` (label skew + ``assign_groups`` with
    at least two blocks per device and class, so a device can hold a class in its test split and in
    its training data; draws repeated until every device has ``min_device_samples`` windows of two
    classes). Raises TooLittleData when no draw works."""
    from .cache import cached
    from .fleet import TooLittleData, deal_devices, public_groups

    path = Path(path)
    if n_devices < 1:
        raise DataError(f"n_devices must be at least 1, got {n_devices}")
    if not 0 <= public_fraction < 1:
        raise DataError(f"--public-fraction must be in [0, 1), got {public_fraction}")
    geo = csv_geometry(window_ms, hop_ms, block_ms, guard_ms)
    dec = cached(path, "csv", CSV_LOADER_VERSION, lambda: _decoded_csv(path), enabled=cache)
    x_rows, y_rows, form = dec["x"], dec["y"], str(dec["form"])
    names = DETECT_CLASS_NAMES if form == "detect" else CLASS_NAMES
    xw, yw, gw, spans = cut_windows(x_rows, y_rows, geo["width"], geo["hop"], geo["block"], geo["guard"],
                                    geo["decimation"])
    if len(yw) == 0:
        raise TooLittleData(f"{path.name}: no label run holds one {geo['width'] / 20:g} ms window; "
                            "no windows can be cut")
    rng = np.random.default_rng([seed, STREAM, 3])
    pub_g = public_groups(yw, gw, public_fraction, rng)
    is_pub = np.isin(gw, pub_g)
    if public_fraction > 0 and not is_pub.any():
        raise TooLittleData(f"{path.name}: {len(np.unique(gw))} time blocks leave none for the public pool "
                            "(no class has two blocks)")
    rest = np.flatnonzero(~is_pub)
    pub_idx = np.flatnonzero(is_pub)
    try:
        props, parts = deal_devices(yw[rest], gw[rest], n_devices, alpha, rng, min_windows=min_device_samples)
    except TooLittleData as e:
        raise TooLittleData(f"{path.name}: {e}; the file gives {len(yw)} windows in {len(np.unique(gw))} "
                            f"time blocks, {len(rest)} of them for the devices") from None
    src = {"source": path.name, "rows": int(len(y_rows))}
    public = Pool(xw[pub_idx], yw[pub_idx], gw[pub_idx], {**src, "role": "public"}, spans[pub_idx])
    devices = [Pool(xw[rest[p]], yw[rest[p]], gw[rest[p]], {**src, "role": f"device {i}"}, spans[rest[p]])
               for i, p in enumerate(parts)]
    fs = FS_ACQ / geo["decimation"]
    info = {"loader": "detect_dataset.csv" if form == "detect" else "classData.csv", "form": form,
            "path": str(path), "rows": int(len(y_rows)), "windows": int(len(yw)),
            "blocks": int(len(np.unique(gw))), "window_rows": geo["width"], "hop_rows": geo["hop"],
            "block_rows": geo["block"], "guard_rows": geo["guard"], "decimation": geo["decimation"],
            "input": "sample" if geo["per_sample"] else "window", "model_rate_hz": fs,
            "group_by": "block", "public_fraction": public_fraction, "seed": seed, "alpha": alpha,
            "proportions": props.tolist(),
            "units": "currents in A, line-to-line voltages in pu of the 11 kV line-to-line peak",
            "skipped": ""}
    if form == "classData":
        info["fault_phases"] = FAULT_PHASES
    return Fleet(name=path.stem, class_names=list(names), channel_names=list(CHANNELS),
                 sample_rate_hz=fs, channel_scale=CHANNEL_SCALE.copy(), public=public,
                 devices=devices, info=info)


def _decoded_csv(path: Path) -> dict:
    x, y, form = read_fault_csv(path)
    return {"x": x, "y": y, "form": np.array(form)}
