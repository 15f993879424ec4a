"""Loader for a folder of Case Western Reserve University (CWRU) bearing records.

Files are found recursively (``**/*.mat``), so the common public copies' layout works as shipped
(``12k_DE/B007_0.mat``, ``12k_DE/OR021@6_3.mat``, ``Normal/Normal_0.mat``, ``48k_DE/``, ``12k_FE/``).
The record number is the file name when it is ``<n>.mat``; otherwise it is read from the variable
names inside (``X118_DE_time`` -> 118; when a file holds several records' variables, the one whose
load in ``CWRU_TABLE`` equals the name's ``_<load>`` suffix). The same record under two file names
is an error naming both. Used: the 12 kHz drive-end fault records and the (48 kHz, decimated by 4)
normal baselines. Skipped, and named on one line in ``fleet.info["skipped"]`` (the CLI prints it):
files under a fan-end folder (a path part containing ``FE`` or ``fan``), 48 kHz drive-end fault
records (a path part containing ``48k``, or a drive-end record number the table does not know
inside such a folder), and record numbers neither ``CWRU_TABLE`` nor ``labels.csv`` knows.

Each file ``NNN.mat`` holds the drive-end accelerometer (g) of record NNN as ``X<NNN>_DE_time`` (the
number zero-padded to three digits; matched here by value) and usually ``X<NNN>RPM``. Some files also
carry another record's variables (99.mat holds 98's): only the variable whose number equals the file's
is used. Exception, per DATA.md: the 0.028 in records 3001-3008 name their variables X048-X059; for
those files the single ``X0NN_DE_time`` with NN in 48-59 is taken (two or more such -> error).

Labels and rates come from CWRU's file numbering (``CWRU_TABLE``; the 12 kHz drive-end fault records
and the 48 kHz normal baseline), or from ``labels.csv`` (``file,label[,rate_hz]``, label one of
``CLASS_NAMES``), which overrides the table and covers other numberings; a csv row without a rate
means the table's rate for that file, else 12 kHz. Signals sampled at q x 12 kHz (the 48 kHz baseline:
q = 4) are decimated with a zero-phase FIR anti-alias filter (``scipy.signal.decimate``) first.

Groups (``group_by``): ``block`` (default) cuts every recording into B = ``blocks_per_recording``
contiguous blocks of floor(n / B) samples (B lowered to the recording's window count when it is
shorter than B windows) and windows (non-overlapping, 1024 samples) inside each
block, so no window crosses a block boundary and a block is the split unit: test windows then come
from other time blocks of recordings the device also trains on (the only way a single healthy
recording, 97.mat in the public copies, can reach test splits). ``recording`` makes a whole recording
the unit (the strict choice: test recordings are never seen in training). ``public_fraction`` of each
class's groups (``fleet.public_groups``) form the public pool; the rest are dealt to devices by
``fleet.deal_devices`` (at least two groups per device and class it holds; draws repeated until every
device holds ``min_device_samples`` windows of two classes). Decoded recordings are cached per file
(``cache.cached``: SHA-256 of the file and ``CWRU_LOADER_VERSION``).
"""
from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np

from .fleet import DataError, Fleet, Pool, assign_groups, label_skew
from .mechanical import CHANNEL_SCALE, CHANNELS, CLASS_NAMES, LOAD_RPM, SAMPLE_RATE_HZ, WINDOW

TARGET_RATE_HZ = int(SAMPLE_RATE_HZ)
MAX_DRAWS = 50
MIN_DEVICE_RECORDINGS = 2
CWRU_LOADER_VERSION = 3
BLOCKS_PER_RECORDING = 8


