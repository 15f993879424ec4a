"""Shared fixtures: small but real training runs, made once per test session."""
from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# decoded real-data files are cached per test session, never in the user's ~/.cache
os.environ.setdefault("FEDTINY_CACHE", tempfile.mkdtemp(prefix="fedtiny-test-cache-"))

SMALL = dict(devices=3, samples_per_device=160, public_samples=300, rounds=2, phase0_epochs=5,
             phase3_epochs=5, reference_epochs=5)


# Test files run whole on one pytest-xdist worker (module fixtures are made once); the files that start
# Flower's Ray simulation share one group, so two Ray clusters never start side by side.
# The longest tests (loopback deployments of several TensorFlow sites) are groups of their own.
RAY_FILES = {"test_flower_sim.py", "test_flower_sim_interrupt.py", "test_fleet_runs.py"}
OWN_GROUP = {"test_a_killed_site_does_not_end_the_round_and_a_killed_server_resumes",
             "test_server_and_three_sites_write_the_run_train_writes"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            group = ("ray" if item.path.name in RAY_FILES else item.name if item.name in OWN_GROUP
                     else item.path.stem)
            item.add_marker(pytest.mark.xdist_group(group))


def shared_dir(tmp_path_factory, name: str, make) -> Path:
    """``make(folder)`` once per test run. Under pytest-xdist each worker is a session of its own:
    the first worker to ask makes the folder in the run's shared base folder, holding a lock, and the
    others wait for it and reuse it. Only for fixtures no test writes into."""
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        out = tmp_path_factory.mktemp(name)
        make(out)
        return out
    root = tmp_path_factory.getbasetemp().parent
    out = root / f"shared-{name}"
    with open(root / f"shared-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)             # released when the file closes
        if not (out / ".complete").exists():
            shutil.rmtree(out, ignore_errors=True)   # a worker that failed half way
            out.mkdir()
            make(out)
            (out / ".complete").write_text("")
    return out


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

    root = shared_dir(tmp_path_factory, "small-mech", lambda d: train(small_config(dataset="mechanical"), d / "run"))
    return root / "run"


# tiny runs per front end: only the firmware parity of the front end is checked on them, so each
# device trains its own model (method local: no federation, about 4x faster than Fed-Meta-Align)
TINY_FRONTEND = dict(SMALL, method="local", reference_epochs=3)


@pytest.fixture(scope="session")
def frontend_runs(tmp_path_factory) -> dict:
    """Finished tiny runs (method local) of both built-in fleets with each non-raw front end,
    keyed by (dataset, front end)."""
    from fedtiny.trainer.config import TrainConfig
    from fedtiny.trainer.pipeline import train

    keys = [(dataset, kind) for dataset in ("electrical", "mechanical") for kind in ("features", "spectrum")]

    def make(root):
        for dataset, kind in keys:
            train(TrainConfig(**TINY_FRONTEND, dataset=dataset, frontend=kind), root / f"{dataset}-{kind}")
    root = shared_dir(tmp_path_factory, "frontend-runs", make)
    return {(d, k): root / f"{d}-{k}" for d, k in keys}


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
