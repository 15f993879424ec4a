"""The front end's cost on qemu-m4 beside the model's: instructions per window and memory.

    python benchmarks/frontend_cost.py [--out results/frontend_cost] [--windows 8]

For each built-in fleet and front end (raw, features, spectrum) it trains a small run (3 devices,
method local: the cost depends on the window and the architecture, not on the weights), builds
device 0 for qemu-m4 (compiled runtime, ``--windows`` test windows embedded) and runs the probe
firmware (``fedtiny.codegen.probe``: the project's own front end, test data and model, the same
arm-none-eabi-gcc flags) under QEMU -icount shift=0, which reads back, per embedded window, the
instructions of ``ft_frontend_run`` and of ``ft_model_invoke`` (SysTick ticks x 40, restarted before
each window: the same figures on every run).
Printed: median instructions per window of each, the front end's static RAM (FFT buffers, int8
input; ``codegen.frontend_c.work_bytes``) and its flash tables, and the firmware's text / bss.
The probe also asserts that every board model input equals the host's.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("results/frontend_cost"))
    ap.add_argument("--windows", type=int, default=8)
    args = ap.parse_args()

    from fedtiny import frontend as fe
    from fedtiny.codegen.build import build_project
    from fedtiny.codegen.frontend_c import frontend_of, work_bytes
    from fedtiny.codegen.probe import probe
    from fedtiny.trainer.config import TrainConfig
    from fedtiny.trainer.pipeline import load_or_train

    t0 = time.time()
    print(f"machine: {platform.machine()}, Python {platform.python_version()}; qemu-m4 (mps2-an386, Cortex-M4), "
          f"-icount shift=0")
    print("fleet | front end | model input | front end instr/window | model instr/window | "
          "front end RAM B | front end tables B | firmware text B | bss B")
    for ds in ("electrical", "mechanical"):
        for kind in ("raw", "features", "spectrum"):
            cfg = TrainConfig(dataset=ds, devices=3, samples_per_device=160, public_samples=300,
                              method="local", reference_epochs=3, frontend=kind)
            run = args.out / f"{ds}-{kind}"
            load_or_train(cfg, run)
            res = build_project(run, 0, "qemu-m4", args.out / "firmware" / f"{ds}-{kind}", test_samples=args.windows)
            got = probe(res.project_dir)
            split = np.load(run / "devices" / "dev00" / "test_split.npz")
            assert all(np.array_equal(w.model_input, split["x_int8"][w.index].reshape(-1)) for w in got)
            info = json.loads((run / "devices" / "dev00" / "device.json").read_text())
            d = frontend_of(info)
            # int16 / uint16 tables (spectrum), int32 offsets and uint8 shifts per feature
            tables = 2 * sum(len(a) for a in fe.tables(kind, int(d.get("window", 0))).values())
            tables += 5 * int(d.get("n_features", 0))
            fe_i = int(np.median([w.frontend_instructions for w in got]))
            mo_i = int(np.median([w.model_instructions for w in got]))
            print(f"{ds} | {kind} | {'x'.join(str(v) for v in info['input_shape'])} | {fe_i:,} | {mo_i:,} | "
                  f"{work_bytes(d):,} | {tables:,} | {res.sizes['text']:,} | {res.sizes['bss']:,}", flush=True)
    print(f"wall time {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