def _build_table() -> dict[int, dict]:
    """CWRU Bearing Data Center numbering (drive-end bearing 6205; loads 0/1/2/3 hp in that order).

    normal baseline, 48 kHz: 97-100. 12 kHz drive-end faults:
      inner race  0.007: 105-108  0.014: 169-172  0.021: 209-212  0.028: 3001-3004
      ball        0.007: 118-121  0.014: 185-188  0.021: 222-225  0.028: 3005-3008
      outer @6:00 0.007: 130-133  0.014: 197-200  0.021: 234-237
      outer @3:00 0.007: 144-147                  0.021: 246-249
      outer @12:00 0.007: 156, 158, 159, 160      0.021: 258-261
    Anything else needs a labels.csv row."""
    rows = [("normal", 48000, None, None, [97, 98, 99, 100]),
            ("inner_race", 12000, 0.007, None, [105, 106, 107, 108]),
            ("inner_race", 12000, 0.014, None, [169, 170, 171, 172]),
            ("inner_race", 12000, 0.021, None, [209, 210, 211, 212]),
            ("inner_race", 12000, 0.028, None, [3001, 3002, 3003, 3004]),
            ("ball", 12000, 0.007, None, [118, 119, 120, 121]),
            ("ball", 12000, 0.014, None, [185, 186, 187, 188]),
            ("ball", 12000, 0.021, None, [222, 223, 224, 225]),
            ("ball", 12000, 0.028, None, [3005, 3006, 3007, 3008]),
            ("outer_race", 12000, 0.007, "6:00", [130, 131, 132, 133]),
            ("outer_race", 12000, 0.014, "6:00", [197, 198, 199, 200]),
            ("outer_race", 12000, 0.021, "6:00", [234, 235, 236, 237]),
            ("outer_race", 12000, 0.007, "3:00", [144, 145, 146, 147]),
            ("outer_race", 12000, 0.021, "3:00", [246, 247, 248, 249]),
            ("outer_race", 12000, 0.007, "12:00", [156, 158, 159, 160]),
            ("outer_race", 12000, 0.021, "12:00", [258, 259, 260, 261])]
    table = {}
    for label, rate, size, pos, nums in rows:
        for load, num in enumerate(nums):
            table[num] = {"label": label, "rate_hz": rate, "load_hp": load, "rpm_nominal": LOAD_RPM[load],
                          "fault_size_in": size, "or_position": pos}
    return table


CWRU_TABLE = _build_table()
ALIASED_028 = range(3001, 3009)          # records whose variables are numbered X048-X059

_DE = re.compile(r"^X(\d+)_DE_time$")
_RPM = re.compile(r"^X(\d+)RPM$")


def read_labels_csv(path: Path) -> dict[int, dict]:
    """``file,label[,rate_hz]`` rows -> {record number (for ``<n>.mat`` or ``<n>``) or the lower-case
    file name / relative path as written (any other name): {"label", "rate_hz" (or None)}}."""
    try:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"cannot read labels file {path}: {e}") from None
    if not rows or not {"file", "label"} <= {(k or "").strip().lower() for k in rows[0]}:
        raise DataError(f"labels file {path} needs a header with columns file,label (optionally rate_hz)")
    out = {}
    for r in rows:
        r = {(k or "").strip().lower(): (v or "").strip() for k, v in r.items()}
        stem = Path(r["file"]).stem if r["file"].lower().endswith(".mat") else r["file"]
        if not r["file"]:
            raise DataError(f"labels file {path}: a row has an empty file name")
        label = r["label"].lower()
        if label not in CLASS_NAMES:
            raise DataError(f"labels file {path}: file {r['file']} has unknown label {r['label']!r}; "
                            f"use one of {', '.join(CLASS_NAMES)}")
        rate = None
        if r.get("rate_hz"):
            try:
                rate = int(round(float(r["rate_hz"])))
            except ValueError:
                raise DataError(f"labels file {path}: file {r['file']} has a bad rate_hz {r['rate_hz']!r}") from None
        key = int(stem) if stem.isdigit() else r["file"].replace("\\", "/").lower()
        out[key] = {"label": label, "rate_hz": rate}
    return out


