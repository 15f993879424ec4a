"""The DSP front end (fedtiny/frontend.py, firmware/frontend/ft_frontend.h).

* NumPy: the integer statistics and band energies agree with their float definitions (within the
  Q16 log's error), a batch (n, T, C) gives (n, F), bad windows are refused;
* no generated model has a MEAN op (every front end, both built-in fleets, trained runs);
* host compiler: the C front end, compiled with gcc together with the compiled runtime's model,
  gives on EVERY test window of EVERY device of both built-in fleets, for each front end, the
  host's int8 model input (``test_split.npz`` x_int8) and its int8 scores (out_int8), hence its
  decisions. (The Cortex-M4 build is checked the same way on QEMU, tests/test_qemu_m4.py.)
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from fedtiny import frontend as fe

needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")


def test_ilog2_q16_is_log2_within_its_error():
    v = np.array([1, 2, 3, 5, 7, 1000, 65535, 65536, 123456789, 2 ** 40 + 17, 2 ** 62], np.int64)
    got = fe.ilog2_q16(v) / 65536
    assert np.all(np.abs(got - np.log2(v.astype(np.float64))) < 0.01)
    assert fe.ilog2_q16(np.array([0, 1, 2, 4, 2 ** 20])).tolist() == [0, 0, 65536, 2 * 65536, 20 * 65536]


def _windows(n=5, t=1024, c=2, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 0.05, (n, t, c))
    x[:, :, 1] += 0.4 * np.sin(2 * np.pi * 100 * np.arange(t) / t)[None, :] + 0.01
    return np.clip(x, -1, 1)


def test_features_match_their_float_definitions():
    x = _windows()
    s = fe.to_int16(x)
    f = fe.features_int(s).reshape(len(x), 2, 6) / 65536.0
    sf = s.astype(np.float64)
    d = sf - sf.mean(axis=1, keepdims=True)
    assert np.allclose(f[..., 0] * 65536, sf.mean(axis=1), atol=0.51)
    assert np.allclose(f[..., 1], np.log2(d.std(axis=1)), atol=0.01)
    assert np.allclose(f[..., 2], np.log2(np.sqrt((sf ** 2).mean(axis=1))), atol=0.01)
    assert np.allclose(f[..., 3], np.log2(np.abs(sf).max(axis=1)), atol=0.01)
    kurt = (d ** 4).mean(axis=1) / (d ** 2).mean(axis=1) ** 2
    assert np.allclose(f[..., 5], np.log2(kurt), atol=0.03)
    assert np.all(np.abs(f[:, 1, 5] - np.log2(1.5)) < 0.1)      # a sine: kurtosis 1.5


def test_spectrum_matches_the_float_fft():
    x = _windows(t=1000)                       # zero-padded to 1024
    s = fe.to_int16(x)
    f = fe.spectrum_int(s).reshape(len(x), 2, 16) / 65536.0
    n = fe.fft_size(1000)
    d = s - fe.div_round(s.sum(axis=1), 1000)[:, None, :]
    spec = np.fft.rfft(d * (fe.hann_q15(1000) / 2 ** 12)[None, :, None], n=n, axis=1) / n
    p = np.abs(spec) ** 2
    e = fe.band_edges(1000)
    ref = np.stack([p[:, e[b]:e[b + 1]].sum(axis=1) for b in range(16)], axis=2)
    assert np.allclose(f, np.log2(ref), atol=0.05)
    assert np.all(f[:, 1, 3] > f[:, 1, 5] + 5)     # 100 cycles in 1000 samples: bin 102 of 1024, band 3


def test_batch_shapes_determinism_and_refusals():
    x = _windows(n=7, t=40, c=6)
    z = fe.compute("features", x)
    assert z.shape == (7, 36) and z.dtype == np.float32
    assert np.array_equal(z, fe.compute("features", x))
    assert np.array_equal(z[2:3], fe.compute("features", x[2:3]))  # a window's values do not depend on the batch
    assert fe.compute("spectrum", x).shape == (7, 6 * 16)
    assert fe.describe("spectrum", 40, 6, 2000.0)["band_hz"][:2] == [31.25, 93.75]
    with pytest.raises(fe.FrontendError, match="at least 8 samples"):
        fe.compute("spectrum", x[:, :4])
    with pytest.raises(fe.FrontendError, match="unknown front end"):
        fe.compute("mfcc", x)
    with pytest.raises(fe.FrontendError, match=r"\(n, T, C\)"):
        fe.compute("features", x[0])


def test_bad_frontend_config_is_a_data_error():
    from fedtiny.trainer.config import TrainConfig
    from fedtiny.trainer.data.fleet import DataError

    with pytest.raises(DataError, match="unknown --frontend 'mfcc'"):
        TrainConfig(frontend="mfcc")


# ----------------------------------------------------------------------------- no MEAN op

def test_no_generated_model_has_a_mean_op(builtin_runs, frontend_runs):
    from fedtiny.codegen.tflite_model import read_model

    runs = list(builtin_runs.values()) + list(frontend_runs.values())
    seen = 0
    for run in runs:
        for ddir in sorted((run / "devices").iterdir()):
            ops = read_model((ddir / "model_int8.tflite").read_bytes()).ops
            assert "MEAN" not in ops and "AVERAGE_POOL_2D" in ops, (ddir, ops)
            seen += 1
    assert seen >= 6 * 3


# ----------------------------------------------------------------------------- C == NumPy on the host

DRIVER_C = r"""
#include <stdio.h>
#include "ft_model.h"
#include "ft_frontend_config.h"
int main(void) {
  int16_t window[FT_FRONTEND_WINDOW_VALUES];
  int8_t in[FT_MODEL_INPUT_BYTES], out[FT_MODEL_OUTPUT_BYTES];
  while (fread(window, sizeof window[0], FT_FRONTEND_WINDOW_VALUES, stdin) == FT_FRONTEND_WINDOW_VALUES) {
    if (ft_frontend_run(&kFtFrontend, window, 0, in) != 0) return 3;
    ft_model_invoke(in, out);
    fwrite(in, 1, sizeof in, stdout);
    fwrite(out, 1, sizeof out, stdout);
  }
  return 0;
}
"""


def host_frontend_model(ddir: Path, root: Path) -> Path:
    """The device's front end + compiled model as a host filter program (gcc, warnings are errors)."""
    import json

    from fedtiny.codegen.compiled import emit, graph
    from fedtiny.codegen.frontend_c import frontend_files

    info = json.loads((ddir / "device.json").read_text())
    files = emit.model_files(graph.lower((ddir / "model_int8.tflite").read_bytes()), 0, "0" * 64)
    files.update(frontend_files(info, info["input_scale"], info["input_zero_point"], info["device"]))
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (root / "main.c").write_text(DRIVER_C)
    exe = root / "fe_model"
    r = subprocess.run(["gcc", "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror",
                        "-I", str(root / "include"), str(root / "src" / "ft_model.c"), str(root / "main.c"),
                        "-o", str(exe)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    return exe


@needs_gcc
@pytest.mark.parametrize("kind", ["features", "spectrum"])
@pytest.mark.parametrize("dataset", ["electrical", "mechanical"])
def test_c_frontend_equals_numpy_on_every_test_window(dataset, kind, frontend_runs, tmp_path):
    run = frontend_runs[(dataset, kind)]
    checked = 0
    for ddir in sorted((run / "devices").iterdir()):
        split = np.load(ddir / "test_split.npz")
        raw, x_int8, out_int8 = split["raw_int16"], split["x_int8"], split["out_int8"]
        n, f = len(raw), x_int8.shape[-1]
        exe = host_frontend_model(ddir, tmp_path / ddir.name)
        got = subprocess.run([str(exe)], input=np.ascontiguousarray(raw, "<i2").tobytes(),
                             capture_output=True, check=True).stdout
        rec = np.frombuffer(got, np.int8).reshape(n, -1)
        assert np.array_equal(rec[:, :f], x_int8.reshape(n, f)), ddir
        assert np.array_equal(rec[:, f:], out_int8), ddir
        checked += n
    assert checked >= 3 * 10


def test_codegen_refuses_a_frontend_entry_it_would_not_compute():
    from fedtiny.codegen.errors import CodegenError
    from fedtiny.codegen.frontend_c import config_header, frontend_of

    good = fe.describe("spectrum", 1024, 1, 12000.0)
    assert frontend_of({"frontend": good}) == good
    assert frontend_of({}) == {"kind": "raw"}
    with pytest.raises(CodegenError, match="differs from what this fedtiny version computes"):
        frontend_of({"frontend": {**good, "bands": 8}})
    with pytest.raises(CodegenError, match="unknown front end 'mfcc'"):
        frontend_of({"frontend": {"kind": "mfcc"}})
    with pytest.raises(CodegenError, match="incomplete"):
        frontend_of({"frontend": {"kind": "features"}})
    text = config_header(good, 0.05, -3, 0)
    assert "#define FT_FRONTEND_N_FEATURES 16" in text and "static int32_t g_ft_fe_re[1024];" in text
    with pytest.raises(CodegenError, match="input scale"):
        config_header(good, 0.0, 0, 0)
