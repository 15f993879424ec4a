"""The fleet folder: the one module that reads (and writes) the on-disk fleet format.

    FLEET/
      fleet.toml            optional: rate_hz, channels, normal, classes, units, full_scale, windowing
      pump-07/              one folder per device; the folder name is the device's name
        2026-03-01.csv      a recording
        labels.csv          file,label[,start_s,end_s]: a whole recording or a segment of it
      pump-08/ ...

Recordings (suffix decides): ``.csv`` (header of channel names, comma or semicolon; an optional
``time`` / ``timestamp`` column in seconds gives the rate, else ``rate_hz``), ``.wav`` (any channel
count; int16 / int32 / uint8 read as fractions of full scale in [-1, 1), float as is; channels
``ch0``.. unless ``channels`` names them), ``.npy`` ((n,) or (n, C), rate from ``rate_hz``) and Edge
Impulse's data-acquisition JSON (``payload.interval_ms``, ``payload.sensors[].name/units``,
``payload.values``). A recording without a line in ``labels.csv`` is unlabelled: nothing but
``fedtiny data check`` uses it. Labels are class names; the normal class (class 0) is ``normal``
unless ``fleet.toml`` says ``normal = "..."``; ``classes = [...]`` fixes the vocabulary and its
order (else: the normal class, then every other label sorted).

Every labelled recording is resampled to the run's rate (``resample_poly``, a polyphase FIR with a
Kaiser-windowed anti-alias filter) and its channels picked by name. Inside each labelled segment
[round(start_s r), round(end_s r)) the rows are cut into time blocks and windows
(``blocks.blocked_windows``: blocks of B rows with G guard rows between them, windows of W rows
every H rows, none across a block or segment boundary). A block is a group: the split unit, so no
raw row is ever on two sides of a split, and no group crosses a recording or a segment.

Default windowing (``DEFAULTS``, when neither ``fleet.toml`` nor the command line sets it): W = 100
ms, 5 cycles of 50 Hz mains (6 of 60 Hz), three shaft turns at 1800 rpm, about 10 outer-race
impacts of a typical rolling bearing: enough for a spectrum of the fault frequencies and still a
few KB of int8 input on a microcontroller; H = W / 2 (the usual 50 % overlap); B = 1 s (10
windows: a time block long enough that neighbouring blocks are not near-copies, short enough that
a 10 s fault episode still gives 10 groups); G = 0 (windows never cross a block, so no row is
shared; set ``guard_ms`` to decorrelate neighbouring blocks further).
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from .fleet import DataError, Fleet, Pool

NORMAL = "normal"
SUFFIXES = (".csv", ".wav", ".npy", ".json")
TIME_COLUMNS = ("time", "timestamp")
DEFAULTS = {"window_ms": 100.0, "hop_ms": 50.0, "block_ms": 1000.0, "guard_ms": 0.0}
READER_VERSION = 2                 # 2: the cache holds a file's own units, not fleet.toml's
SPEC_KEYS = {"rate_hz", "channels", "normal", "classes", "units", "full_scale", "window_ms", "hop_ms",
             "block_ms", "guard_ms", "sign_symmetric", "source"}


@dataclass(frozen=True)
class FleetSpec:
    """What ``fleet.toml`` says (every key optional)."""

    rate_hz: float | None = None
    channels: tuple[str, ...] | None = None
    normal: str = NORMAL
    classes: tuple[str, ...] | None = None
    units: dict = field(default_factory=dict)
    full_scale: dict = field(default_factory=dict)
    window_ms: float | None = None
    hop_ms: float | None = None
    block_ms: float | None = None
    guard_ms: float | None = None
    sign_symmetric: bool = False       # a window and its negation are the same class (linear physics)


def read_spec(root) -> FleetSpec:
    """``root/fleet.toml`` as a FleetSpec (all defaults when absent); DataError for unknown keys or
    values of the wrong type."""
    import tomllib

    path = Path(root) / "fleet.toml"
    if not path.is_file():
        return FleetSpec()
    try:
        d = tomllib.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise DataError(f"{path}: {' '.join(str(e).split())}") from None
    unknown = sorted(set(d) - SPEC_KEYS)
    if unknown:
        raise DataError(f"{path}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(SPEC_KEYS))}")

    def num(k):
        v = d.get(k)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise DataError(f"{path}: {k} must be a number >= 0, got {v!r}")
        return float(v)

    def names(k):
        v = d.get(k)
        if v is None:
            return None
        if not isinstance(v, list) or not v or not all(isinstance(s, str) and s.strip() for s in v):
            raise DataError(f"{path}: {k} must be a non-empty list of names")
        if len({s.casefold() for s in v}) != len(v):
            raise DataError(f"{path}: {k} has a name twice (names are compared case-folded)")
        return tuple(s.strip() for s in v)

    for k in ("units", "full_scale"):
        if not isinstance(d.get(k, {}), dict):
            raise DataError(f"{path}: [{k}] must be a table of channel = value")
    for ch, v in d.get("units", {}).items():
        if not isinstance(v, str):
            raise DataError(f"{path}: units.{ch} must be a unit string such as \"m/s^2\", got {v!r}")
    for ch, v in d.get("full_scale", {}).items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
            raise DataError(f"{path}: full_scale.{ch} must be a number > 0, got {v!r}")
    rate = num("rate_hz")
    if rate == 0:
        raise DataError(f"{path}: rate_hz must be > 0")
    normal = d.get("normal", NORMAL)
    if not isinstance(normal, str) or not normal.strip():
        raise DataError(f"{path}: normal must be a class name")
    classes = names("classes")
    if classes is not None and normal not in classes:
        raise DataError(f"{path}: classes does not hold the normal class {normal!r}")
    return FleetSpec(rate, names("channels"), normal.strip(), classes, dict(d.get("units", {})),
                     {k: float(v) for k, v in d.get("full_scale", {}).items()}, num("window_ms"),
                     num("hop_ms"), num("block_ms"), num("guard_ms"), bool(d.get("sign_symmetric", False)))


def device_names(root) -> list[str]:
    """The device folders of a fleet folder, in name order; DataError for a missing folder, a folder
    without device folders, or two names equal after case folding."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"fleet folder {root} does not exist")
    names = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not names:
        raise DataError(f"{root} holds no device folders (one folder per device, named by the device)")
    seen: dict[str, str] = {}
    for n in names:
        if n.casefold() in seen:
            raise DataError(f"{root}: device folders {seen[n.casefold()]!r} and {n!r} differ only in case")
        seen[n.casefold()] = n
    return names


