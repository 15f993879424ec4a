"""Per-device splits (pure NumPy).

Order of cuts for every device: a held-out *test* split first (default 20 %), then the rest goes
20/50/30 to Phases 1/2/3; Phase 2's share is cut again into local-train and local-validation (the
validation gives p_k), Phase 3's into fine-tune and threshold-validation. Cuts are stratified by
class and never split a group (a recording or time block); the share of each class is cut at the
cumulative fractions round(cumsum(f) * n_groups_of_class).

That rounding alone fails small real-data devices (a class with two time blocks puts none in the
test split; a device with few blocks gets an empty validation split; a device whose normal windows
are few puts none in the threshold-validation split, and its threshold cannot be tuned), so
``repair_parts`` then moves whole groups by a fixed rule (see there). The rule only moves groups
when the plain rounding leaves a split without a class or a side (normal / fault) that the device
has enough groups of; groups never cross splits, and the result is deterministic in (seed, device).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .data.fleet import DataError, Pool, TooLittleData


def split_groups(y: np.ndarray, groups: np.ndarray, fractions, rng: np.random.Generator) -> list[np.ndarray]:
    """Cut indices into len(fractions) parts, stratified by class (a group's class is the label of
    its first window), keeping every group whole. Returns sorted index arrays."""
    fr = np.asarray(fractions, dtype=np.float64)
    if np.any(fr < 0) or not np.isclose(fr.sum(), 1.0):
        raise DataError(f"split fractions must be >= 0 and sum to 1, got {list(fractions)}")
    y = np.asarray(y)
    groups = np.asarray(groups)
    uniq, first, inv = np.unique(groups, return_index=True, return_inverse=True)
    part_of = np.full(len(uniq), -1, np.int64)      # part of every group (-1: none)
    cum = np.cumsum(fr)
    gcls = y[first]
    for k in np.unique(gcls):
        gk = np.flatnonzero(gcls == k)               # positions in uniq, ascending as uniq[gcls == k]
        gk = gk[rng.permutation(len(gk))]
        cuts = np.round(cum * len(gk)).astype(int)
        start = 0
        for j, stop in enumerate(cuts):
            part_of[gk[start:stop]] = j
            start = stop
    win = part_of[inv.reshape(-1)]
    # one pass over the windows instead of a flatnonzero per group: the same sorted indices
    return [np.flatnonzero(win == j) for j in range(len(fr))]


@dataclass
class DeviceSplits:
    test: Pool
    phase1: Pool
    phase2_train: Pool
    phase2_val: Pool
    phase3_tune: Pool
    phase3_val: Pool

    def train_all(self) -> Pool:
        """Every window a device may train on (all shares but test): for local-only/centralized."""
        parts = [self.phase1, self.phase2_train, self.phase2_val, self.phase3_tune, self.phase3_val]
        return Pool(np.concatenate([p.x for p in parts]), np.concatenate([p.y for p in parts]),
                    np.concatenate([p.groups for p in parts]))


PARTS = ("test", "phase1", "phase2_train", "phase2_val", "phase3_tune", "phase3_val")
REQUIRED = ("phase2_train", "phase2_val", "phase3_tune", "phase3_val")
# splits that must hold both sides of the fault/no-fault decision (class 0 vs the others) when the
# device has two groups of each: the test split (false alarms and detections are both measured)
# and the threshold-validation split (the threshold is tuned between the two)
TWO_SIDED = ("test", "phase3_val")
# donor preference among the training parts on ties: Phase 1 may be empty, so it gives first
DONOR_ORDER = ("phase1", "phase2_train", "phase3_tune", "phase2_val", "phase3_val")


def repair_parts(part_of: dict[int, str], class_of: dict[int, int]) -> dict[int, str]:
    """Move whole groups between splits so that small devices stay trainable and testable.

    ``part_of`` maps each group to its split (one of ``PARTS``), ``class_of`` to its class. Rule:

    1. Test coverage: for every class with >= 2 groups of which none is in ``test``, one group moves
       to ``test`` from the training split holding the most groups of that class (ties:
       ``DONOR_ORDER``).
    2. Required splits: each empty split of ``REQUIRED`` (in that order) takes one group from the
       training split with the most groups, provided it keeps at least one (``phase1`` may give its
       last); the group taken is of a class that keeps another training group, then of the class with
       the most groups in that donor (ties: lower class id). If no training split can give, ``test``
       gives one when it holds two or more: of a class with two or more test groups (lowest id), else
       of the class with the most training groups, which then loses its test coverage (the run's
       warnings say so).
    3. Both sides: for each split of ``TWO_SIDED`` (in that order) and each side (normal = class 0,
       fault = any other class) of which the device has >= 2 groups but the split holds none, one
       group of that side moves in from the training split holding the most groups of that side
       that can give one (it keeps at least one group, ``phase1`` may give its last; ties:
       ``DONOR_ORDER``; ``phase3_val`` never takes from ``test``); the group is of that side's class
       with the most groups in the donor (ties: lower class id). ``phase2_val`` may give its last
       group to ``phase3_val``; when no split can give, a one-group ``phase2_train`` (then
       ``phase3_tune``) gives its group of that side and takes ``phase2_val``'s in exchange. An
       emptied ``phase2_val`` is then read from ``phase3_val`` (``split_device``): both are held
       out from every training, so p_k and the stopping rule still never see a training window.

    A moved group is always the highest-numbered candidate. Pure and deterministic; groups stay whole."""
    part = dict(part_of)

    def groups_in(p, k=None):
        return sorted(g for g, q in part.items() if q == p and (k is None or class_of[g] == k))

    for k in sorted(set(class_of.values())):
        if len([g for g in part if class_of[g] == k]) >= 2 and not groups_in("test", k):
            donor = max(DONOR_ORDER, key=lambda p: (len(groups_in(p, k)), -DONOR_ORDER.index(p)))
            part[groups_in(donor, k)[-1]] = "test"
    for need in REQUIRED:
        if groups_in(need):
            continue
        ok = [p for p in DONOR_ORDER if p != need and (len(groups_in(p)) >= 2 or (p == "phase1" and groups_in(p)))]
        if ok:
            donor = max(ok, key=lambda p: (len(groups_in(p)), -DONOR_ORDER.index(p)))
        elif len(groups_in("test")) >= 2:
            donor = "test"
        else:
            continue
        cands = groups_in(donor)
        by_cls = {}
        for g in cands:
            by_cls.setdefault(class_of[g], []).append(g)
        n_train = {c: sum(1 for g, q in part.items() if q != "test" and class_of[g] == c) for c in by_cls}
        if donor == "test":
            multi = [k for k, v in by_cls.items() if len(v) >= 2]
            k = min(multi) if multi else max(by_cls, key=lambda c: (n_train[c], -c))
        else:
            k = max(by_cls, key=lambda c: (n_train[c] >= 2, len(by_cls[c]), -c))
        part[by_cls[k][-1]] = need
    return _two_sided(part, class_of)


def _two_sided(part: dict[int, str], class_of: dict[int, int]) -> dict[int, str]:
    """Rule 3 of ``repair_parts`` (both sides in the test and threshold-validation splits)."""
    def side(g):
        return class_of[g] != 0

    def count(p):
        return sum(1 for q in part.values() if q == p)

    def pick(cands):
        """Highest-numbered group of the class with the most candidates (ties: lower class id)."""
        by_cls: dict[int, list[int]] = {}
        for g in sorted(cands):
            by_cls.setdefault(class_of[g], []).append(g)
        return by_cls[max(by_cls, key=lambda c: (len(by_cls[c]), -c))][-1]

    for need in TWO_SIDED:
        for fault in (False, True):
            of_side = [g for g in part if side(g) == fault]
            if len(of_side) < 2 or any(part[g] == need for g in of_side):
                continue
            donors = []
            for p in DONOR_ORDER:
                cands = [g for g in of_side if part[g] == p]
                # phase2_val may give its last group to the threshold split: it then reads that one
                spare = count(p) >= 2 or p == "phase1" or (p == "phase2_val" and need == "phase3_val")
                if p != need and cands and spare:
                    donors.append((len(cands), -DONOR_ORDER.index(p), p, cands))
            if donors:
                part[pick(max(donors)[3])] = need
                continue
            if need != "phase3_val" or not count("phase2_val"):
                continue
            # swap: a one-group training split hands its group of this side to the threshold split
            # and takes Phase 2's validation group in exchange (Phase 2 then validates on phase3_val)
            for p in ("phase2_train", "phase3_tune"):
                cands = [g for g in of_side if part[g] == p]
                if cands:
                    give = [g for g, q in part.items() if q == "phase2_val"]
                    part[pick(cands)] = need
                    part[pick(give)] = p
                    break
    return part


def split_device(pool: Pool, test_fraction: float, phase_fractions, phase2_val_fraction: float,
                 phase3_val_fraction: float, seed: int, device: int) -> DeviceSplits:
    """Split one device's pool as the module doc says (plain rounding, then ``repair_parts``);
    deterministic in (seed, device)."""
    rng = np.random.default_rng([seed, 104729, device])
    test_idx, rest_idx = split_groups(pool.y, pool.groups, [test_fraction, 1 - test_fraction], rng)
    p1, p2, p3 = (rest_idx[i] for i in split_groups(pool.y[rest_idx], pool.groups[rest_idx], phase_fractions, rng))
    p2t, p2v = (p2[i] for i in split_groups(pool.y[p2], pool.groups[p2], [1 - phase2_val_fraction, phase2_val_fraction], rng))
    p3t, p3v = (p3[i] for i in split_groups(pool.y[p3], pool.groups[p3], [1 - phase3_val_fraction, phase3_val_fraction], rng))
    parts = dict(zip(PARTS, (test_idx, p1, p2t, p2v, p3t, p3v)))
    uniq, first = np.unique(pool.groups, return_index=True)
    class_of = {int(g): int(pool.y[i]) for g, i in zip(uniq, first)}
    part_of = {int(g): name for name, idx in parts.items() for g in np.unique(pool.groups[idx])}
    fixed = repair_parts(part_of, class_of)
    if fixed != part_of:
        owner = np.array([PARTS.index(fixed[int(g)]) for g in pool.groups])
        parts = {name: np.flatnonzero(owner == j) for j, name in enumerate(PARTS)}
    if len(parts["phase2_val"]) == 0 and len(parts["phase3_val"]):
        parts["phase2_val"] = parts["phase3_val"]       # shared validation (repair_parts rule 3)
    return DeviceSplits(*(pool.take(np.sort(parts[name])) for name in PARTS))


def check_device(pool: Pool, device: int, min_samples: int) -> None:
    """Refuse a device the pipeline cannot serve: too few windows, or a single class."""
    if len(pool) < min_samples:
        raise TooLittleData(f"device {device} has {len(pool)} samples; at least {min_samples} are needed "
                            "(--min-device-samples)")
    classes = np.unique(pool.y)
    if len(classes) < 2:
        raise TooLittleData(f"device {device} holds a single class ({int(classes[0]) if len(classes) else 'none'}); "
                        "at least two classes are needed to train and tune a threshold")
