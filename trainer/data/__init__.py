"""Built-in fault data generators and loaders for the real public formats."""

from pathlib import Path

from .fleet import DataError, Fleet

BUILTIN = ("electrical", "mechanical")


def load_fleet(dataset: str, n_devices: int, alpha: float, seed: int, samples_per_device: int,
               public_samples: int, progress=None) -> Fleet:
    """``electrical`` / ``mechanical`` generate the built-in fleets (``progress()``, optional, is
    called after each generated device); a ``.csv`` path loads the electrical-fault CSV format; a
    folder loads CWRU ``.mat`` recordings."""
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
        from .electrical import load_csv
        return load_csv(path, n_devices=n_devices, alpha=alpha, seed=seed)
    if path.is_dir():
        from .cwru import load_cwru
        return load_cwru(path, n_devices=n_devices, alpha=alpha, seed=seed)
    if not path.exists():
        raise DataError(f"dataset {dataset!r} is neither built in ({', '.join(BUILTIN)}) nor an existing path")
    raise DataError(f"dataset {dataset!r}: give a classData-format .csv file or a folder of CWRU .mat files")
