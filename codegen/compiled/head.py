"""``--trainable-head``: the split of the compiled model, the head's memory plan, its config header.

The split. The head the board trains is the model's own decision head (``trainer.model``: the
Dense(16, ReLU6) -> Dense(K, softmax) after the ``features`` layer, the part Phase 3 fine-tunes
with the extractor frozen). Its input is the INT8 model's intermediate feature tensor: the
compiled model gains a second entry point, ``ft_model_features``, which runs the same generated
layers up to (not including) the first FULLY_CONNECTED and copies that tensor out. Why not a second
compiled model without the head: the extractor would then be a second copy of the same weights in
flash and a second program to keep equal to the first; the intermediate tensor is, by
construction, exactly what the deployed INT8 model computes (same kernels, same calibration), so
``infer``/``run`` and training share one extractor bit for bit. The board dequantizes the int8
feature codes with that tensor's scale and zero point (``x = s * (q - z)``, float32) and keeps
only those codes per window (n_in bytes instead of the whole window).

The starting weights are the head of the run's global model (``state/<weights>.npz``, the
weights Phase 3 starts from on the host), in float32, as C99 hex-float literals (exact).

The memory plan (``HeadPlan``), fixed at build time and checked against the board's RAM budget
before any file is written:

    parameters, gradients, momentum   3 * P * 4 B     (P = n_in*H + H + H*K + K)
    one batch                         4 * batch * (n_in + 2H + K) B   (inputs, z1, h, p)
    window store                      max_windows * (n_in + 2 + 2 + 8) B   (features, label, set,
                                      training order, validation score)
    threshold candidates              8 * (max_windows + 2) B
    staging of one sent window        input bytes
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import CodegenError
from .graph import Program

METRIC_CODES = {"balanced_accuracy": 0, "accuracy": 1, "f1": 2}
DEFAULT_BATCH = 8
DEFAULT_WINDOWS = 512
PER_WINDOW_FIXED = 2 + 2 + 8      # label + set bytes, uint16 order, double score


@dataclass(frozen=True)
class HeadPlan:
    n_in: int
    n_hidden: int
    n_classes: int
    batch: int
    max_windows: int
    input_bytes: int

    @property
    def n_params(self) -> int:
        from fedtiny.headtwin import HeadShape

        return HeadShape(self.n_in, self.n_hidden, self.n_classes).n_params

    @property
    def state_bytes(self) -> int:
        return 3 * 4 * self.n_params

    @property
    def batch_bytes(self) -> int:
        return 4 * self.batch * (self.n_in + 2 * self.n_hidden + self.n_classes)

    @property
    def store_bytes(self) -> int:
        return self.max_windows * (self.n_in + PER_WINDOW_FIXED) + 8 * (self.max_windows + 2)

    @property
    def total_bytes(self) -> int:
        return self.state_bytes + self.batch_bytes + self.store_bytes + self.input_bytes

    def to_dict(self) -> dict:
        return dict(asdict(self), n_params=self.n_params, state_bytes=self.state_bytes,
                    batch_bytes=self.batch_bytes, store_bytes=self.store_bytes, total_bytes=self.total_bytes)


def split_index(program: Program) -> int:
    """Index of the first head layer: the first FULLY_CONNECTED. The head must be exactly
    fc, fc, softmax (the model's Dense -> Dense(softmax)); anything else is refused."""
    kinds = [layer.kind for layer in program.layers]
    if "fc" not in kinds:
        raise CodegenError("--trainable-head: the model has no dense head (no FULLY_CONNECTED layer)")
    k = kinds.index("fc")
    if kinds[k:] != ["fc", "fc", "softmax"] or k == 0:
        raise CodegenError(f"--trainable-head needs an extractor followed by the head Dense -> Dense -> "
                           f"softmax; the compiled model's layers are {', '.join(kinds)}")
    return k


def global_head(run_dir: Path) -> list[np.ndarray]:
    """[W1, b1, W2, b2] of the run's global model (the weights Phase 3 starts from)."""
    from fedtiny.trainer.rundir import RunFileError, load_weights, read_json

    state = Path(run_dir) / "state"
    if not (state / "progress.json").is_file():
        raise CodegenError(f"{run_dir} has no state/progress.json: --trainable-head starts from the run's "
                           f"global model (state/weights-*.npz), which this run directory lacks")
    try:
        name = read_json(state / "progress.json").get("weights")
        if not name:
            raise CodegenError(f"{run_dir} has no global model (state/progress.json names no weights): "
                               f"--trainable-head starts from the global model's head")
        weights = load_weights(state / name)
    except (RunFileError, AttributeError) as e:
        raise CodegenError(f"cannot read the run's global model: {e}") from None
    if len(weights) < 4:
        raise CodegenError(f"the run's global model has {len(weights)} arrays; expected a dense head")
    head = [np.asarray(w, np.float32) for w in weights[-4:]]
    w1, b1, w2, b2 = head
    if not (w1.ndim == 2 and w2.ndim == 2 and b1.shape == (w1.shape[1],) and w2.shape[0] == w1.shape[1]
            and b2.shape == (w2.shape[1],)):
        raise CodegenError(f"the run's global head has shapes {[w.shape for w in head]}, not Dense -> Dense")
    return head


def make_plan(program: Program, head: list[np.ndarray], batch: int, max_windows: int) -> HeadPlan:
    """The plan of ``head`` on ``program``; refuses a head that does not fit the model."""
    k = split_index(program)
    n_in = program.layers[k - 1].out_size
    w1, _, w2, _ = head
    if w1.shape[0] != n_in or w2.shape[1] != program.output_size:
        raise CodegenError(f"the global head ({w1.shape[0]} -> {w1.shape[1]} -> {w2.shape[1]}) does not match "
                           f"the device's model (features {n_in}, classes {program.output_size})")
    if batch < 1 or max_windows < 1:
        raise CodegenError(f"--head-batch and --head-windows must be >= 1 (got {batch}, {max_windows})")
    if max_windows > 65535:
        raise CodegenError(f"--head-windows must be <= 65535 (got {max_windows})")
    return HeadPlan(n_in, int(w1.shape[1]), int(w2.shape[1]), int(batch), int(max_windows), program.input_size)


def check_budget(plan: HeadPlan, board, other_ram: int) -> None:
    """Raise CodegenError when the training plan plus the rest of the firmware's RAM (``other_ram``:
    activations, protocol buffers, runtime allowance) exceeds the board's RAM budget."""
    budget = int(board.budget["ram_bytes"])
    if plan.total_bytes + other_ram > budget:
        raise CodegenError(
            f"the training plan does not fit {board.name}'s RAM: parameters/gradients/momentum "
            f"{plan.state_bytes:,} B + one batch of {plan.batch} {plan.batch_bytes:,} B + {plan.max_windows} held "
            f"windows {plan.store_bytes:,} B + staging {plan.input_bytes:,} B = {plan.total_bytes:,} B, plus the "
            f"rest of the firmware {other_ram:,} B, is over the RAM budget {budget:,} B "
            f"(lower --head-windows or --head-batch)")


def _hexf(v) -> str:
    return float(np.float32(v)).hex() + "f"


def config_header(plan: HeadPlan | None, head: list[np.ndarray] | None = None, feature_scale: float = 0.0,
                  feature_zero_point: int = 0, threshold: float = 0.5, metric: str = "balanced_accuracy") -> str:
    """``ft_head_config.h``: FT_HEAD_TRAINABLE 0 without a plan, else the plan, the feature
    tensor's quantization, the threshold rule and the starting weights (hex floats, exact)."""
    lines = ["/* ft_head_config.h: the trainable head (GENERATED by fedtiny build; do not edit). */",
             "#ifndef FT_HEAD_CONFIG_H", "#define FT_HEAD_CONFIG_H", ""]
    if plan is None:
        lines += ["/* built without --trainable-head: head commands answer error no_head */",
                  "#define FT_HEAD_TRAINABLE 0", "", "#endif  /* FT_HEAD_CONFIG_H */", ""]
        return "\n".join(lines)
    if metric not in METRIC_CODES:
        raise CodegenError(f"unknown threshold metric {metric!r}")
    from fedtiny.headtwin import flatten

    flat = flatten(head)
    lines += ["#define FT_HEAD_TRAINABLE 1",
              f"#define FT_HEAD_IN {plan.n_in}",
              f"#define FT_HEAD_HIDDEN {plan.n_hidden}",
              f"#define FT_HEAD_CLASSES {plan.n_classes}",
              f"#define FT_HEAD_BATCH {plan.batch}",
              f"#define FT_HEAD_MAX_WINDOWS {plan.max_windows}",
              f"#define FT_HEAD_N_PARAMS {plan.n_params}",
              f"#define FT_HEAD_PLAN_BYTES {plan.total_bytes}",
              "/* the INT8 model's feature tensor: x = scale * (q - zero_point) */",
              f"#define FT_HEAD_FEATURE_SCALE {_hexf(feature_scale)}",
              f"#define FT_HEAD_FEATURE_ZP {int(feature_zero_point)}",
              f"/* threshold rule: trainer/threshold.py, metric {metric} */",
              f"#define FT_HEAD_METRIC {METRIC_CODES[metric]}",
              f"#define FT_HEAD_METRIC_NAME \"{metric}\"",
              f"#define FT_HEAD_DEFAULT_THRESHOLD {float(threshold).hex()}",
              "", "/* the global model's head: W1, b1, W2, b2 */",
              "static const float kFtHeadInit[FT_HEAD_N_PARAMS] = {"]
    for s in range(0, len(flat), 6):
        lines.append("  " + ", ".join(_hexf(v) for v in flat[s:s + 6]) + ",")
    lines += ["};", "", "#endif  /* FT_HEAD_CONFIG_H */", ""]
    return "\n".join(lines)
