"""Ctrl-C stops ``fedtiny train --engine flower-sim``: exit 130, one ``error:`` line, no traceback
(also with a second signal during the cleanup), no process of the run left (Ray's GCS, raylet and
workers included), and the metrics written so far are whole lines."""
from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

import pytest

from flowerfixture import Cluster, fedtiny_cmd, wait_for

pytest.importorskip("flwr")
pytest.importorskip("ray")


def _session_members(sid: int) -> list[int]:
    """Pids of the live (not zombie) processes in session ``sid``."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()      # state, ppid, pgrp, session, ...
        if int(fields[3]) == sid and fields[0] != "Z":
            out.append(int(d.name))
    return out


def _phase2_started(run: Path) -> bool:
    m = run / "metrics.jsonl"
    return m.exists() and '"phase": "phase2"' in m.read_text()


def test_ctrl_c_stops_a_flower_sim_run_and_its_ray_processes(tmp_path):
    run = tmp_path / "run"
    # Ray's temporary folder goes into a folder of this test's own; a short one, since Ray's Unix
    # socket paths inside it must fit 107 bytes (pytest's tmp_path is too long)
    ray_tmp = Path(tempfile.mkdtemp(prefix="ft", dir="/tmp"))
    try:
        _interrupt(run, tmp_path, ray_tmp)
        assert not list(ray_tmp.glob("fedtiny-ray-*"))      # Ray's folder removed
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _interrupt(run: Path, tmp_path: Path, ray_tmp: Path) -> None:
    with Cluster(tmp_path) as c:
        p = c.start(fedtiny_cmd("train", "--engine", "flower-sim", "--devices", "2", "--rounds", "200",
                                "--samples-per-device", "160", "--out", str(run)),
                    "train.log", env={"TMPDIR": str(ray_tmp)}, name="train")
        # in progress: Phase 2 rounds are running on the Ray workers (hang guard only)
        wait_for(lambda: _phase2_started(run) or p.poll() is not None, 1200, "the first Phase-2 round")
        assert p.poll() is None, (tmp_path / "train.log").read_text()
        assert len(c.marked("train")) > 3            # the run, Ray's GCS and raylet, its workers
        t0 = time.monotonic()
        os.killpg(p.pid, signal.SIGINT)              # what Ctrl-C in a terminal sends
        wait_for(lambda: p.poll() is not None or not [q for q in c.marked("train") if q != p.pid], 120,
                 "the run's child processes to end")
        if p.poll() is None:
            p.send_signal(signal.SIGINT)             # an impatient second Ctrl-C during the cleanup
        code = p.wait(120)                           # hang guard only
        print(f"stopped {time.monotonic() - t0:.1f} s after SIGINT")     # a figure, not an assertion
        log = (tmp_path / "train.log").read_text(errors="replace")
        assert code == 130, log
        assert "Traceback" not in log, log
        assert log.strip().splitlines()[-1].startswith("error: interrupted"), log
        assert c.marked("train") == [], _cmdlines(c.marked("train"))
        # a process caught exiting when the marks were read (its environment no longer readable) is
        # still in the session for a moment: wait for the session to empty (a hang guard only)
        try:
            wait_for(lambda: not _session_members(p.pid), 60, "the run's session to empty")
        except AssertionError:
            pytest.fail(f"left in the run's session: {_cmdlines(_session_members(p.pid))}")
        for line in (run / "metrics.jsonl").read_text().splitlines():
            json.loads(line)


def _cmdlines(pids: list[int]) -> list[str]:
    out = []
    for pid in pids:
        try:
            out.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            pass
    return out
