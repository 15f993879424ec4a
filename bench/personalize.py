"""``fedtiny personalize``: Phase 3 on the board (a firmware built with ``--trainable-head``).

Flow: open the port, handshake (banner; the model hash must be the run's), a synchronisation
line (everything the board sent before its answer is dropped), ``head`` (the board's
head plan: no head is one clear error), ``hinit`` + ``hclear``, send the device's Phase-3 windows
(``phase3_tune`` as training windows, ``phase3_val`` as validation windows, model inputs in int8,
each in ``hput`` chunks within the command line, then ``hadd`` with the window's CRC-16), train
(``htrain``: one ``hepoch`` line per epoch), read the parameters back (``hweights``), tune the
threshold on the validation windows (``hthr``) and decide the embedded test windows (``heval 2``).

Beside it the host twin (``fedtiny.headtwin``) runs the same training on the host's own features
of the same windows (the INT8 model's feature tensor, read from the TFLite interpreter without
delegates, whose int8 kernels equal the compiled runtime's): the maximum difference between the
board's and the twin's weights, thresholds and test decisions is reported. The board also returns
the features it computed for every window (``hwin``); any window whose features differ from the
host's is counted.

Every answer is awaited on progress (an inactivity timeout per line, never a total wall time). A
boot banner in the middle of a command means the board reset: that is an error, never a result.
``devices/<name>/board_head.npz`` (weights, the twin's, metrics) is written atomically at the end,
and only when everything succeeded.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from fedtiny import headtwin as T
from fedtiny.firmware import protocol as P

from .link import Disconnected
from .rundata import BenchError, RunDevice, load_run_device

RESULT_FILE = "board_head.npz"
DEFAULTS = dict(lr=0.05, momentum=0.9, seed=0)
HEAD_ARRAYS = 4


class BoardReset(BenchError):
    """The board booted (a banner arrived) in the middle of a command."""


@dataclass
class Phase3Windows:
    x_train: np.ndarray      # int8 model inputs
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray


def phase3_windows(run_dir: Path, device: int, info: dict) -> Phase3Windows:
    """The device's Phase-3 shares (tune, validation) from the run's own data preparation
    (config.json), quantized with the device's input scale and zero point."""
    from fedtiny.trainer.config import TrainConfig
    from fedtiny.trainer.pipeline import prepare
    from fedtiny.trainer.quantize import quantize_input

    cfg = TrainConfig.from_dict(json.loads((Path(run_dir) / "config.json").read_text()))
    splits = prepare(cfg).splits
    if not 0 <= device < len(splits):
        raise BenchError(f"the run has {len(splits)} devices; there is no device {device}")
    s = splits[device]
    q = lambda x: quantize_input(x, float(info["input_scale"]), int(info["input_zero_point"]))  # noqa: E731
    return Phase3Windows(q(s.phase3_tune.x), np.asarray(s.phase3_tune.y, np.int64),
                         q(s.phase3_val.x), np.asarray(s.phase3_val.y, np.int64))