def is_fleet_folder(path) -> bool:
    """A folder with a ``fleet.toml`` or a subfolder holding ``labels.csv``."""
    p = Path(path)
    if not p.is_dir():
        return False
    return (p / "fleet.toml").is_file() or any(
        (d / "labels.csv").is_file() for d in p.iterdir() if d.is_dir())


# -------------------------------------------------------------------------------------------------
# Recordings

@dataclass
class Recording:
    """Samples ``x`` (n, C) float64 in the file's units, channel names, rate in Hz."""

    x: np.ndarray
    channels: list[str]
    rate_hz: float
    units: dict = field(default_factory=dict)


def _decode_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.start}); save the CSV as UTF-8") from None
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror}") from None


def _rate_from_time(t: np.ndarray, path: Path) -> float:
    """1 / median step of a time column in seconds; DataError unless every step is within 1 % of it."""
    if len(t) < 2:
        raise DataError(f"{path}: a time column needs at least two rows")
    dt = np.diff(t)
    step = float(np.median(dt))
    if not step > 0 or np.max(np.abs(dt - step)) > 0.01 * step:
        raise DataError(f"{path}: the time column is not evenly spaced (steps {dt.min():g}..{dt.max():g} s)")
    return 1.0 / step


def read_csv(path: Path, rate_hz: float | None) -> Recording:
    """A CSV recording: header of channel names; comma or semicolon (whichever the header uses);
    an optional ``time``/``timestamp`` column (seconds) gives the rate, else ``rate_hz``."""
    text = _decode_text(path)
    lines = text.splitlines()
    while lines and not lines[0].strip():
        lines.pop(0)
    if not lines:
        raise DataError(f"{path}: empty recording")
    delim = ";" if lines[0].count(";") > lines[0].count(",") else ","
    header = [h.strip() for h in next(csv.reader([lines[0]], delimiter=delim))]
    if any(not h for h in header) or len(set(header)) != len(header):
        raise DataError(f"{path}: the header must name every column once, got {','.join(header)}")
    if not any(line.strip() for line in lines[1:]):
        raise DataError(f"{path}: empty recording (a header and no rows)")
    try:
        data = np.loadtxt(io.StringIO("\n".join(lines[1:])), delimiter=delim, ndmin=2, dtype=np.float64)
    except ValueError as e:
        raise DataError(f"{path}: {' '.join(str(e).split())}") from None
    if data.size == 0:
        raise DataError(f"{path}: empty recording (a header and no rows)")
    if data.shape[1] != len(header):
        raise DataError(f"{path}: rows have {data.shape[1]} fields, the header {len(header)}")
    if not np.all(np.isfinite(data)):
        r, c = np.argwhere(~np.isfinite(data))[0]
        raise DataError(f"{path}: row {r + 1}, column {header[c]}: non-finite value")
    tcol = [i for i, h in enumerate(header) if h.lower() in TIME_COLUMNS]
    if tcol:
        rate = _rate_from_time(data[:, tcol[0]], path)
        keep = [i for i in range(len(header)) if i != tcol[0]]
        return Recording(data[:, keep], [header[i] for i in keep], rate)
    if rate_hz is None:
        raise DataError(f"{path}: no time/timestamp column and no rate_hz in fleet.toml: the rate is unknown")
    return Recording(data, header, float(rate_hz))


def read_wav(path: Path, channels) -> Recording:
    """A WAV recording: integer PCM as a fraction of full scale, float as stored."""
    import warnings

    from scipy.io import wavfile

    try:
        with warnings.catch_warnings():          # a chunk scipy skips is no concern of the user's
            warnings.simplefilter("ignore", wavfile.WavFileWarning)
            rate, data = wavfile.read(path)
    except Exception as e:  # noqa: BLE001 - any failure of the parser on a damaged file (scipy 1.x
        # raises UnboundLocalError on some truncated headers) is this file being unreadable
        raise DataError(f"{path}: unreadable WAV ({type(e).__name__}: {' '.join(str(e).split())})") from None
    if len(data) == 0:
        raise DataError(f"{path}: WAV with 0 frames")
    data = data.reshape(len(data), -1)
    if data.dtype == np.uint8:
        x = (data.astype(np.float64) - 128.0) / 128.0
    elif np.issubdtype(data.dtype, np.integer):
        x = data.astype(np.float64) / float(2 ** (8 * data.dtype.itemsize - 1))
    else:
        x = data.astype(np.float64)
    return Recording(x, _channel_names(channels, x.shape[1], path), float(rate))


def _channel_names(channels, n: int, path: Path) -> list[str]:
    if channels is None:
        return [f"ch{i}" for i in range(n)]
    if len(channels) != n:
        raise DataError(f"{path}: {n} channel(s), fleet.toml names {len(channels)}")
    return list(channels)


def read_npy(path: Path, rate_hz: float | None, channels) -> Recording:
    """A ``.npy`` recording (n,) or (n, C); the rate is fleet.toml's ``rate_hz``."""
    try:
        with open(path, "rb") as fh:
            magic = fh.read(6)
        # np.load reads a file without the .npy magic as a pickle and would talk about pickles
        a = np.load(path, allow_pickle=False) if magic == b"\x93NUMPY" else None
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"{path}: unreadable .npy ({' '.join(str(e).split())})") from None
    if a is None:
        raise DataError(f"{path}: unreadable .npy (not a NumPy array file)")
    if a.ndim not in (1, 2) or not np.issubdtype(a.dtype, np.number) or len(a) == 0:
        raise DataError(f"{path}: expected a non-empty numeric array (n,) or (n, C), got {a.dtype} {a.shape}")
    if rate_hz is None:
        raise DataError(f"{path}: a .npy recording needs rate_hz in fleet.toml")
    x = a.reshape(len(a), -1).astype(np.float64)
    return Recording(x, _channel_names(channels, x.shape[1], path), float(rate_hz))


def read_ei_json(path: Path) -> Recording:
    """Edge Impulse data-acquisition JSON: rate 1000 / payload.interval_ms, channels
    payload.sensors[].name (units .units), rows payload.values."""
    try:
        doc = json.loads(_decode_text(path))
        p = doc["payload"]
        interval = float(p["interval_ms"])
        sensors = [s["name"] for s in p["sensors"]]
        units = {s["name"]: s.get("units", "") for s in p["sensors"]}
        x = np.asarray(p["values"], dtype=np.float64).reshape(len(p["values"]), -1)
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(f"{path}: not an Edge Impulse data-acquisition file ({type(e).__name__}: {e})") from None
    if len(x) == 0:
        raise DataError(f"{path}: empty recording (payload.values is empty)")
    if not interval > 0 or x.shape[1] != len(sensors):
        raise DataError(f"{path}: interval_ms must be > 0 and every value row hold one value per sensor")
    return Recording(x, sensors, 1000.0 / interval, units)


