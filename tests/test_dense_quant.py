"""Models every target board runs as the host predicts.

The Nano 33 BLE's pinned TFLM library (Arduino_TensorFlowLite, CMSIS-NN) supports only per-tensor
FULLY_CONNECTED weights and silently uses channel 0's scale for per-channel ones. These tests read
every ``.tflite`` of a trained run with a second, independent reader (ai-edge-litert's interpreter)
and with codegen's flatbuffer reader, assert one scale on every FULLY_CONNECTED weight tensor, and
check that ``fedtiny build`` refuses, by name, a per-channel-FC model for nano33ble (and accepts it
for esp32dev, whose esp-tflite-micro supports per-channel FC).
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from fedtiny.codegen.build import build_project  # noqa: E402
from fedtiny.codegen.errors import CodegenError  # noqa: E402
from fedtiny.codegen.tflite_model import read_model  # noqa: E402


def _fc_weight_scales_litert(model_bytes: bytes) -> list[int]:
    """Number of scales of each FULLY_CONNECTED weight tensor (operator input 1), read by
    ai-edge-litert (an interpreter independent of codegen's reader)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(model_content=bytes(model_bytes),
                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    tensors = {t["index"]: t for t in it.get_tensor_details()}
    return [len(tensors[int(op["inputs"][1])]["quantization_parameters"]["scales"])
            for op in it._get_ops_details() if op["op_name"] == "FULLY_CONNECTED"]


@pytest.fixture(scope="module")
def pc_run(tmp_path_factory):
    """A run directory whose model has per-channel dense layers (the TF converter's default)."""
    from runfixture import make_run_dir

    return make_run_dir(tmp_path_factory.mktemp("pcrun") / "pc", per_channel_dense=True)


def test_every_trained_model_has_one_scale_per_fc_weight_tensor(small_run):
    devs = sorted((small_run / "devices").glob("dev*"))
    assert devs
    for d in devs:
        model = (d / "model_int8.tflite").read_bytes()
        litert = _fc_weight_scales_litert(model)
        ours = [w.n_scales for w in read_model(model).fc_weights]
        assert len(litert) == 2, f"{d.name}: expected the two dense layers, found {litert}"
        assert litert == [1, 1], f"{d.name}: FULLY_CONNECTED weight scales {litert}"
        assert ours == litert
        assert json.loads((d / "device.json").read_text())["dense_quantization"] == "per-tensor"


def test_trained_run_stores_the_host_int8_scores(small_run):
    """test_split.npz carries the host's raw int8 outputs (the bench compares a board's with them)."""
    from fedtiny.trainer.tflm import run_int8

    d = small_run / "devices" / "dev00"
    with np.load(d / "test_split.npz") as z:
        x, out = z["x_int8"], z["out_int8"]
    assert out.dtype == np.int8 and out.shape[0] == len(x)
    k = min(8, len(x))
    np.testing.assert_array_equal(out[:k], run_int8((d / "model_int8.tflite").read_bytes(), x[:k]))


def test_per_channel_conversion_is_detected(pc_run):
    """The check above can fail: the converter's default gives one scale per output channel."""
    model = (pc_run / "devices" / "dev03" / "model_int8.tflite").read_bytes()
    litert = _fc_weight_scales_litert(model)
    assert [w.n_scales for w in read_model(model).fc_weights] == litert
    assert litert[0] == 16 and all(n > 1 for n in litert), litert
    assert all(w.per_channel for w in read_model(model).fc_weights)


def test_build_refuses_per_channel_fc_for_nano33ble(pc_run, tmp_path, monkeypatch):
    monkeypatch.setenv("PLATFORMIO_CORE_DIR", str(tmp_path / "pio-core"))
    out = tmp_path / "nano"
    with pytest.raises(CodegenError) as e:
        build_project(pc_run, 3, "nano33ble", out, compile=False)
    msg = str(e.value)
    assert "per-channel FULLY_CONNECTED" in msg and "nano33ble" in msg
    assert "head_dense" in msg and "(16 scales)" in msg      # the tensor, by name
    assert not out.exists()
    # esp-tflite-micro supports per-channel FC: the same model builds for esp32dev
    res = build_project(pc_run, 3, "esp32dev", tmp_path / "esp", compile=False)
    manifest = json.loads((res.project_dir / "fedtiny_build.json").read_text())
    assert manifest["fc_weight_scales"][0] == 16


def test_build_cli_refusal_is_one_error_line(pc_run, tmp_path, monkeypatch):
    from fedtiny.codegen import cli as cgcli

    monkeypatch.setenv("PLATFORMIO_CORE_DIR", str(tmp_path / "pio-core"))
    r = CliRunner().invoke(cgcli.build, ["--run", str(pc_run), "--device", "3", "--board", "nano33ble",
                                         "--out", str(tmp_path / "p")])
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "per-channel FULLY_CONNECTED" in lines[0]


def test_per_tensor_fixture_builds_for_both_boards(tmp_path, monkeypatch):
    from runfixture import make_run_dir

    monkeypatch.setenv("PLATFORMIO_CORE_DIR", str(tmp_path / "pio-core"))
    run = make_run_dir(tmp_path / "pt")
    for board in ("nano33ble", "esp32dev"):
        res = build_project(run, 3, board, tmp_path / board, compile=False)
        assert json.loads((res.project_dir / "fedtiny_build.json").read_text())["fc_weight_scales"] == [1, 1]
