"""The vectorized trainer (trainer/vectorized.py) against the per-device Keras engine.

Tolerance: weights within 1e-5 absolute after three epochs of Adam (measured: <= 4e-7); the
einsum convolution sums in another order than Keras' Conv1D, so bit equality is not claimed.
The frozen extractor of head-only training is bit-identical. Batch plans are checked exactly."""
from __future__ import annotations

import numpy as np
import pytest

from fedtiny.trainer.vectorized import batch_plan, np_evaluate

TOL = 1e-5


def test_batch_plan_draws_the_loop_batches():
    sizes, keys, B = [37, 64, 5, 0], [[0, 1, 3, k + 1] for k in range(4)], 32
    idx, mask, active, counts, per_epoch = batch_plan(sizes, keys, 2, B)
    assert per_epoch == 2 and idx.shape == (4, 4, B)
    for k, n in enumerate(sizes):
        rng = np.random.default_rng(keys[k])
        for e in range(2):
            order = rng.permutation(n)
            batches = [order[s:s + B] for s in range(0, n, B)]
            for j in range(per_epoch):
                s = e * per_epoch + j
                if j < len(batches):
                    b = batches[j]
                    assert counts[s, k] == len(b) and active[s, k] == 1
                    assert np.array_equal(idx[s, k, :len(b)], b)
                    assert mask[s, k].sum() == len(b) and np.all(mask[s, k, :len(b)] == 1)
                else:
                    assert counts[s, k] == 0 and active[s, k] == 0 and mask[s, k].sum() == 0


@pytest.mark.parametrize("shape", [(40, 6), (1024, 1)])
def test_vectorized_equals_per_device_loop(shape):
    from fedtiny.trainer.engine import Engine
    from fedtiny.trainer.model import ModelSpec
    from fedtiny.trainer.vectorized import VectorTrainer

    spec = ModelSpec(shape, 6)
    e = Engine(spec, 0)
    vt = VectorTrainer(spec, chunk=3)           # chunks of 3: a chunk boundary inside the fleet
    rng = np.random.default_rng(1)
    sizes = [37, 64, 5, 100]                    # unequal sizes, partial last batches, one tiny client
    data = [(rng.uniform(-1, 1, (n,) + shape).astype(np.float32), rng.integers(0, 6, n)) for n in sizes]
    w0 = e.init_weights
    start = [[w + 0.01 * k for w in w0] for k in range(4)]        # every client its own start
    anchor = [[w * 0.9 for w in w0] for _ in range(4)]
    keys = [[0, 1, 3, k + 1] for k in range(4)]
    for head, mu in ((False, 0.0), (False, 0.5), (True, 0.0)):
        W, L = vt.fit(start, data, 3, keys, head_only=head, mu=mu, anchors=anchor)
        for k in range(4):
            e.set_weights(start[k])
            loss = e.fit(data[k][0], data[k][1], 3, keys[k], head_only=head, mu=mu, anchor=anchor[k])
            ref = e.get_weights()
            diff = max(float(np.max(np.abs(a - b))) for a, b in zip(ref, W[k]))
            assert diff < TOL, (head, mu, k, diff)
            assert diff > 0 or head                 # not trivially the same arrays
            assert abs(loss - L[k]) < 1e-5
            if head:
                assert all(np.array_equal(a, b) for a, b in zip(start[k][:6], W[k][:6]))
                assert not all(np.array_equal(a, b) for a, b in zip(start[k][6:], W[k][6:]))
    # evaluation of all clients at once
    P = vt.predict(start, [x for x, _ in data])
    res = vt.evaluate(start, data)
    for k in range(4):
        e.set_weights(start[k])
        assert np.max(np.abs(e.predict(data[k][0]) - P[k])) < 1e-6
        ce, acc = e.evaluate(*data[k])
        assert abs(ce - res[k][0]) < 1e-6 and acc == res[k][1]