def pick_de_variable(mat: dict, number: int, fname: str) -> tuple[str, np.ndarray, float | None]:
    """(name, signal, rpm or None) of record ``number``'s drive-end channel in a loaded .mat dict."""
    de = {int(m.group(1)): k for k in mat if (m := _DE.match(k))}
    rpms = {int(m.group(1)): k for k in mat if (m := _RPM.match(k))}
    num = number
    if number not in de and number in ALIASED_028:
        cand = [n for n in de if 48 <= n <= 59]
        if len(cand) > 1:
            raise DataError(f"{fname}: several drive-end variables of the X048-X059 range "
                            f"({', '.join(de[n] for n in sorted(cand))}); cannot tell which is this record")
        if cand:
            num = cand[0]
    if num not in de:
        found = ", ".join(sorted(de.values())) or "none"
        raise DataError(f"{fname}: no drive-end variable X{number:03d}_DE_time for this record "
                        f"(drive-end variables found: {found})")
    try:
        sig = np.asarray(mat[de[num]]).ravel()
        if sig.dtype not in (np.float32, np.float64):
            sig = sig.astype(np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{fname}: variable {de[num]} is not numeric") from None
    if sig.size == 0 or not np.all(np.isfinite(sig)):
        raise DataError(f"{fname}: variable {de[num]} is empty or holds non-finite values")
    rpm = None
    if num in rpms:
        try:
            rpm = float(np.asarray(mat[rpms[num]], dtype=np.float64).ravel()[0])
        except (TypeError, ValueError, IndexError):
            rpm = None
    return de[num], sig, rpm


def to_target_rate(sig: np.ndarray, rate_hz: int, fname: str) -> np.ndarray:
    """Resample a record to 12 kHz: integer factor q = rate / 12000, anti-aliased zero-phase FIR
    decimation, one stage per factor of q (factors 8 down to 2 first)."""
    from scipy.signal import decimate

    if rate_hz == TARGET_RATE_HZ:
        return sig
    sig = np.asarray(sig, dtype=np.float64)
    if rate_hz < TARGET_RATE_HZ or rate_hz % TARGET_RATE_HZ:
        raise DataError(f"{fname}: sample rate {rate_hz} Hz is not an integer multiple of {TARGET_RATE_HZ} Hz")
    q = rate_hz // TARGET_RATE_HZ
    stages = []
    for f in range(8, 1, -1):
        while q % f == 0:
            stages.append(f)
            q //= f
    if q > 1:
        stages.append(q)                      # a prime factor above 8
    for f in stages:
        if len(sig) <= 20 * f + 1:
            raise DataError(f"{fname}: recording too short ({len(sig)} samples) to decimate")
        sig = decimate(sig, f, ftype="fir", zero_phase=True)
    return sig


def windows_of(sig: np.ndarray, length: int = WINDOW) -> np.ndarray:
    """Non-overlapping windows (n, length) of a 1-D signal; the incomplete tail is dropped."""
    n = len(sig) // length
    return sig[: n * length].reshape(n, length)


def _decode_mat(path: Path) -> dict:
    """The variable names, every drive-end channel (as float32, the trainer's precision; non-finite
    values are kept as float64 so ``pick_de_variable`` can name them) and every RPM of a .mat file."""
    from scipy.io import loadmat

    try:
        mat = loadmat(str(path))
    except Exception as e:  # scipy raises many types for corrupt / non-MATLAB / v7.3 files
        raise DataError(f"{path.name}: cannot read as a MATLAB .mat file ({type(e).__name__}: {e})") from None
    out = {"names": np.array(sorted(k for k in mat if not k.startswith("__")), dtype=str)}
    for k, v in mat.items():
        if _DE.match(k) or _RPM.match(k):
            try:
                out[k] = np.asarray(v, dtype=np.float64).ravel()
            except (TypeError, ValueError):
                out[k] = np.array([np.nan])
            if _DE.match(k) and np.all(np.isfinite(out[k])):
                out[k] = out[k].astype(np.float32)      # the precision the trainer keeps (see load_cwru)
    return out


def _fe_folder(rel: Path) -> bool:
    return any(re.search(r"(^|[^a-z])fe([^a-z]|$)|fan", part.lower()) for part in rel.parts[:-1])


def _48k_folder(rel: Path) -> bool:
    return any("48k" in part.lower() for part in rel.parts[:-1])


def record_number(rel: Path, names, table=CWRU_TABLE) -> int | None:
    """Record number of a file: its stem when that is an integer; else the single ``X<n>_DE_time``
    inside; with several, the one whose table load equals the stem's ``_<load>`` suffix. None when
    the file holds no drive-end variable. DataError when several remain. ``IR028_<load>.mat`` /
    ``B028_<load>.mat`` holding one of X048-X059 are records 3001-3004 / 3005-3008."""
    if rel.stem.isdigit():
        return int(rel.stem)
    nums = sorted({int(m.group(1)) for k in names if (m := _DE.match(str(k)))})
    if not nums:
        return None
    m028 = re.match(r"^(IR|B)028_(\d)$", rel.stem, re.IGNORECASE)
    if m028 and len(nums) == 1 and 48 <= nums[0] <= 59:
        # the 0.028 in records 3001-3008 carry variables X048-X059; the public copies name them
        # IR028_<load>.mat / B028_<load>.mat
        return (3001 if m028.group(1).upper() == "IR" else 3005) + int(m028.group(2))
    if len(nums) == 1:
        return nums[0]
    m = re.search(r"_(\d)$", rel.stem)
    if m:
        fit = [n for n in nums if table.get(n, {}).get("load_hp") == int(m.group(1))]
        if len(fit) == 1:
            return fit[0]
    raise DataError(f"{rel}: holds drive-end variables of records {', '.join(map(str, nums))}; cannot tell "
                    "which record the file is (rename it <number>.mat)")


def skipped_line(skipped: list[tuple[str, str]]) -> str:
    """One line naming what was skipped and why: 'skipped N file(s): reason: a, b; reason: c'."""
    if not skipped:
        return ""
    by: dict[str, list[str]] = {}
    for f, why in skipped:
        by.setdefault(why, []).append(f)
    parts = []
    for why, files in by.items():
        shown = ", ".join(files[:6]) + (f" and {len(files) - 6} more" if len(files) > 6 else "")
        parts.append(f"{why} ({len(files)}): {shown}")
    return f"skipped {len(skipped)} file(s): " + "; ".join(parts)


def load_cwru(folder, n_devices: int = 4, alpha: float = 0.5, seed: int = 0, public_fraction: float = 0.2,
              labels_csv=None, group_by: str = "block", blocks_per_recording: int = BLOCKS_PER_RECORDING,
              min_device_samples: int = 2, cache: bool = True) -> Fleet:
    """Fleet from a folder tree of CWRU ``.mat`` records (see the module doc for names, labels, rates,
    groups and splits)."""
    from .blocks import blocked_windows, equal_blocks
    from .cache import cached
    from .fleet import TooLittleData, deal_devices, public_groups

    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder} is not a folder of CWRU .mat files")
    if n_devices < 1:
        raise DataError("need at least one device")
    if not 0.0 <= public_fraction < 1.0:
        raise DataError(f"--public-fraction must lie in [0, 1), got {public_fraction}")
    if group_by not in ("block", "recording"):
        raise DataError(f"unknown --group-by {group_by!r}; choose block or recording")
    if blocks_per_recording < 1:
        raise DataError(f"--blocks-per-recording must be at least 1, got {blocks_per_recording}")
    files = sorted((p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() == ".mat"),
                   key=lambda p: str(p.relative_to(folder)))
    if not files:
        raise DataError(f"{folder} holds no .mat files (searched its subfolders too)")
    csv_path = Path(labels_csv) if labels_csv is not None else folder / "labels.csv"
    if labels_csv is not None and not csv_path.is_file():
        raise DataError(f"labels file {csv_path} does not exist")
    overrides = read_labels_csv(csv_path) if csv_path.is_file() else {}

    import time

    recs, skipped, seen = [], [], {}
    t_decode = 0.0
    for path in files:
        rel = path.relative_to(folder)
        fname = str(rel)
        if _fe_folder(rel):
            skipped.append((fname, "fan-end"))
            continue
        t0 = time.perf_counter()
        dec = cached(path, "cwru-mat", CWRU_LOADER_VERSION, lambda: _decode_mat(path), enabled=cache)
        t_decode += time.perf_counter() - t0
        number = record_number(rel, [str(n) for n in dec["names"]])
        if number is None:
            raise DataError(f"{fname}: no drive-end variable X<nnn>_DE_time in the file "
                            f"(variables: {', '.join(str(n) for n in dec['names'][:8]) or 'none'})")
        meta = dict(CWRU_TABLE.get(number, {}))
        ov = overrides.get(number) or overrides.get(fname.replace("\\", "/").lower()) or overrides.get(rel.name.lower())
        if ov is not None:
            rate = ov["rate_hz"] or meta.get("rate_hz", TARGET_RATE_HZ)
            meta.update(label=ov["label"], rate_hz=rate, label_source="labels.csv")
        elif meta:
            meta["label_source"] = "cwru_table"
        elif _48k_folder(rel):
            skipped.append((fname, "48 kHz drive-end fault record"))
            continue
        else:
            skipped.append((fname, f"record number not in the CWRU 12 kHz drive-end table (label it in "
                                   f"labels.csv: file,label with label one of {'/'.join(CLASS_NAMES)})"))
            continue
        if _48k_folder(rel) and meta.get("label") != "normal" and meta.get("label_source") == "cwru_table":
            skipped.append((fname, "48 kHz drive-end fault record"))
            continue
        if number in seen:
            raise DataError(f"record {number} appears twice: {seen[number]} and {fname}; keep one of them")
        seen[number] = fname
        mat = {str(k): dec[str(k)] for k in dec if str(k) != "names"}
        var, sig, rpm = pick_de_variable(mat, number, fname)
        rate_hz = int(meta["rate_hz"])
        if rate_hz != TARGET_RATE_HZ:
            t0 = time.perf_counter()
            sig = cached(path, f"cwru-{var}-{rate_hz}", CWRU_LOADER_VERSION,
                         lambda: {"x": to_target_rate(sig, rate_hz, fname).astype(np.float32)},
                         enabled=cache)["x"]
            t_decode += time.perf_counter() - t0
        n_win = len(sig) // WINDOW
        if n_win == 0:
            raise DataError(f"{fname}: {len(sig)} samples at {TARGET_RATE_HZ} Hz is shorter than one "
                            f"{WINDOW}-sample window")
        if group_by == "block":
            n_blk = min(blocks_per_recording, n_win)        # a short recording: one window per block
            blk = equal_blocks(len(sig), n_blk)
            starts, b = blocked_windows(0, blk * n_blk, blk, 0, WINDOW, WINDOW)
        else:
            starts = np.arange(n_win, dtype=np.int64) * WINDOW
            b = np.zeros(n_win, np.int64)
        recs.append({"file": fname, "number": number, "variable": var, "label": meta["label"],
                     "y": CLASS_NAMES.index(meta["label"]), "rate_hz": rate_hz,
                     "rpm": rpm if rpm is not None else meta.get("rpm_nominal"),
                     "rpm_source": "mat" if rpm is not None else ("nominal" if meta.get("rpm_nominal") else None),
                     "fault_size_in": meta.get("fault_size_in"), "or_position": meta.get("or_position"),
                     "label_source": meta["label_source"], "sig": sig, "starts": starts, "n": len(starts),
                     "groups": number * 1000 + b if group_by == "block" else np.full(len(starts), number),
                     "spans": np.stack([np.full(len(starts), number), starts, starts + WINDOW], axis=1)})
    if not recs:
        raise DataError(f"{folder}: no usable recording; {skipped_line(skipped)}")

    def pool(rs: list[dict], condition: dict) -> Pool:
        """Windows of the records ``rs`` (float32, (n, 1024, 1)) with labels, groups and spans."""
        x = np.concatenate([np.lib.stride_tricks.sliding_window_view(r["sig"], WINDOW)[r["starts"]]
                            for r in rs]).astype(np.float32, copy=False)
        return Pool(x[:, :, None], np.concatenate([np.full(r["n"], r["y"]) for r in rs]),
                    np.concatenate([r["groups"] for r in rs]), condition,
                    np.concatenate([r["spans"] for r in rs]))

    def summary(r: dict) -> dict:
        return {k: r[k] for k in ("file", "variable", "label", "rate_hz", "rpm", "rpm_source", "fault_size_in",
                                  "or_position", "label_source")} | {"windows": int(r["n"])}

    every = pool(recs, {})
    rng = np.random.default_rng([seed, 424243])
    pub_g = public_groups(every.y, every.groups, public_fraction, rng)
    if public_fraction > 0 and len(pub_g) == 0:
        raise TooLittleData(f"{folder} has too few recordings to hold out a public pool "
                            "(no class has two or more groups)")
    is_pub = np.isin(every.groups, pub_g)
    rest = np.flatnonzero(~is_pub)
    unit = "block" if group_by == "block" else "recording"
    try:
        P, idx = deal_devices(every.y[rest], every.groups[rest], n_devices, alpha, rng,
                              min_windows=min_device_samples)
    except TooLittleData as e:
        raise TooLittleData(f"{e}: the folder {folder} has {len(recs)} recordings ({len(np.unique(every.groups[rest]))} "
                            f"{unit}s for the devices after the public pool) for {n_devices} devices") from None

    by_number = {r["number"]: r for r in recs}
    devices = []
    for i, ix in enumerate(idx):
        sel = rest[ix]
        nums = sorted({int(v) for v in every.spans[sel, 0]})
        rs = [by_number[n] for n in nums]
        rpms = [r["rpm"] for r in rs if r["rpm"] is not None]
        cond = {"device": i, "source": "cwru", "files": [r["file"] for r in rs],
                "rpm": float(np.mean(rpms)) if rpms else None,
                "rpm_values": sorted({float(v) for v in rpms}),
                "recordings": [summary(r) for r in rs]}
        d = every.take(sel)
        d.condition = cond
        devices.append(d)
    pub_sel = np.flatnonzero(is_pub)
    pub_nums = sorted({int(v) for v in every.spans[pub_sel, 0]})
    public = every.take(pub_sel)
    public.condition = {"source": "cwru_public", "files": [by_number[n]["file"] for n in pub_nums],
                        "recordings": [summary(by_number[n]) for n in pub_nums]}
    info = {"source": "cwru", "folder": str(folder), "recordings": len(recs),
            "public_files": [by_number[n]["file"] for n in pub_nums], "public_fraction": float(public_fraction),
            "group_by": group_by, "blocks_per_recording": int(blocks_per_recording) if group_by == "block" else None,
            "alpha": float(alpha), "seed": int(seed),
            "class_proportions": np.round(P, 4).tolist(), "window": WINDOW, "target_rate_hz": TARGET_RATE_HZ,
            "skipped": skipped_line(skipped), "skipped_files": [f for f, _ in skipped],
            "decode_seconds": round(t_decode, 4)}
    return Fleet(name="cwru", class_names=list(CLASS_NAMES), channel_names=list(CHANNELS),
                 sample_rate_hz=SAMPLE_RATE_HZ, channel_scale=CHANNEL_SCALE.copy(), public=public,
                 devices=devices, info=info)
