"""The board learns: Phase 3 on the emulated Cortex-M4 (``--trainable-head``, ``fedtiny personalize``).

Checked here:
* the host twin (``fedtiny.headtwin``) computes one SGD-with-momentum step as TensorFlow's
  autodiff and Keras' SGD do (float tolerance), its exp/ln are the board's;
* the head's protocol lines and commands: the C header (g++) and Python agree byte for byte;
* on a qemu-m4 board built with --trainable-head from the small electrical run: ``fedtiny
  personalize`` trains there and the board's weights, losses, tuned threshold and test decisions
  equal the twin's (weights to float tolerance, in fact bit for bit), and ``board_head.npz`` holds them;
* bad input, each one ``error:`` line and exit 2: a board without the head (the emulator), windows
  of the wrong shape, a training plan over the board's RAM budget (nothing written), a reset in the
  middle of training (QEMU's monitor resets the machine once the first epoch line arrived). The
  board's own refusals (offsets, incomplete or damaged windows, nothing to train on) are each an
  ``error`` frame.

One QEMU boot for the module (stopped in a ``finally``); every wait is on a line or an exit,
bounded only as a hang guard.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from fedtiny import headtwin as T
from fedtiny.firmware import protocol as P

TOOLS = ("arm-none-eabi-gcc", "arm-none-eabi-size", "qemu-system-arm")
MISSING = [t for t in TOOLS if shutil.which(t) is None]
IN_CI = os.environ.get("CI", "").lower() == "true"
needs_qemu = pytest.mark.skipif(bool(MISSING) and not IN_CI, reason=f"needs {', '.join(MISSING)}")
HANG_S = 300.0
EPOCHS = 3


# ----------------------------------------------------------------------------- the twin's math

def test_twin_step_is_keras_sgd_momentum():
    """One twin step from a random head equals TF's gradient + Keras SGD(momentum) (float32
    tolerance: TF sums in another order and uses its own exp)."""
    import keras
    import tensorflow as tf

    rng = np.random.default_rng(0)
    shape = T.HeadShape(5, 4, 3)
    w = [rng.normal(0, 0.5, (5, 4)).astype(np.float32), rng.normal(0, 0.1, 4).astype(np.float32),
         rng.normal(0, 0.5, (4, 3)).astype(np.float32), rng.normal(0, 0.1, 3).astype(np.float32)]
    x = rng.normal(0, 2, (6, 5)).astype(np.float32)
    y = rng.integers(0, 3, 6)
    vel = (rng.normal(0, 0.01, shape.n_params)).astype(np.float32)
    flat, v2, loss = T.step(T.flatten(w), vel, shape, x, y, lr=0.1, momentum=0.9)

    tv = [tf.Variable(a) for a in w]
    with tf.GradientTape() as tape:
        h = tf.nn.relu6(x @ tv[0] + tv[1])
        p = tf.nn.softmax(h @ tv[2] + tv[3])
        ce = keras.losses.SparseCategoricalCrossentropy()(y, p)
    grads = tape.gradient(ce, tv)
    opt = keras.optimizers.SGD(0.1, momentum=0.9)
    opt.build(tv)
    for m, v0 in zip(opt.momentums, T.unflatten(vel, shape)):
        m.assign(v0)
    opt.apply_gradients(zip(grads, tv))
    np.testing.assert_allclose(flat, T.flatten([t.numpy() for t in tv]), rtol=0, atol=2e-6)
    np.testing.assert_allclose(v2, T.flatten([m.numpy() for m in opt.momentums]), rtol=0, atol=2e-6)
    assert abs(float(loss) / len(y) - float(ce)) < 1e-5
    # the board's exp and ln against NumPy's, and exp's range reduction at its ends
    z = np.linspace(-87, 0, 2001, dtype=np.float32)
    np.testing.assert_allclose(T.expf(z), np.exp(z.astype(np.float64)), rtol=2e-7, atol=0)
    q = np.geomspace(1e-30, 1, 2001).astype(np.float32)
    np.testing.assert_allclose(T.logf(q), np.log(q.astype(np.float64)), rtol=2e-7, atol=1e-6)


def test_twin_shuffle_is_a_permutation_and_seeded():
    a, b, c = list(range(50)), list(range(50)), list(range(50))
    T.shuffle_in_place(a, T.seed_state(1))
    T.shuffle_in_place(b, T.seed_state(1))
    T.shuffle_in_place(c, T.seed_state(2))
    assert a == b and a != c and sorted(a) == list(range(50))
    assert T.seed_state(0) != 0 and T.xorshift32(1) == 270369


# ----------------------------------------------------------------------------- protocol: C == Python

@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ not installed")
def test_head_lines_and_commands_c_equal_python(tmp_path):
    (tmp_path / "fedtiny_protocol.h").write_text(P.render_c_header())
    vals = np.array([0.5, -1.25e-7, 3.4e38, -0.0, 1e-45], np.float32)
    calls = [
        ('ft_format_head(buf, CAP, 16, 16, 6, 8, 512, 23, 16, 24904L, "balanced_accuracy", 0.9586302228271961)',
         P.format_message("head", n_in=16, n_hidden=16, n_classes=6, batch=8, max_windows=512, n_train=23,
                          n_val=16, plan_bytes=24904, metric="balanced_accuracy", threshold=0.9586302228271961)),
        ("[&]{ static const int8_t f[] = {-128, 0, 127}; return ft_format_hwin(buf, CAP, 7, 1, 5, f, 3); }()",
         P.format_message("hwin", index=7, set=1, label=5, features=[-128, 0, 127])),
        ("ft_format_hepoch(buf, CAP, 2, 3, 0.8608793020248413f, 208266L)",
         P.format_message("hepoch", epoch=2, steps=3, loss=0.8608793020248413, micros=208266)),
        ("[&]{ static const float v[] = {0.5f, -1.25e-7f, 3.4e38f, -0.0f, 1e-45f}; return ft_format_hw(buf, CAP, 40, v, 5); }()",
         P.format_message("hw", offset=40, values=vals)),
        ("ft_format_hthr(buf, CAP, 0.25, 0.875, 16)", P.format_message("hthr", threshold=0.25, value=0.875, n_val=16)),
        ("ft_format_heval(buf, CAP, 2, 20, 15, 17, 1, 1, 1)",
         P.format_message("heval", set=2, n=20, correct=15, tp=17, fp=1, tn=1, fn=1)),
    ]
    x = np.arange(-100, 140, dtype=np.int8)
    cmds = [P.encode_command("head"), P.encode_command("hclear"), P.encode_command("hinit", checksum=False),
            P.encode_command("hput", x.tobytes(), args=(0,)), P.encode_command("hadd", args=(1, 5, 65535)),
            P.encode_command("htrain", args=(15, 7, 0.05, 0.9)), P.encode_command("hweights", args=(40,)),
            P.encode_command("hthr"), P.encode_command("heval", args=(2,))]
    cmds = [c.decode().rstrip("\n") for c in cmds]
    cmds += ["hadd 1 5", "hadd 1 5 7 9", "htrain 3 1 3d4ccccd 3f66666", "htrain 3 x 3d4ccccd 3f666666",
             "hput 0", "hput 0 abc", "hput 0 zz", "hweights -1", "head now", "HEAD", "hadd 0 1 99999999999",
             "info", "run *0000"]
    body = ["#include <cstdio>", '#include "fedtiny_protocol.h"', "static char buf[8192];",
            "#define CAP ((int)sizeof buf)", "int main() {"]
    body += [f"  {{ int n = {expr}; if (n < 0) std::printf(\"FAIL\\n\"); else std::fputs(buf, stdout); }}"
             for expr, _ in calls]
    body += ["  static char line[8192]; static int8_t pl[4096];",
             "  while (std::fgets(line, sizeof line, stdin)) {",
             "    ft_hcmd_t c; const char* err = NULL;",
             "    int r = ft_parse_head_command(line, pl, (int)sizeof pl, &c, &err);",
             "    if (r <= 0) { std::printf(\"H %d %s\\n\", r, err ? err : \"-\"); continue; }",
             "    std::printf(\"H 1 %d\", (int)c.type);",
             "    for (int a = 0; a < 4; ++a) std::printf(\" %ld:%08x\", c.arg[a], (unsigned)c.bits[a]);",
             "    std::printf(\" \"); for (int i = 0; i < c.payload_len; ++i) std::printf(\"%02x\", (unsigned)(uint8_t)pl[i]);",
             "    std::printf(\"\\n\"); }", "  return 0; }"]
    src = tmp_path / "h.cpp"
    src.write_text("\n".join(body) + "\n")
    cc = subprocess.run(["g++", "-std=c++11", "-O1", "-Wall", "-Wextra", "-Wpedantic", "-Werror", "-o",
                         str(tmp_path / "h"), str(src)], capture_output=True, text=True)
    assert cc.returncode == 0, cc.stderr
    out = subprocess.run([str(tmp_path / "h")], input="".join(c + "\n" for c in cmds), capture_output=True,
                         text=True, timeout=60).stdout.splitlines(keepends=True)
    for (expr, want), got in zip(calls, out):
        assert got == want, expr
        msg = P.parse_line(got)
        assert msg is not None and P.format_message(msg.TYPE, **{k: v for k, v in P.to_dict(msg).items()
                                                                   if k != "type"}) == got
    assert P.parse_line(out[3]).values == tuple(float(v) for v in vals)       # exact float32 values
    for cmd, got in zip(cmds, out[len(calls):]):
        exp = P.parse_command(cmd)
        if exp.type in P.HEAD_COMMANDS:
            spec = P.COMMANDS[exp.type].get("args", [])
            ints = [int(a) if s["type"] == "int" else 0 for a, s in zip(exp.args, spec)] + [0] * (4 - len(spec))
            bits = [int(P.f32_bits(a), 16) if s["type"] == "f32hex" else 0 for a, s in zip(exp.args, spec)] + [0] * (4 - len(spec))
            code = P.HEAD_COMMANDS.index(exp.type) + 1
            assert got == (f"H 1 {code}" + "".join(f" {i}:{b:08x}" for i, b in zip(ints, bits))
                           + f" {exp.payload.hex()}\n"), cmd
        elif exp.type == P.CMD_BAD and cmd.split()[0].lower() in P.HEAD_COMMANDS:
            assert got == f"H -1 {exp.error}\n", cmd
        else:
            assert got == "H 0 -\n", cmd


# ----------------------------------------------------------------------------- the memory plan

@needs_qemu
def test_training_plan_over_the_ram_budget_is_refused(small_run, tmp_path):
    from fedtiny.cli import main

    board = json.loads((Path(__file__).resolve().parents[1] / "boards" / "qemu-m4.json").read_text())
    board["name"] = "qemu-m4-small"
    board["budget"] = dict(board["budget"], ram_bytes=32768)
    path = tmp_path / "small.json"
    path.write_text(json.dumps(board))
    out = tmp_path / "fw"
    r = CliRunner().invoke(main, ["build", "--run", str(small_run), "-d", "0", "-b", str(path), "--trainable-head",
                                  "--out", str(out)])
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: the training plan does not fit"), r.output
    assert "over the RAM budget 32,768 B" in lines[0]
    assert not out.exists()
    # the same board with fewer held windows fits
    r = CliRunner().invoke(main, ["build", "--run", str(small_run), "-d", "0", "-b", str(path), "--trainable-head",
                                  "--head-windows", "64", "--out", str(out), "--no-compile", "--test-samples", "4"])
    assert r.exit_code == 0, r.output
    assert json.loads((out / "fedtiny_build.json").read_text())["trainable_head"]["max_windows"] == 64


# ----------------------------------------------------------------------------- on the board

def _monitor(path: str, command: str) -> None:
    """One command to QEMU's human monitor on a unix socket (waits for its prompts)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(HANG_S)
    try:
        s.connect(path)
        buf = b""
        while b"(qemu)" not in buf:
            chunk = s.recv(4096)
            assert chunk, "monitor closed"
            buf += chunk
        s.sendall(command.encode() + b"\n")
        buf = b""
        while b"(qemu)" not in buf:
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk
    finally:
        s.close()


