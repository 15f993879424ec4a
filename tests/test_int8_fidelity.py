"""INT8 (tflite-micro) accuracy against float on both built-in fleets, with the default options."""
from __future__ import annotations

import pytest


@pytest.mark.parametrize("dataset", ["electrical", "mechanical"])
def test_int8_within_1_5_pp_of_float_on_builtin_fleets(dataset, tmp_path):
    from fedtiny.trainer.config import TrainConfig
    from fedtiny.trainer.pipeline import train

    rep = train(TrainConfig(dataset=dataset, seed=0), tmp_path / dataset)
    s = rep["summary"]
    drop_pp = 100 * (s["mean_float_acc"] - s["mean_int8_acc"])
    assert abs(drop_pp) <= 1.5, (dataset, s)
    # and no single device loses more than two of its ~80 test windows
    assert s["max_int8_drop_pp"] <= 2.6, (dataset, rep["devices"])