def read_recording(path, spec: FleetSpec) -> Recording:
    """Any recording the fleet format accepts (by suffix)."""
    path = Path(path)
    suf = path.suffix.lower()
    if suf == ".csv":
        rec = read_csv(path, spec.rate_hz)
    elif suf == ".wav":
        rec = read_wav(path, spec.channels)
    elif suf == ".npy":
        rec = read_npy(path, spec.rate_hz, spec.channels)
    elif suf == ".json":
        rec = read_ei_json(path)
    else:
        raise DataError(f"{path}: unknown recording type {suf!r} (use {', '.join(SUFFIXES)})")
    if not np.all(np.isfinite(rec.x)):
        raise DataError(f"{path}: non-finite values")
    return with_spec_units(rec, spec)


def with_spec_units(rec: Recording, spec: FleetSpec) -> Recording:
    """``rec`` whose channels without a unit of their own (an Edge Impulse file names them) take
    fleet.toml's ``[units]``."""
    rec.units = {**{c: spec.units[c] for c in rec.channels if c in spec.units}, **rec.units}
    return rec


# Units: spellings that name the same unit, and the exact factors between units of one quantity
# (standard gravity is 9.80665 m/s^2 by definition; the SI prefixes are exact).
UNIT_ALIASES = {"m/s2": "m/s^2", "m/s\u00b2": "m/s^2", "m s^-2": "m/s^2", "volt": "V", "amp": "A",
                "ampere": "A", "millivolt": "mV", "milliamp": "mA"}
UNIT_FACTORS = {("g", "m/s^2"): 9.80665, ("mV", "V"): 1e-3, ("mA", "A"): 1e-3, ("uV", "V"): 1e-6,
                ("uA", "A"): 1e-6, ("\u00b5V", "V"): 1e-6, ("\u00b5A", "A"): 1e-6, ("mg", "g"): 1e-3}


def unit_name(u) -> str:
    """A unit string as compared: stripped, known spellings mapped to one name ("" unknown)."""
    u = str(u or "").strip()
    return UNIT_ALIASES.get(u, u)


def unit_factor(have, want, where: str, channel: str) -> float:
    """The exact factor k with value[want] = k * value[have]: 1 when either unit is unknown ("": the
    run's unit is assumed) or both name the same unit, the ``UNIT_FACTORS`` entry (or its
    reciprocal, or the product of two entries through a shared unit), else DataError naming
    ``where``: two units no table links are never guessed."""
    a, b = unit_name(have), unit_name(want)
    if not a or not b or a == b:
        return 1.0
    f = {**UNIT_FACTORS, **{(y, x): 1.0 / v for (x, y), v in UNIT_FACTORS.items()}}
    if (a, b) in f:
        return f[(a, b)]
    for (x, m), v in f.items():
        if x == a and (m, b) in f:
            return v * f[(m, b)]
    raise DataError(f"{where}: channel {channel} is in {a!r}, the run's unit is {b!r}, and there is no "
                    f"exact conversion between them (known: {', '.join(f'{x} <-> {y}' for x, y in UNIT_FACTORS)})")


def cached_recording(path: Path, spec: FleetSpec, cache: bool) -> Recording:
    """``read_recording`` through the decoded-file cache (keyed by the file's bytes and the spec
    values that change the decoding). The cache holds the file's own units only: fleet.toml's
    ``[units]`` are applied afresh on every read (a site's fleet.toml may change between runs)."""
    from dataclasses import replace

    from .cache import cached

    kind = f"fleet-{spec.rate_hz}-{','.join(spec.channels or ())}".replace("/", "_")

    def compute() -> dict:
        r = read_recording(path, replace(spec, units={}))
        return {"x": r.x, "channels": np.array(r.channels, dtype=str), "rate": np.array([r.rate_hz]),
                "units": np.array([json.dumps(r.units)])}

    d = cached(path, kind, READER_VERSION, compute, enabled=cache)
    return with_spec_units(Recording(np.asarray(d["x"]), [str(c) for c in d["channels"]], float(d["rate"][0]),
                                     json.loads(str(d["units"][0]))), spec)


def to_rate(x: np.ndarray, rate: float, target: float, where: str) -> np.ndarray:
    """x resampled from ``rate`` to ``target`` Hz along axis 0 with ``scipy.signal.resample_poly``
    (up / down = the exact ratio target / rate; its FIR low-pass is the anti-alias filter).
    DataError when the ratio is not a fraction with terms <= 1000."""
    if rate == target:
        return x
    ratio = Fraction(target / rate).limit_denominator(1000)
    if ratio.numerator > 1000 or abs(float(ratio) - target / rate) > 1e-9 * target / rate:
        raise DataError(f"{where}: {rate:g} Hz cannot be resampled to the run's {target:g} Hz "
                        "(not a ratio of small integers)")
    from scipy.signal import resample_poly

    return resample_poly(x, ratio.numerator, ratio.denominator, axis=0)


# -------------------------------------------------------------------------------------------------
# Labels

@dataclass(frozen=True)
class Segment:
    file: str
    label: str
    start_s: float | None
    end_s: float | None
    line: int


def read_labels(folder: Path) -> list[Segment]:
    """``folder/labels.csv`` rows ``file,label[,start_s,end_s]`` (an optional header line
    ``file,label,...``); empty start/end: the whole recording."""
    path = folder / "labels.csv"
    if not path.is_file():
        return []
    rows = list(csv.reader(io.StringIO(_decode_text(path))))
    out = []
    for i, row in enumerate(rows, start=1):
        row = [c.strip() for c in row]
        if not any(row) or (i == 1 and row[0].lower() == "file"):
            continue
        if len(row) not in (2, 4) and not (len(row) == 3 and not row[2]):
            raise DataError(f"{path}: line {i}: expected file,label[,start_s,end_s], got {len(row)} fields")
        f, lab = row[0], row[1]
        if not f or not lab:
            raise DataError(f"{path}: line {i}: empty file or label")
        s = e = None
        if len(row) == 4 and (row[2] or row[3]):
            try:
                s, e = float(row[2]), float(row[3])
            except ValueError:
                raise DataError(f"{path}: line {i}: start_s and end_s must be numbers of seconds") from None
            if not (math.isfinite(s) and math.isfinite(e) and 0 <= s < e):
                raise DataError(f"{path}: line {i}: need 0 <= start_s < end_s, got {row[2]}, {row[3]}")
        out.append(Segment(f, lab, s, e, i))
    return out


