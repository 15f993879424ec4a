"""Loader for a folder of Case Western Reserve University (CWRU) bearing records (``NNN.mat``).

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

Windows are non-overlapping runs of 1024 samples (the tail is dropped). A recording is one group (its
file number), so no split ever puts windows of one file on both sides. ``public_fraction`` of the
recordings of each class (at least one when the class has two or more) form the public pool; the
others are dealt to devices with ``label_skew`` + ``assign_groups``. If a Dirichlet draw leaves a
device with fewer than two recordings or a single class, further draws from the same seeded generator
are tried (at most ``MAX_DRAWS``); then the loader gives up with a DataError.
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
    """``file,label[,rate_hz]`` rows -> {record number: {"label", "rate_hz" (or None)}}."""
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
        if not stem.isdigit():
            raise DataError(f"labels file {path}: file {r['file']!r} is not a CWRU record name like 105.mat")
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
        out[int(stem)] = {"label": label, "rate_hz": rate}
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
        sig = np.asarray(mat[de[num]], dtype=np.float64).ravel()
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


def load_cwru(folder, n_devices: int = 4, alpha: float = 0.5, seed: int = 0, public_fraction: float = 0.2,
              labels_csv=None) -> Fleet:
    """Fleet from a folder of CWRU ``.mat`` records (see the module doc for labels, rates, splits)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder} is not a folder of CWRU .mat files")
    if n_devices < 1:
        raise DataError("need at least one device")
    if not 0.0 <= public_fraction < 1.0:
        raise DataError(f"public_fraction must lie in [0, 1), got {public_fraction}")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".mat")
    if not files:
        raise DataError(f"{folder} holds no .mat files")
    csv_path = Path(labels_csv) if labels_csv is not None else folder / "labels.csv"
    if labels_csv is not None and not csv_path.is_file():
        raise DataError(f"labels file {csv_path} does not exist")
    overrides = read_labels_csv(csv_path) if csv_path.is_file() else {}

    from scipy.io import loadmat

    recs = []
    for path in files:
        fname = path.name
        if not path.stem.isdigit():
            raise DataError(f"{fname}: not a CWRU record name (expected <number>.mat)")
        number = int(path.stem)
        meta = dict(CWRU_TABLE.get(number, {}))
        if number in overrides:
            ov = overrides[number]
            rate = ov["rate_hz"] or meta.get("rate_hz", TARGET_RATE_HZ)
            meta.update(label=ov["label"], rate_hz=rate, label_source="labels.csv")
        elif meta:
            meta["label_source"] = "cwru_table"
        else:
            raise DataError(f"{fname}: no known label for record {number} (not in the CWRU drive-end table); "
                            f"add a row '{fname},<label>' to labels.csv with label one of {', '.join(CLASS_NAMES)}")
        try:
            mat = loadmat(str(path))
        except Exception as e:  # scipy raises many types for corrupt / non-MATLAB / v7.3 files
            raise DataError(f"{fname}: cannot read as a MATLAB .mat file ({type(e).__name__}: {e})") from None
        var, sig, rpm = pick_de_variable(mat, number, fname)
        sig = to_target_rate(sig, int(meta["rate_hz"]), fname)
        w = windows_of(sig)
        if len(w) == 0:
            raise DataError(f"{fname}: {len(sig)} samples at {TARGET_RATE_HZ} Hz is shorter than one "
                            f"{WINDOW}-sample window")
        recs.append({"file": fname, "number": number, "variable": var, "label": meta["label"],
                     "y": CLASS_NAMES.index(meta["label"]), "rate_hz": int(meta["rate_hz"]),
                     "rpm": rpm if rpm is not None else meta.get("rpm_nominal"),
                     "rpm_source": "mat" if rpm is not None else ("nominal" if meta.get("rpm_nominal") else None),
                     "fault_size_in": meta.get("fault_size_in"), "or_position": meta.get("or_position"),
                     "label_source": meta["label_source"], "x": w.astype(np.float32)})

    rng = np.random.default_rng([seed, 424243])
    # public pool: a share of every class's recordings
    public_ids: set[int] = set()
    for k in range(len(CLASS_NAMES)):
        nums = sorted(r["number"] for r in recs if r["y"] == k)
        if len(nums) < 2 or public_fraction <= 0:
            continue
        n_pub = min(len(nums) - 1, max(1, int(round(public_fraction * len(nums)))))
        public_ids.update(int(v) for v in rng.permutation(nums)[:n_pub])
    if public_fraction > 0 and not public_ids:
        raise DataError(f"{folder} has too few recordings to hold out a public pool "
                        "(no class has two or more recordings)")

    def pool(rs: list[dict], condition: dict) -> Pool:
        if not rs:
            return Pool(np.zeros((0, WINDOW, 1), np.float32), np.zeros(0), np.zeros(0), condition)
        return Pool(np.concatenate([r["x"] for r in rs])[:, :, None],
                    np.concatenate([np.full(len(r["x"]), r["y"]) for r in rs]),
                    np.concatenate([np.full(len(r["x"]), r["number"]) for r in rs]), condition)

    def summary(r: dict) -> dict:
        return {k: r[k] for k in ("file", "variable", "label", "rate_hz", "rpm", "rpm_source", "fault_size_in",
                                  "or_position", "label_source")} | {"windows": int(len(r["x"]))}

    pub_recs = [r for r in recs if r["number"] in public_ids]
    dev_recs = [r for r in recs if r["number"] not in public_ids]
    too_few = (f"the folder {folder} has too few recordings ({len(dev_recs)} left for devices after "
               f"{len(pub_recs)} public) for {n_devices} devices; each device needs at least "
               f"{MIN_DEVICE_RECORDINGS} recordings of two classes")
    if len(dev_recs) < MIN_DEVICE_RECORDINGS * n_devices:
        raise DataError(too_few)
    dev_pool = pool(dev_recs, {})
    by_number = {r["number"]: r for r in dev_recs}
    parts = None
    problem = ""
    for _ in range(MAX_DRAWS):
        P = label_skew(n_devices, len(CLASS_NAMES), alpha, rng)
        idx = assign_groups(dev_pool.y, dev_pool.groups, P, rng)
        problem = ""
        for i, ix in enumerate(idx):
            nrec = len(np.unique(dev_pool.groups[ix]))
            ncls = len(np.unique(dev_pool.y[ix]))
            if nrec < MIN_DEVICE_RECORDINGS or ncls < 2:
                problem = f"device {i} would get {nrec} recording(s) of {ncls} class(es)"
                break
        if not problem:
            parts = (P, idx)
            break
    if parts is None:
        raise DataError(f"{problem} in every one of {MAX_DRAWS} label-skew draws (alpha {alpha}): {too_few}")
    P, idx = parts

    devices = []
    for i, ix in enumerate(idx):
        nums = sorted(int(g) for g in np.unique(dev_pool.groups[ix]))
        rs = [by_number[n] for n in nums]
        rpms = [r["rpm"] for r in rs if r["rpm"] is not None]
        cond = {"device": i, "source": "cwru", "files": [r["file"] for r in rs],
                "rpm": float(np.mean(rpms)) if rpms else None,
                "rpm_values": sorted({float(v) for v in rpms}),
                "recordings": [summary(r) for r in rs]}
        devices.append(pool(rs, cond))
    public = pool(pub_recs, {"source": "cwru_public", "files": [r["file"] for r in pub_recs],
                             "recordings": [summary(r) for r in pub_recs]})
    info = {"source": "cwru", "folder": str(folder), "recordings": len(recs),
            "public_files": [r["file"] for r in pub_recs], "public_fraction": float(public_fraction),
            "labels_csv": str(csv_path) if overrides else None, "alpha": float(alpha), "seed": int(seed),
            "class_proportions": np.round(P, 4).tolist(), "window": WINDOW, "target_rate_hz": TARGET_RATE_HZ}
    return Fleet(name="cwru", class_names=list(CLASS_NAMES), channel_names=list(CHANNELS),
                 sample_rate_hz=SAMPLE_RATE_HZ, channel_scale=CHANNEL_SCALE.copy(), public=public,
                 devices=devices, info=info)
