"""Data preparation for a run: load (or generate) the fleet, scale it to model units, check and split
every device; and, when the data is too small for the options, find the option values that work.

``suggest`` tries single-option changes through the same loader and splitter (no training) and
returns only those under which preparation succeeds: fewer ``--devices`` (the largest that works of
n - 1, n - 2, n - 3, 3n/4, n/2, n/3, n/4, n/6, n/8, 4, 3, 2, 1), a
larger ``--alpha``, a smaller ``--min-device-samples``, and for real data smaller ``--block-ms`` /
``--public-fraction`` (CSV) or more ``--blocks-per-recording`` / ``--group-by block`` (CWRU); for
the built-in fleets a larger ``--samples-per-device``. Decoded files are cached, so each try costs
only the windowing and the dealing.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from .config import FEDERATED, TrainConfig
from .data import BUILTIN, load_fleet
from .data.fleet import DataError, Fleet, Pool, TooLittleData
from .splits import PARTS, DeviceSplits, check_device, split_device


def load(cfg: TrainConfig, progress=None) -> Fleet:
    """The fleet of ``cfg`` (``progress()`` after each generated built-in device); with
    ``cfg.public`` the fleet folder ``cfg.dataset`` (one device per folder, ``cfg.devices`` of them)."""
    if cfg.public:
        from .data import cache_enabled
        from .data.fleetdir import load_fleet_dir

        return load_fleet_dir(cfg, cache=cache_enabled())
    return load_fleet(cfg.dataset, n_devices=cfg.devices, alpha=cfg.alpha, seed=cfg.seed, progress=progress,
                      samples_per_device=cfg.samples_per_device, public_samples=cfg.public_samples,
                      public_fraction=cfg.public_fraction, window_ms=cfg.window_ms, hop_ms=cfg.hop_ms,
                      block_ms=cfg.block_ms, guard_ms=cfg.guard_ms, group_by=cfg.group_by,
                      blocks_per_recording=cfg.blocks_per_recording,
                      min_device_samples=cfg.min_device_samples)


def to_model_units(fleet: Fleet) -> Fleet:
    """x_m = clip(x / channel_scale, -1, 1): the front end's full scale (values beyond +-1 saturate,
    as an ADC does)."""
    scale = np.asarray(fleet.channel_scale, dtype=np.float32)

    def conv(p: Pool) -> Pool:
        return Pool(np.clip(p.x / scale, -1.0, 1.0), p.y, p.groups, p.condition, p.spans)

    fleet.public = conv(fleet.public)
    fleet.devices = [conv(p) for p in fleet.devices]
    return fleet


def split_all(cfg: TrainConfig, fleet: Fleet, on_device=None) -> list[DeviceSplits]:
    """Check and split every device; TooLittleData when a split the method needs is empty.
    ``on_device()`` (optional) is called after each device, for progress display."""
    splits = []
    for i, pool in enumerate(fleet.devices):
        splits.append(split_one(cfg, pool, i))
        if on_device is not None:
            on_device()
    return splits


def site_data(cfg: TrainConfig, folder, device: int):
    """What the site of device ``device`` holds in a fleet-folder run: its own folder's windows
    (``fleetdir.load_device``), in model units, split (``split_one``) and sign-augmented exactly as
    ``load_and_split`` does it for the whole fleet. Reads no other folder."""
    from .client import SiteData
    from .data import cache_enabled
    from .data.fleetdir import load_device
    from .model import ModelSpec

    if cfg.faulty:
        raise DataError("--faulty devices are an in-process experiment; a site holds real data")
    pool = load_device(cfg, folder, cache=cache_enabled())
    scale = np.asarray(cfg.channel_scale, np.float32)
    pool = Pool(np.clip(pool.x / scale, -1.0, 1.0), pool.y, pool.groups, pool.condition, pool.spans)
    s = split_one(cfg, pool, device)
    if cfg.negate_augment and cfg.sign_symmetric:
        for name in TRAINING_PARTS:
            setattr(s, name, with_negated(getattr(s, name)))
    k = len(cfg.class_names)
    return SiteData(device=device, splits=s, spec=ModelSpec(tuple(pool.x.shape[1:]), k),
                    class_names=list(cfg.class_names), channel_names=list(cfg.channels),
                    channel_scale=[float(v) for v in scale], condition=pool.condition,
                    class_counts=np.bincount(pool.y, minlength=k).tolist())


def split_one(cfg: TrainConfig, pool: Pool, i: int) -> DeviceSplits:
    """Check and split device ``i``'s pool (``splits.split_device``); TooLittleData when a split the
    method needs is empty."""
    check_device(pool, i, cfg.min_device_samples)
    s = split_device(pool, cfg.test_fraction, cfg.splits, cfg.phase2_val_fraction,
                     cfg.phase3_val_fraction, cfg.seed, i)
    needed = ["test"]
    if cfg.method in FEDERATED:
        needed += ["phase2_train", "phase2_val"]      # p_k and the per-round accuracy
        if cfg.personalize:
            needed += ["phase3_tune", "phase3_val"]   # head fine-tuning and the threshold
    for name in needed:
        if len(getattr(s, name)) == 0:
            raise TooLittleData(f"device {i} has no windows left for its {name} split ({len(pool)} "
                                f"windows in {len(np.unique(pool.groups))} groups)")
    return s


TRAINING_PARTS = ("phase1", "phase2_train", "phase3_tune")


def with_negated(p: Pool) -> Pool:
    """The pool followed by the negation of every window (same label, group and span)."""
    if len(p) == 0:
        return p
    return Pool(np.concatenate([p.x, -p.x]), np.concatenate([p.y, p.y]), np.concatenate([p.groups, p.groups]),
                p.condition, None if p.spans is None else np.concatenate([p.spans, p.spans]))


def negate_augment(fleet: Fleet, splits: list[DeviceSplits]) -> None:
    """Sign augmentation of the real electrical CSV (in place): the public pool and every device's
    training parts (``TRAINING_PARTS``) get the negation of each window; test and validation parts
    stay the file's own windows. The network is linear and the sources sinusoidal, so a fault incepted
    at angle alpha + pi produces exactly -x(t) (currents, line voltages and the decaying DC term alike):
    the negated window is the same event half a cycle later, a label-preserving symmetry. It doubles
    the phase coverage of the few time blocks a class has (a 12.5 ms block spans only 2.5 ms of window
    starts), without which a convolutional model learns the phases it saw rather than the fault."""
    fleet.public = with_negated(fleet.public)
    for s in splits:
        for name in TRAINING_PARTS:
            setattr(s, name, with_negated(getattr(s, name)))


def augments(cfg: TrainConfig, fleet: Fleet) -> bool:
    """Whether this run sign-augments its training windows (``negate_augment``: the real CSV, and a
    fleet folder whose fleet.toml says ``sign_symmetric = true``)."""
    return bool(cfg.negate_augment and (fleet.info.get("loader") in ("classData.csv", "detect_dataset.csv")
                                        or fleet.info.get("sign_symmetric")))


def frontend_pool(kind: str, p: Pool, keep_raw: bool = False) -> Pool:
    """``p`` with x replaced by the front end's model input z (n, 1, F) (``fedtiny.frontend``);
    ``keep_raw`` keeps the int16 samples it came from (``Pool.raw``: the test windows, which the
    firmware carries)."""
    from fedtiny import frontend

    _, t, c = p.x.shape
    s16 = frontend.to_int16(p.x)
    z = frontend.scale(kind, frontend.compute_int(kind, s16), t, c) if len(p) else \
        np.zeros((0, frontend.n_features(kind, t, c)), np.float32)
    return Pool(z[:, None, :], p.y, p.groups, p.condition, p.spans, s16 if keep_raw else None)


def apply_frontend(cfg: TrainConfig, fleet: Fleet, splits: list[DeviceSplits] | None = None) -> None:
    """Replace every window by the front end's output (in place; nothing for ``--frontend raw``)
    after scaling, splitting and augmenting, so that splits and groups are those of the raw windows;
    ``fleet.info["frontend"]`` describes it (``frontend.describe``, recorded in device.json).
    A window the front end cannot handle (e.g. a spectrum of a 1-sample window) is a DataError."""
    from fedtiny import frontend

    _, t, c = fleet.public.x.shape
    try:
        info = frontend.describe(cfg.frontend, t, c, fleet.sample_rate_hz)
    except frontend.FrontendError as e:
        raise DataError(str(e)) from None
    fleet.info["frontend"] = info
    if cfg.frontend == "raw":
        return
    fleet.public = frontend_pool(cfg.frontend, fleet.public)
    fleet.devices = [frontend_pool(cfg.frontend, p) for p in fleet.devices]
    for s in splits or []:
        for name in PARTS:
            setattr(s, name, frontend_pool(cfg.frontend, getattr(s, name), keep_raw=name == "test"))


def public_pool(cfg: TrainConfig) -> Fleet:
    """The fleet as the server may hold it: the public pool in model units (sign-augmented as
    ``load_and_split`` augments it) and no device windows (they are dropped at once)."""
    if cfg.public:                 # a fleet-folder run: the server has no device folder at all
        from .data import cache_enabled
        from .data.fleetdir import load_public

        fleet = load_public(cfg, cache=cache_enabled())
    else:
        fleet = load(cfg)
        fleet.devices = []
    fleet = to_model_units(fleet)
    if augments(cfg, fleet):
        fleet.public = with_negated(fleet.public)
    apply_frontend(cfg, fleet)
    return fleet


def load_and_split(cfg: TrainConfig, on_device=None, on_start=None) -> tuple[Fleet, list[DeviceSplits]]:
    """Load, scale and split; ``on_start(label, n)`` / ``on_device()`` report the generation of
    built-in devices and the splitting."""
    generated = on_start is not None and cfg.dataset in BUILTIN
    if generated:
        on_start("Generating device data", cfg.devices)
    fleet = to_model_units(load(cfg, on_device if generated else None))
    if on_start is not None:
        on_start("Splitting device data", len(fleet.devices))
    splits = split_all(cfg, fleet, on_device)
    if augments(cfg, fleet):
        negate_augment(fleet, splits)
        fleet.info["negate_augment"] = True
    apply_frontend(cfg, fleet, splits)
    return fleet, splits


def works(cfg: TrainConfig) -> bool:
    try:
        load_and_split(cfg)
        return True
    except DataError:
        return False


def _fmt(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def suggest(cfg: TrainConfig) -> list[str]:
    """Single-option changes ("--devices 2") under which ``load_and_split`` succeeds (see module doc)."""
    out = []
    if cfg.public:          # a fleet folder's devices and windows are the user's, not dealt
        return out

    def first(option: str, field: str, values) -> None:
        for v in values:
            try:
                c = replace(cfg, **{field: v})
            except DataError:
                continue
            if works(c):
                out.append(f"--{option} {_fmt(v)}")
                return

    if cfg.devices > 1:
        n = cfg.devices
        cand = [n - 1, n - 2, n - 3, n * 3 // 4, n // 2, n // 3, n // 4, n // 6, n // 8, 4, 3, 2, 1]
        first("devices", "devices", sorted({c for c in cand if 0 < c < n}, reverse=True))
    first("alpha", "alpha", [a for a in (1.0, 2.0, 5.0, 10.0, 100.0) if a > cfg.alpha])
    first("min-device-samples", "min_device_samples",
          [m for m in (10, 5, 2) if m < cfg.min_device_samples])
    if cfg.dataset in BUILTIN:
        first("samples-per-device", "samples_per_device",
              [s for s in (800, 1600, 3200) if s > cfg.samples_per_device])
    elif cfg.dataset.lower().endswith(".csv"):
        first("block-ms", "block_ms", [b for b in (11.0, 10.0) if cfg.window_ms <= b < cfg.block_ms])
        first("public-fraction", "public_fraction", [p for p in (0.1, 0.05) if p < cfg.public_fraction])
    else:
        if cfg.group_by == "recording":
            first("group-by", "group_by", ["block"])
        else:
            first("blocks-per-recording", "blocks_per_recording",
                  [b for b in (12, 16, 24, 32) if b > cfg.blocks_per_recording])
        first("public-fraction", "public_fraction", [p for p in (0.1, 0.05) if p < cfg.public_fraction])
    return out


def prepare_data(cfg: TrainConfig, on_device=None, on_start=None) -> tuple[Fleet, list[DeviceSplits]]:
    """``load_and_split``; a TooLittleData error is extended with the option values that would make
    this run work (``suggest``), or says that no single option change does."""
    try:
        return load_and_split(cfg, on_device, on_start)
    except TooLittleData as e:
        msg = str(e).strip().splitlines()[0]
        fixes = suggest(cfg)
        if fixes:
            msg += "; it runs with " + ", or ".join(fixes)
        elif cfg.public:
            msg += "; record more of it, or lower --min-device-samples / --block-ms"
        else:
            msg += ("; no single change of --devices, --alpha, --min-device-samples"
                    + (" or --samples-per-device" if cfg.dataset in BUILTIN else
                       ", the blocks or --public-fraction") + " makes it run: the data is too small for this fleet")
        raise TooLittleData(msg) from None