@pytest.fixture(scope="module")
def head_board(small_run, tmp_path_factory):
    """Device 0 of the small electrical run, built with --trainable-head, running on QEMU with a
    monitor socket: (port, monitor path, build result)."""
    if MISSING:
        pytest.skip(f"needs {', '.join(MISSING)}")
    from fedtiny.codegen import armgcc
    from fedtiny.codegen.boards import Board, load_board
    from fedtiny.codegen.build import build_project
    from fedtiny.codegen.qemu import QemuBoard

    work = tmp_path_factory.mktemp("board-learns")
    res = build_project(small_run, 0, "qemu-m4", work / "fw", test_samples=6, trainable_head=True,
                        head_windows=128)
    assert res.compiled and res.head_plan["max_windows"] == 128
    sockdir = tempfile.mkdtemp(prefix="ftmon")        # unix socket paths must stay short
    mon = os.path.join(sockdir, "m.sock")
    board = load_board("qemu-m4")
    args = list(board.qemu["args"])
    args[args.index("-monitor") + 1] = f"unix:{mon},server,nowait"
    qboard = Board({**board.data, "qemu": {**board.qemu, "args": args}}, board.path)
    q = QemuBoard(res.project_dir / armgcc.ELF, qboard)
    try:
        q.start()
        yield q.port, mon, res
    finally:
        q.stop()
        shutil.rmtree(sockdir, ignore_errors=True)


