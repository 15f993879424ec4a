"""Shared fixtures: small but real training runs, made once per test session."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# decoded real-data files are cached per test session, never in the user's ~/.cache
os.environ.setdefault("FEDTINY_CACHE", tempfile.mkdtemp(prefix="fedtiny-test-cache-"))

SMALL = dict(devices=3, samples_per_device=160, public_samples=300, rounds=2, phase0_epochs=5,
             phase3_epochs=5, reference_epochs=5)


def report_without_timings(run: Path) -> dict:
    """A run's report.json without what differs between equal runs (wall times, the run's path)."""
    import json

    r = json.loads((Path(run) / "report.json").read_text())
    r.pop("timings_s")
    r.pop("run")
    return r


def small_config(**over):
    from fedtiny.trainer.config import TrainConfig

    return TrainConfig(**{**SMALL, **over})


@pytest.fixture(scope="session")
def small_run(tmp_path_factory) -> Path:
    """A finished small Fed-Meta-Align run on the built-in electrical data."""
    from fedtiny.trainer.pipeline import train

    out = tmp_path_factory.mktemp("runs") / "small"
    train(small_config(), out)
    return out


@pytest.fixture(scope="session")
def small_mech_run(tmp_path_factory) -> Path:
    """A finished small Fed-Meta-Align run on the built-in mechanical (CWRU-like) data."""
    from fedtiny.trainer.pipeline import train

    out = tmp_path_factory.mktemp("runs") / "small-mech"
    train(small_config(dataset="mechanical"), out)
    return out


# tiny runs per front end: only the firmware parity of the front end is checked on them, so each
# device trains its own model (method local: no federation, about 4x faster than Fed-Meta-Align)
TINY_FRONTEND = dict(SMALL, method="local", reference_epochs=3)


@pytest.fixture(scope="session")
def frontend_runs(tmp_path_factory) -> dict:
    """Finished tiny runs (method local) of both built-in fleets with each non-raw front end,
    keyed by (dataset, front end)."""
    from fedtiny.trainer.config import TrainConfig
    from fedtiny.trainer.pipeline import train

    root = tmp_path_factory.mktemp("frontend-runs")
    out = {}
    for dataset in ("electrical", "mechanical"):
        for kind in ("features", "spectrum"):
            out[(dataset, kind)] = root / f"{dataset}-{kind}"
            train(TrainConfig(**TINY_FRONTEND, dataset=dataset, frontend=kind), out[(dataset, kind)])
    return out


@pytest.fixture(scope="session")
def builtin_runs(small_run, small_mech_run) -> dict:
    """Small runs of both built-in fleets, by dataset name."""
    return {"electrical": small_run, "mechanical": small_mech_run}


@pytest.fixture(scope="session")
def small_run_loop(tmp_path_factory) -> Path:
    """The same run with the per-device engine (``--engine in-process-loop``), the one every
    Flower backend reproduces byte for byte."""
    from fedtiny.trainer.pipeline import InProcess, train

    out = tmp_path_factory.mktemp("runs") / "small-loop"
    train(small_config(), out, backend=InProcess(vectorized=False))
    return out
