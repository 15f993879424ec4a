"""The run directory's files: strict JSON everywhere, crash-safe concurrent writes, one lock per
run directory, a checked metrics log on --resume, and one clear error for a damaged file."""
from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from conftest import small_config


def _refuse(name):
    raise ValueError(f"{name} is not JSON")


def strict(text: str):
    return json.loads(text, parse_constant=_refuse)


# ---------------------------------------------------------------- strict JSON

def test_metrics_line_writes_null_and_says_why_for_an_empty_phase1_share(tmp_path):
    """Phase-1 shares of size 0 (--splits 0,0.6,0.4): the visit's loss is null (not a bare NaN)
    and the line names the value and why it is missing."""
    from fedtiny.trainer.pipeline import train

    out = tmp_path / "run"
    cfg = small_config(devices=2, splits=(0.0, 0.6, 0.4), phase0_epochs=1, rounds=1)
    train(cfg, out, until="phase1")
    lines = [strict(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    visits = [m for m in lines if m["phase"] == "phase1"]
    assert len(visits) == 2
    for m in visits:
        assert m["loss"] is None
        assert "empty Phase-1 share" in m["not_finite"]["loss"]


def test_strict_json_writers_name_non_finite_values(tmp_path):
    from fedtiny.trainer.rundir import Metrics, atomic_write_json, dumps_strict, loads_strict

    rec = {"a": 1.5, "b": float("nan"), "c": [1.0, float("inf")], "d": {"e": np.float32("-inf")}}
    back = strict(dumps_strict(rec, why={"b": "nothing to measure"}))
    assert back["a"] == 1.5 and back["b"] is None and back["c"] == [1.0, None] and back["d"] == {"e": None}
    assert back["not_finite"] == {"b": "nan: nothing to measure", "c[1]": "inf: not a finite number",
                                  "d.e": "-inf: not a finite number"}
    m = Metrics(tmp_path / "m.jsonl")
    m.log({"loss": float("nan")}, why={"loss": "empty"})
    atomic_write_json(tmp_path / "x.json", {"acc": float("nan")})
    assert strict((tmp_path / "m.jsonl").read_text())["not_finite"] == {"loss": "nan: empty"}
    assert strict((tmp_path / "x.json").read_text())["acc"] is None
    with pytest.raises(ValueError):
        loads_strict('{"loss": NaN}')
    # a site's metrics cross the wire as strict JSON (messages.reply_content); the server refuses
    # the value that arrives as null, as it refuses a NaN in-process
    from fedtiny.trainer.strategies import Reply, check_reply

    wire = loads_strict(dumps_strict({"n": 3, "acc": float("nan")}))
    assert "not finite" in check_reply(Reply(0, None, wire), None)
    assert "not finite" in check_reply(Reply(0, None, {"n": 3, "acc": float("nan")}), None)


def test_every_json_file_of_a_run_is_strict(small_run):
    files = [p for p in Path(small_run).rglob("*") if p.suffix in (".json", ".jsonl")]
    assert any(p.name == "metrics.jsonl" for p in files) and any(p.name == "device.json" for p in files)
    for p in files:
        for line in (p.read_text().splitlines() if p.suffix == ".jsonl" else [p.read_text()]):
            strict(line)


# ---------------------------------------------------------------- concurrent writers

def test_concurrent_atomic_writes_of_one_file_never_fail_or_tear(tmp_path):
    """Sites of a Flower simulation and the server write the same run files at once (config.json
    when a run resumes): every writer has its own temporary file, so no writer's rename fails and a
    reader always sees one whole version."""
    from fedtiny.trainer.rundir import atomic_write_json, loads_strict, write_if_changed

    path = tmp_path / "config.json"
    errors, seen = [], set()
    stop = threading.Event()

    def writer(k):
        try:
            for i in range(80):
                atomic_write_json(path, {"writer": k, "i": i, "pad": "x" * 2000})
                write_if_changed(path, {"writer": k, "i": i, "pad": "x" * 2000})
        except Exception as e:  # noqa: BLE001 - the assertion below names it
            errors.append(repr(e))

    def reader():
        while not stop.is_set():
            try:
                seen.add(loads_strict(path.read_bytes())["writer"])
            except FileNotFoundError:
                pass
            except ValueError as e:
                errors.append(f"torn read: {e}")

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(6)]
    r = threading.Thread(target=reader)
    r.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    r.join()
    assert errors == []
    assert loads_strict(path.read_bytes())["i"] == 79
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]          # no temporary file left
