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


def _channels(ctx, param, value):
    if value is None:
        return None
    parts = tuple(v.strip() for v in value.split(","))
    if not all(parts) or len(set(parts)) != len(parts):
        raise click.BadParameter("give distinct comma-separated channel names, e.g. Ia,Ib,Ic")
    return parts


# name -> option; the name is the TrainConfig field (``fleet`` sets ``dataset`` and ``devices``)
_CONFIG_OPTIONS = {
    "fleet": lambda: click.option(
        "--fleet", default=None, type=click.Path(exists=True, file_okay=False),
        help="A fleet folder (one folder per device; docs/reference/fleet-folder.md): the devices are its "
             "folders in name order. Needs --public."),
    "public": lambda: click.option(
        "--public", default=None,
        help="With --fleet: the Phase-0 public pool, any dataset fedtiny reads (electrical, mechanical, a "
             "classData .csv, a CWRU folder or a fleet folder); classes are matched by name."),
    "channels": lambda: click.option(
        "--channels", default=None, callback=_channels,
        help="With --fleet: the channels to use, by name and in this order [default: fleet.toml's, else "
             "the public pool's]."),
    "class_map": lambda: click.option(
        "--class-map", default=None, type=click.Path(exists=True, dir_okay=False),
        help="With --fleet: CSV of from,to class renames applied to device and public labels."),
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
        help="CSV: window length (multiple of 0.5 ms); 0 = per-sample input (each row a 6-value vector). "
             "--fleet: window [default: fleet.toml's, else 100 ms]."),
    "hop_ms": lambda: click.option(
        "--hop-ms", default=None, type=click.FloatRange(0, min_open=True),
        help="CSV: hop between windows [default: one 2 kHz sample, 0.5 ms; per-sample: one row]. "
             "--fleet: [default: fleet.toml's, else half the window]."),
    "block_ms": lambda: click.option(
        "--block-ms", default=12.5, show_default=True, type=click.FloatRange(0, min_open=True),
        help="CSV: contiguous time block (the split unit) of each label run. --fleet: time block inside "
             "each labelled segment [default: fleet.toml's, else 1000 ms]."),
    "guard_ms": lambda: click.option(
        "--guard-ms", default=0.5, show_default=True, type=click.FloatRange(0),
        help="CSV: gap between blocks that belongs to no block. --fleet: [default: fleet.toml's, else 0]."),
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
             "validation groups more of evidence (0: the paper's raw p_k; docs/explanation/"
             "when-to-choose.md)."),
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
             "oscillation; docs/explanation/when-to-choose.md), or that blended with the "
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


def config_fields(kwargs: dict, server: bool = False) -> dict:
    """The TrainConfig fields among a command's keyword arguments (an option left at None keeps the
    field's default). ``--samples-per-device`` on real data is refused, never ignored. ``server``:
    ``--public`` without ``--fleet`` is a fleet-folder run whose devices this process never sees."""
    from fedtiny.errors import UserError
    from fedtiny.trainer.config import TrainConfig
    from fedtiny.trainer.data import BUILTIN

    names = set(TrainConfig.__dataclass_fields__)
    out = {k: v for k, v in kwargs.items() if k in names and not (k == "samples_per_device" and v is None)}
    for k in ("public", "channels", "class_map"):
        if out.get(k) is None:
            out.pop(k, None)
    out.pop("device_names", None)         # server --device-names: a comma list, read by server_fields
    if kwargs.get("fleet") and server:
        raise UserError("the server holds only the public pool: give --public PUBLIC --devices N "
                        "(--device-names NAMES), not --fleet")
    if kwargs.get("fleet"):
        out.update(fleet_fields(kwargs))
    elif server and out.get("public"):
        out.update(server_fields(kwargs))
    elif out.get("public") or out.get("channels") or out.get("class_map"):
        raise UserError("--public, --channels and --class-map apply to a --fleet run")
    if "samples_per_device" in out and out.get("dataset", "electrical") not in BUILTIN:
        raise UserError("--samples-per-device applies to the built-in generators only: real data keeps every "
                        "window its file gives (set the CSV windows with --window-ms / --hop-ms)")
    return out