def host_features(model_bytes: bytes, x_int8: np.ndarray) -> tuple[np.ndarray, float, int]:
    """(int8 feature codes (n, n_in), scale, zero point) of the model's feature tensor (the output
    of the last layer before the head, ``codegen.compiled.head.split_index``), from the TFLite
    interpreter without delegates (its int8 reference kernels)."""
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError:
        raise BenchError("the host twin reads the model's feature tensor with ai-edge-litert, which is not "
                         "installed (pip install ai-edge-litert)") from None

    from fedtiny.codegen.compiled.graph import lower
    from fedtiny.codegen.compiled.head import split_index

    program = lower(model_bytes)
    layer = program.layers[split_index(program) - 1]
    it = Interpreter(model_content=bytes(model_bytes), experimental_preserve_all_tensors=True,
                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    inp = it.get_input_details()[0]
    out = []
    for x in np.asarray(x_int8, np.int8):
        it.set_tensor(inp["index"], x.reshape(inp["shape"]))
        it.invoke()
        out.append(np.array(it.get_tensor(layer.dst)).reshape(-1))
    n_in = layer.out_size
    feats = np.stack(out).astype(np.int8) if out else np.zeros((0, n_in), np.int8)
    return feats, layer.out_scale, layer.out_zero_point


# ----------------------------------------------------------------------------- the board side

class HeadLink:
    """Head commands over an open ``bench.host._Session``: one command, its answers up to
    'ready'; an ``error`` answer raises BenchError, a banner BoardReset."""

    def __init__(self, session, idle: float):
        self.s = session
        self.idle = float(idle)

    def ask(self, name: str, args=(), payload=None, what: str = "", on_line=None) -> list:
        link = self.s.link
        link.write(P.encode_command(name, payload, args=args))
        out = []
        while True:
            msg = link.next_message(idle=self.idle)
            if msg is None:
                raise BenchError(f"{self.s.port}: no answer to '{name}' for {self.idle:g}s"
                                 + (f" ({what})" if what else ""))
            if isinstance(msg, (P.Banner, P.ForeignBanner)):
                raise BoardReset(f"{self.s.port}: the board reset during '{name}'"
                                 + (f" ({what})" if what else "") + "; its held windows and training are lost")
            if isinstance(msg, P.Error):
                if msg.code == "no_head" or (name == "head" and msg.code == "bad_cmd"):   # a TFLM sketch
                    raise BenchError(f"{self.s.port}: the board has no trainable head (its firmware was built "
                                     f"without --trainable-head: fedtiny build --runtime compiled --trainable-head)")
                self._await_ready()
                raise BenchError(f"{self.s.port}: the board refused '{name}': {msg.code}: {msg.detail}")
            if isinstance(msg, P.Ready):
                return out
            out.append(msg)
            if on_line is not None:
                on_line(msg)

    def sync(self) -> None:
        """Align with the board after the handshake: the handshake may have taken the boot banner
        as its answer while the answer to its 'info' (banner, ready) is still on its way, and that
        banner must not read as a reset. Send an unknown command carrying a fresh nonce and drop
        every line up to its error (which echoes the nonce) and the 'ready' after it."""
        import secrets

        nonce = f"sync{secrets.token_hex(4)}"
        self.s.link.write((nonce + "\n").encode("ascii"))
        seen = False
        while True:
            msg = self.s.link.next_message(idle=self.idle)
            if msg is None:
                raise BenchError(f"{self.s.port}: no answer to a synchronisation line for {self.idle:g}s")
            if isinstance(msg, P.Error) and nonce in msg.detail:
                seen = True
            elif seen and isinstance(msg, P.Ready):
                return

    def _await_ready(self) -> None:
        while True:
            msg = self.s.link.next_message(idle=self.idle)
            if msg is None or isinstance(msg, P.Ready):
                return

    def one(self, name: str, cls, args=(), what: str = ""):
        msgs = [m for m in self.ask(name, args, what=what) if isinstance(m, cls)]
        if len(msgs) != 1:
            raise BenchError(f"{self.s.port}: '{name}' answered {len(msgs)} {cls.TYPE} lines, expected 1")
        return msgs[0]

    def head(self) -> P.HeadInfo:
        return self.one("head", P.HeadInfo)

    def send_window(self, x: np.ndarray, label: int, set_: int) -> P.HeadWindow:
        data = np.asarray(x, np.int8).tobytes()
        for off in range(0, len(data), P.HPUT_MAX_PAYLOAD):
            self.ask("hput", (off,), data[off:off + P.HPUT_MAX_PAYLOAD])
        return self.one("hadd", P.HeadWindow, (set_, int(label), P.crc16(data)))

    def load(self, flat: np.ndarray) -> None:
        """Set the board's parameters to ``flat`` (float32; ``hload`` chunks, momentum zeroed)."""
        data = np.asarray(flat, "<f4").tobytes()
        per = P.HPUT_MAX_PAYLOAD // 4 * 4
        for off in range(0, len(data), per):
            self.ask("hload", (off // 4,), data[off:off + per])

    def weights(self, n_params: int) -> np.ndarray:
        vals: list[float] = []
        while len(vals) < n_params:
            hw = self.one("hweights", P.HeadWeights, (len(vals),))
            if hw.offset != len(vals) or not hw.values:
                raise BenchError(f"{self.s.port}: hweights answered offset {hw.offset}, expected {len(vals)}")
            vals.extend(hw.values)
        return np.asarray(vals[:n_params], np.float32)


@dataclass
class PersonalizeResult:
    port: str
    device: int
    name: str
    clock: str
    epochs: int
    seed: int
    lr: float
    momentum: float
    batch: int
    n_train: int
    n_val: int
    plan_bytes: int
    board_weights: np.ndarray
    twin_weights: np.ndarray
    max_weight_diff: float
    board_threshold: float
    twin_threshold: float
    board_losses: list[float]
    twin_losses: list[float]
    step_units: float                 # latency units (clock) per training step
    steps: int
    test: dict                        # the board's counts on the embedded test windows
    twin_test: dict
    feature_mismatches: int
    host_phase3: dict = field(default_factory=dict)   # the run's host-side Phase 3 (device.json)

    @property
    def accuracy(self) -> float | None:
        return self.test["correct"] / self.test["n"] if self.test["n"] else None

    @property
    def false_alarm_rate(self) -> float | None:
        neg = self.test["fp"] + self.test["tn"]
        return self.test["fp"] / neg if neg else None

    def summary(self) -> dict:
        return {"port": self.port, "device": self.device, "name": self.name, "clock": self.clock,
                "epochs": self.epochs, "seed": self.seed, "lr": self.lr, "momentum": self.momentum,
                "batch": self.batch, "n_train": self.n_train, "n_val": self.n_val, "plan_bytes": self.plan_bytes,
                "max_weight_diff": self.max_weight_diff, "board_threshold": self.board_threshold,
                "twin_threshold": self.twin_threshold, "board_losses": self.board_losses,
                "twin_losses": self.twin_losses, "step_units": self.step_units, "steps_per_epoch": self.steps,
                "test": self.test, "twin_test": self.twin_test, "accuracy": self.accuracy,
                "false_alarm_rate": self.false_alarm_rate, "feature_mismatches": self.feature_mismatches,
                "host_phase3": self.host_phase3}


def _counts(y, pred) -> dict:
    c = P.confusion(pred, y)
    return {k: int(c[k]) for k in ("n", "correct", "tp", "fp", "tn", "fn")}


def _load(run_dir, device: int) -> RunDevice:
    return load_run_device(Path(run_dir), device)


def personalize(port: str, run_dir, device: int, epochs: int | None = None, seed: int = DEFAULTS["seed"],
                lr: float = DEFAULTS["lr"], momentum: float = DEFAULTS["momentum"], timeout: float = 60.0,
                baud: int = P.DEFAULT_BAUD, on_epoch: Callable[[P.HeadEpoch], None] | None = None,
                echo: Callable[[str], None] | None = None, windows: Phase3Windows | None = None,
                write: bool = True) -> PersonalizeResult:
    """Phase 3 of ``device`` of ``run_dir`` on the board at ``port`` (module docstring).
    ``epochs`` default: the run's ``phase3_epochs``. ``on_epoch(msg)`` is called with each epoch
    line (``HeadEpoch``: progress). ``windows``: the Phase-3 windows (default: prepared from the run's config)."""
    from fedtiny.codegen.compiled.head import global_head
    from fedtiny.codegen.errors import CodegenError
    from fedtiny.trainer.rundir import atomic_savez, device_dir, dumps_strict

    from .host import _Session

    say = echo or (lambda s: None)
    run_dir = Path(run_dir)
    rd = _load(run_dir, device)
    cfg = json.loads((run_dir / "config.json").read_text())
    epochs = int(cfg.get("phase3_epochs", 15) if epochs is None else epochs)
    if epochs < 1:
        raise BenchError(f"--epochs must be >= 1 (got {epochs})")
    if not (np.isfinite(lr) and lr > 0 and np.isfinite(momentum) and 0 <= momentum < 1):
        raise BenchError(f"--lr must be > 0 and --momentum in [0, 1) (got {lr}, {momentum})")
    if seed < 0:
        raise BenchError(f"--seed must be >= 0 (got {seed})")
    try:
        init = global_head(run_dir)
    except CodegenError as e:
        raise BenchError(str(e)) from None
    w = windows if windows is not None else phase3_windows(run_dir, device, rd.info)
    window_shape = tuple(rd.x_int8.shape[1:])
    for what, x in (("training", w.x_train), ("validation", w.x_val)):
        if x.ndim != len(window_shape) + 1 or tuple(x.shape[1:]) != window_shape:
            raise BenchError(f"the {what} windows have shape {list(x.shape[1:])}, the device's model takes "
                             f"{list(window_shape)}")
    n_classes = rd.n_classes
    for what, y in (("training", w.y_train), ("validation", w.y_val)):
        if len(y) and (y.min() < 0 or y.max() >= n_classes):
            raise BenchError(f"the {what} labels must lie in 0..{n_classes - 1}")

    s = _Session(port, baud, timeout=min(timeout, 5.0), retries=3, reconnect_wait=0.0)
    s.open()
    try:
        banner = s.handshake()
        if banner.model_hash != rd.model_sha256:
            raise BenchError(f"{port}: the board runs model {banner.model_hash[:12]}, device {device} of the run is "
                             f"{rd.model_sha256[:12]}; flash that device's firmware")
        hl = HeadLink(s, timeout)
        hl.sync()
        info = hl.head()
        shape = T.HeadShape(info.n_in, info.n_hidden, info.n_classes)
        flat0 = T.flatten(init)
        if shape.n_params != len(flat0) or info.n_classes != n_classes:
            raise BenchError(f"{port}: the board's head ({info.n_in} -> {info.n_hidden} -> {info.n_classes}) is "
                             f"not the run's global head")
        n_total = len(w.y_train) + len(w.y_val)
        if n_total > info.max_windows:
            raise BenchError(f"the device has {n_total} Phase-3 windows; the board holds at most {info.max_windows} "
                             f"(build with --head-windows {n_total} or more)")
        if len(w.y_train) == 0:
            raise BenchError(f"device {device} has no Phase-3 training windows")
        hl.ask("hinit")
        hl.ask("hclear")
        say(f"sending {len(w.y_train)} training and {len(w.y_val)} validation windows to {port}")
        board_feats = []
        for set_, xs, ys in ((0, w.x_train, w.y_train), (1, w.x_val, w.y_val)):
            for x, y in zip(xs, ys):
                board_feats.append(hl.send_window(x, int(y), set_).features)
        feats, fscale, fzp = host_features(rd.model_bytes, np.concatenate([w.x_train, w.x_val]))
        mismatches = int(sum(tuple(int(v) for v in f) != tuple(b) for f, b in zip(feats, board_feats)))
        say(f"training {epochs} epoch(s) on the board (seed {seed}, lr {lr:g}, momentum {momentum:g}, "
            f"batch {info.batch})")
        epochs_seen: list[P.HeadEpoch] = []

        def got(msg):
            if isinstance(msg, P.HeadEpoch):
                epochs_seen.append(msg)
                if on_epoch is not None:
                    on_epoch(msg)

        hl.ask("htrain", (epochs, seed, np.float32(lr), np.float32(momentum)), what="training", on_line=got)
        if len(epochs_seen) != epochs:
            raise BenchError(f"{port}: htrain answered {len(epochs_seen)} epoch lines, expected {epochs}")
        board_w = hl.weights(shape.n_params)
        thr = hl.one("hthr", P.HeadThreshold) if len(w.y_val) else None
        test = hl.one("heval", P.HeadEval, (2,))
    except Disconnected as e:
        raise BoardReset(f"{e}; the board's held windows and training are lost") from None
    finally:
        s.close()

    # the host twin, on the host's own features
    xf = T.dequantize_features(feats, fscale, fzp)
    n_tr = len(w.y_train)
    twin = T.train(flat0, np.zeros_like(flat0), shape, xf[:n_tr], w.y_train, epochs, seed,
                   float(np.float32(lr)), float(np.float32(momentum)), info.batch)
    metric = str(cfg.get("threshold_metric") or "balanced_accuracy")
    twin_thr = T.tune(twin.flat, shape, xf[n_tr:], w.y_val, metric)[0] if len(w.y_val) else rd.threshold
    board_thr = thr.threshold if thr is not None else info.threshold
    n_test = int(banner.n_test)
    tf_feats = host_features(rd.model_bytes, rd.x_int8[:n_test])[0] if n_test else np.zeros((0, shape.n_in))
    twin_pred = T.decide(twin.flat, shape, T.dequantize_features(tf_feats, fscale, fzp), twin_thr)
    steps = sum(e.steps for e in epochs_seen)
    res = PersonalizeResult(
        port=port, device=device, name=rd.path.name, clock=banner.clock, epochs=epochs, seed=seed,
        lr=float(np.float32(lr)), momentum=float(np.float32(momentum)), batch=info.batch, n_train=n_tr,
        n_val=len(w.y_val), plan_bytes=info.plan_bytes, board_weights=board_w, twin_weights=twin.flat,
        max_weight_diff=float(np.max(np.abs(board_w.astype(np.float64) - twin.flat))),
        board_threshold=float(board_thr), twin_threshold=float(twin_thr),
        board_losses=[e.loss for e in epochs_seen], twin_losses=twin.losses,
        step_units=sum(e.micros for e in epochs_seen) / max(steps, 1), steps=epochs_seen[-1].steps,
        test=_counts_of(test), twin_test=_counts(rd.y[:n_test], twin_pred), feature_mismatches=mismatches,
        host_phase3={k: rd.info.get(k) for k in ("int8_acc", "int8_far", "float_acc", "threshold")})
    if write:
        out = device_dir(run_dir, device) / RESULT_FILE
        arrays = dict(zip(("w1", "b1", "w2", "b2"), T.unflatten(board_w, shape)))
        arrays.update({f"twin_{k}": v for k, v in zip(("w1", "b1", "w2", "b2"), T.unflatten(twin.flat, shape))})
        arrays["summary_json"] = np.array(dumps_strict(res.summary()))
        atomic_savez(out, **arrays)
    return res


def _counts_of(ev: P.HeadEval) -> dict:
    return {"n": ev.n, "correct": ev.correct, "tp": ev.tp, "fp": ev.fp, "tn": ev.tn, "fn": ev.fn}
