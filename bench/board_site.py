"""The board as a federated site (``fedtiny site --board-port P``): the site process is only the
serial bridge between Flower and a board whose firmware was built with ``--trainable-head``; every
training step runs on the board.

Requests (``trainer/flower/messages.py``; the server side is ``trainer/flower/head_rounds.py``):

- ``head_join``: check the board (handshake: its model is the run's model of this device; ``head``:
  its head has the shape of the run's global head), send the device's Phase-3 windows
  (``phase3_tune`` as training windows, ``phase3_val`` as validation windows, the model inputs
  quantized with the device's input scale and zero point, as ``fedtiny personalize`` sends them)
  and report how many it holds; the server fixes the site's aggregation weight n_k to that
  training count.
- ``head_round``: one round of head-only federated averaging: ``hinit``, ``hload`` the global
  head the server sent (momentum zero), ``htrain`` E epochs with the round's seed, ``hweights`` (the
  trained head, sent back), then ``head``: the board must still hold every window it was sent
  (a reset after training would otherwise pass unnoticed).
- ``head_final``: Phase 3 on the board: the same from the final global head with Phase 3's epochs,
  then ``hthr`` (the threshold tuned on its validation windows, ``trainer/threshold.py``'s rule)
  and ``heval 2`` (its embedded test windows): the personalized head, threshold and test counts.

A boot banner in the middle of a request (the board reset) fails that request: ``BoardReset``,
which the server counts as this site's failed reply. The board's held windows are then gone, so
the next request joins again first (the same windows, so the same count). A banner that arrived
between two requests is noticed before the next one, which joins again as well.

Nothing here trains on the host: the host only quantizes windows and moves bytes.
"""
from __future__ import annotations

import json
import secrets
import threading

import numpy as np

from fedtiny.firmware import protocol as P
from fedtiny.trainer.flower.messages import HEAD_KINDS

from .link import Disconnected
from .personalize import BoardReset, HeadLink
from .rundata import BenchError


