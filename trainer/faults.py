"""Misbehaving devices for experiments (``--faulty K --fault KIND``): pure NumPy.

Which devices: the first K of a permutation of 0..N-1 drawn from (seed, FAULT_STREAM), so the same
seed always picks the same devices and every method of a comparison faces the same ones.

Kinds (every split of a faulty device is affected: a broken sensor or a wrong label map is wrong
for everything that device records; accuracies are then reported for the honest devices):
    label-flip     y -> (y + 1) mod K                   (a labelling pipeline with an offset map)
    noise          x + N(0, NOISE_STD^2), clipped to the front end's [-1, 1] full scale
    gain           GAIN * x, clipped (a front end whose amplifier gain is wrong)
    stuck          channel 0 stuck at its first value of every window (a frozen ADC channel)
    random-update  the device's data is fine, but the update it sends is a random direction with
                   the norm of its real update: d_sent = ||d|| * z / ||z||, z ~ N(0, I)
    scaled-update  a poisoner: it sends d_sent = SCALE * d and reports accuracy 1.0 and 1e9
                   training windows (what a site that wants to own the aggregate would send)
"""
from __future__ import annotations

import numpy as np

FAULT_STREAM = 6007
NOISE_STD = 0.3          # in model units (full scale 1): a very noisy channel
GAIN = 4.0
SCALE = 50.0             # scaled-update: how much the poisoner inflates its update
CLAIMED_N = 10 ** 9      # scaled-update: the sample count it claims
DATA_FAULTS = ("label-flip", "noise", "gain", "stuck")


def faulty_devices(n_devices: int, k: int, seed: int) -> list[int]:
    """The K misbehaving devices of a fleet (sorted)."""
    if k <= 0:
        return []
    perm = np.random.default_rng([int(seed), FAULT_STREAM, 1]).permutation(int(n_devices))
    return sorted(int(i) for i in perm[:k])


def fault_note(faults: dict) -> str:
    """One line naming a run's misbehaving devices and how (its report.json ``faults``):
    'faulty devices (--fault noise): 1, 4; the others are honest'."""
    devs = ", ".join(str(d) for d in faults.get("devices", [])) or "none"
    return f"faulty devices (--fault {faults.get('kind', '?')}): {devs}; the others are honest"


def corrupt(x: np.ndarray, y: np.ndarray, kind: str, n_classes: int,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One pool's windows ``x`` (n, T, C, model units) and labels ``y`` under a data fault."""
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y, dtype=np.int64)
    if kind == "label-flip":
        return x, (y + 1) % n_classes
    if kind == "noise":
        return np.clip(x + rng.normal(0.0, NOISE_STD, x.shape).astype(np.float32), -1.0, 1.0), y
    if kind == "gain":
        return np.clip(GAIN * x, -1.0, 1.0), y
    if kind == "stuck":
        out = x.copy()
        if out.size:
            out[:, :, 0] = out[:, :1, 0]
        return out, y
    raise ValueError(f"{kind!r} is not a data fault ({', '.join(DATA_FAULTS)})")


def random_update(sent: list[np.ndarray], trained: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """Weights sent + ||d|| z / ||z|| with d = trained - sent and z ~ N(0, I) (``random-update``)."""
    d = [np.asarray(t, np.float64) - np.asarray(s, np.float64) for s, t in zip(sent, trained)]
    norm = np.sqrt(sum(float(np.sum(v * v)) for v in d))
    z = [rng.standard_normal(v.shape) for v in d]
    zn = np.sqrt(sum(float(np.sum(v * v)) for v in z))
    scale = norm / zn if zn > 0 else 0.0
    return [(np.asarray(s, np.float64) + scale * v).astype(np.asarray(s).dtype) for s, v in zip(sent, z)]


def scaled_update(sent: list[np.ndarray], trained: list[np.ndarray], metrics: dict) -> tuple[list[np.ndarray], dict]:
    """(sent + SCALE * (trained - sent), metrics claiming acc 1.0 and CLAIMED_N windows): ``scaled-update``."""
    w = [(np.asarray(s, np.float64) + SCALE * (np.asarray(t, np.float64) - np.asarray(s, np.float64)))
         .astype(np.asarray(s).dtype) for s, t in zip(sent, trained)]
    return w, {**metrics, "acc": 1.0, "n": CLAIMED_N}


def corrupt_splits(splits, devices: list[int], kind: str, n_classes: int, seed: int) -> None:
    """Apply data fault ``kind`` (in place) to every split (dataclass of Pools) of ``devices``;
    ``random-update`` leaves the data alone. Deterministic in (seed, device)."""
    from dataclasses import fields

    if kind not in DATA_FAULTS:
        return
    for dev in devices:
        s = splits[dev]
        rng = np.random.default_rng([int(seed), FAULT_STREAM, 2, int(dev) + 1])
        for f in fields(s):
            pool = getattr(s, f.name)
            pool.x, pool.y = corrupt(pool.x, pool.y, kind, n_classes, rng)
