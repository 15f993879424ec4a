"""The data and method options of a training run, defined once for ``train``, ``compare`` and
``ablate`` (so every option that makes ``train`` run can be given to an experiment too).

Each option's parameter name is the ``TrainConfig`` field it sets; ``config_fields`` picks them
out of a command's keyword arguments. Ranges are checked by click before anything heavy imports.
"""
from __future__ import annotations

import contextlib
import os

import click

MAX_DEVICES = 1000
# the built-in generators give every class of a device at least 4 windows (fleet.class_counts), and
# the electrical set has 6 classes: fewer windows per device cannot be generated
MIN_SAMPLES_PER_DEVICE = 4 * 6


def _splits(ctx, param, value):
    try:
        parts = tuple(float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter("give three comma-separated fractions, e.g. 0.2,0.5,0.3") from None
    if len(parts) != 3:
        raise click.BadParameter("give three comma-separated fractions, e.g. 0.2,0.5,0.3")
    return parts


def dataset_option():
    return click.option("--dataset", default="electrical", show_default=True,
                        help="electrical | mechanical (built in), a classData-format .csv, or a folder of "
                             "CWRU .mat files.")


def devices_option():
    return click.option("--devices", default=10, show_default=True, type=click.IntRange(1, MAX_DEVICES),
                        help="Number of devices (boards) in the fleet.")


class RoundsType(click.ParamType):
    """An integer >= 0 or ``auto``."""

    name = "N|auto"

    def convert(self, value, param, ctx):
        if isinstance(value, int) or value == "auto":
            return value
        try:
            n = int(str(value))
        except ValueError:
            self.fail(f"{value!r} is neither an integer nor auto", param, ctx)
        if n < 0:
            self.fail(f"{n} is below 0", param, ctx)
        return n


def rounds_option():
    return click.option("--rounds", default="auto", show_default=True, type=RoundsType(),
                        help="Phase-2 federated rounds: an integer, or auto (stop when the global "
                             "validation loss has not improved for --patience rounds, at most "
                             "--max-rounds; the best round's model goes on to Phase 3).")


def min_sites_option():
    return click.option("--min-sites", default=1, show_default=True, type=click.IntRange(1),
                        help="A Phase-2 round aggregates the sites that answered when at least this many "
                             "did (the others are logged in metrics.jsonl); fewer stops the run (resume "
                             "later).")


# name -> option; the name is the TrainConfig field
_CONFIG_OPTIONS = {
    "method": lambda: click.option(
        "--method", default="fedmetaalign", show_default=True,
        type=click.Choice(["fedmetaalign", "fedavg", "fedprox", "median", "trimmed-mean", "local", "centralized",
                           "reference-local", "reference-central"]),
        help="fedmetaalign (Phases 0-3); fedavg / fedprox baselines and the robust median / "
             "trimmed-mean aggregators from the same Phase-0 model; local (one model per device on "
             "its own data) or centralized (one model on pooled data) references; reference-local / "
             "reference-central: a random forest on time-domain features (scikit-learn), per device "
             "or on pooled data, no firmware."),
    "personalize": lambda: click.option(
        "--personalize/--no-personalize", default=True, show_default=True,
        help="Phase 3 per device (frozen extractor, fine-tuned head, tuned threshold)."),
    "alpha": lambda: click.option(
        "--alpha", default=0.5, show_default=True, type=click.FloatRange(0, min_open=True),
        help="Dirichlet label-skew concentration (small: each device sees few classes)."),
    "samples_per_device": lambda: click.option(
        "--samples-per-device", default=None, type=click.IntRange(MIN_SAMPLES_PER_DEVICE),
        help="Windows per device, built-in data only [default: 400]; refused on real data."),
    "min_device_samples": lambda: click.option(
        "--min-device-samples", default=20, show_default=True, type=click.IntRange(1),
        help="Refuse a device with fewer windows than this."),
    "public_fraction": lambda: click.option(
        "--public-fraction", default=0.2, show_default=True, type=click.FloatRange(0, 1, max_open=True),
        help="Real data: share of each class's groups held out as the Phase-0 public pool."),
    "window_ms": lambda: click.option(
        "--window-ms", default=10.0, show_default=True, type=click.FloatRange(0),
        help="CSV: window length (multiple of 0.5 ms); 0 = per-sample input (each row a 6-value vector)."),
    "hop_ms": lambda: click.option(
        "--hop-ms", default=None, type=click.FloatRange(0, min_open=True),
        help="CSV: hop between windows [default: one 2 kHz sample, 0.5 ms; per-sample: one row]."),
    "block_ms": lambda: click.option(
        "--block-ms", default=12.5, show_default=True, type=click.FloatRange(0, min_open=True),
        help="CSV: contiguous time block (the split unit) of each label run."),
    "guard_ms": lambda: click.option(
        "--guard-ms", default=0.5, show_default=True, type=click.FloatRange(0),
        help="CSV: gap between blocks that belongs to no block."),
    "group_by": lambda: click.option(
        "--group-by", default="block", show_default=True, type=click.Choice(["block", "recording"]),
        help="CWRU split unit: time blocks of a recording, or whole recordings (strict)."),
    "blocks_per_recording": lambda: click.option(
        "--blocks-per-recording", default=8, show_default=True, type=click.IntRange(1),
        help="CWRU, --group-by block: contiguous blocks per recording."),
    "negate_augment": lambda: click.option(
        "--negate-augment/--no-negate-augment", default=True, show_default=True,
        help="CSV: train also on each training window negated (the same fault incepted half a cycle "
             "later)."),
    "frontend": lambda: click.option(
        "--frontend", default="raw", show_default=True, type=click.Choice(["raw", "features", "spectrum"]),
        help="What the model sees: the raw window (1D CNN), per-channel statistics (features: mean, "
             "std, rms, peak, crest factor, kurtosis) or log band energies of a windowed FFT "
             "(spectrum), each computed bit for bit alike on the board (then a small dense net)."),
    "skip_phase1": lambda: click.option(
        "--skip-phase1", is_flag=True, help="Ablation: no Phase-1 tour (Fed-Meta-Align)."),
    "patience": lambda: click.option(
        "--patience", default=5, show_default=True, type=click.IntRange(1),
        help="--rounds auto: stop after this many rounds without a lower global validation loss."),
    "max_rounds": lambda: click.option(
        "--max-rounds", default=30, show_default=True, type=click.IntRange(1),
        help="--rounds auto: at most this many Phase-2 rounds."),
    "perf_prior": lambda: click.option(
        "--perf-prior", default=4.0, show_default=True, type=click.FloatRange(0),
        help="Fed-Meta-Align: p_k is shrunk towards the fleet's score as if the fleet had this many "
             "validation groups more of evidence (0: the paper's raw p_k; README \"When to choose "
             "Fed-Meta-Align\")."),
    "floor": lambda: click.option(
        "--floor", default=0.1, show_default=True, type=click.FloatRange(0),
        help="Similarity floor c in w_k ~ p_k * max(cos_k, c)."),
    "server_lr": lambda: click.option(
        "--server-lr", default=1.0, show_default=True, type=click.FloatRange(0, min_open=True),
        help="Server step alpha in theta += alpha * sum_k w_k d_k."),
    "perf": lambda: click.option(
        "--perf", default="accuracy", show_default=True, type=click.Choice(["accuracy", "loss_improvement"]),
        help="p_k: local validation accuracy, or relative loss improvement."),
    "mu": lambda: click.option(
        "--mu", default=0.01, show_default=True, type=click.FloatRange(0), help="FedProx proximal weight."),
    "tour": lambda: click.option(
        "--tour", default="fixed", show_default=True, type=click.Choice(["fixed", "random"]),
        help="Phase-1 device order."),
    "tours": lambda: click.option(
        "--tours", default=1, show_default=True, type=click.IntRange(0), help="Phase-1 tours."),
    "splits": lambda: click.option(
        "--splits", default="0.2,0.5,0.3", show_default=True, callback=_splits,
        help="Phase 1/2/3 shares of each device's non-test windows."),
    "test_fraction": lambda: click.option(
        "--test-fraction", default=0.2, show_default=True,
        type=click.FloatRange(0, 1, min_open=True, max_open=True), help="Held-out test share per device."),
    "local_epochs": lambda: click.option(
        "--local-epochs", default=2, show_default=True, type=click.IntRange(1), help="Phase-2 local epochs."),
    "align_ref": lambda: click.option(
        "--align-ref", default="normalized", show_default=True, type=click.Choice(["mean", "normalized", "server"]),
        help="Fed-Meta-Align: direction cos_k is measured against: the mean update (the paper's rule), "
             "the mean of unit-length updates (default, with --weight-smoothing 0.8: no period-2 "
             "oscillation; README \"When to choose Fed-Meta-Align\"), or that blended with the "
             "previous server step."),
    "server_momentum": lambda: click.option(
        "--server-momentum", default=0.0, show_default=True, type=click.FloatRange(0, 1, max_open=True),
        help="Fed-Meta-Align: heavy-ball momentum beta of the server step (0: none)."),
    "weight_smoothing": lambda: click.option(
        "--weight-smoothing", default=0.8, show_default=True, type=click.FloatRange(0, 1, max_open=True),
        help="Fed-Meta-Align: smooth the weights w_k across rounds, w = beta w_prev + (1 - beta) w, "
             "against the period-2 oscillation (0: none; 0 with --align-ref mean is the paper's rule)."),
    "trim": lambda: click.option(
        "--trim", default=0.2, show_default=True, type=click.FloatRange(0, 0.5, max_open=True),
        help="trimmed-mean: fraction of client values dropped at each end, per coordinate."),
    "faulty": lambda: click.option(
        "--faulty", default=0, show_default=True, type=click.IntRange(0),
        help="Experiments: this many devices misbehave (see --fault); accuracies of the honest ones "
             "are reported separately."),
    "fault": lambda: click.option(
        "--fault", default="label-flip", show_default=True,
        type=click.Choice(["label-flip", "noise", "gain", "stuck", "random-update", "scaled-update"]),
        help="How the --faulty devices misbehave: permuted labels, sensor noise, a gain fault, a stuck "
             "channel, updates of random direction, or a poisoner (update x50, accuracy 1.0, 1e9 samples)."),
    "norm_bound": lambda: click.option(
        "--norm-bound", default=2.0, show_default=True, type=click.FloatRange(0),
        help="Phase 2: clip every site's update to this multiple of the round's median update norm "
             "(0: off)."),
    "weight_cap": lambda: click.option(
        "--weight-cap", default=0.5, show_default=True, type=click.FloatRange(0, 1, min_open=True),
        help="Phase 2: no single site's aggregation weight above this (at least 1/K; 1: off). 0.5: one "
             "site never outweighs all the others together."),
    "threshold_metric": lambda: click.option(
        "--threshold-metric", default="balanced_accuracy", show_default=True,
        type=click.Choice(["balanced_accuracy", "accuracy", "f1"]),
        help="Metric of the fault-vs-normal decision the Phase-3 threshold maximises."),
}

# options an experiment sets per variant itself
VARIANT_FIELDS = ("method", "personalize")


def config_options(exclude: tuple[str, ...] = ()):
    """Decorator adding every TrainConfig option (minus ``exclude``) and ``--no-cache`` to a click
    command."""
    def deco(fn):
        fn = click.option("--no-cache", is_flag=True,
                          help="Decode real data files again instead of using the cache.")(fn)
        for name in reversed(list(_CONFIG_OPTIONS)):
            if name not in exclude:
                fn = _CONFIG_OPTIONS[name]()(fn)
        return fn
    return deco


def config_fields(kwargs: dict) -> dict:
    """The TrainConfig fields among a command's keyword arguments (an option left at None keeps the
    field's default). ``--samples-per-device`` on real data is refused, never ignored."""
    from fedtiny.errors import UserError
    from fedtiny.trainer.config import TrainConfig
    from fedtiny.trainer.data import BUILTIN

    names = set(TrainConfig.__dataclass_fields__)
    out = {k: v for k, v in kwargs.items() if k in names and not (k == "samples_per_device" and v is None)}
    if "samples_per_device" in out and out.get("dataset", "electrical") not in BUILTIN:
        raise UserError("--samples-per-device applies to the built-in generators only: real data keeps every "
                        "window its file gives (set the CSV windows with --window-ms / --hop-ms)")
    return out


@contextlib.contextmanager
def no_cache_env(off: bool):
    """``--no-cache``: set FEDTINY_NO_CACHE for the duration of the command (not part of the config:
    it cannot change any number), and restore the environment afterwards."""
    old = os.environ.get("FEDTINY_NO_CACHE")
    if off:
        os.environ["FEDTINY_NO_CACHE"] = "1"
    try:
        yield
    finally:
        if off:
            if old is None:
                os.environ.pop("FEDTINY_NO_CACHE", None)
            else:
                os.environ["FEDTINY_NO_CACHE"] = old


def file_values(ctx: click.Context, values: dict, source: str) -> dict:
    """The values of a settings file (``--config FILE``) checked and converted exactly as the same
    keys given as options on the command line (the option's click type, range and callback); a key
    that is no option of the command is passed on as it is (TrainConfig checks it). A JSON list
    stands for its comma-joined form (``splits``), null for the option's own default (kept as is).
    A bad value raises click.BadParameter naming the key and ``source``."""
    params = {p.name: p for p in ctx.command.params if isinstance(p, click.Option)}
    out = dict(values)
    for key, value in values.items():
        param = params.get(key)
        if param is None or value is None:
            continue
        text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
        try:
            out[key] = param.process_value(ctx, text)
        except click.BadParameter as e:
            raise click.BadParameter(f"{source}: key {key!r}: {e.format_message()}") from None
    return out