# -------------------------------------------------------------------------------------------------
# Windows of one device

@dataclass(frozen=True)
class Geometry:
    """The run's windowing in rows at ``rate_hz``."""

    rate_hz: float
    width: int
    hop: int
    block: int
    guard: int

    @classmethod
    def from_ms(cls, rate_hz: float, window_ms: float, hop_ms: float, block_ms: float, guard_ms: float):
        def rows(ms, name, lo):
            r = ms * rate_hz / 1000.0
            n = int(round(r))
            if abs(r - n) > 1e-3 or n < lo:
                raise DataError(f"--{name} {ms:g} is not a whole number (>= {lo}) of samples at {rate_hz:g} Hz")
            return n
        g = cls(rate_hz, rows(window_ms, "window-ms", 1), rows(hop_ms, "hop-ms", 1), rows(block_ms, "block-ms", 1),
                rows(guard_ms, "guard-ms", 0))
        if g.block < g.width:
            raise DataError(f"--block-ms {block_ms:g} is shorter than the window ({window_ms:g} ms)")
        return g

    def ms(self) -> dict:
        f = 1000.0 / self.rate_hz
        return {"window_ms": self.width * f, "hop_ms": self.hop * f, "block_ms": self.block * f,
                "guard_ms": self.guard * f}


def _segments_rows(segs: list[Segment], n: int, rate: float, where: Path) -> list[tuple[int, int, str, int]]:
    """(a, b, label, line) row ranges of one recording's segments at ``rate``, in time order;
    overlapping segments of one label are merged, of two labels refused."""
    out = []
    for s in segs:
        if s.start_s is None:
            a, b = 0, n
        else:
            a, b = int(round(s.start_s * rate)), int(round(s.end_s * rate))
            if b > n + 1:
                raise DataError(f"{where} line {s.line}: segment {s.start_s:g}-{s.end_s:g} s lies outside "
                                f"{s.file} ({n / rate:g} s)")
            b = min(b, n)
        out.append((a, b, s.label, s.line))
    out.sort()
    merged: list[tuple[int, int, str, int]] = []
    for a, b, lab, line in out:
        if merged and a < merged[-1][1]:
            pa, pb, plab, pline = merged[-1]
            if plab != lab:
                raise DataError(f"{where}: lines {pline} and {line} overlap in {segs[0].file} with different "
                                f"labels ({plab}, {lab})")
            merged[-1] = (pa, max(pb, b), lab, pline)
        else:
            merged.append((a, b, lab, line))
    return merged


@dataclass
class DevicePool:
    pool: Pool
    files: list[str]
    unlabelled: list[str]
    labels: list[str]


def read_device(folder, spec: FleetSpec, geo: Geometry, channels: list[str] | None, classes: list[str],
                class_map: dict | None = None, cache: bool = True, units: dict | None = None) -> DevicePool:
    """Windows of one device folder at the run's geometry: every labelled recording resampled to
    ``geo.rate_hz``, channels picked by name (``channels`` None: the recordings' own, which must then
    agree) and brought to the run's ``units`` (None: ``spec.units``) by ``unit_factor``, segments cut
    into blocks and windows (module doc). Groups count blocks from 0 in (file name, time) order.
    Labels are renamed by ``class_map`` and must be in ``classes``."""
    from .blocks import blocked_windows

    folder = Path(folder)
    segs = read_labels(folder)
    name = folder.name
    if not segs:
        raise DataError(f"device {name}: no labelled recording ({folder / 'labels.csv'} is missing or empty)")
    by_file: dict[str, list[Segment]] = {}
    for s in segs:
        by_file.setdefault(s.file, []).append(s)
    present = sorted(p.name for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES
                     and p.name != "labels.csv")
    for f in by_file:
        if f not in present:
            raise DataError(f"{folder / 'labels.csv'} line {by_file[f][0].line}: no recording {f} in {folder}")
    xs, ys, gs, sp = [], [], [], []
    next_group = 0
    for fi, f in enumerate(sorted(by_file)):
        path = folder / f
        rec = cached_recording(path, spec, cache)
        want = channels if channels is not None else rec.channels
        missing = [c for c in want if c not in rec.channels]
        if missing:
            raise DataError(f"{path}: no channel {', '.join(missing)} (it has {', '.join(rec.channels)})")
        x = rec.x[:, [rec.channels.index(c) for c in want]]
        run_units = spec.units if units is None else units
        k = np.array([unit_factor(rec.units.get(c), run_units.get(c), str(path), c) for c in want])
        if np.any(k != 1.0):
            x = x * k
        x = to_rate(x, rec.rate_hz, geo.rate_hz, str(path))
        for s in by_file[f]:
            lab = (class_map or {}).get(s.label, s.label)
            if lab not in classes:
                raise DataError(f"{folder / 'labels.csv'} line {s.line}: label {s.label!r} is not a class of this "
                                f"fleet ({', '.join(classes)})")
        for a, b, lab, _ in _segments_rows(by_file[f], len(x), geo.rate_hz, folder / "labels.csv"):
            starts, blk = blocked_windows(a, b, geo.block, geo.guard, geo.width, geo.hop)
            if len(starts) == 0:
                continue
            xs.append(np.lib.stride_tricks.sliding_window_view(x, geo.width, axis=0)[starts].transpose(0, 2, 1))
            ys.append(np.full(len(starts), classes.index((class_map or {}).get(lab, lab)), np.int64))
            gs.append(next_group + blk)
            sp.append(np.stack([np.full(len(starts), fi), starts, starts + geo.width], axis=1))
            next_group += int(blk.max()) + 1
    if not xs:
        raise DataError(f"device {name}: no labelled segment holds one {geo.ms()['window_ms']:g} ms window")
    pool = Pool(np.concatenate(xs), np.concatenate(ys), np.concatenate(gs), {"name": name},
                np.concatenate(sp))
    return DevicePool(pool, sorted(by_file), [f for f in present if f not in by_file],
                      sorted({s.label for s in segs}))


def vocabulary(root, names: list[str], spec: FleetSpec, class_map: dict | None = None) -> list[str]:
    """Class names of a fleet folder, normal first: ``classes`` of fleet.toml, else every label of
    every device (after ``class_map``) sorted after the normal class."""
    normal = (class_map or {}).get(spec.normal, spec.normal)
    if spec.classes is not None:
        cls = [(class_map or {}).get(c, c) for c in spec.classes]
    else:
        cls = sorted({(class_map or {}).get(s.label, s.label) for n in names for s in read_labels(Path(root) / n)})
    return [normal] + [c for c in cls if c != normal]