def _given(name: str) -> bool:
    """Whether the option ``name`` was given on the command line (not left at its default)."""
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return True
    src = ctx.get_parameter_source(name)
    return src is not None and src.name not in ("DEFAULT", "DEFAULT_MAP")


def fleet_fields(kwargs: dict) -> dict:
    """TrainConfig fields of a ``--fleet FLEET --public PUBLIC`` run (``fleetdir.run_fields``):
    dataset = FLEET, its device folders, the windowing from the options given, fleet.toml and the
    defaults."""
    from fedtiny.errors import UserError
    from fedtiny.trainer.data.fleetdir import run_fields

    fleet = kwargs["fleet"]
    if not kwargs.get("public"):
        raise UserError("--fleet needs --public PUBLIC (the Phase-0 pool: a built-in name, a .csv, a CWRU "
                        "folder or a fleet folder)")
    for opt, name in (("--dataset", "dataset"), ("--devices", "devices"), ("--alpha", "alpha")):
        if name in kwargs and _given(name):
            raise UserError(f"{opt} does not apply to --fleet: the devices are the fleet's folders")
    over = {k: kwargs.get(k) for k in ("window_ms", "hop_ms", "block_ms", "guard_ms") if _given(k)}
    return run_fields(kwargs["public"], fleet, over, kwargs.get("channels"), kwargs.get("class_map"),
                      seed=kwargs.get("seed") or 0, alpha=kwargs.get("alpha") or 0.5)


def server_fields(kwargs: dict) -> dict:
    """TrainConfig fields of a fleet-folder run's server (``fleetdir.run_fields`` without a fleet
    folder): the classes, rate, channels, scale and windowing from --public (its fleet.toml when it
    is a fleet folder) and the options; the devices' names from ``server_device_names``."""
    from fedtiny.trainer.data.fleetdir import run_fields

    over = {k: kwargs.get(k) for k in ("window_ms", "hop_ms", "block_ms", "guard_ms") if _given(k)}
    out = run_fields(kwargs["public"], None, over, kwargs.get("channels"), kwargs.get("class_map"),
                     seed=kwargs.get("seed") or 0, alpha=kwargs.get("alpha") or 0.5)
    devices, names = server_device_names(kwargs.get("devices"), _given("devices"), kwargs.get("device_names"),
                                         kwargs.get("site_names"), kwargs.get("sites_file"))
    out.update(devices=devices, device_names=names)
    return out


def server_device_names(devices: int | None, devices_given: bool, names_opt: str | None,
                        site_names: list[str] | None, sites_file=None) -> tuple[int, tuple[str, ...]]:
    """(devices, device names) of a fleet-folder run's server. With ``--sites`` the names are its
    ``[sites]`` keys (``site_names``, sorted) and the count is theirs: ``--device-names`` and an
    explicit ``--devices`` are then only checked against them. Without it: ``--device-names`` (a
    comma list, sorted; its length must be ``devices``), else ``dev00``.. ``devNN``. UserError on
    any disagreement."""
    from fedtiny.errors import UserError

    given = [n.strip() for n in (names_opt or "").split(",") if n.strip()]
    if len({n.casefold() for n in given}) != len(given):
        raise UserError(f"--device-names {names_opt}: a name is given twice (names are compared case-folded)")
    if site_names is not None:
        names = tuple(sorted(site_names))
        if given and sorted(given) != list(names):
            raise UserError(f"--device-names {','.join(sorted(given))} disagrees with --sites {sites_file or ''}, "
                            f"whose devices are {','.join(names)} (leave --device-names out with --sites)")
        if devices_given and devices != len(names):
            raise UserError(f"--devices {devices} disagrees with --sites {sites_file or ''}, which lists "
                            f"{len(names)} device(s)")
        return len(names), names
    if given:
        if len(given) != devices:
            raise UserError(f"--device-names names {len(given)} devices, --devices is {devices}")
        return devices, tuple(sorted(given))
    return devices, tuple(f"dev{i:02d}" for i in range(devices))


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
