"""Run configuration: every knob of a training run, stored as ``config.json`` in the run directory."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from .data.fleet import DataError

REFERENCES = ("reference-local", "reference-central")     # classical: trainer/reference.py
METHODS = ("fedmetaalign", "fedavg", "fedprox", "median", "trimmed-mean", "local", "centralized") + REFERENCES
FEDERATED = ("fedmetaalign", "fedavg", "fedprox", "median", "trimmed-mean")
ALIGN_REFS = ("mean", "normalized", "server")
FAULTS = ("label-flip", "noise", "gain", "stuck", "random-update", "scaled-update")


@dataclass(frozen=True)
class TrainConfig:
    dataset: str = "electrical"
    devices: int = 10
    alpha: float = 0.5                 # Dirichlet label-skew concentration
    samples_per_device: int = 400      # built-in generators only
    public_samples: int = 1200         # built-in generators only
    method: str = "fedmetaalign"
    personalize: bool = True           # Phase 3 (federated methods)
    rounds: int | str = "auto"         # Phase-2 rounds: an integer, or "auto" (early stopping)
    patience: int = 5                  # auto: stop after this many rounds without a better val loss
    max_rounds: int = 30               # auto: never more rounds than this
    seed: int = 0
    skip_phase1: bool = False          # ablation (Fed-Meta-Align only)
    floor: float = 0.1                 # similarity floor c
    server_lr: float = 1.0             # server step alpha
    perf: str = "accuracy"             # p_k: accuracy | loss_improvement
    perf_prior: float = 4.0            # p_k shrunk towards the fleet's score with this pseudo-count of
                                       # validation groups (aggregation.shrink_perf); 0: raw p_k
    mu: float = 0.01                   # FedProx proximal weight
    tour: str = "fixed"                # Phase-1 order: fixed | random
    tours: int = 1
    test_fraction: float = 0.2
    splits: tuple = (0.2, 0.5, 0.3)    # Phase 1 / 2 / 3 shares of the non-test windows
    phase2_val_fraction: float = 0.2   # of Phase 2's share, for p_k and per-round accuracy
    phase3_val_fraction: float = 0.4   # of Phase 3's share, for the threshold
    phase0_epochs: int = 15
    phase1_epochs: int = 2
    local_epochs: int = 2
    phase3_epochs: int = 15
    reference_epochs: int = 30         # local-only and centralized references
    lr: float = 2e-3
    head_lr: float = 2e-3
    batch_size: int = 32
    threshold_metric: str = "balanced_accuracy"
    default_threshold: float = 0.5     # used when Phase 3 does not run
    min_device_samples: int = 20
    rep_samples: int = 100             # representative windows for INT8 calibration
    # real data only (a .csv file or a CWRU folder; docs/how-to/electrical-dataset.md)
    public_fraction: float = 0.2       # share of each class's groups held out as the Phase-0 pool
    window_ms: float = 10.0            # CSV window: half a 50 Hz cycle; 0 = per-sample (one row)
    hop_ms: float | None = None        # CSV hop; None = one 2 kHz model sample (0.5 ms), per-sample: one row
    block_ms: float = 12.5             # CSV time block (the group): 1.25 windows
    guard_ms: float = 0.5              # CSV gap between blocks that belongs to no group
    group_by: str = "block"            # CWRU: block | recording
    blocks_per_recording: int = 8      # CWRU, group_by block
    negate_augment: bool = True        # CSV: training windows also negated (fault incepted half a cycle later)
    frontend: str = "raw"              # what the model sees: raw | features | spectrum (fedtiny.frontend)
    # a fleet folder run (``dataset`` is the fleet folder; docs/reference/fleet-folder.md): the public
    # pool is another dataset; window_ms / hop_ms / block_ms / guard_ms are the resolved windowing
    public: str = ""                   # Phase-0 dataset of a fleet-folder run ("": not a fleet run)
    channels: tuple = ()               # channels picked by name (empty: fleet.toml's, else the public pool's)
    channel_units: tuple = ()          # each channel's unit in the run ("": not stated); a site converts to it
    class_map: str = ""                # CSV of from,to class renames
    device_names: tuple = ()           # the devices' names (fleet folders); empty: devNN
    # resolved from the data once (fleetdir.run_fields) so that server, sites and train agree
    class_names: tuple = ()            # class vocabulary, normal first
    rate_hz: float = 0.0               # the model's sample rate
    channel_scale: tuple = ()          # full scale per channel (the model sees x / scale)
    sign_symmetric: bool = False       # fleet.toml: a window and its negation are the same class

    # Phase-2 aggregation options (docs/explanation/when-to-choose.md). Defaults: the cosine
    # against the mean of unit-length updates and w_k smoothed across rounds (beta 0.8), measured to
    # remove the paper rule's period-2 oscillation at no accuracy cost (both built-in fleets and the
    # public-form files, 3 seeds); align_ref="mean", weight_smoothing=0 is the paper's rule.
    align_ref: str = "normalized"      # cosine reference: mean update (paper) | normalized | server
    server_momentum: float = 0.0       # heavy-ball momentum of the server step (0: none)
    weight_smoothing: float = 0.8      # EMA beta of the aggregation weights across rounds (0: none)
    trim: float = 0.2                  # trimmed-mean: fraction dropped at each end per coordinate
    # bounds on what sites report (docs/explanation/federation.md): update norms clipped to norm_bound x the
    # round's median norm, no single aggregation weight above weight_cap (0 / 1: off)
    norm_bound: float = 2.0
    weight_cap: float = 0.5
    # misbehaving devices (experiments): how many, and how they misbehave
    faulty: int = 0
    fault: str = "label-flip"

    def __post_init__(self) -> None:
        object.__setattr__(self, "splits", tuple(float(s) for s in self.splits))
        object.__setattr__(self, "channels", tuple(str(c) for c in self.channels))
        object.__setattr__(self, "channel_units", tuple(str(c) for c in self.channel_units))
        object.__setattr__(self, "device_names", tuple(str(c) for c in self.device_names))
        object.__setattr__(self, "class_names", tuple(str(c) for c in self.class_names))
        object.__setattr__(self, "channel_scale", tuple(float(c) for c in self.channel_scale))
        self.validate()

    def validate(self) -> None:
        from .threshold import METRICS

        def bad(msg: str) -> None:
            raise DataError(msg)

        if self.method not in METHODS:
            bad(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.devices < 1:
            bad("--devices must be at least 1")
        if self.rounds != "auto" and (isinstance(self.rounds, bool) or not isinstance(self.rounds, int)
                                      or self.rounds < 0):
            bad(f"--rounds must be an integer >= 0 or auto, got {self.rounds!r}")
        if self.tours < 0:
            bad("--tours must be >= 0")
        if self.patience < 1 or self.max_rounds < 1:
            bad(f"--patience and --max-rounds must be at least 1, got {self.patience}, {self.max_rounds}")
        if not self.perf_prior >= 0:
            bad(f"--perf-prior must be a number >= 0, got {self.perf_prior}")
        if len(self.splits) != 3 or any(s < 0 for s in self.splits) or abs(sum(self.splits) - 1) > 1e-6:
            bad(f"--splits needs three fractions >= 0 that sum to 1, got {list(self.splits)}")
        if not 0 < self.test_fraction < 1:
            bad("--test-fraction must lie between 0 and 1")
        if self.perf not in ("accuracy", "loss_improvement"):
            bad(f"unknown --perf {self.perf!r}; choose accuracy or loss_improvement")
        if self.tour not in ("fixed", "random"):
            bad(f"unknown --tour {self.tour!r}; choose fixed or random")
        if self.frontend not in ("raw", "features", "spectrum"):
            bad(f"unknown --frontend {self.frontend!r}; choose raw, features or spectrum")
        if self.threshold_metric not in METRICS:
            bad(f"unknown threshold metric {self.threshold_metric!r}; choose one of {', '.join(METRICS)}")
        if not (self.mu >= 0 and self.floor >= 0):     # written so that NaN fails too
            bad("--mu and --floor must be numbers >= 0")
        if self.seed < 0:
            bad(f"--seed must be >= 0, got {self.seed}")
        if self.batch_size < 1 or self.rep_samples < 1:
            bad("batch_size and rep_samples must be at least 1")
        if not (0 < self.phase2_val_fraction < 1 and 0 < self.phase3_val_fraction < 1):
            bad("phase2_val_fraction and phase3_val_fraction must lie between 0 and 1")
        if self.min_device_samples < 1:
            bad(f"--min-device-samples must be at least 1, got {self.min_device_samples}")
        if not 0 <= self.public_fraction < 1:
            bad(f"--public-fraction must lie in [0, 1), got {self.public_fraction}")
        if self.group_by not in ("block", "recording"):
            bad(f"unknown --group-by {self.group_by!r}; choose block or recording")
        if self.blocks_per_recording < 1:
            bad(f"--blocks-per-recording must be at least 1, got {self.blocks_per_recording}")
        if not (self.window_ms >= 0 and self.block_ms > 0 and self.guard_ms >= 0
                and (self.hop_ms is None or self.hop_ms > 0)):
            bad("--window-ms and --guard-ms must be >= 0, --block-ms and --hop-ms > 0")
        if self.dataset not in ("electrical", "mechanical") and self.samples_per_device != 400:
            bad("--samples-per-device applies to the built-in generators only: real data keeps every "
                "window its file gives (set the CSV windows with --window-ms / --hop-ms)")
        if self.public and not (self.class_names and self.rate_hz > 0 and self.channels
                                and len(self.channel_scale) == len(self.channels)):
            bad("a fleet-folder run needs its class names, rate, channels and channel scale resolved "
                "(fleetdir.run_fields)")
        if self.channel_units and len(self.channel_units) != len(self.channels):
            bad(f"{len(self.channel_units)} channel units for {len(self.channels)} channels")
        if self.device_names and len(self.device_names) != self.devices:
            bad(f"{len(self.device_names)} device names for {self.devices} devices")
        self._validate_aggregation(bad)

    def _validate_aggregation(self, bad) -> None:
        if self.align_ref not in ALIGN_REFS:
            bad(f"unknown --align-ref {self.align_ref!r}; choose one of {', '.join(ALIGN_REFS)}")
        if not 0 <= self.server_momentum < 1:
            bad(f"--server-momentum must lie in [0, 1), got {self.server_momentum}")
        if not 0 <= self.weight_smoothing < 1:
            bad(f"--weight-smoothing must lie in [0, 1), got {self.weight_smoothing}")
        if not 0 <= self.trim < 0.5:
            bad(f"--trim must lie in [0, 0.5), got {self.trim}")
        if not (self.norm_bound >= 0 and 0 < self.weight_cap <= 1):
            bad(f"--norm-bound must be >= 0 and --weight-cap in (0, 1], got {self.norm_bound}, {self.weight_cap}")
        if self.fault not in FAULTS:
            bad(f"unknown --fault {self.fault!r}; choose one of {', '.join(FAULTS)}")
        if not 0 <= self.faulty < self.devices:
            bad(f"--faulty must lie in [0, devices), got {self.faulty} of {self.devices}")

    @property
    def auto_rounds(self) -> bool:
        return self.rounds == "auto"

    @property
    def n_rounds(self) -> int:
        """The most Phase-2 rounds this run can take (``max_rounds`` under auto)."""
        return self.max_rounds if self.rounds == "auto" else int(self.rounds)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["splits"] = list(self.splits)
        d["channels"] = list(self.channels)
        for k in ("device_names", "class_names", "channel_scale", "channel_units"):
            d[k] = list(getattr(self, k))
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise DataError(f"config has unknown keys: {', '.join(sorted(unknown))}")
        return cls(**d)
