"""The emulator speaks the current protocol version on a real pty, with exactly what the firmware embeds."""
from __future__ import annotations

import hashlib
import os
import json
import time

import numpy as np
import pytest
import serial

from fedtiny.bench import Emulator, bench_device
from fedtiny.firmware import protocol as P
from fedtiny.trainer.tflm import run_int8


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from test_bench import shared_run

    return shared_run(tmp_path_factory)


_LEFT: dict[int, bytes] = {}


def _talk(ser, cmd: bytes, until=P.Ready, timeout=60.0):
    """Send one raw command line; return the messages up to the terminator (``timeout``: a hang
    guard only, it returns as soon as the terminator came)."""
    ser.write(cmd)
    # bytes read after the previous terminator (a read may take it and the next line together)
    out, buf, end = [], _LEFT.pop(id(ser), b""), time.monotonic() + timeout
    while time.monotonic() < end:
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            msg = P.parse_line(line + b"\n")
            assert msg is not None, line
            out.append(msg)
            if isinstance(msg, until):
                _LEFT[id(ser)] = buf
                return out
        buf += ser.read(ser.in_waiting or 1)
    raise AssertionError(f"no {until.__name__} after {cmd!r}: {out}")


def test_emulator_serves_the_protocol(run):
    d = run / "devices" / "dev03"
    info = json.loads((d / "device.json").read_text())
    model = (d / "model_int8.tflite").read_bytes()
    with np.load(d / "test_split.npz") as z:
        x, y, pred = z["x_int8"], z["y"], z["pred_int8"]
    with Emulator(run, 3) as emu, serial.Serial(emu.port_path, 115200, timeout=0.05) as ser:
        # past the boot lines (banner, ready), which may or may not reach the port opened after them:
        # the emulator answers in order, so everything before the error of an unknown command is boot
        _talk(ser, b"sync\n", until=P.Error)
        _talk(ser, b"")
        banner = _talk(ser, P.encode_command("info"))[0]
        assert isinstance(banner, P.Banner) and banner.clock == "host" and banner.version == P.PROTOCOL_VERSION
        assert banner.model_hash == hashlib.sha256(model).hexdigest() == info["model_sha256"]
        assert (banner.device_id, banner.n_test, banner.n_classes) == (3, len(y), len(info["class_names"]))
        assert banner.arena_bytes == info["arena_bytes"] and banner.threshold == info["threshold"]
        assert banner.threshold_origin == (info.get("threshold_origin") or "default")
        assert _talk(ser, b"INFO\r\n")[0] == banner          # typed by a person: no CRC, any case
        msgs = _talk(ser, P.encode_command("run"))
        samples = [m for m in msgs if isinstance(m, P.Sample)]
        assert [m.index for m in samples] == list(range(len(y)))
        assert [m.pred for m in samples] == pred.tolist() and [m.label for m in samples] == y.tolist()
        summ = msgs[-2]
        assert isinstance(summ, P.Summary) and summ.correct == int(np.sum(pred == y)) and summ.n == len(y)
        assert (summ.lat_min, summ.lat_mean, summ.lat_p50, summ.lat_p95, summ.lat_max) == \
            P.latency_summary(m.micros for m in samples)
        # infer: the raw scores are tflite-micro's, the decision the trainer's rule
        res = _talk(ser, P.encode_command("infer", x[5]))
        assert res[0].scores == tuple(run_int8(model, x[5:6])[0].tolist()) and res[0].pred == pred[5]
        # errors are typed and still followed by ready
        for cmd, code in [(P.encode_command("infer", x[5].reshape(-1)[:7]), "bad_len"),
                          (b"infer 0\n", "bad_payload"), (b"dance\n", "bad_cmd"),
                          (b"info *0000\n", "bad_crc"), (b"infer " + b"00" * 3000 + b"\n", "too_long")]:
            out = _talk(ser, cmd)
            assert isinstance(out[0], P.Error) and out[0].code == code and isinstance(out[1], P.Ready)
        # reset: ready, then boots again (banner, ready)
        out = _talk(ser, P.encode_command("reset"))
        assert out == [P.Ready()]
        assert _talk(ser, b"") == [banner, P.Ready()]


def test_capped_firmware_and_streaming_the_rest(run):
    with np.load(run / "devices" / "dev03" / "test_split.npz") as z:
        y, pred = z["y"], z["pred_int8"]
    with Emulator(run, 3, n_test=10) as emu:
        res = bench_device(emu.port_path, run, 3, stream=4, timeout=3)
    assert res.n == 10 and res.expected_accuracy == pytest.approx(float(np.mean(pred[:10] == y[:10])))
    assert [s["index"] for s in res.stream["samples"]] == [10, 11, 12, 13]   # not embedded: first
    assert [s["pred"] for s in res.stream["samples"]] == pred[10:14].tolist() and res.ok


def test_faults_are_reproducible(run):
    logs = []
    for _ in range(2):
        with Emulator(run, 3, corrupt=0.3, seed=11) as emu:
            with serial.Serial(emu.port_path, timeout=0.05) as ser:
                ser.write(P.encode_command("run"))
                # the whole run was sent (boot's ready, then the run's): how far it got in a fixed
                # time would depend on the machine's load
                end = time.monotonic() + 120                  # hang guard only
                while sum(line == P.format_ready() for line, _ in emu.log) < 2:
                    assert time.monotonic() < end, list(emu.log)[-5:]
                    ser.read(ser.in_waiting or 1)
            logs.append([ok for _, ok in emu.log])
    assert logs[0] == logs[1] and not all(logs[0])


def test_reset_waits_for_usb_reenumeration(run, tmp_path):
    """A Nano 33 BLE drops off USB on reset and comes back; the bench waits and reopens it."""
    link = str(tmp_path / "ttyFEDTINY")
    with Emulator(run, 3, link=link, reenumerate=0.8) as emu:
        res = bench_device(link, run, 3, timeout=3, reset=True, reconnect_wait=5)
    assert emu.enumerations == 2 and emu.commands.count("reset") == 1   # the port went and came back
    assert res.ok and res.n == 24
    assert res.link["reconnects"] == 0 and res.port == link


def test_a_link_that_cannot_be_made_is_a_clear_error_and_leaks_nothing(run, tmp_path):
    from fedtiny.bench import BenchError

    taken = tmp_path / "port"
    taken.write_text("a regular file, not ours to replace")
    before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(BenchError, match="cannot serve a pseudo-terminal"):
        Emulator(run, 3, link=str(taken)).start()
    assert len(os.listdir("/proc/self/fd")) == before
    assert taken.read_text().startswith("a regular file")