# -------------------------------------------------------------------------------------------------
# Writer: any Fleet as a fleet folder

def _group_signal(w: np.ndarray, hop: int, where: str) -> np.ndarray:
    """The signal of which the windows ``w`` (m, W, C) are the views at 0, hop, 2 hop, ...;
    DataError when they are not (the export would not give the same windows back)."""
    m, width = w.shape[0], w.shape[1]
    if m == 1:
        return w[0]
    if hop > width:
        raise DataError(f"{where}: windows of one group do not overlap or touch; cannot export exactly")
    sig = np.concatenate([w[0]] + [w[i, width - hop:] for i in range(1, m)])
    back = np.lib.stride_tricks.sliding_window_view(sig, width, axis=0)[::hop][:m].transpose(0, 2, 1)
    if not np.array_equal(back, w):
        raise DataError(f"{where}: the windows of a group are not hop-spaced views of one signal; "
                        "cannot export them exactly")
    return sig


def _write_device(folder: Path, pool: Pool, class_names: list[str], channels: list[str], rate: float,
                  hop: int) -> int:
    """One device folder: ``recording.csv`` (the groups' signals end to end, in pool order) and
    ``labels.csv`` (one segment per group). Returns the longest group in rows."""
    folder.mkdir(parents=True)
    order, seen = [], set()
    for g in pool.groups.tolist():
        if g not in seen:
            seen.add(g)
            order.append(g)
    sigs, lines, t, longest = [], [], 0, 1
    for g in order:
        idx = np.flatnonzero(pool.groups == g)
        if not np.all(np.diff(idx) == 1):
            raise DataError(f"{folder.name}: group {g}'s windows are not consecutive; cannot export exactly")
        s = _group_signal(pool.x[idx], hop, folder.name)
        sigs.append(s)
        lines.append(f"recording.csv,{class_names[int(pool.y[idx[0]])]},{t / rate!r},{(t + len(s)) / rate!r}\n")
        t += len(s)
        longest = max(longest, len(s))
    data = np.concatenate(sigs).astype(np.float32)
    with open(folder / "recording.csv", "w", encoding="utf-8") as fh:
        fh.write(",".join(channels) + "\n")
        np.savetxt(fh, data, fmt="%.9g", delimiter=",")
    (folder / "labels.csv").write_text("file,label,start_s,end_s\n" + "".join(lines), encoding="utf-8")
    return longest


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(float(v))
    if isinstance(v, str):
        return json.dumps(v)
    return "[" + ", ".join(_toml_value(x) for x in v) + "]"


def _write_spec(folder: Path, values: dict, full_scale: dict) -> None:
    text = "".join(f"{k} = {_toml_value(v)}\n" for k, v in values.items())
    text += "\n[full_scale]\n" + "".join(f"{json.dumps(k)} = {float(v)!r}\n" for k, v in full_scale.items())
    (folder / "fleet.toml").write_text(text, encoding="utf-8")


def _atomic_folder(dest: Path, fill) -> None:
    """Write a folder by ``fill(tmp)`` into a temporary sibling, then rename it to ``dest``."""
    dest = Path(dest)
    if dest.exists():
        raise DataError(f"{dest} exists; give a new folder")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.tmp-"))
    try:
        fill(tmp)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def export(fleet: Fleet, out, public_out=None, hop: int | None = None, sign_symmetric: bool = False,
           source: str = "") -> list[str]:
    """Write ``fleet``'s devices as the fleet folder ``out`` (devices ``dev00``.., the names the run
    directory gives them) and its public pool as the one-device fleet folder ``public_out``
    (device ``public``). Each device is one ``recording.csv``: its groups' signals end to end in
    the pool's order, one labels.csv segment per group, and a fleet.toml whose windowing (window W,
    hop ``hop`` rows, block = the longest group, no guard) cuts exactly the same windows, labels and
    group order back (values written with 9 significant digits: float32 round-trips). Both folders
    appear whole or not at all. Returns the device names."""
    rate = float(fleet.sample_rate_hz)
    width = fleet.input_shape[0]
    hop = width if hop is None else int(hop)
    names = [f"dev{i:02d}" for i in range(len(fleet.devices))]
    chans = list(fleet.channel_names)
    scale = {c: float(s) for c, s in zip(chans, np.asarray(fleet.channel_scale).tolist())}

    def spec_values(longest: int) -> dict:
        f = 1000.0 / rate
        return {"source": source, "rate_hz": rate, "channels": chans, "normal": fleet.class_names[0],
                "classes": list(fleet.class_names), "window_ms": width * f, "hop_ms": hop * f,
                "block_ms": longest * f, "guard_ms": 0.0, "sign_symmetric": sign_symmetric}

    def fill_fleet(tmp: Path) -> None:
        longest = max(_write_device(tmp / n, p, fleet.class_names, chans, rate, hop)
                      for n, p in zip(names, fleet.devices))
        _write_spec(tmp, spec_values(longest), scale)

    def fill_public(tmp: Path) -> None:
        longest = _write_device(tmp / "public", fleet.public, fleet.class_names, chans, rate, hop)
        _write_spec(tmp, spec_values(longest), scale)

    if public_out is not None and Path(public_out).exists():
        raise DataError(f"{public_out} exists; give a new folder")
    _atomic_folder(Path(out), fill_fleet)
    if public_out is not None:
        try:
            _atomic_folder(Path(public_out), fill_public)
        except BaseException:
            shutil.rmtree(out, ignore_errors=True)      # both or neither
            raise
    return names


# -------------------------------------------------------------------------------------------------
# A run on a fleet folder

def resolve_windowing(root, overrides: dict | None = None) -> dict:
    """window_ms / hop_ms / block_ms / guard_ms of a run on ``root``: ``overrides`` (options the user
    gave) first, then fleet.toml, then ``DEFAULTS`` (hop: half the window when only the window is
    set). ``root`` None: no fleet.toml."""
    spec = read_spec(root) if root is not None else FleetSpec()
    ov = {k: v for k, v in (overrides or {}).items() if v is not None}
    out = {}
    for k in DEFAULTS:
        out[k] = ov.get(k, getattr(spec, k))
    if out["window_ms"] is None:
        out["window_ms"] = DEFAULTS["window_ms"]
    if out["hop_ms"] is None:
        out["hop_ms"] = out["window_ms"] / 2
    if out["block_ms"] is None:
        out["block_ms"] = max(DEFAULTS["block_ms"], out["window_ms"])
    if out["guard_ms"] is None:
        out["guard_ms"] = DEFAULTS["guard_ms"]
    return out


