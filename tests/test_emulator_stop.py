"""Stopping the emulator never races its serving thread: no exception in the
thread, nothing on stderr, the pty closed, over repeated start/stop with traffic, and when stop()
gives up waiting for a thread that is still busy."""
from __future__ import annotations

import threading
import time

import pytest
import serial

from fedtiny.bench import Emulator
from fedtiny.firmware import protocol as P


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from test_bench import shared_run

    return shared_run(tmp_path_factory)


@pytest.fixture
def thread_errors(monkeypatch):
    errors = []
    monkeypatch.setattr(threading, "excepthook", lambda args: errors.append(args))
    return errors


def test_repeated_start_stop_with_traffic_prints_nothing(run, thread_errors, capfd):
    for k in range(15):
        emu = Emulator(run, 3).start()
        try:
            with serial.Serial(emu.port_path, 115200, timeout=0.05) as ser:
                ser.write(P.encode_command("run"))       # stop while it answers
                time.sleep(0.01 * (k % 5))
        finally:
            emu.stop()
        assert emu.master is None and emu.slave is None
        assert not emu._thread.is_alive()
    out, err = capfd.readouterr()
    assert thread_errors == [] and err == "", err


def test_stop_that_gives_up_waiting_leaves_the_pty_to_the_thread(run, thread_errors, capfd, monkeypatch):
    monkeypatch.setattr(Emulator, "STOP_JOIN_S", 0.02)
    emu = Emulator(run, 3)
    slow = emu.invoke
    inside = threading.Event()

    def slow_invoke(x):
        inside.set()
        time.sleep(0.4)
        return slow(x)

    emu.invoke = slow_invoke
    emu.start()
    try:
        with serial.Serial(emu.port_path, 115200, timeout=0.05) as ser:
            ser.write(P.encode_command("run"))
            assert inside.wait(120)              # the thread is inside 'run' (in an invoke) now; hang guard only
            emu.stop()                           # returns before the thread ends
            assert emu._thread.is_alive()
    finally:
        emu._thread.join(timeout=120)            # hang guard only
    assert not emu._thread.is_alive()
    assert emu.master is None and emu.slave is None   # closed by the thread itself
    emu.stop()                                        # idempotent
    out, err = capfd.readouterr()
    assert thread_errors == [] and err == "", err
