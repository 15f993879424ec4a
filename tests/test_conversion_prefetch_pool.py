"""The conversion pool is replaced after MAX_TASKS tasks without losing queued
work: many conversions queued at once (as the vectorized backend's prefetch does) all finish, with
the bytes of a direct conversion."""
from __future__ import annotations

import numpy as np


def test_queued_conversions_survive_pool_replacement(monkeypatch):
    from fedtiny.trainer.model import ModelSpec, build_model
    from fedtiny.trainer.quantize import Converter, convert_int8

    spec = ModelSpec((40, 6), 6)
    w = build_model(spec, 0).get_weights()
    rep = np.random.default_rng(0).uniform(-1, 1, (8, 40, 6)).astype(np.float32)
    Converter.shutdown()
    monkeypatch.setattr(Converter, "MAX_TASKS", 1)
    monkeypatch.setattr(Converter, "WORKERS", 2)
    try:
        c = Converter()
        futs = [c.submit(spec, [a * (1 + 0.01 * i) for a in w], rep) for i in range(5)]   # 5 pools
        out = [f.result(timeout=600) for f in futs]
    finally:
        Converter.shutdown()
    assert out[3] == convert_int8(spec.to_dict(), [a * 1.03 for a in w], rep)
    assert len(set(out)) == 5