def read_class_map(path) -> dict:
    """``--class-map FILE``: CSV lines ``from,to`` (optional header ``from,to``)."""
    if not path:
        return {}
    p = Path(path)
    if not p.is_file():
        raise DataError(f"--class-map {p} does not exist")
    out = {}
    for i, row in enumerate(csv.reader(io.StringIO(_decode_text(p))), start=1):
        row = [c.strip() for c in row]
        if not any(row) or (i == 1 and row[:2] == ["from", "to"]):
            continue
        if len(row) != 2 or not all(row):
            raise DataError(f"{p}: line {i}: expected from,to")
        out[row[0]] = row[1]
    return out


def _public_pool(public: str, geo: Geometry, channels: list[str] | None, classes: list[str], class_map: dict,
                 seed: int, alpha: float, public_samples: int, cache: bool, units: dict | None = None):
    """(pool with the run's class ids, its channel names, its fixed channel scale or None, warnings).
    A fleet-folder pool is brought to the run's ``units`` (None: its own fleet.toml's)."""
    warnings: list[str] = []
    if is_fleet_folder(public):
        spec = read_spec(public)
        names = device_names(public)
        pcls = vocabulary(public, names, spec, class_map)
        want = channels if channels is not None else (list(spec.channels) if spec.channels else None)
        pools = [read_device(Path(public) / n, spec, geo, want, pcls, class_map, cache, units).pool for n in names]
        x = np.concatenate([p.x for p in pools])
        y = np.concatenate([p.y for p in pools])
        g, off = [], 0
        for p in pools:
            g.append(p.groups + off)
            off += int(p.groups.max()) + 1
        pool = Pool(x, y, np.concatenate(g), {"source": str(public)})
        pchans = want if want is not None else None
        if pchans is None:
            first = cached_recording(Path(public) / names[0] / read_labels(Path(public) / names[0])[0].file, spec, cache)
            pchans = first.channels
        scale = [spec.full_scale[c] for c in pchans] if all(c in spec.full_scale for c in pchans) else None
    else:
        from . import load_fleet

        f = load_fleet(public, n_devices=1, alpha=alpha, seed=seed, samples_per_device=400,
                       public_samples=public_samples, window_ms=geo.ms()["window_ms"], hop_ms=geo.ms()["hop_ms"],
                       block_ms=geo.ms()["block_ms"], guard_ms=geo.ms()["guard_ms"], min_device_samples=1,
                       cache=cache)
        if abs(f.sample_rate_hz - geo.rate_hz) > 1e-9:
            raise DataError(f"public pool {public}: {f.sample_rate_hz:g} Hz, the fleet's model rate is "
                            f"{geo.rate_hz:g} Hz")
        pool = f.public
        if public not in ("electrical", "mechanical"):      # a file or folder: all of its windows
            d = f.devices[0]
            pool = Pool(np.concatenate([pool.x, d.x]), np.concatenate([pool.y, d.y]),
                        np.concatenate([pool.groups, d.groups]), {"source": str(public)})
        pcls = [class_map.get(c, c) for c in f.class_names]
        pchans = list(f.channel_names)
        if channels is not None:
            missing = [c for c in channels if c not in pchans]
            if missing:
                raise DataError(f"public pool {public}: no channel {', '.join(missing)} (it has {', '.join(pchans)})")
            sel = [pchans.index(c) for c in channels]
            pool = Pool(pool.x[:, :, sel], pool.y, pool.groups, pool.condition)
            scale = np.asarray(f.channel_scale)[sel].tolist()
            pchans = list(channels)
        else:
            scale = np.asarray(f.channel_scale).tolist()
    if pool.x.shape[1] != geo.width:
        raise DataError(f"public pool {public}: windows of {pool.x.shape[1]} samples, the fleet's are {geo.width}")
    # classes by name: the pool trains only the classes it shares with the fleet
    lost = sorted({pcls[k] for k in np.unique(pool.y)} - set(classes))
    if lost:
        warnings.append(f"public pool {public}: class(es) {', '.join(lost)} are on no device of the fleet; "
                        "Phase 0 leaves them out (rename with --class-map)")
    ids = np.array([classes.index(c) if c in classes else -1 for c in pcls])
    y = ids[pool.y]
    keep = y >= 0
    pool = Pool(pool.x[keep], y[keep], pool.groups[keep], pool.condition)
    absent = [c for c in classes if classes.index(c) not in set(pool.y.tolist())]
    if absent:
        warnings.append(f"class(es) {', '.join(absent)} of the fleet are not in the public pool {public}: "
                        "Phase 0 does not see them")
    return pool, pchans, scale, warnings


def _public_facts(public: str, class_map: dict):
    """(class names, rate Hz or None, channel names or None, fixed scale {channel: s}) of a public
    dataset without reading its windows (a fleet folder: its fleet.toml and labels)."""
    if is_fleet_folder(public):
        spec = read_spec(public)
        classes = vocabulary(public, device_names(public), spec, class_map)
        return classes, spec.rate_hz, list(spec.channels) if spec.channels else None, dict(spec.full_scale)
    from . import BUILTIN

    if public in BUILTIN:
        import importlib

        mod = importlib.import_module(f"{__package__}.{public}")
        names, chans, scale, rate = mod.CLASS_NAMES, mod.CHANNELS, mod.CHANNEL_SCALE, mod.SAMPLE_RATE_HZ
    elif Path(public).is_file():
        from . import electrical as mod
        names = mod.DETECT_CLASS_NAMES if mod.csv_form(public) == "detect" else mod.CLASS_NAMES
        chans, scale, rate = mod.CHANNELS, mod.CHANNEL_SCALE, mod.FS_ACQ / mod.DECIMATION
    elif Path(public).is_dir():
        from . import cwru as mod
        from .mechanical import CHANNEL_SCALE as scale, CHANNELS as chans, CLASS_NAMES as names
        rate = mod.SAMPLE_RATE_HZ
    else:
        raise DataError(f"--public {public!r} is neither built in, nor a .csv, nor a folder")
    return ([class_map.get(c, c) for c in names], float(rate), list(chans),
            {c: float(v) for c, v in zip(chans, np.asarray(scale).tolist())})