class BoardSite:
    """Answers the board requests of one site; ``data`` is the site's ``SiteService`` (its data
    and its device number), used for nothing but reading the device's Phase-3 windows."""

    def __init__(self, port: str, data, baud: int = P.DEFAULT_BAUD, idle: float = 60.0, log=print):
        self.port, self.data, self.baud, self.idle, self.log = port, data, int(baud), float(idle), log
        self.session = None
        self.banner: P.Banner | None = None
        self.info: P.HeadInfo | None = None
        self.joined: dict | None = None        # what the board holds now (None: nothing known)
        self._windows: tuple | None = None     # (run key, (x_train, y_train, x_val, y_val))
        self._lock = threading.Lock()
        self.requests = 0

    # --- the board ---------------------------------------------------------------------------
    def open(self) -> P.HeadInfo:
        """Open the port, handshake and ask ``head``; BenchError when the board cannot serve
        (not fedtiny firmware, another protocol, no trainable head)."""
        from .host import _Session

        self.close()
        s = _Session(self.port, self.baud, timeout=min(self.idle, 5.0), retries=3, reconnect_wait=0.0)
        s.open()
        try:
            self.banner = s.handshake()
            hl = HeadLink(s, self.idle)
            hl.sync()          # a late answer to the handshake's 'info' must not read as a reset later
            self.info = hl.head()
        except BaseException:
            s.close()
            raise
        self.session = s
        self.joined = None
        return self.info

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None

    def _link(self) -> HeadLink:
        """The board's link for one request, synchronised: reopened when the last request lost it,
        then a line with a fresh nonce is sent and every line up to its error and 'ready' is
        dropped (late answers to an interrupted command included), so that no old line is read as
        an answer. A boot banner among them means the board reset since the last request and
        forgot its windows."""
        if self.session is None:
            self.open()
        link = self.session.link
        nonce = f"sync{secrets.token_hex(4)}"
        link.write((nonce + "\n").encode("ascii"))
        seen = False
        while True:
            msg = link.next_message(idle=self.idle)
            if msg is None:
                raise BenchError(f"{self.port}: no answer to a synchronisation line for {self.idle:g}s")
            if isinstance(msg, (P.Banner, P.ForeignBanner)):
                if self.joined is not None:
                    self.log(f"board {self.port} reset since the last request; sending its windows again")
                self.joined = None
            elif isinstance(msg, P.Error) and nonce in msg.detail:
                seen = True
            elif seen and isinstance(msg, P.Ready):
                return HeadLink(self.session, self.idle)

    # --- the service (``site_worker.SiteWorker`` calls these) --------------------------------
    def hello(self, fallback: int | None, run: dict | None = None) -> int:
        return self.data.hello(fallback, run)

    def greet(self, run: dict) -> tuple[int, str | None]:
        """(device, None), or (device, why) when the site's data does not fit the run: the same
        check as every site's (``SiteService.greet``), since the board trains on that data."""
        return self.data.greet(run)

    def handle(self, kind: str, weights, config: dict, run: dict, device: int) -> tuple:
        """(weights or None, metrics, None) of one request (module docstring)."""
        with self._lock:                          # one board: one request at a time
            self.requests += 1
            if kind not in HEAD_KINDS:
                raise ValueError(f"this site is a board ({self.port}); it answers board requests only, not "
                                 f"{kind!r}: start the federation with fedtiny server --board-run")
            if self.data.device is not None and device != self.data.device:
                raise ValueError(f"this site holds device {self.data.device}, not {device}")
            try:
                hl = self._link()
                rejoined = self.joined is not None and self.joined["key"] != _join_key(config, run)
                if self.joined is None or rejoined:
                    rejoined = kind != "head_join" or rejoined
                    self._join(hl, config, run, device)
                if kind == "head_join":
                    return None, self._held(rejoined=False), None
                flat = _one_flat(weights, self.info)
                trained = self._train(hl, flat, config)
                metrics = {**self._held(rejoined), **trained}
                if kind == "head_final":
                    metrics.update(self._personalize(hl))
                return [self._weights(hl)], metrics, None
            except BoardReset:
                self.joined = None
                raise
            except Disconnected as e:
                self.joined = None
                self.close()
                raise BoardReset(f"{e}; the board's held windows and training are lost") from None

    # --- steps -------------------------------------------------------------------------------
    def _held(self, rejoined: bool) -> dict:
        j = self.joined
        return {"n": j["n_train"], "n_val": j["n_val"], "rejoined": bool(rejoined), "plan_bytes": self.info.plan_bytes,
                "batch": self.info.batch, "clock": self.banner.clock}

    def _phase3(self, config: dict, run: dict, device: int) -> tuple:
        """The device's Phase-3 windows (int8 model inputs) under the run's config."""
        from fedtiny.trainer.quantize import quantize_input

        key = _join_key(config, run)
        if self._windows is None or self._windows[0] != key:
            cfg = self.data._cfg(run)
            if cfg.frontend != "raw":         # not checked on a board yet: refused rather than guessed
                raise BenchError("a board site sends raw windows; this run's model takes front-end features")
            s = self.data.data(cfg, device).splits
            scale, zp = float(config["input_scale"]), int(config["input_zero_point"])
            q = lambda x: quantize_input(x, scale, zp)  # noqa: E731
            self._windows = (key, (q(s.phase3_tune.x), np.asarray(s.phase3_tune.y, np.int64),
                                   q(s.phase3_val.x), np.asarray(s.phase3_val.y, np.int64)))
        return self._windows[1]

    def _join(self, hl: HeadLink, config: dict, run: dict, device: int) -> None:
        """Check the board against the run's device, then send it the device's Phase-3 windows."""
        if self.banner.model_hash != config["model_sha256"]:
            raise BenchError(f"{self.port}: the board runs model {self.banner.model_hash[:12]}, device {device} of "
                             f"the run is {str(config['model_sha256'])[:12]}; flash that device's firmware")
        info = self.info
        want = (int(config["n_in"]), int(config["n_hidden"]), int(config["n_classes"]))
        if (info.n_in, info.n_hidden, info.n_classes) != want:
            raise BenchError(f"{self.port}: the board's head ({info.n_in} -> {info.n_hidden} -> {info.n_classes}) "
                             f"is not the run's global head ({' -> '.join(map(str, want))})")
        x_tr, y_tr, x_val, y_val = self._phase3(config, run, device)
        if len(y_tr) == 0:
            raise BenchError(f"device {device} has no Phase-3 training windows")
        if len(y_tr) + len(y_val) > info.max_windows:
            raise BenchError(f"device {device} has {len(y_tr) + len(y_val)} Phase-3 windows; the board holds at "
                             f"most {info.max_windows} (build with --head-windows {len(y_tr) + len(y_val)} or more)")
        hl.ask("hclear")
        for set_, xs, ys in ((0, x_tr, y_tr), (1, x_val, y_val)):
            for x, y in zip(xs, ys):
                hl.send_window(x, int(y), set_)
        held = hl.head()
        if (held.n_train, held.n_val) != (len(y_tr), len(y_val)):
            raise BoardReset(f"{self.port}: the board holds {held.n_train} + {held.n_val} windows after being sent "
                             f"{len(y_tr)} + {len(y_val)}")
        self.joined = {"key": _join_key(config, run), "n_train": len(y_tr), "n_val": len(y_val)}
        self.log(f"board {self.port} holds device {device}'s {len(y_tr)} training and {len(y_val)} validation windows")

    def _train(self, hl: HeadLink, flat: np.ndarray, config: dict) -> dict:
        """hinit, hload ``flat`` (momentum zero), htrain; the epochs' losses and latency units per step."""
        epochs, seed = int(config["epochs"]), int(config["seed"])
        lr, momentum = np.float32(config["lr"]), np.float32(config["momentum"])
        hl.ask("hinit")
        hl.load(flat)
        seen: list[P.HeadEpoch] = []
        hl.ask("htrain", (epochs, seed, lr, momentum), what="training",
               on_line=lambda m: seen.append(m) if isinstance(m, P.HeadEpoch) else None)
        if len(seen) != epochs:
            raise BenchError(f"{self.port}: htrain answered {len(seen)} epoch lines, expected {epochs}")
        steps = sum(e.steps for e in seen)
        return {"epochs": epochs, "seed": seed, "losses": [float(e.loss) for e in seen],
                "step_units": sum(e.micros for e in seen) / max(steps, 1), "steps": steps}

    def _weights(self, hl: HeadLink) -> np.ndarray:
        """The board's head, after checking that it still holds its windows (no reset since)."""
        w = hl.weights(_n_params(self.info))
        held = hl.head()
        if (held.n_train, held.n_val) != (self.joined["n_train"], self.joined["n_val"]):
            raise BoardReset(f"{self.port}: the board holds {held.n_train} + {held.n_val} windows, not the "
                             f"{self.joined['n_train']} + {self.joined['n_val']} it was sent: it reset")
        return w

    def _personalize(self, hl: HeadLink) -> dict:
        """Threshold on the validation windows (when there are any) and the test windows' counts."""
        out = {}
        if self.joined["n_val"]:
            t = hl.one("hthr", P.HeadThreshold)
            out.update(threshold=float(t.threshold), threshold_value=float(t.value))
        else:
            out["threshold"] = float(hl.head().threshold)
        ev = hl.one("heval", P.HeadEval, (2,))
        test = {k: int(getattr(ev, k)) for k in ("n", "correct", "tp", "fp", "tn", "fn")}
        neg = test["fp"] + test["tn"]
        out.update(test=test, accuracy=test["correct"] / test["n"] if test["n"] else None,
                   false_alarm_rate=test["fp"] / neg if neg else None)
        return out


def _n_params(info: P.HeadInfo) -> int:
    return info.n_in * info.n_hidden + info.n_hidden + info.n_hidden * info.n_classes + info.n_classes


def _one_flat(weights, info: P.HeadInfo) -> np.ndarray:
    """The global head of a request: one float32 vector of the board head's parameter count."""
    if not weights or len(weights) != 1:
        raise ValueError("a board request carries the global head as one array")
    flat = np.asarray(weights[0], np.float32).reshape(-1)
    if len(flat) != _n_params(info) or not np.all(np.isfinite(flat)):
        raise ValueError(f"the global head has {len(flat)} values (finite: {bool(np.all(np.isfinite(flat)))}); "
                         f"the board's head has {_n_params(info)}")
    return flat


def _join_key(config: dict, run: dict) -> str:
    """What fixes the windows a board holds: the run's config and the device's model and input
    quantization."""
    return json.dumps([run, config.get("model_sha256"), config.get("input_scale"), config.get("input_zero_point")],
                      sort_keys=True)
