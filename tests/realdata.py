"""Small files in the exact forms of the public copies, generated from the built-in physics (no download).

- ``write_class_data``: a classData.csv-form file (header G,C,B,A,Ia,Ib,Ic,Va,Vb,Vc, CRLF) of one
  20 kHz simulation in which every class is ONE contiguous run: no fault ~5.9 cycles, each fault
  2.5-2.8 cycles (LL labelled 0110, the B-C fault), ~7,900 rows. Waveforms come from the sequence-
  network model (``measured_phasors``) with a continuous current at every inception (decaying DC).
- ``write_detect_data``: the detect_dataset.csv form (``Output (S),Ia,Ib,Ic,Va,Vb,Vc`` plus two empty
  trailing columns, 12,001 rows).
- ``write_cwru_tree``: public-copy names and variables: ``12k_DE/B007_0.mat`` holding
  ``X118_DE_time``, ``X118_FE_time``, ``X118RPM``; ``Normal/Normal_0.mat`` at 48 kHz holding
  ``X097_DE_time``; 12 fault recordings per class (0.007/0.014/0.021 in x 4 loads); a fan-end folder
  and a 48 kHz drive-end fault record that the loader must skip. Signals from ``bearing_signal``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from fedtiny.trainer.data import electrical as E
from fedtiny.trainer.data import mechanical as M

CLASS_ORDER = ["0000", "1001", "1011", "0110", "0111", "1111"]   # NF, LG, LLG, LL (B-C), LLL, LLLG
CODE_CLASS = {"0000": E.NF, "1001": E.LG, "0110": E.LL, "1011": E.LLG, "0111": E.LLL, "1111": E.LLLG}


def _series(kinds_rows, rng, noise=0.005):
    """20 kHz rows (n, 6) of consecutive runs [(class id, rows)]; fault inceptions at run starts."""
    n = sum(r for _, r in kinds_rows)
    t = np.arange(n) / E.FS_ACQ
    alpha = rng.uniform(0, 2 * np.pi)
    x = np.zeros((n, 6))
    start = 0
    prev_i = None
    for kind, rows in kinds_rows:
        ph = E.measured_phasors([kind], p=rng.uniform(0.45, 0.55), source=rng.uniform(0.97, 1.03),
                                load=rng.uniform(0.9, 1.1), z_f=rng.uniform(0.001, 0.05),
                                imbalance=rng.uniform(-0.04, 0.04, (1, 3)))
        p = np.concatenate([ph["I"][0], ph["V"][0]])
        tt = t[start:start + rows]
        seg = np.imag(p[None, :] * np.exp(1j * (E.OMEGA * tt + alpha))[:, None])
        if prev_i is not None:        # current continuous at inception: decaying DC term
            tau = max(float(ph["tau"][0]), 1e-4)
            d = prev_i - seg[0, :3]
            seg[:, :3] += d[None, :] * np.exp(-(tt - tt[0]) / tau)[:, None]
        x[start:start + rows] = seg
        prev_i = np.imag(p[:3] * np.exp(1j * (E.OMEGA * (tt[-1] + 1 / E.FS_ACQ) + alpha)))
        start += rows
    x += rng.standard_normal(x.shape) * noise * E.CHANNEL_SCALE
    # line-to-line voltages sum to zero exactly, as in the public file
    x[:, 5] = -(x[:, 3] + x[:, 4])
    return x


def class_data_runs(seed=0):
    rng = np.random.default_rng([seed, 77])
    runs = [("0000", int(rng.integers(2340, 2390)))]
    for code in CLASS_ORDER[1:]:
        cycles = rng.uniform(2.6, 2.8)
        runs.append((code, int(round(cycles * 400))))
    return runs


def write_class_data(path: Path, seed=0) -> Path:
    rng = np.random.default_rng([seed, 78])
    runs = class_data_runs(seed)
    x = _series([(CODE_CLASS[c], r) for c, r in runs], rng)
    lines = [",".join(E.CSV_COLUMNS)]
    i = 0
    for code, rows in runs:
        lab = ",".join(code)
        for _ in range(rows):
            lines.append(lab + "," + ",".join(f"{v:.6g}" for v in x[i]))
            i += 1
    Path(path).write_bytes(("\r\n".join(lines) + "\r\n").encode())
    return Path(path)


def write_detect_data(path: Path, seed=0) -> Path:
    rng = np.random.default_rng([seed, 79])
    kinds = [E.NF, E.LG, E.NF, E.LL, E.NF, E.LLG, E.NF, E.LLL]
    lengths = [1700, 1400, 1600, 1350, 1600, 1350, 1605, 1396]       # 12,001 rows, 6,505 / 5,496
    x = _series(list(zip(kinds, lengths)), rng)
    lines = ["Output (S),Ia,Ib,Ic,Va,Vb,Vc,,"]
    i = 0
    for k, n in zip(kinds, lengths):
        for _ in range(n):
            lines.append(f"{int(k != E.NF)}," + ",".join(f"{v:.6g}" for v in x[i]) + ",,")
            i += 1
    Path(path).write_bytes(("\r\n".join(lines) + "\r\n").encode())
    return Path(path)


# ---------------------------------------------------------------- CWRU tree

FAULTS = {"IR": ("inner_race", {0.007: 105, 0.014: 169, 0.021: 209}),
          "B": ("ball", {0.007: 118, 0.014: 185, 0.021: 222}),
          "OR": ("outer_race", {0.007: 130, 0.014: 197, 0.021: 234})}
LEVEL = {"inner_race": 0.3, "outer_race": 0.45, "ball": 0.12}


def write_cwru_tree(root: Path, seconds: float = 1.0, seed: int = 0, extras: bool = True) -> Path:
    """The public copy's layout: 12k_DE/<fault><size>_<load>.mat (OR as OR007@6_<load>.mat),
    Normal/Normal_0.mat (48 kHz); with ``extras`` also 12k_FE/IR007_0.mat (fan-end, record 278) and
    48k_DE/IR007_0.mat (48 kHz drive-end fault, record 109), which the loader skips."""
    from scipy.io import savemat

    rng = np.random.default_rng([seed, 80])
    root = Path(root)
    (root / "12k_DE").mkdir(parents=True, exist_ok=True)
    (root / "Normal").mkdir(exist_ok=True)
    n12 = int(seconds * 12000)
    for short, (cls, nums) in FAULTS.items():
        for size, base in nums.items():
            for load in range(4):
                num = base + load
                rpm = M.LOAD_RPM[load]
                de = M.bearing_signal(cls, 1, rng, rpm=rpm, fault_rms=LEVEL[cls] * (0.5 + size / 0.021 / 2),
                                      n_samples=n12)[0]
                fe = M.bearing_signal("normal", 1, rng, rpm=rpm, n_samples=n12)[0] * 0.5
                name = f"{short}{int(round(size * 1000)):03d}{'@6' if short == 'OR' else ''}_{load}.mat"
                savemat(root / "12k_DE" / name, {f"X{num:03d}_DE_time": de[:, None],
                                                 f"X{num:03d}_FE_time": fe[:, None],
                                                 f"X{num:03d}RPM": np.array([[rpm]])})
    n48 = int(seconds * 4 * 48000)          # the healthy baseline is long (4 s here) and at 48 kHz
    de = M.bearing_signal("normal", 1, rng, n_samples=n48, fs=48000.0, rpm=1797.0)[0]
    savemat(root / "Normal" / "Normal_0.mat", {"X097_DE_time": de[:, None], "X097_FE_time": 0.5 * de[:, None],
                                               "X097RPM": np.array([[1797.0]])})
    if extras:
        (root / "12k_FE").mkdir(exist_ok=True)
        sig = M.bearing_signal("inner_race", 1, rng, n_samples=n12)[0]
        savemat(root / "12k_FE" / "IR007_0.mat", {"X278_DE_time": sig[:, None], "X278_FE_time": sig[:, None]})
        (root / "48k_DE").mkdir(exist_ok=True)
        sig = M.bearing_signal("inner_race", 1, rng, n_samples=4 * n12, fs=48000.0)[0]
        savemat(root / "48k_DE" / "IR007_0.mat", {"X109_DE_time": sig[:, None], "X109_FE_time": sig[:, None]})
    return root
