"""The INT8 conversion worker is replaced after MAX_TASKS tasks, and conversions go on (no
deadlock, same bytes)."""
from __future__ import annotations

import numpy as np


def test_worker_is_replaced_and_conversions_continue(monkeypatch):
    from fedtiny.trainer.model import ModelSpec, build_model
    from fedtiny.trainer.quantize import Converter

    Converter.shutdown()
    monkeypatch.setattr(Converter, "MAX_TASKS", 2)
    spec = ModelSpec((40, 6), 6)
    w = build_model(spec, 0).get_weights()
    rep = np.random.default_rng(0).uniform(-1, 1, (8, 40, 6)).astype(np.float32)
    c = Converter()
    out, pools = [], []
    for _ in range(3):
        out.append(c.convert(spec, w, rep))
        pools.append(Converter._pool)
    assert out[0] == out[1] == out[2]
    assert pools[0] is pools[1] and pools[2] is not pools[1]      # a fresh worker for the third
    Converter.shutdown()
