"""``--engine flower-sim``: what the Flower engines refuse. That a simulated run equals the per-device
in-process engine's, sends no windows and keeps Ray on 127.0.0.1 is checked on a fleet folder
through the command line (``test_fleet_runs.py``); Ctrl-C in ``test_flower_sim_interrupt.py``."""
from __future__ import annotations

import pytest

pytest.importorskip("flwr")
pytest.importorskip("ray")


def test_flower_engines_refuse_the_non_federated_references(tmp_path):
    import subprocess
    import sys

    code = "from fedtiny.cli import run; run()"
    p = subprocess.run([sys.executable, "-c", code, "train", "--engine", "flower-sim", "--method", "local",
                        "--devices", "2", "--out", str(tmp_path / "r")], capture_output=True, text=True, timeout=300)
    assert p.returncode == 2, p.stderr
    from fedtiny.trainer.config import FEDERATED

    assert p.stderr.strip().splitlines() == [
        f"error: --engine flower-sim runs the federated methods ({', '.join(FEDERATED)}); local pools or "
        "never shares data: use --engine inprocess"]
    assert not (tmp_path / "r").exists()
