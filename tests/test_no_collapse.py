"""No collapse: on the small public-form CSV fleets, where a device's Phase-2 validation split is
one or two time blocks (its raw accuracy 0 or 1), Fed-Meta-Align with the shrunk p_k stays within
3 points of personalized FedAvg on every seed (mean INT8 test accuracy over the devices), and no
device's shrunk p_k is 0 in any round (the raw ones often are).

Every default (``--rounds auto``; after the first rounds, Phase 2 costs little next to Phase 0, the
tracing and Phase 3), 2 seeds of the 4-device classData fleet and 1 of the 3-device detect fleet;
the same runs with 3 seeds, and more fleets, are in docs/explanation/results.md
("This version"). With fewer epochs (Phase 0 and 3: 5, local: 1) or Phase 2 cut to at most 4 rounds,
the two methods' final models differ by one to several test windows either way on these test
splits of 12-18 windows per device (a window is 1.9-4.2 points of the mean), which says nothing
about collapse, so the check runs what users run."""
from __future__ import annotations

import json

import pytest

import realdata

from fedtiny.trainer.config import TrainConfig
from fedtiny.trainer.pipeline import train


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("public-forms")
    return {"classData": realdata.write_class_data(d / "classData.csv"),
            "detect": realdata.write_detect_data(d / "detect_dataset.csv")}


# the 4-device classData fleet is where the raw p_k collapsed (0.0 % on 2 of 3 seeds): two seeds;
# the detect form one seed, to keep the suite's time
@pytest.mark.parametrize("form,devices,seeds", [("classData", 4, (0, 1)), ("detect", 3, (0,))])
def test_fedmetaalign_stays_within_3_points_of_fedavg_p(files, tmp_path, form, devices, seeds):
    for seed in seeds:
        acc = {}
        for method in ("fedmetaalign", "fedavg"):
            cfg = TrainConfig(dataset=str(files[form]), devices=devices, seed=seed, method=method)
            acc[method] = train(cfg, tmp_path / f"{method}-s{seed}")["summary"]["mean_int8_acc"]
        assert acc["fedmetaalign"] >= acc["fedavg"] - 0.03, (form, devices, seed, acc)
        lines = [json.loads(x) for x in (tmp_path / f"fedmetaalign-s{seed}" / "metrics.jsonl").read_text().splitlines()]
        for rec in (x for x in lines if x.get("phase") == "phase2"):
            assert min(rec["perf"]) > 0, rec
