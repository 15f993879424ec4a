"""The live-mode commands a user types, end to end on the emulated Cortex-M4:

    fedtiny build --device 0 --board qemu-m4 --runtime compiled --input sensor
    (the firmware running on QEMU, as ``fedtiny flash --board qemu-m4`` starts it: codegen.qemu.QemuBoard)
    fedtiny monitor --port PTY --seconds S --out live.jsonl
    fedtiny capture --port PTY --label <normal> --seconds S --out F/dev-a/
    fedtiny data check F

Checked: the monitor's events are the host twin's (``fedtiny.live``) on the recording the firmware
plays (its test windows one after another, from frame 0 at every ``live``), and the captured folder
is one ``data check`` accepts. The protocol-level checks (exact capture, fault within one hop, the
inference budget) are in tests/test_live_qemu.py. Waits are on lines; QEMU is stopped in a finally.
"""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

TOOLS = ("arm-none-eabi-gcc", "qemu-system-arm")
MISSING = [t for t in TOOLS if shutil.which(t) is None]
pytestmark = pytest.mark.skipif(bool(MISSING) and os.environ.get("CI", "").lower() != "true",
                                reason=f"needs {', '.join(MISSING)}")


def test_build_monitor_capture_and_data_check_on_qemu(small_run, tmp_path):
    from fedtiny import live as L
    from fedtiny.bench.cli import capture, monitor
    from fedtiny.bench.rundata import load_run_device
    from fedtiny.codegen.boards import load_board
    from fedtiny.codegen.cli import build
    from fedtiny.codegen.live import recording_from_run
    from fedtiny.codegen.qemu import QemuBoard
    from fedtiny.codegen.tflite_model import read_model
    from fedtiny.data_cli import data

    cli = CliRunner()
    proj = tmp_path / "fw"
    r = cli.invoke(build, ["--device", "0", "--board", "qemu-m4", "--runtime", "compiled", "--input", "sensor",
                           "--run", str(small_run), "--out", str(proj), "--test-samples", "2"],
                   catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "sensor       sim:" in r.output
    rd = load_run_device(small_run, 0)
    facts = read_model(rd.model_bytes)
    units = facts.input.scale * (rd.x_int8.astype(np.float64) - facts.input.zero_point)
    rec = recording_from_run(units, None)           # what the sim sensor plays (the build's default)
    live_out = tmp_path / "live.jsonl"
    fleet = tmp_path / "F"
    normal = rd.info["class_names"][0]
    q = QemuBoard(proj / "build" / "firmware.elf", load_board("qemu-m4"))
    try:
        q.start()
        m = cli.invoke(monitor, ["--port", q.port, "--seconds", "3", "--out", str(live_out), "--run", str(small_run),
                                 "--device", "0", "--timeout", "60"], catch_exceptions=False)
        assert m.exit_code == 0, m.output
        c = cli.invoke(capture, ["--port", q.port, "--label", normal, "--seconds", "0.5", "--out",
                                 str(fleet / "dev-a"), "--run", str(small_run), "--device", "0", "--timeout", "60"],
                       catch_exceptions=False)
        assert c.exit_code == 0, c.output
    finally:
        q.stop()
    recs = [json.loads(line) for line in live_out.read_text().splitlines()]
    assert recs[0]["type"] == "stream" and recs[0]["source"] == "sim" and recs[0]["clock"] == "icount"
    events = [x for x in recs if x["type"] == "event"]
    assert events, "the monitor saw no event"
    n = max(x["n"] for x in recs[1:])
    played = np.resize(rec, (n, rec.shape[1]))
    twin = L.events(L.live_decisions(played, L.LiveModel.from_run(small_run, 0), recs[0]["hop"]))
    assert [(e["n"], e["pred"]) for e in events] == [(d.n, d.pred) for d in twin if d.n <= n]
    chk = cli.invoke(data, ["check", str(fleet)], catch_exceptions=False)
    assert chk.exit_code == 0, chk.output
    lines = (fleet / "dev-a" / "labels.csv").read_text().splitlines()
    assert len(lines) == 2 and lines[1].split(",")[1] == normal       # one recording, labelled
    assert (fleet / "dev-a" / lines[1].split(",")[0]).is_file()
