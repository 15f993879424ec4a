"""The shared INT8 conversion worker is replaced after MAX_TASKS conversions without hanging, and a
warm-up before the first conversion does not change its bytes."""
from __future__ import annotations

import numpy as np


def test_worker_is_recycled_and_bytes_stay_equal(monkeypatch):
    from fedtiny.trainer.model import ModelSpec, build_model
    from fedtiny.trainer.quantize import Converter, convert_int8

    spec = ModelSpec((40, 6), 6)
    weights = build_model(spec, seed=0).get_weights()
    rep = np.random.default_rng(0).uniform(-1, 1, (16, 40, 6)).astype(np.float32)
    want = convert_int8(spec.to_dict(), weights, rep)
    Converter.shutdown()
    monkeypatch.setattr(Converter, "MAX_TASKS", 2)
    try:
        Converter.warm_up()
        pools = []                        # held, so no two pools can share an id
        for _ in range(3):
            assert Converter().convert(spec, weights, rep) == want
            pools.append(Converter._pool)
        assert len({id(p) for p in pools}) >= 2    # the worker was replaced on the way (warm-up counts)
    finally:
        Converter.shutdown()
