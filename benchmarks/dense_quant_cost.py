"""INT8 accuracy cost of per-tensor dense (FULLY_CONNECTED) weight scales against per-channel ones.

    python benchmarks/dense_quant_cost.py --datasets electrical,mechanical --seeds 0,1,2 --devices 10

For every fleet and seed it trains one default Fed-Meta-Align run (or reuses a finished one under
``--work``), then converts every device's final float model twice from the same float weights and
the same representative windows the trainer used: per-tensor dense layers (what fedtiny deploys,
since the Nano 33 BLE's TFLM library computes per-channel FULLY_CONNECTED wrongly) and per-channel
dense layers (the TF converter's default). Each INT8 model is evaluated with tflite-micro on the
device's test split with the device's tuned threshold. The per-tensor conversion must reproduce the
run's own ``model_int8.tflite`` byte for byte (checked: it proves the representative set is the
trainer's). Prints per fleet the mean INT8 accuracy both ways (mean over devices, then mean and
sample std over seeds) and the largest per-device drop (per-channel minus per-tensor).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import time
from pathlib import Path


def _device_accuracies(run: Path, cfg, data, dev: int, converter) -> tuple[float, float]:
    """(per-channel, per-tensor) INT8 test accuracy of one device of a finished run."""
    import keras
    import numpy as np

    from fedtiny.trainer.pipeline import key
    from fedtiny.trainer.quantize import quant_params, quantize_input
    from fedtiny.trainer.rundir import device_dir
    from fedtiny.trainer.threshold import decide, dequantize
    from fedtiny.trainer.tflm import run_int8

    ddir = device_dir(run, dev)
    info = json.loads((ddir / "device.json").read_text())
    weights = keras.models.load_model(ddir / "model_float.keras", compile=False).get_weights()
    s = data.splits[dev]
    # the trainer's representative set (client.SiteClient._artifacts): same pool, same keyed permutation
    rep_pool = np.concatenate([s.phase2_train.x, s.phase3_tune.x, s.phase1.x])
    rng = np.random.default_rng(key(cfg.seed, "phase3", dev, 1))
    rep_x = rep_pool[np.sort(rng.permutation(len(rep_pool))[:cfg.rep_samples])]
    accs = []
    for per_channel in (True, False):
        tfl = converter.convert(data.spec, weights, rep_x, per_channel_dense=per_channel)
        if not per_channel and hashlib.sha256(tfl).hexdigest() != info["model_sha256"]:
            raise SystemExit(f"error: {ddir}: the per-tensor conversion does not reproduce the run's model")
        q = quant_params(tfl)
        out = run_int8(tfl, quantize_input(s.test.x, q["input_scale"], q["input_zero_point"]))
        pred = decide(dequantize(out, q["output_scale"], q["output_zero_point"]), info["threshold"])
        accs.append(float(np.mean(pred == s.test.y)))
    return accs[0], accs[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="electrical,mechanical")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--devices", type=int, default=10)
    ap.add_argument("--work", default="results/dense-quant-cost", help="run directories (reused if finished)")
    args = ap.parse_args()

    import numpy as np

    from fedtiny.trainer.config import TrainConfig
    from fedtiny.trainer.pipeline import load_or_train, prepare
    from fedtiny.trainer.quantize import Converter

    t0 = time.perf_counter()
    seeds = [int(v) for v in args.seeds.split(",")]
    print(f"command: python {' '.join(sys.argv)}")
    print(f"machine: {platform.machine()}, python {platform.python_version()}")
    print(f"{'fleet':>11} {'seed':>4} {'dev':>3} {'per-channel %':>13} {'per-tensor %':>12} {'drop pp':>7}")
    summary = {}
    with Converter() as conv:
        for name in args.datasets.split(","):
            cfg_means, max_drop, worst = [], -np.inf, None
            for seed in seeds:
                cfg = TrainConfig(dataset=name, devices=args.devices, seed=seed)
                run = Path(args.work) / f"{name}-s{seed}"
                load_or_train(cfg, run)
                data = prepare(cfg)
                pc, pt = [], []
                for dev in range(args.devices):
                    a_pc, a_pt = _device_accuracies(run, cfg, data, dev, conv)
                    pc.append(a_pc)
                    pt.append(a_pt)
                    drop = 100 * (a_pc - a_pt)
                    print(f"{name:>11} {seed:>4} {dev:>3} {100 * a_pc:>13.2f} {100 * a_pt:>12.2f} {drop:>7.2f}",
                          flush=True)
                    if drop > max_drop:
                        max_drop, worst = drop, (seed, dev)
                cfg_means.append((np.mean(pc), np.mean(pt)))
            m = np.asarray(cfg_means) * 100
            sd = m.std(axis=0, ddof=1) if len(m) > 1 else np.full(2, np.nan)
            summary[name] = (m.mean(axis=0), sd, max_drop, worst)
    print()
    print(f"{'fleet':>11} {'per-channel INT8 %':>20} {'per-tensor INT8 %':>20} {'mean drop pp':>12} "
          f"{'largest device drop pp':>24}")
    for name, (mean, sd, drop, worst) in summary.items():
        print(f"{name:>11} {mean[0]:>12.2f} ± {sd[0]:<5.2f} {mean[1]:>12.2f} ± {sd[1]:<5.2f} "
              f"{mean[0] - mean[1]:>12.2f} {drop:>12.2f} (seed {worst[0]}, device {worst[1]})")
    print(f"wall time {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
