"""Phase 3 on the board: time per training step, RAM of the training plan, flash and agreement with
the host twin, on qemu-m4 for both built-in fleets, beside the host-side Phase 3.

    python benchmarks/board_learning.py [--device 3] [--epochs N] [--electrical-run DIR] [--mechanical-run DIR]

For each built-in fleet: a default run (``fedtiny train --dataset D --devices 10 --seed 0``,
trained into results/board_learning/D unless a run directory is given); device ``--device``'s
firmware built with ``fedtiny build --board qemu-m4 --trainable-head`` (every test window
embedded, room for all of the device's Phase-3 windows, at least 512); QEMU started on it; ``fedtiny personalize`` (the device's Phase-3 windows sent, the
head trained on the board for the run's ``phase3_epochs`` or ``--epochs``, SGD lr 0.05,
momentum 0.9, batch 8, seed 0). Printed per fleet:

* time per training step: the board's SysTick ticks around each batch step x 40, under QEMU
  ``-icount shift=0``: **instructions** of the emulated Cortex-M4 (clock=icount, +-40 per step),
  not microseconds of a real board;
* the training plan's RAM (parameters, gradients, momentum, one batch, the window store), the ELF's
  flash (text + data) and RAM (data + bss) with ``arm-none-eabi-size``, and the same firmware
  built without the head for comparison;
* agreement: max |board - twin| over the head's weights, the tuned thresholds, whether every
  window's features and every test decision agree;
* the board's accuracy and false-alarm rate on the embedded test windows (float32 head, its
  threshold tuned on the board) beside the run's host-side Phase 3 (Adam, INT8 model) on the
  same test split.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from fedtiny.trainer.rundir import dumps_strict


def _run_dir(dataset: str, given: str | None) -> Path:
    if given:
        return Path(given)
    from fedtiny.trainer.config import TrainConfig
    from fedtiny.trainer.pipeline import train

    out = Path("results/board_learning") / dataset
    if not (out / "report.json").is_file():
        print(f"training the default {dataset} run into {out} ...", flush=True)
        train(TrainConfig(dataset=dataset, devices=10, seed=0), out)
    return out


def measure(run: Path, device: int, epochs: int | None, work: Path) -> dict:
    from fedtiny.bench.personalize import personalize, phase3_windows
    from fedtiny.bench.rundata import load_run_device
    from fedtiny.codegen import armgcc
    from fedtiny.codegen.boards import load_board
    from fedtiny.codegen.build import build_project
    from fedtiny.codegen.qemu import QemuBoard

    plain = build_project(run, device, "qemu-m4", work / f"plain-{run.name}")
    w = phase3_windows(run, device, load_run_device(run, device).info)
    n = len(w.y_train) + len(w.y_val)
    res = build_project(run, device, "qemu-m4", work / f"head-{run.name}", trainable_head=True,
                        head_windows=max(512, n))
    with QemuBoard(res.project_dir / armgcc.ELF, load_board("qemu-m4")) as q:
        r = personalize(q.port, run, device, epochs, write=False, windows=w)
    acc = r.accuracy
    twin_acc = r.twin_test["correct"] / r.twin_test["n"] if r.twin_test["n"] else None
    return dict(run=str(run), device=device, epochs=r.epochs, n_train=r.n_train, n_val=r.n_val,
                batch=r.batch, steps_per_epoch=r.steps, instr_per_step=r.step_units, clock=r.clock,
                plan=res.head_plan, text=res.sizes["text"], data=res.sizes["data"], bss=res.sizes["bss"],
                plain_text=plain.sizes["text"], plain_bss=plain.sizes["bss"],
                max_weight_diff=r.max_weight_diff, board_threshold=r.board_threshold,
                twin_threshold=r.twin_threshold, feature_mismatches=r.feature_mismatches,
                decisions_equal=r.test == r.twin_test, board_acc=acc, twin_acc=twin_acc,
                board_far=r.false_alarm_rate, n_test=r.test["n"], host=r.host_phase3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=None, help="default: the run's phase3_epochs")
    ap.add_argument("--electrical-run", default=None)
    ap.add_argument("--mechanical-run", default=None)
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    a = ap.parse_args()
    print(f"command: python {' '.join(sys.argv)}")
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for dataset, given in (("electrical", a.electrical_run), ("mechanical", a.mechanical_run)):
            rows[dataset] = measure(_run_dir(dataset, given), a.device, a.epochs, Path(tmp))
    pct = lambda v: "-" if v is None else f"{100 * v:.1f} %"   # noqa: E731
    print(f"{'fleet':11} {'instr/step':>11} {'plan RAM B':>10} {'flash B':>9} {'RAM B':>8} "
          f"{'(no head: flash/RAM B)':>23} {'max|w-twin|':>11} {'board acc':>9} {'board FAR':>9} "
          f"{'host P3 acc':>11} {'host P3 FAR':>11}")
    for dataset, m in rows.items():
        print(f"{dataset:11} {m['instr_per_step']:>11,.0f} {m['plan']['total_bytes']:>10,} "
              f"{m['text'] + m['data']:>9,} {m['data'] + m['bss']:>8,} "
              f"{str(m['plain_text'] + m['data']) + ' / ' + str(m['data'] + m['plain_bss']):>23} "
              f"{m['max_weight_diff']:>11.3g} {pct(m['board_acc']):>9} {pct(m['board_far']):>9} "
              f"{pct(m['host'].get('int8_acc')):>11} {pct(m['host'].get('int8_far')):>11}")
    for dataset, m in rows.items():
        print(f"{dataset}: device {m['device']}, {m['n_train']} training / {m['n_val']} validation windows, "
              f"{m['epochs']} epochs of {m['steps_per_epoch']} steps (batch {m['batch']}); clock={m['clock']}: "
              f"instructions counted by QEMU -icount, not microseconds; threshold board {m['board_threshold']:.6f} "
              f"twin {m['twin_threshold']:.6f}; features differing in {m['feature_mismatches']} window(s); test "
              f"decisions {'equal to' if m['decisions_equal'] else 'DIFFERENT from'} the twin's on {m['n_test']} "
              f"windows (twin accuracy {pct(m['twin_acc'])})")
    if a.json:
        Path(a.json).write_text(dumps_strict(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
