"""First load vs cached load of a CWRU folder (the decode cache of ``trainer/data/cache.py``).

    python benchmarks/cwru_cache.py [--seconds 10] [--repeat 3]

Writes a folder in the public copies' layout from the built-in bearing physics (no download): 36
fault records at 12 kHz (12k_DE/IR|B|OR<size>_<load>.mat, each holding X<n>_DE_time, X<n>_FE_time,
X<n>_BA_time and X<n>RPM, ``--seconds`` long like the public 10 s records) and the healthy baseline
Normal/Normal_0.mat at 48 kHz, then loads it with ``load_fleet`` (3 devices) into an empty cache
directory (first load: read every .mat, decimate the baseline, write the cache), and again (cached
load: read the cache). Prints, for both, the whole ``load_fleet`` time and the part of it spent
obtaining the decoded recordings (``fleet.info["decode_seconds"]``: reading and decimating the .mat
files, or reading their cache entries; the rest, cutting windows and dealing them to devices, is the
same work both times), best of ``--repeat`` for the cached load, their ratios and the machine. Exit
code 1 when the cached decode is not at least 10x faster.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def write_folder(root: Path, seconds: float, seed: int = 0) -> int:
    from scipy.io import savemat

    from fedtiny.trainer.data import mechanical as M

    rng = np.random.default_rng([seed, 81])
    faults = {"IR": ("inner_race", {7: 105, 14: 169, 21: 209}), "B": ("ball", {7: 118, 14: 185, 21: 222}),
              "OR": ("outer_race", {7: 130, 14: 197, 21: 234})}
    (root / "12k_DE").mkdir(parents=True)
    (root / "Normal").mkdir()
    n12 = int(seconds * 12000)
    count = 0
    for short, (cls, nums) in faults.items():
        for size, base in nums.items():
            for load in range(4):
                num, rpm = base + load, M.LOAD_RPM[load]
                ch = [M.bearing_signal(cls if j == 0 else "normal", 1, rng, rpm=rpm, n_samples=n12)[0] for j in range(3)]
                name = f"{short}{size:03d}{'@6' if short == 'OR' else ''}_{load}.mat"
                savemat(root / "12k_DE" / name, {f"X{num:03d}_DE_time": ch[0][:, None], f"X{num:03d}_FE_time": ch[1][:, None],
                                                 f"X{num:03d}_BA_time": ch[2][:, None], f"X{num:03d}RPM": np.array([[rpm]])})
                count += 1
    n48 = int(seconds * 48000)
    de = M.bearing_signal("normal", 1, rng, n_samples=n48, fs=48000.0)[0]
    savemat(root / "Normal" / "Normal_0.mat", {"X097_DE_time": de[:, None], "X097_FE_time": 0.5 * de[:, None],
                                               "X097RPM": np.array([[1797.0]])})
    return count + 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="length of each record (public copies: 10 s)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        n = write_folder(tmp / "CWRU", args.seconds)
        size = sum(p.stat().st_size for p in (tmp / "CWRU").rglob("*.mat"))
        os.environ["FEDTINY_CACHE"] = str(tmp / "cache")
        from fedtiny.trainer.data import load_fleet

        def load() -> tuple[float, float]:
            t0 = time.perf_counter()
            f = load_fleet(str(tmp / "CWRU"), n_devices=3, alpha=0.5, seed=0, samples_per_device=400,
                           public_samples=1200, cache=True)
            return time.perf_counter() - t0, f.info["decode_seconds"]

        first, first_dec = load()
        runs = [load() for _ in range(args.repeat)]
        cached, cached_dec = min(r[0] for r in runs), min(r[1] for r in runs)
    print(f"command: python benchmarks/cwru_cache.py --seconds {args.seconds:g} --repeat {args.repeat}")
    print(f"machine: {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}")
    print(f"folder: {n} .mat files, {size / 1e6:.1f} MB, {args.seconds:g} s records")
    print(f"first load:  {first:.3f} s in all, {first_dec:.3f} s decoding the recordings (and writing the cache)")
    print(f"cached load: {cached:.3f} s in all, {cached_dec:.3f} s reading the cache (best of {args.repeat})")
    print(f"speed-up: {first / cached:.1f}x in all, {first_dec / cached_dec:.1f}x for the recordings")
    sys.exit(0 if cached_dec * 10 <= first_dec else 1)

if __name__ == "__main__":
    main()
