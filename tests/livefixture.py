"""A cheap electrical-looking run for the live-mode tests: the bench's toy run (a real INT8 model of
the fleet architecture, (40, 6) windows, 6 classes) copied and labelled as a built-in electrical
run (its channels, full scales and dataset), so the simulated sensor plays the electrical generator
into it. Its decisions on that data are arbitrary (a toy model), which the twin tests do not mind."""
from __future__ import annotations

import json
import shutil
from pathlib import Path


def electrical_toy_run(tmp_path_factory) -> Path:
    from test_bench import shared_run

    src = shared_run(tmp_path_factory)
    run = tmp_path_factory.getbasetemp() / "live_run" / "toy-electrical"
    if not (run / "report.json").is_file():
        tmp = run.with_name(run.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(src, tmp)
        cfg = json.loads((tmp / "config.json").read_text())
        cfg.update(dataset="electrical", devices=4, seed=0)
        (tmp / "config.json").write_text(json.dumps(cfg))
        d = tmp / "devices" / "dev03" / "device.json"
        info = json.loads(d.read_text())
        info.update(channel_names=["Ia", "Ib", "Ic", "Va", "Vb", "Vc"],
                    channel_scale=[1000.0, 1000.0, 1000.0, 1.0, 1.0, 1.0],
                    class_names=["no_fault", "LG", "LL", "LLG", "LLL", "LLLG"])
        d.write_text(json.dumps(info))
        tmp.rename(run)
    return run