def run_fields(public: str, root=None, overrides: dict | None = None, channels=None, class_map=None,
               seed: int = 0, alpha: float = 0.5, public_samples: int = 1200, cache: bool = True) -> dict:
    """Every TrainConfig field of a fleet-folder run that the data decides, resolved once so that the
    in-process run, the server and each site agree: dataset and devices / device_names (``root``'s
    folders; the server, which holds no fleet folder, has ``root`` None), class_names (``vocabulary``
    of the folder whose fleet.toml rules: ``root``, else a fleet-folder ``public``; else the public
    dataset's), rate_hz (fleet.toml, else the public dataset's), channels (``channels``, else
    fleet.toml's, else the public dataset's), channel_units (that fleet.toml's ``[units]``, "" where it
    names none: what every site converts its recordings to), channel_scale (fleet.toml ``full_scale``, else the
    public dataset's fixed scale, else max |x| of the public pool per channel), the windowing
    (``resolve_windowing``) and sign_symmetric."""
    cmap = read_class_map(class_map) if class_map else {}
    pclasses, prate, pchans, pscale = _public_facts(public, cmap)
    rule = Path(root) if root is not None else (Path(public) if is_fleet_folder(public) else None)
    spec = read_spec(rule) if rule is not None else FleetSpec()
    out: dict = {}
    if root is not None:
        names = device_names(root)
        out.update(dataset=str(root), devices=len(names), device_names=tuple(names))
        classes = vocabulary(root, names, spec, cmap)
    else:
        classes = pclasses
    rate = spec.rate_hz or prate
    if not rate:
        raise DataError(f"the run's model rate is unknown; give rate_hz in {(rule or Path(public)) / 'fleet.toml'}")
    chans = list(channels) if channels else (list(spec.channels) if spec.channels else pchans)
    win = resolve_windowing(rule, overrides) if rule is not None else resolve_windowing(None, overrides)
    if chans and all(c in spec.full_scale for c in chans):
        scale = [spec.full_scale[c] for c in chans]
    elif chans and all(c in pscale for c in chans):
        scale = [pscale[c] for c in chans]
    else:                                     # measured on the public pool (the server holds it)
        geo = Geometry.from_ms(rate, **win)
        pool, got, _, _ = _public_pool(public, geo, chans, classes, cmap, seed, alpha, public_samples, cache,
                                       spec.units)
        chans = chans or got
        m = np.abs(pool.x).max(axis=(0, 1))
        scale = np.where(m > 0, m, 1.0).tolist()
    out.update(class_names=tuple(classes), rate_hz=float(rate), channels=tuple(chans),
               channel_units=tuple(unit_name(spec.units.get(c, "")) for c in chans),
               channel_scale=tuple(float(v) for v in scale), sign_symmetric=bool(spec.sign_symmetric), **win)
    return out


def run_units(cfg) -> dict | None:
    """{channel: unit} of the run ``cfg`` (its ``channel_units``, "" where the fleet states none);
    None for a config that predates them (each folder's own fleet.toml then rules)."""
    return dict(zip(cfg.channels, cfg.channel_units)) if cfg.channel_units else None


def _geometry(cfg) -> Geometry:
    return Geometry.from_ms(cfg.rate_hz, cfg.window_ms, cfg.hop_ms, cfg.block_ms, cfg.guard_ms)


def _fleet(cfg, name: str, public: Pool, devices: list[Pool], info: dict) -> Fleet:
    return Fleet(name=name, class_names=list(cfg.class_names), channel_names=list(cfg.channels),
                 sample_rate_hz=cfg.rate_hz, channel_scale=np.asarray(cfg.channel_scale, np.float32),
                 public=public, devices=devices,
                 info={"loader": "fleet", "sign_symmetric": cfg.sign_symmetric, "model_rate_hz": cfg.rate_hz,
                       "skipped": "", **info})


def load_public(cfg, cache: bool = True) -> Fleet:
    """The server's data of a fleet-folder run ``cfg`` (``run_fields`` resolved): the public pool
    ``cfg.public`` with the run's class ids (a fleet-folder pool converted to the run's units,
    ``run_units``; for an older config, to those of ``cfg.dataset``'s fleet.toml), and no device."""
    units = run_units(cfg)
    if units is None:
        units = read_spec(cfg.dataset).units if is_fleet_folder(cfg.dataset) else None
    pool, _, _, warnings = _public_pool(cfg.public, _geometry(cfg), list(cfg.channels), list(cfg.class_names),
                                        read_class_map(cfg.class_map) if cfg.class_map else {}, cfg.seed,
                                        cfg.alpha, cfg.public_samples, cache, units)
    return _fleet(cfg, Path(cfg.public).name or cfg.public, pool, [], {"public": cfg.public, "warnings": warnings})


def load_device(cfg, folder, cache: bool = True) -> Pool:
    """One device folder's windows under the run ``cfg`` (a site's only data): resampled to the run's
    rate, its channels, converted to the run's units (``run_units``), labels among the run's classes;
    DataError naming the file and the mismatch otherwise (the site then refuses the run)."""
    return read_device(folder, read_spec(Path(folder).parent), _geometry(cfg), list(cfg.channels),
                       list(cfg.class_names), read_class_map(cfg.class_map) if cfg.class_map else {}, cache,
                       run_units(cfg)).pool


def load_fleet_dir(cfg, cache: bool = True) -> Fleet:
    """The Fleet of the in-process run ``cfg`` on the fleet folder ``cfg.dataset`` (``run_fields``
    resolved): devices are its folders in name order (``read_device``: each recording resampled to
    ``cfg.rate_hz``, channels ``cfg.channels``), group ids made unique fleet-wide; the public pool
    as ``load_public``. ``info["unlabelled"]`` lists the recordings nothing uses."""
    root = Path(cfg.dataset)
    names = device_names(root)
    if tuple(names) != tuple(cfg.device_names):
        raise DataError(f"{root}: device folders {', '.join(names)} differ from the run's "
                        f"{', '.join(cfg.device_names)}")
    f = load_public(cfg, cache)
    spec = read_spec(root)
    geo = _geometry(cfg)
    cmap = read_class_map(cfg.class_map) if cfg.class_map else {}
    devices, unlabelled = [], {}
    offset = int(f.public.groups.max()) + 1 if len(f.public) else 0
    for n in names:
        d = read_device(root / n, spec, geo, list(cfg.channels), list(cfg.class_names), cmap, cache, run_units(cfg))
        p = d.pool
        p.groups = p.groups + offset
        offset = int(p.groups.max()) + 1
        devices.append(p)
        if d.unlabelled:
            unlabelled[n] = d.unlabelled
    f.devices = devices
    f.name = root.name
    f.info.update(path=str(root), device_names=names, unlabelled=unlabelled, **geo.ms())
    return f


