"""Help and docs say what the code does: every board in the help, README's links resolve, bare
``fedtiny`` prints the help, option minimums are what works, TensorFlow's retracing warnings stay
out of the output, and code comments say what and why (never which tracker entry)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from fedtiny.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_readme_links_and_named_docs_exist():
    text = (ROOT / "README.md").read_text()
    targets = [t for t in re.findall(r"\]\(([^)#\s]+)", text) if "://" not in t]
    targets += re.findall(r"`([\w./-]+\.md)`", text)
    assert targets
    missing = [t for t in targets if not (ROOT / t).exists()]
    assert not missing, missing


def test_help_names_every_board_and_what_build_and_flash_do():
    from fedtiny.codegen.boards import board_names

    top = CliRunner().invoke(main, ["--help"]).output
    build_line = next(ln for ln in top.splitlines() if ln.strip().startswith("build"))
    assert "compiled" in build_line and "qemu-m4" in " ".join(top.split())
    assert "QEMU" in " ".join(top.split()).split(" flash ", 1)[1].split(" bench ", 1)[0]
    for cmd in ("build", "flash"):
        out = " ".join(CliRunner().invoke(main, [cmd, "--help"]).output.split())
        assert f"Board name ({', '.join(board_names())})" in out, out


def test_bare_fedtiny_prints_the_help():
    r = CliRunner().invoke(main, [])
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("Usage:") and "Commands:" in r.stdout and "\n  train " in r.stdout
    assert "error:" not in r.output


def _one_error(r, *needles):
    assert r.exit_code == 2, r.output
    err = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "Traceback" not in r.output, r.output
    for n in needles:
        assert n in err[0], err[0]


def test_samples_per_device_minimum_is_what_the_generators_can_make(tmp_path):
    from fedtiny.options import MIN_SAMPLES_PER_DEVICE
    from fedtiny.trainer.data import fleet

    _one_error(CliRunner().invoke(main, ["train", "--samples-per-device", str(MIN_SAMPLES_PER_DEVICE - 1),
                                         "--out", str(tmp_path / "r")]), "--samples-per-device")
    assert not (tmp_path / "r").exists()
    for k in (6, 4):                    # electrical, mechanical classes
        assert fleet.class_counts(MIN_SAMPLES_PER_DEVICE, [1.0] * k).sum() == MIN_SAMPLES_PER_DEVICE
    with pytest.raises(fleet.DataError):
        fleet.class_counts(MIN_SAMPLES_PER_DEVICE - 1, [1.0] * 6)


def test_emulate_refuses_a_negative_window_count(tmp_path):
    _one_error(CliRunner().invoke(main, ["emulate", "--run", str(tmp_path), "--device", "0", "--n-test", "-1"]),
               "--n-test", "-1")


def test_tensorflow_retracing_warnings_are_dropped():
    import io
    import logging

    import numpy as np

    from fedtiny.trainer.tfquiet import import_tensorflow

    tf = import_tensorflow()
    import keras

    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    log = tf.get_logger()
    level = log.level
    log.setLevel(logging.WARNING)     # other code of the session may have raised it (quiet runs)
    log.addHandler(handler)
    try:
        for _ in range(7):              # a new model each time, as every device and variant has
            m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
            m.predict(np.zeros((3, 4), np.float32), verbose=0)
        tf.get_logger().warning("an ordinary warning")
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
    assert "retracing" not in buf.getvalue()
    assert "an ordinary warning" in buf.getvalue()          # other warnings still pass


TICKET = re.compile(r"\bissue\s*#?\d|\bissue's\b|\bthe issue\b|\bticket\b|\(#\d+\)|#\s*---\s*item\s+\d|\bitem \d+\)",
                    re.IGNORECASE)


def test_code_comments_name_no_ticket():
    exts = {".py", ".c", ".h", ".cpp", ".j2", ".json", ".toml", ".ini", ".ld", ".sh"}
    hits = []
    for p in ROOT.rglob("*"):
        rel = p.relative_to(ROOT)
        if rel.parts[0] in (".git", ".venv", "runs", "results") or "golden" in rel.parts or p.suffix not in exts:
            continue
        if not p.is_file():
            continue
        for i, line in enumerate(p.read_text(errors="replace").splitlines(), 1):
            if TICKET.search(line) and "TICKET = re.compile" not in line:
                hits.append(f"{rel}:{i}: {line.strip()[:100]}")
    assert not hits, "\n".join(hits)
