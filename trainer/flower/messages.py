"""What crosses the network between the server and a site: one definition, used by both ends.

Request (server -> site), a Flower ``Message`` whose ``message_type`` names the site step:
``query.hello`` (which device do you hold?), ``train`` (``client.SiteClient.fit``), ``evaluate``,
``query.finalize`` (Phase 3); a board site's ``query.head_join`` / ``query.head_round`` /
``query.head_final`` (join: its Phase-3 windows go to its board; one head-only round; Phase 3 on
the board), whose weights are the global head as one float32 vector. Its ``RecordDict``:
    "arrays": ArrayRecord   the global weights (absent in hello)
    "config": ConfigRecord  "request": JSON of the step's config (phase, round/tour, epochs, mu),
                            "run": JSON of the run's TrainConfig (so the site splits its data and
                            keys its training exactly as the server's run says)
Reply (site -> server):
    "arrays": ArrayRecord   trained weights (train; head_round / head_final: the board's head)
    "reply":  ConfigRecord  "device": the device the site holds (-1: none the run names),
                            hello only, when the site refuses the run: "refused" (why, one line)
                            "metrics": JSON of the step's metrics (counts, losses, accuracies),
                            finalize only: "model_int8" / "model_float" (model bytes),
                            "device_json" (JSON, the device.json), "record" (JSON, its metrics line)
Nothing else: no window, label or split of a site's data is ever put in a message
(``REPLY_KEYS`` is the complete list, and the tests check replies against it).
JSON keeps float values exact (``repr`` round trip) and key order (the metrics line).
"""
from __future__ import annotations

import numpy as np

from ..rundir import dumps_strict, loads_strict
from ..strategies import Reply

FIT, EVALUATE, HELLO, FINALIZE = "train", "evaluate", "query.hello", "query.finalize"
# a board site's requests (``fedtiny server --board-run``; ``head_rounds.py``, ``bench/board_site.py``)
HEAD_KINDS = ("head_join", "head_round", "head_final")
KIND_OF = {"fit": FIT, "evaluate": EVALUATE, "hello": HELLO, "finalize": FINALIZE,
           **{k: f"query.{k}" for k in HEAD_KINDS}}
REPLY_KEYS = {"device", "refused", "metrics", "model_int8", "model_float", "device_json", "record"}


def request_content(weights, config: dict, run: dict):
    """RecordDict of a request."""
    from flwr.app import ArrayRecord, ConfigRecord, RecordDict

    rd = RecordDict({"config": ConfigRecord({"request": dumps_strict(config), "run": dumps_strict(run)})})
    if weights is not None:
        rd["arrays"] = ArrayRecord(numpy_ndarrays=[np.asarray(w) for w in weights])
    return rd


def parse_request(content) -> tuple[list[np.ndarray] | None, dict, dict]:
    """(weights or None, step config, run config dict) of a request's RecordDict."""
    conf = content["config"]
    weights = content["arrays"].to_numpy_ndarrays() if "arrays" in content else None
    return weights, loads_strict(conf["request"]), loads_strict(conf["run"])


def reply_content(device: int, weights=None, metrics: dict | None = None, artifacts: dict | None = None,
                  refused: str | None = None):
    """RecordDict of a site's reply (module doc); ``artifacts`` as ``SiteClient.finalize`` returns them."""
    from flwr.app import ArrayRecord, ConfigRecord, RecordDict

    rec = {"device": int(device), "metrics": dumps_strict(metrics or {})}
    if refused is not None:
        rec["refused"] = str(refused)
    if artifacts is not None:
        rec.update(model_int8=bytes(artifacts["model_int8"]), model_float=bytes(artifacts["model_float"]),
                   device_json=dumps_strict(artifacts["device_json"]), record=dumps_strict(artifacts["record"]))
    rd = RecordDict({"reply": ConfigRecord(rec)})
    if weights is not None:
        rd["arrays"] = ArrayRecord(numpy_ndarrays=[np.asarray(w) for w in weights])
    return rd


def parse_reply(msg, device: int) -> Reply:
    """A Reply from a Flower reply message (``error`` set when the site failed or sent garbage)."""
    if msg.has_error():
        return Reply(device, error=f"site error: {(msg.error.reason or '').strip()[:300] or msg.error.code}")
    try:
        c = msg.content
        rec = c["reply"]
        if int(rec["device"]) != device:
            return Reply(device, error=f"reply names device {rec['device']}")
        weights = c["arrays"].to_numpy_ndarrays() if "arrays" in c else None
        metrics = loads_strict(rec["metrics"])
        art = None
        if "device_json" in rec:
            art = {"model_int8": bytes(rec["model_int8"]), "model_float": bytes(rec["model_float"]),
                   "device_json": loads_strict(rec["device_json"]), "record": loads_strict(rec["record"])}
        return Reply(device, weights, metrics, art)
    except (KeyError, TypeError, ValueError) as e:
        return Reply(device, error=f"malformed reply ({type(e).__name__}: {e})")