# -------------------------------------------------------------------------------------------------
# Writer: recordings added to one device folder (fedtiny capture)

def _check_label(label: str) -> str:
    lab = str(label).strip()
    if not lab or any(c in lab for c in ',"\r\n') or lab != label:
        raise DataError(f"label {label!r} must be a non-empty name without commas, quotes or surrounding spaces")
    return lab


def capture_spec(root, rate_hz: float, channels: list[str], units: dict, label: str,
                 classes: list[str] | None = None) -> tuple[FleetSpec, dict | None]:
    """Check a new recording of ``channels`` at ``rate_hz`` Hz (``units`` {channel: unit}, "" or
    "_" unknown) labelled ``label`` against the fleet folder ``root``: its fleet.toml's rate_hz,
    channels and units must agree, and the label must be in its vocabulary (fleet.toml ``classes``
    when it lists them, else any name: the vocabulary grows with the labels). Returns (the spec,
    the fleet.toml values to write when there is none yet, else None); DataError otherwise.
    ``classes`` (normal first, e.g. a run's class names): the vocabulary a new fleet.toml gets,
    and the label must be one of them."""
    root = Path(root)
    _check_label(label)
    if classes is not None and label not in classes:
        raise DataError(f"label {label!r} is not a class of the run ({', '.join(classes)})")
    path = root / "fleet.toml"
    if not path.is_file():
        known = {c: u for c, u in units.items() if u and u != "_"}
        new = {"rate_hz": float(rate_hz), "channels": list(channels)}
        if classes:
            new.update(normal=classes[0], classes=list(classes))
        return FleetSpec(), {**new, "units": known}
    spec = read_spec(root)
    if spec.rate_hz is None:
        raise DataError(f"{path} has no rate_hz, so a CSV recording's rate would be unknown; add rate_hz = "
                        f"{float(rate_hz)!r} (the board's rate)")
    if abs(spec.rate_hz - float(rate_hz)) > 1e-9 * spec.rate_hz:
        raise DataError(f"the board streams at {float(rate_hz):g} Hz, {path} says rate_hz = {spec.rate_hz:g}: "
                        "capture into a fleet folder of that rate, or change the board's rate")
    if spec.channels is not None and list(spec.channels) != list(channels):
        raise DataError(f"the recording's channels {', '.join(channels)} differ from {path}'s "
                        f"{', '.join(spec.channels)}")
    for c in channels:
        have, want = unit_name(spec.units.get(c)), unit_name(units.get(c) if units.get(c) != "_" else "")
        if have and want and have != want:
            raise DataError(f"channel {c}: the board streams {want!r}, {path} says {have!r}")
    if spec.classes is not None and label not in spec.classes:
        raise DataError(f"label {label!r} is not in {path}'s classes ({', '.join(spec.classes)})")
    return spec, None


def _fleet_toml(values: dict, full_scale: dict) -> str:
    text = "".join(f"{k} = {_toml_value(v)}\n" for k, v in values.items() if k != "units")
    if values.get("units"):
        text += "\n[units]\n" + "".join(f"{json.dumps(k)} = {json.dumps(v)}\n" for k, v in values["units"].items())
    if full_scale:
        text += "\n[full_scale]\n" + "".join(f"{json.dumps(k)} = {float(v)!r}\n" for k, v in full_scale.items())
    return text


def csv_text(x: np.ndarray, channels: list[str]) -> str:
    """A CSV recording: the channel-name header, then one row per frame, values with 9 significant
    digits (an int16 count times its scale reads back to the same count)."""
    buf = io.StringIO()
    buf.write(",".join(channels) + "\n")
    np.savetxt(buf, np.asarray(x, np.float64).reshape(len(x), len(channels)), fmt="%.9g", delimiter=",")
    return buf.getvalue()


def add_recordings(folder, label: str, parts: list[np.ndarray], channels: list[str], rate_hz: float,
                   units: dict, full_scale: dict, stem: str, classes: list[str] | None = None) -> list[str]:
    """Add recordings (``parts``: arrays (n_i, C) in physical units, one file each) labelled ``label``
    to the device folder ``folder`` of a fleet folder: ``capture_spec`` first (fleet.toml written
    when absent: rate_hz, channels, units, full_scale), then each ``STEM.csv`` (``STEM-pK.csv`` for
    several parts), then one ``labels.csv`` line per file (whole recording). Every file is written
    to a temporary name and renamed; labels.csv is replaced last, so a failure (full disk,
    interruption) leaves the folder as it was: written recordings are removed again and the folder
    and fleet.toml, when this call created them, too. Returns the file names."""
    from ..rundir import atomic_write

    folder = Path(folder)
    root = folder.parent
    _, new_spec = capture_spec(root, rate_hz, channels, units, label, classes)
    if not parts or any(len(p) == 0 for p in parts):
        raise DataError("nothing to write (an empty recording)")
    names = [f"{stem}.csv"] if len(parts) == 1 else [f"{stem}-p{i + 1}.csv" for i in range(len(parts))]
    for n in names:
        if (folder / n).exists():
            raise DataError(f"{folder / n} exists; not overwriting a recording")
    labels_path = folder / "labels.csv"
    old_labels = labels_path.read_bytes() if labels_path.is_file() else None
    made_root, made_folder = not root.exists(), not folder.exists()
    written: list[Path] = []
    wrote_spec = False
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if new_spec is not None:
            atomic_write(root / "fleet.toml", lambda fh: fh.write(_fleet_toml(new_spec, full_scale).encode()))
            wrote_spec = True
        for n, x in zip(names, parts):
            atomic_write(folder / n, lambda fh, x=x: fh.write(csv_text(x, channels).encode()))
            written.append(folder / n)
        text = old_labels.decode("utf-8-sig") if old_labels is not None else "file,label,start_s,end_s\n"
        if text and not text.endswith("\n"):
            text += "\n"
        text += "".join(f"{n},{label}\n" for n in names)
        atomic_write(labels_path, lambda fh: fh.write(text.encode("utf-8")))
    except BaseException:
        for p in written:
            p.unlink(missing_ok=True)
        if wrote_spec:
            (root / "fleet.toml").unlink(missing_ok=True)
        for d, made in ((folder, made_folder), (root, made_root)):
            if made:
                shutil.rmtree(d, ignore_errors=True)
        raise
    return names
