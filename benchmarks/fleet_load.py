"""Load time of a large fleet folder: first load (decode every recording) and cached load.

    python benchmarks/fleet_load.py [--devices 100] [--hours 10] [--rate 500] [--channels 3]
                                    [--format csv|npy] [--window-ms 100]

Writes a fleet folder of ``--devices`` device folders holding ``--hours`` of recordings in all
(each device one recording of hours / devices, ``--channels`` channels at ``--rate`` Hz: a 50 Hz
sine plus noise, a normal segment, a fault segment of a third of it, then normal again, as
labels.csv segments), a one-device public pool, and loads it the way ``fedtiny train --fleet``
does (``fleetdir.run_fields`` + ``fleetdir.load_fleet_dir``: read, resample (none here), pick
channels, cut blocks and windows of ``--window-ms``, hop = window) into an empty decode cache
(first load), then again (cached load: every decoded recording read from the cache). Prints the
sizes, both times and the machine. The folder is written to a temporary directory and removed.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def write_fleet(root: Path, devices: int, hours: float, rate: float, channels: int, fmt: str) -> int:
    """The fleet folder (module doc); returns its size in bytes."""
    rng = np.random.default_rng(0)
    names = [f"ch{i}" for i in range(channels)]
    n = int(round(hours * 3600 * rate / devices))
    t = np.arange(n) / rate
    root.mkdir(parents=True)
    (root / "fleet.toml").write_text(f"rate_hz = {rate!r}\nchannels = {names!r}\n".replace("'", '"'))
    for d in range(devices + 1):
        folder = root.parent / "public" / "pump-pub" if d == devices else root / f"pump-{d:03d}"
        folder.mkdir(parents=True)
        x = (np.sin(2 * np.pi * 50 * t)[:, None] * (1 + 0.1 * np.arange(channels))
             + 0.05 * rng.standard_normal((n, channels))).astype(np.float32)
        a, b = n // 3, 2 * n // 3
        x[a:b] *= 1.5
        f = f"rec.{fmt}"
        if fmt == "npy":
            np.save(folder / f, x)
        else:
            with open(folder / f, "w") as fh:
                fh.write(",".join(names) + "\n")
                np.savetxt(fh, x, fmt="%.5g", delimiter=",")
        s = n / rate
        (folder / "labels.csv").write_text(f"file,label,start_s,end_s\n{f},normal,0,{a / rate!r}\n"
                                           f"{f},fault,{a / rate!r},{b / rate!r}\n{f},normal,{b / rate!r},{s!r}\n")
    shutil.copy(root / "fleet.toml", root.parent / "public" / "fleet.toml")
    return sum(p.stat().st_size for p in root.parent.rglob("*") if p.is_file())


def load(root: Path, window_ms: float):
    from fedtiny.trainer.config import TrainConfig
    from fedtiny.trainer.data.fleetdir import load_fleet_dir, run_fields

    public = str(root.parent / "public")
    t0 = time.perf_counter()
    w = {"window_ms": window_ms, "hop_ms": window_ms, "block_ms": 10 * window_ms, "guard_ms": 0.0}
    cfg = TrainConfig(**run_fields(public, root, w), public=public)
    fleet = load_fleet_dir(cfg, cache=True)
    return time.perf_counter() - t0, fleet


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=100)
    ap.add_argument("--hours", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=500.0)
    ap.add_argument("--channels", type=int, default=3)
    ap.add_argument("--format", choices=["csv", "npy"], default="csv")
    ap.add_argument("--window-ms", type=float, default=100.0)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="fedtiny-fleet-bench-") as tmp:
        os.environ["FEDTINY_CACHE"] = str(Path(tmp) / "cache")     # an empty decode cache
        root = Path(tmp) / "data" / "F"
        t0 = time.perf_counter()
        size = write_fleet(root, a.devices, a.hours, a.rate, a.channels, a.format)
        t_write = time.perf_counter() - t0
        cold, fleet = load(root, a.window_ms)
        n_win = sum(len(p) for p in fleet.devices)
        del fleet
        cached, fleet = load(root, a.window_ms)
        print(f"fleet folder: {a.devices} devices, {a.hours:g} h of {a.format.upper()} recordings in all "
              f"({a.channels} channels at {a.rate:g} Hz, {size / 1e6:.0f} MB; written in {t_write:.1f} s)")
        print(f"windows: {n_win:,} of {a.window_ms:g} ms ({fleet.input_shape[0]} x {fleet.input_shape[1]})")
        print(f"first load (decode every recording, fill the cache): {cold:.1f} s")
        print(f"cached load:                                           {cached:.1f} s  ({cold / cached:.1f}x faster)")
        print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
              f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