def test_np_evaluate_formula():
    p = np.array([[0.7, 0.3], [0.2, 0.8], [1.0, 0.0]])
    ce, acc = np_evaluate(p, np.array([0, 0, 1]))
    assert acc == pytest.approx(1 / 3)
    assert ce == pytest.approx(-(np.log(0.7) + np.log(0.2) + np.log(1e-12)) / 3)


def _lines(run):
    import json

    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_vectorized_run_equals_loop_run(small_run, small_run_loop):
    """The default engine (vectorized Phase 2 and Phase-3 heads) against ``--engine
    in-process-loop`` on the same small fleet: identical accuracies and decisions, thresholds
    within 1e-6, final global weights within 1e-5, Phase-2 metrics alike."""
    import json

    from fedtiny.trainer.rundir import load_weights

    a = json.loads((small_run / "report.json").read_text())
    b = json.loads((small_run_loop / "report.json").read_text())
    for da, db in zip(a["devices"], b["devices"], strict=True):
        assert da["float_acc"] == db["float_acc"] and da["int8_acc"] == db["int8_acc"]
        assert abs(da["threshold"] - db["threshold"]) < 1e-6
    for d in range(3):
        za = np.load(small_run / "devices" / f"dev{d:02d}" / "test_split.npz")
        zb = np.load(small_run_loop / "devices" / f"dev{d:02d}" / "test_split.npz")
        assert np.array_equal(za["y"], zb["y"]) and np.array_equal(za["pred_int8"], zb["pred_int8"])
    la, lb = _lines(small_run), _lines(small_run_loop)
    assert [x["phase"] for x in la] == [x["phase"] for x in lb]
    n2 = 0
    for x, y in zip(la, lb):
        if x["phase"] == "phase2":
            n2 += 1
            assert x["local_val_acc"] == y["local_val_acc"] and x["global_val_acc"] == y["global_val_acc"]
            assert np.allclose(x["weights"], y["weights"], atol=1e-6)
            assert np.allclose(x["cos"], y["cos"], atol=1e-5)
        if x["phase"] == "phase3":
            assert abs(x["loss"] - y["loss"]) < 1e-5
    assert n2 == 2

    def final(run):
        prog = json.loads((run / "state" / "progress.json").read_text())
        return load_weights(run / "state" / prog["weights"])

    diffs = [float(np.max(np.abs(x - y))) for x, y in zip(final(small_run), final(small_run_loop))]
    assert max(diffs) < 1e-5


def test_prefetched_conversion_is_used_only_for_the_same_inputs():
    from fedtiny.trainer.model import ModelSpec
    from fedtiny.trainer.quantize import Prefetched

    class Done:
        def __init__(self, v):
            self.v = v

        def result(self):
            return self.v

    class Base:
        def __init__(self):
            self.submitted, self.converted = 0, 0

        def submit(self, spec, weights, rep_x, per_channel_dense=False):
            self.submitted += 1
            return Done(b"pre" + bytes([int(weights[0][0] * 10)]))

        def convert(self, spec, weights, rep_x, per_channel_dense=False):
            self.converted += 1
            return b"new"

    spec, base = ModelSpec((40, 6), 6), Base()
    p = Prefetched(base)
    w, rep = [np.array([0.5], np.float32)], np.zeros((2, 40, 6), np.float32)
    p.start(spec, w, rep)
    p.start(spec, w, rep)                                           # started once
    assert base.submitted == 1
    assert p.convert(spec, [np.array([0.5], np.float32)], rep.copy()) == b"pre\x05" and base.converted == 0
    assert p.convert(spec, w, rep) == b"new"                        # used up: converted afresh
    p.start(spec, w, rep)
    assert p.convert(spec, [np.array([0.6], np.float32)], rep) == b"new"          # other weights
    assert p.convert(spec, w, rep + 1) == b"new"                                   # other windows
    assert p.convert(spec, w, rep, per_channel_dense=True) == b"new"
    assert p.convert(spec, w, rep) == b"pre\x05"
