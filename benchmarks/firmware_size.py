"""Flash, RAM and instructions per inference of the compiled runtime on qemu-m4, both built-in fleets.

    python benchmarks/firmware_size.py [--device 3] [--electrical-run DIR] [--mechanical-run DIR]

For each built-in fleet: a default run (``fedtiny train --dataset D --devices 10 --seed 0``,
trained into results/firmware_size/D unless a run directory is given), device ``--device``'s
firmware built with ``fedtiny build --board qemu-m4`` (compiled runtime, every test window
embedded, as the TFLM reference build was), then measured:

* text / data / bss: ``arm-none-eabi-size -A`` of the ELF (text = .text + .ARM.exidx; bss
  without the reserved stack block, which is reported apart);
* peak RAM = data + bss + the stack's high-water mark. The startup code paints the free stack
  with 0xA5A5A5A5; after a ``fedtiny bench`` pass (handshake, ``run`` over every embedded window,
  ``infer`` on streamed ones, ``reset`` first) the stack block is read back from QEMU's monitor
  (``pmemsave``) and the deepest overwritten word gives the stack used;
* instructions per inference: the bench's latency under ``-icount shift=0`` (clock=icount,
  SysTick ticks x 40, so +-40 instructions), min / p50 / max over the embedded windows.

The TFLM figures beside them are reference measurements of the default electrical
model (device 3, seed 0) with the real TFLM libraries on the same emulated board; they are not
re-measured here (no TFLM sources on this machine).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from fedtiny.trainer.rundir import dumps_strict

PAINT = bytes.fromhex("a5a5a5a5")
TFLM_REFERENCE = {   # measured once, default electrical model (device 3, seed 0), QEMU mps2-an386
    "TFLM + CMSIS-NN (Arduino_TensorFlowLite)": dict(instr=172_000, text=121_072, data=124, bss=15_216, arena=3_428),
    "TFLM reference kernels (esp-tflite-micro v1.3.8)": dict(instr=3_250_000, text=114_488, data=None, bss=None, arena=None),
}


def _run_dir(dataset: str, given: str | None) -> Path:
    if given:
        return Path(given)
    from fedtiny.trainer.config import TrainConfig
    from fedtiny.trainer.pipeline import train

    out = Path("results/firmware_size") / dataset
    if not (out / "report.json").is_file():
        train(TrainConfig(dataset=dataset, seed=0, devices=10), out)
    return out


def measure(run: Path, device: int, work: Path) -> dict:
    from fedtiny.bench import bench_device
    from fedtiny.codegen import armgcc
    from fedtiny.codegen.boards import Board, load_board
    from fedtiny.codegen.build import build_project
    from fedtiny.codegen.qemu import QemuBoard, monitor

    res = build_project(run, device, "qemu-m4", work / f"fw-{run.name}")
    elf = res.project_dir / armgcc.ELF
    sizes = armgcc.size_of(elf)
    syms = armgcc.symbols(elf)
    sstack, estack = syms["_sstack"], syms["_estack"]
    board = load_board("qemu-m4")
    mon = str(work / f"mon-{run.name}.sock")
    args = [a for a in board.qemu["args"]]
    i = args.index("-monitor")
    args[i + 1] = f"unix:{mon},server,nowait"
    qboard = Board({**board.data, "qemu": {**board.qemu, "args": args}}, board.path)
    dump = work / f"stack-{run.name}.bin"
    with QemuBoard(elf, qboard) as q:
        r = bench_device(q.port, run, device, stream=8, timeout=10, reset=True)
        said = monitor(mon, f"pmemsave {sstack:#x} {estack - sstack} \"{dump}\"")
    if not dump.is_file():
        raise RuntimeError(f"QEMU monitor did not save the stack: {said!r}")
    raw = dump.read_bytes()
    untouched = 0
    while untouched + 4 <= len(raw) and raw[untouched:untouched + 4] == PAINT:
        untouched += 4
    stack_used = (estack - sstack) - untouched
    lat = r.latency_us
    return dict(run=str(run), device=device, model_sha256=r.model_hash, ok=r.ok, n=r.n,
                accuracy=r.accuracy, run_accuracy=r.expected_accuracy, stream_lsb=r.stream["max_score_lsb_diff"],
                text=sizes["text"], data=sizes["data"], bss=sizes["bss"], stack_reserved=sizes["stack"],
                stack_used=stack_used, peak_ram=sizes["data"] + sizes["bss"] + stack_used,
                activations=res.arena_bytes, test_windows=res.test_samples,
                instr_min=lat["min"], instr_p50=lat["p50"], instr_max=lat["max"], clock=lat["clock"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", type=int, default=3)
    ap.add_argument("--electrical-run", default=None)
    ap.add_argument("--mechanical-run", default=None)
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    a = ap.parse_args()
    print(f"command: python {' '.join(sys.argv)}")
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for dataset, given in (("electrical", a.electrical_run), ("mechanical", a.mechanical_run)):
            rows[dataset] = measure(_run_dir(dataset, given), a.device, Path(tmp))
    head = (f"{'firmware':66} {'instr/inference':>16} {'text B':>8} {'data B':>7} {'bss B':>7} "
            f"{'stack B':>8} {'peak RAM B':>10} {'act./arena B':>12}")
    print(head)
    for dataset, m in rows.items():
        name = f"compiled, qemu-m4, {dataset} dev {m['device']} ({m['test_windows']} windows)"
        print(f"{name:66} {m['instr_p50']:>16,} {m['text']:>8,} {m['data']:>7,} {m['bss']:>7,} "
              f"{m['stack_used']:>8,} {m['peak_ram']:>10,} {m['activations']:>12,}")
    for name, ref in TFLM_REFERENCE.items():
        f = lambda v: "-" if v is None else f"{v:,}"  # noqa: E731
        print(f"{name + ', electrical dev 3':66} {'~' + f(ref['instr']):>16} {f(ref['text']):>8} "
              f"{f(ref['data']):>7} {f(ref['bss']):>7} {'-':>8} {'-':>10} {f(ref['arena']):>12}")
    for dataset, m in rows.items():
        print(f"{dataset}: bench {'ok' if m['ok'] else 'MISMATCH'} on {m['n']} windows (accuracy "
              f"{100 * m['accuracy']:.2f} % = run {100 * m['run_accuracy']:.2f} %), streamed scores "
              f"max {m['stream_lsb']} LSB from tflite-micro; instructions min {m['instr_min']:,} "
              f"max {m['instr_max']:,} (clock={m['clock']}, +-40)")
    if a.json:
        Path(a.json).write_text(dumps_strict(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
