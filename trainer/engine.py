"""TensorFlow side of local training: one Keras model reused for every device.

A device's local training is: set the weights it starts from, reset the optimizer to its freshly
built state, then run ``epochs`` passes of mini-batch Adam over its data in an order drawn from
``np.random.default_rng(key)``. Every random choice is keyed by (seed, phase, round, device), so a
run resumed from a checkpoint repeats exactly what an uninterrupted run does.

Loss per batch (FedProx when mu > 0, plain cross-entropy when mu = 0):
    L = CE(y, f(x)) + (mu / 2) * sum_l ||theta_l - theta_global_l||^2
Head-only training (Phase 3) differentiates L with respect to the head variables alone, so the
extractor weights are never touched (bit-identical).
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from .model import ModelSpec, build_model, n_extractor_arrays  # noqa: E402

_DETERMINISM_SET = False


def configure_tf(seed: int) -> None:
    """Seed Python/NumPy/TF and make TF ops deterministic (once per process)."""
    global _DETERMINISM_SET
    from .tfquiet import import_tensorflow

    tf = import_tensorflow()
    import keras

    keras.utils.set_random_seed(seed)
    if not _DETERMINISM_SET:
        tf.config.experimental.enable_op_determinism()
        _DETERMINISM_SET = True


class Engine:
    """Holds the model, two Adam optimizers (full, head-only) and compiled train/predict steps."""

    def __init__(self, spec: ModelSpec, seed: int, lr: float = 2e-3, head_lr: float = 2e-3,
                 batch_size: int = 32):
        from .tfquiet import import_tensorflow

        tf = import_tensorflow()
        import keras

        configure_tf(seed)
        self.spec = spec
        self.batch_size = batch_size
        self.model = build_model(spec, seed)
        self.init_weights = self.model.get_weights()
        self.n_fx = n_extractor_arrays(self.model)
        self.vars = list(self.model.trainable_variables)
        self.head_vars = self.vars[self.n_fx:]
        self.opt = keras.optimizers.Adam(lr)
        self.opt.build(self.vars)
        self.head_opt = keras.optimizers.Adam(head_lr)
        self.head_opt.build(self.head_vars)
        self._opt_init = {id(o): [np.array(v.numpy()) for v in o.variables] for o in (self.opt, self.head_opt)}
        self._reset_fns: dict = {}
        self.anchor = [tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False) for v in self.vars]
        self.mu = tf.Variable(0.0, trainable=False, dtype=tf.float32)
        self.loss_fn = keras.losses.SparseCategoricalCrossentropy()
        sig = [tf.TensorSpec((None,) + tuple(spec.input_shape), tf.float32), tf.TensorSpec((None,), tf.int64)]
        self._step_full = tf.function(self._make_step(self.vars, self.opt), input_signature=sig)
        self._step_head = tf.function(self._make_step(self.head_vars, self.head_opt), input_signature=sig)
        self._predict = tf.function(lambda x: self.model(x, training=False), input_signature=sig[:1])

    def _make_step(self, train_vars, opt):
        import tensorflow as tf

        def step(x, y):
            with tf.GradientTape() as tape:
                probs = self.model(x, training=True)
                ce = self.loss_fn(y, probs)
                prox = tf.add_n([tf.reduce_sum(tf.square(v - a)) for v, a in zip(self.vars, self.anchor)])
                loss = ce + 0.5 * self.mu * prox
            grads = tape.gradient(loss, train_vars)
            opt.apply_gradients(zip(grads, train_vars))
            return ce
        return step

    # --- weights ---------------------------------------------------------------------------
    def get_weights(self) -> list[np.ndarray]:
        return [np.array(w) for w in self.model.get_weights()]

    def set_weights(self, weights) -> None:
        self.model.set_weights([np.asarray(w) for w in weights])

    def _reset(self, opt) -> None:
        """Back to the freshly built optimizer state, in one compiled call (about 30 separate
        assignments otherwise, the largest cost of a short local training)."""
        fn = self._reset_fns.get(id(opt))
        if fn is None:
            import tensorflow as tf

            pairs = [(v, tf.constant(init)) for v, init in zip(opt.variables, self._opt_init[id(opt)])]

            def reset():
                for v, c in pairs:
                    v.assign(c)
                return tf.constant(0)

            fn = self._reset_fns[id(opt)] = tf.function(reset)
        fn()

    # --- training ----------------------------------------------------------------------------
    def fit(self, x: np.ndarray, y: np.ndarray, epochs: int, key, *, head_only: bool = False,
            mu: float = 0.0, anchor=None, on_epoch=None) -> float:
        """Local training from the current weights; returns the mean CE of the last epoch.
        ``on_epoch()`` (optional) is called after every epoch, for progress display."""
        opt = self.head_opt if head_only else self.opt
        step = self._step_head if head_only else self._step_full
        self._reset(opt)
        self.mu.assign(float(mu))
        if anchor is not None:
            for a, w in zip(self.anchor, anchor):
                a.assign(np.asarray(w))
        rng = np.random.default_rng(key)
        n = len(y)
        last = float("nan")
        for _ in range(int(epochs)):
            order = rng.permutation(n)
            losses = []
            for s in range(0, n, self.batch_size):
                idx = order[s:s + self.batch_size]
                losses.append(float(step(x[idx], y[idx])) * len(idx))
            last = sum(losses) / max(n, 1)
            if on_epoch is not None:
                on_epoch()
        return last

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Softmax outputs (n, K) as float64."""
        if len(x) == 0:
            return np.zeros((0, self.spec.n_classes))
        return np.concatenate([np.asarray(self._predict(x[s:s + 512]), dtype=np.float64)
                               for s in range(0, len(x), 512)])

    def evaluate(self, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        """(mean cross-entropy, argmax accuracy)."""
        if len(y) == 0:
            return float("nan"), float("nan")
        p = self.predict(x)
        ce = float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], 1e-12, None))))
        return ce, float(np.mean(np.argmax(p, axis=1) == y))