@needs_qemu
def test_personalize_on_qemu_equals_the_twin(head_board, small_run):
    from fedtiny.cli import main
    from fedtiny.codegen.compiled.head import global_head

    port, _, _ = head_board
    r = CliRunner().invoke(main, ["personalize", "--run", str(small_run), "--device", "0", "--port", port,
                                  "--epochs", str(EPOCHS), "--seed", "3"])
    assert r.exit_code == 0, r.output
    assert "time per training step" in r.output and "instructions (QEMU -icount" in r.output
    with np.load(small_run / "devices" / "dev00" / "board_head.npz") as z:
        arrays = {k: z[k] for k in z.files}
    s = json.loads(str(arrays["summary_json"]))
    init = global_head(small_run)
    for k, w0 in zip(("w1", "b1", "w2", "b2"), init):
        np.testing.assert_allclose(arrays[k], arrays[f"twin_{k}"], rtol=0, atol=1e-6)
        assert arrays[k].dtype == np.float32 and arrays[k].shape == w0.shape
    assert not np.array_equal(arrays["w2"], init[2])                     # the board did train
    assert s["max_weight_diff"] <= 1e-6 and s["feature_mismatches"] == 0
    np.testing.assert_allclose(s["board_losses"], s["twin_losses"], rtol=1e-6)
    assert len(s["board_losses"]) == EPOCHS and s["steps_per_epoch"] == -(-s["n_train"] // s["batch"])
    assert s["board_threshold"] == pytest.approx(s["twin_threshold"], abs=1e-9)
    assert s["test"] == s["twin_test"] and s["test"]["n"] == 6
    assert s["clock"] == "icount" and s["step_units"] > 0
    assert f"{s['max_weight_diff']:.3g}" in r.output


@needs_qemu
def test_board_refuses_bad_head_commands(head_board, small_run):
    """The board's own checks, each an error frame followed by ready (the link stays usable)."""
    from fedtiny.bench.host import _Session
    from fedtiny.bench.personalize import HeadLink
    from fedtiny.bench.rundata import BenchError

    port, _, res = head_board
    s = _Session(port, P.DEFAULT_BAUD, timeout=5.0, retries=3, reconnect_wait=0.0)
    s.open()
    try:
        s.handshake()
        hl = HeadLink(s, HANG_S)
        hl.sync()
        hl.ask("hclear")
        n_in = json.loads((res.project_dir / "fedtiny_build.json").read_text())["trainable_head"]["input_bytes"]
        bad = [(("hput", (5,), b"\x01"), "bad_args"),                   # not the next offset
               (("hput", (0,), bytes(n_in + 1)), "bad_args"),           # more than one window
               (("hadd", (0, 1, 0)), "bad_window"),                     # nothing staged
               (("hadd", (0, 99, 0)), "bad_args"),                      # label out of range
               (("htrain", (1, 0, 0.1, 0.5)), "no_windows"),
               (("hthr", ()), "no_windows"),
               (("hweights", (10 ** 6,)), "bad_args")]
        for (name, args, *payload), code in bad:
            with pytest.raises(BenchError, match=f": {code}: "):
                hl.ask(name, args, payload[0] if payload else None)
        x = np.zeros(n_in, np.int8)
        hl.ask("hput", (0,), x.tobytes())
        with pytest.raises(BenchError, match=": bad_window: window CRC differs"):
            hl.ask("hadd", (0, 1, (P.crc16(x.tobytes()) + 1) & 0xFFFF))
        assert hl.head().n_train == 0
        w = hl.send_window(x, 1, 0)
        assert w.index == 0 and len(w.features) == hl.head().n_in and hl.head().n_train == 1
        # hload: exact float32 parameters in, the same out (what head-only federated rounds need)
        info = hl.head()
        n = T.HeadShape(info.n_in, info.n_hidden, info.n_classes).n_params
        flat = np.random.default_rng(5).normal(0, 1, n).astype(np.float32)
        hl.load(flat)
        assert np.array_equal(hl.weights(n), flat)
        for payload in (b"\x00" * 6, b"\x00" * 8):
            with pytest.raises(BenchError, match=": bad_args: "):
                hl.ask("hload", (n - 1,), payload)
        hl.ask("hinit")
        assert not np.array_equal(hl.weights(n), flat)
    finally:
        s.close()


@needs_qemu
def test_windows_of_the_wrong_shape_are_one_error(head_board, small_run, monkeypatch):
    from fedtiny.bench import personalize as pz
    from fedtiny.cli import main

    port, _, _ = head_board
    real = pz.phase3_windows

    def wrong(run_dir, device, info):
        w = real(run_dir, device, info)
        return pz.Phase3Windows(w.x_train[:, :-1], w.y_train, w.x_val[:, :-1], w.y_val)

    monkeypatch.setattr(pz, "phase3_windows", wrong)
    r = CliRunner().invoke(main, ["personalize", "--run", str(small_run), "--device", "0", "--port", port])
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: the training windows have shape"), r.output


@needs_qemu
def test_a_board_without_the_head_is_one_error(small_run):
    from fedtiny.bench.emulator import Emulator
    from fedtiny.cli import main

    with Emulator(small_run, 0) as emu:
        r = CliRunner().invoke(main, ["personalize", "--run", str(small_run), "--device", "0",
                                      "--port", emu.port_path, "--timeout", "10"])
    assert r.exit_code == 2, r.output
    err = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "has no trainable head" in err[0] and "--trainable-head" in err[0], r.output
    assert not (small_run / "devices" / "dev00" / "board_head.npz.tmp").exists()


@needs_qemu
def test_a_reset_mid_training_is_one_error(head_board, small_run, monkeypatch):
    """The machine is reset (QEMU monitor) when the first epoch line arrives: one error line, exit
    2, and the earlier board_head.npz is left as it was (nothing half-written). Runs last: the
    board reboots."""
    from fedtiny.bench import personalize as pz
    from fedtiny.cli import main

    port, mon, _ = head_board
    result = small_run / "devices" / "dev00" / "board_head.npz"
    before = result.read_bytes() if result.exists() else None
    real = pz.personalize
    resets = []

    def with_reset(*a, on_epoch=None, **kw):
        def hook(msg):
            if not resets:                              # progress: the first epoch line
                _monitor(mon, "system_reset")
                resets.append(msg.epoch)
            on_epoch(msg)
        return real(*a, on_epoch=hook, **kw)

    monkeypatch.setattr(pz, "personalize", with_reset)
    r = CliRunner().invoke(main, ["personalize", "--run", str(small_run), "--device", "0", "--port", port,
                                  "--epochs", "20000"])
    assert resets == [0]
    assert r.exit_code == 2, r.output
    errors = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "reset during 'htrain'" in errors[0], r.output
    assert (result.read_bytes() if result.exists() else None) == before
