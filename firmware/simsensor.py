"""The simulated sensor: a recording as the int16 frames a board's sensor would deliver.

A *track* is what the emulator and the qemu-m4 firmware (``--input sensor --sensor sim``) play at the
model rate: ``counts`` (N, C) int16 in the run's channel order, the class of every frame
(``labels``, -1 where a recording has no label), the rate, and per channel the full scale and unit.

Sample units (the same as every front end's int16 samples, ``fedtiny.frontend.to_int16``)::

    count_c = clip(round_half_away(x_c / full_scale_c * 32767), -32767, 32767)
    x_c     = count_c * scale_c,        scale_c = full_scale_c / 32767   (physical units per count)

``full_scale`` is the run's ``channel_scale`` (device.json): the physical value the model sees as 1.0,
so a frame a board reads is exactly the sample the model's test windows were made of.

Sources (pure NumPy, deterministic for a given seed):

* ``builtin_track``: the run's built-in generator (electrical, mechanical) under device k's own
  operating condition, as a list of (class, seconds) segments. Electrical: the generator's windows
  of one mains cycle (40 samples at 2 kHz) of the segment's class end to end; mechanical: one
  continuous bearing signal per segment (``bearing_signal`` with the device's condition).
* ``recording_track``: one recording of a fleet folder, read through ``trainer.data.fleetdir``
  (its only reader): resampled to the run's rate, its channels picked by name and brought to the
  run's units, its frames labelled by the folder's ``labels.csv``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedtiny.frontend import FULL_SCALE, to_int16

UNLABELLED = -1
BUILTIN_UNITS = {"electrical": ("A", "A", "A", "pu", "pu", "pu"), "mechanical": ("g",)}


class SensorError(ValueError):
    """A recording or request the simulated sensor cannot play (one clear sentence)."""


@dataclass(frozen=True)
class StreamFacts:
    """What a run's device samples: rate (Hz), channel names, full scale and unit per channel,
    window (samples), default hop (samples) and class names."""

    rate_hz: float
    channels: tuple[str, ...]
    full_scale: tuple[float, ...]
    units: tuple[str, ...]
    window: int
    hop: int
    class_names: tuple[str, ...]
    dataset: str = ""
    seed: int = 0
    devices: int = 1

    @property
    def scale(self) -> np.ndarray:
        """Physical units per count, per channel: full_scale / 32767."""
        return np.asarray(self.full_scale, np.float64) / FULL_SCALE


@dataclass(frozen=True)
class Track:
    counts: np.ndarray          # (N, C) int16
    labels: np.ndarray          # (N,) int64 class id per frame, UNLABELLED where unknown
    facts: StreamFacts

    def __len__(self) -> int:
        return len(self.counts)

    def physical(self) -> np.ndarray:
        """The frames in physical units (N, C) float64: count * scale."""
        return from_counts(self.counts, self.facts.full_scale)


def to_counts(x: np.ndarray, full_scale) -> np.ndarray:
    """Physical samples (N, C) -> int16 counts (module docstring)."""
    fs = np.asarray(full_scale, np.float64)
    return to_int16(np.clip(np.asarray(x, np.float64) / fs, -1.0, 1.0))


def from_counts(counts: np.ndarray, full_scale) -> np.ndarray:
    """int16 counts (N, C) -> physical samples: count * full_scale / 32767."""
    return np.asarray(counts, np.float64) * (np.asarray(full_scale, np.float64) / FULL_SCALE)


# --------------------------------------------------------------------------- the run's facts

def _dataset_module(name: str):
    import importlib

    return importlib.import_module(f"fedtiny.trainer.data.{name}")


def run_facts(run_dir, device: int) -> StreamFacts:
    """The stream facts of device ``device`` of a run: channels, full scale, window from
    device.json; rate from the front end's entry, else config.json's ``rate_hz`` (fleet-folder runs),
    else the built-in dataset's rate; hop: config.json's ``hop_ms`` at that rate when the run has
    one (fleet-folder runs), else window // 2; units from the built-in dataset or the fleet's
    fleet.toml (``_`` where unknown)."""
    from fedtiny.trainer.rundir import RunFileError, device_dir, read_json

    run_dir = Path(run_dir)
    try:
        info = read_json(device_dir(run_dir, int(device)) / "device.json")
        cfg = read_json(run_dir / "config.json")
    except RunFileError as e:
        raise SensorError(str(e)) from None
    try:
        shape = [int(v) for v in info["input_shape"]]
        fe = info.get("frontend") or {"kind": "raw"}
        window = int(fe["window"]) if fe.get("kind", "raw") != "raw" else shape[0]
        n_ch = int(fe["channels"]) if fe.get("kind", "raw") != "raw" else shape[-1]
        scale = tuple(float(v) for v in info["channel_scale"])
        channels = tuple(str(c) for c in info.get("channel_names") or [f"ch{i}" for i in range(n_ch)])
        classes = tuple(str(c) for c in info["class_names"])
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise SensorError(f"device {device} of {run_dir}: device.json lacks {e}") from None
    dataset = str(cfg.get("dataset", ""))
    rate = float(fe.get("rate_hz") or cfg.get("rate_hz") or 0.0)
    units: tuple[str, ...] = ("_",) * n_ch
    if dataset in BUILTIN_UNITS:
        rate = rate or float(_dataset_module(dataset).SAMPLE_RATE_HZ)
        units = BUILTIN_UNITS[dataset]
    elif dataset and Path(dataset, "fleet.toml").is_file():
        from fedtiny.trainer.data.fleetdir import read_spec

        try:
            u = read_spec(dataset).units
            units = tuple(str(u.get(c, "_")) for c in channels)
        except ValueError:
            pass
    if not rate > 0:
        raise SensorError(f"the model rate of {run_dir} is unknown (no rate_hz in its config.json or front end)")
    if len(channels) != n_ch or len(scale) != n_ch:
        raise SensorError(f"device {device} of {run_dir}: {n_ch} input channels, but device.json names "
                          f"{len(channels)} channels and {len(scale)} scales")
    hop_ms = cfg.get("hop_ms") if cfg.get("public") else None
    hop = int(round(float(hop_ms) * rate / 1000.0)) if hop_ms else window // 2
    return StreamFacts(rate, channels, scale, units, window, max(1, min(hop, window)), classes, dataset,
                       int(cfg.get("seed", 0)), int(cfg.get("devices", 1)))


# --------------------------------------------------------------------------- sources

def parse_segments(text: str, class_names) -> list[tuple[int, float]]:
    """``"normal:2,LG:1.5"`` -> [(class id, seconds), ...]; SensorError for an unknown class or a
    duration that is not a positive number."""
    out = []
    for part in str(text).split(","):
        name, sep, dur = part.strip().rpartition(":")
        if not sep or name not in class_names:
            raise SensorError(f"segment {part.strip()!r}: expected CLASS:SECONDS with CLASS one of "
                              f"{', '.join(class_names)}")
        try:
            s = float(dur)
        except ValueError:
            s = float("nan")
        if not s > 0 or s == float("inf"):
            raise SensorError(f"segment {part.strip()!r}: the duration must be a positive number of seconds")
        out.append((list(class_names).index(name), s))
    return out


def _electrical_segment(mod, facts: StreamFacts, k: int, n: int, device: int, rng, start: int) -> np.ndarray:
    """n continuous samples (n, 6) of class k, the fault incepted at the segment's first sample:
    the generator's network, evolution and sensor models (``measured_phasors``, ``fault_stages``,
    ``waveforms``, ``sensor``) with one draw of source, load, location, fault resistance and
    imbalance per segment, under device ``device``'s condition; the mains phase runs on from the
    track's first sample (``start`` samples before this segment), so segments join without a jump
    in the steady state (a fault starts with the generator's DC transient, its clearing without)."""
    cond = mod.device_condition(np.random.default_rng([facts.seed, mod.STREAM, 2, device + 1]))
    cycles = -(-n // mod.WINDOW)
    src = rng.uniform(*cond["source_range"])
    load = rng.uniform(*cond["load_range"])
    p = rng.uniform(*cond["location"])
    r_f = float(np.exp(rng.uniform(*np.log(cond["r_fault"]))))
    imb = np.repeat(rng.uniform(-cond["imbalance"], cond["imbalance"], (1, 3)), cycles, axis=0)
    kinds, refs, times = mod.fault_stages(np.array([k]), rng, cond["scatter_ms"] * 1e-3)
    kinds, refs, times = (np.repeat(a, cycles, axis=0) for a in (kinds, refs, times))
    stages = [mod.measured_phasors(kinds[:, s], p, src, load, r_f, imb, refs[:, s]) for s in range(times.shape[1])]
    alpha = np.full(cycles, 2 * np.pi * mod.F0 * start / facts.rate_hz)
    x = mod.waveforms(stages, times, alpha, np.arange(cycles) / mod.F0).reshape(-1, len(mod.CHANNELS))[:n]
    return mod.sensor(x, rng, cond["noise"], cond["gain"], cond["offset"])


def builtin_track(facts: StreamFacts, segments, seed: int = 0, device: int = 0) -> Track:
    """``segments`` [(class id, seconds)] of the built-in generator ``facts.dataset`` under device
    ``device``'s operating condition (the one the run trained it on, from the run's seed), with the
    sensor noise of ``default_rng([seed, 7, device])``."""
    ds = facts.dataset
    if ds not in BUILTIN_UNITS:
        raise SensorError(f"the run's dataset {ds!r} has no built-in generator; play a recording (--recording)")
    mod = _dataset_module(ds)
    rng = np.random.default_rng([int(seed), 7, int(device)])
    xs, ys = [], []
    for k, seconds in segments:
        n = int(round(seconds * facts.rate_hz))
        if n < 1:
            raise SensorError(f"a segment of {seconds:g} s holds no sample at {facts.rate_hz:g} Hz")
        if ds == "electrical":
            x = _electrical_segment(mod, facts, int(k), n, int(device), rng, sum(len(v) for v in xs))
        else:
            cond = mod.device_condition(facts.seed, int(device), max(facts.devices, 1))
            name = mod.CLASS_NAMES[int(k)]
            level = mod.NOMINAL_FAULT_RMS.get(name, 0.0) * cond["severity"]
            if name == "outer_race":
                level *= mod.OR_POSITION_FACTOR[cond["or_position"]]
            x = mod.bearing_signal(name, 1, rng, rpm=cond["rpm"], resonance_hz=cond["resonance_hz"],
                                   damping=cond["damping"], fault_rms=level, noise_rms=cond["noise_rms_g"],
                                   gain=cond["sensor_gain"], jitter=cond["jitter"], mod_depth=cond["mod_depth"],
                                   structural_noise=cond["structural_noise"], n_samples=n,
                                   fs=facts.rate_hz)[0][:, None]
        xs.append(x)
        ys.append(np.full(n, int(k), np.int64))
    if not xs:
        raise SensorError("no segment to play")
    x = np.concatenate(xs)
    if x.shape[1] != len(facts.channels):
        raise SensorError(f"the generator gives {x.shape[1]} channels, the run has {len(facts.channels)}")
    return Track(to_counts(x, facts.full_scale), np.concatenate(ys), facts)


def recording_track(path, facts: StreamFacts) -> Track:
    """One recording of a fleet folder (``FLEET/DEVICE/FILE``) at the run's rate, channels and
    units, labelled frame by frame from ``FLEET/DEVICE/labels.csv`` (UNLABELLED outside its
    segments; a label outside the run's classes is refused)."""
    from fedtiny.trainer.data.fleet import DataError
    from fedtiny.trainer.data.fleetdir import (_segments_rows, read_labels, read_recording, read_spec, to_rate,
                                               unit_factor)

    path = Path(path)
    if not path.is_file():
        raise SensorError(f"recording {path} does not exist")
    folder, root = path.parent, path.parent.parent
    try:
        spec = read_spec(root)
        rec = read_recording(path, spec)
        missing = [c for c in facts.channels if c not in rec.channels]
        if missing:
            raise SensorError(f"{path}: no channel {', '.join(missing)} (it has {', '.join(rec.channels)}); "
                              f"the run needs {', '.join(facts.channels)}")
        x = rec.x[:, [rec.channels.index(c) for c in facts.channels]]
        k = np.array([unit_factor(rec.units.get(c), u if u != "_" else "", str(path), c)
                      for c, u in zip(facts.channels, facts.units)])
        x = to_rate(x * k, rec.rate_hz, facts.rate_hz, str(path))
        labels = np.full(len(x), UNLABELLED, np.int64)
        segs = [s for s in read_labels(folder) if s.file == path.name]
        for a, b, lab, line in _segments_rows(segs, len(x), facts.rate_hz, folder / "labels.csv") if segs else []:
            if lab not in facts.class_names:
                raise SensorError(f"{folder / 'labels.csv'} line {line}: label {lab!r} is not a class of the run "
                                  f"({', '.join(facts.class_names)})")
            labels[a:b] = facts.class_names.index(lab)
    except DataError as e:
        raise SensorError(str(e)) from None
    return Track(to_counts(x, facts.full_scale), labels, facts)


def track_for_run(run_dir, device: int, *, recording=None, segments: str | None = None, seed: int = 0) -> Track:
    """The track a simulated sensor of device ``device`` plays: ``recording`` (a fleet-folder file)
    or the built-in generator's ``segments`` ("CLASS:SECONDS,..."; default: 2 s of the normal class,
    then 2 s of the first fault class, then 2 s normal)."""
    facts = run_facts(run_dir, device)
    if recording is not None:
        return recording_track(recording, facts)
    if segments is None:
        names = facts.class_names
        segs = [(0, 2.0), (1 if len(names) > 1 else 0, 2.0), (0, 2.0)]
    else:
        segs = parse_segments(segments, facts.class_names)
    return builtin_track(facts, segs, seed, device)


def describe(track: Track) -> str:
    """One line: frames, seconds, rate, channels with units, and the labelled runs."""
    f = track.facts
    runs, prev, start = [], None, 0
    for i, y in enumerate(track.labels.tolist() + [None]):
        if y != prev:
            if prev is not None:
                name = f.class_names[prev] if prev >= 0 else "unlabelled"
                runs.append(f"{name} {(i - start) / f.rate_hz:g} s")
            prev, start = y, i
    chans = ", ".join(f"{c} [{u}]" for c, u in zip(f.channels, f.units))
    return (f"{len(track)} frames ({len(track) / f.rate_hz:g} s at {f.rate_hz:g} Hz) of {chans}: "
            + json.dumps(runs)[1:-1].replace('"', ""))
