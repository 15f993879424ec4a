"""Built-in fault data generators and loaders for the real public formats."""

import os
from pathlib import Path

from .fleet import DataError, Fleet

BUILTIN = ("electrical", "mechanical")


def cache_enabled() -> bool:
    """False when ``FEDTINY_NO_CACHE`` is set to a non-empty value other than 0 (``--no-cache``)."""
    return os.environ.get("FEDTINY_NO_CACHE", "") in ("", "0")


def load_fleet(dataset: str, n_devices: int, alpha: float, seed: int, samples_per_device: int,
               public_samples: int, *, public_fraction: float = 0.2, window_ms: float = 10.0,
               hop_ms: float | None = None, block_ms: float = 12.5, guard_ms: float = 0.5,
               group_by: str = "block", blocks_per_recording: int = 8, min_device_samples: int = 2,
               cache: bool | None = None, progress=None) -> Fleet:
    """``electrical`` / ``mechanical`` generate the built-in fleets (``samples_per_device``,
    ``public_samples``); a ``.csv`` path loads either public electrical-fault CSV form (``window_ms``,
    ``hop_ms``, ``block_ms``, ``guard_ms``, ``public_fraction``); a folder loads CWRU ``.mat``
    recordings, searched recursively (``group_by``, ``blocks_per_recording``, ``public_fraction``).
    Real-data loaders deal groups so that every device gets ``min_device_samples`` windows.
    ``progress()`` (optional) is called after each generated built-in device.
    ``cache`` None: ``cache_enabled()``."""
    cache = cache_enabled() if cache is None else cache
    if dataset == "electrical":
        from .electrical import generate
        return generate(n_devices=n_devices, alpha=alpha, seed=seed,
                        samples_per_device=samples_per_device, public_samples=public_samples,
                        progress=progress)
    if dataset == "mechanical":
        from .mechanical import generate
        return generate(n_devices=n_devices, alpha=alpha, seed=seed,
                        samples_per_device=samples_per_device, public_samples=public_samples,
                        progress=progress)
    path = Path(dataset)
    if path.is_file() and path.suffix.lower() == ".csv":
        if group_by != "block":
            raise DataError(f"--group-by {group_by} does not apply to a CSV file (one simulation, no "
                            "recordings): its groups are time blocks (--block-ms)")
        from .electrical import load_csv
        return load_csv(path, n_devices=n_devices, alpha=alpha, seed=seed, public_fraction=public_fraction,
                        window_ms=window_ms, hop_ms=hop_ms, block_ms=block_ms, guard_ms=guard_ms,
                        min_device_samples=min_device_samples, cache=cache)
    if path.is_dir():
        from .cwru import load_cwru
        return load_cwru(path, n_devices=n_devices, alpha=alpha, seed=seed, public_fraction=public_fraction,
                         group_by=group_by, blocks_per_recording=blocks_per_recording,
                         min_device_samples=min_device_samples, cache=cache)
    if not path.exists():
        raise DataError(f"dataset {dataset!r} is neither built in ({', '.join(BUILTIN)}) nor an existing path")
    raise DataError(f"dataset {dataset!r}: give a classData-format .csv file or a folder of CWRU .mat files")
