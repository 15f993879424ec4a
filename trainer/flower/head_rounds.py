"""Head-only federated rounds on board sites: the ServerApp's job for ``fedtiny server --board-run R``.

R is a finished run; each site is a board flashed with one of R's devices' firmware built with
``--trainable-head``, behind ``fedtiny site --board-port`` (``bench/board_site.py``, the serial
bridge). The server holds R's files (config, each device's device.json, the global head), never
a window. The steps, each one Flower request per site:

1. join (``head_join``): every board receives its device's Phase-3 windows; the site's
   aggregation weight n_k (its training windows) is fixed here. A site that fails to join is left
   out (logged); fewer than ``min_sites`` joined sites is an error.
2. ``rounds`` rounds (``head_round``): every joined site's board trains ``epochs`` epochs from the
   global head and sends its head back. A reply is refused (logged, that site's failed reply) when
   the site failed (a board reset mid-round is one), when it is not exactly one finite vector of
   the head's size, or when its window count differs from the one fixed at join. The rest are
   averaged by ``aggregation.head_average`` (update norms clipped to ``norm_bound`` x the round's
   median, weights capped at ``weight_cap``); a round without a usable reply keeps the global head.
3. Phase 3 on every board (``head_final``): the same from the final global head with
   ``phase3_epochs``, then the threshold on its validation windows and its test windows' counts.
   As a host Phase 3 does, it waits up to ``wait`` seconds for a joined site that is not connected
   (one whose last reply failed is asked again who it is); a round, like a Phase-2 round, goes on
   with the sites that are connected.

Seeds: device k's board trains round r (1..N) with seed (S * 1000003 + 1009 k + r) mod 2^31, and
Phase 3 with r = 0, S being the run's seed. Results: ``OUT/federation.json`` (settings, each round's
record, each board's Phase 3) and ``OUT/heads.npz`` (``global``: the final global head, ``round<r>``
after each round, ``device<k>``: each board's Phase-3 head), written atomically at the end.
This module never imports TensorFlow.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..aggregation import head_average
from ..backends import Task
from ..rundir import atomic_savez, atomic_write_json
from ..strategies import Reply


class HeadRunError(Exception):
    """The head federation cannot go on (too few boards joined)."""


def head_seed(seed: int, device: int, r: int) -> int:
    """The board's training seed of device ``device`` in round ``r`` (0: Phase 3): module doc."""
    return (int(seed) * 1_000_003 + 1009 * int(device) + int(r)) % 2 ** 31


def refuse_head(reply: Reply, n_params: int, n_join: int | None) -> str | None:
    """Why the server must refuse a board's reply (None when usable): module doc, step 2."""
    if reply.error is not None:
        return reply.error
    w = reply.weights
    if w is None or len(w) != 1:
        return "the reply carries no head (expected one float vector)"
    h = np.asarray(w[0])
    if h.dtype.kind != "f" or h.shape != (n_params,):
        return f"the head has shape {list(h.shape)} ({h.dtype}), expected [{n_params}] floats"
    if not np.all(np.isfinite(h)):
        return "the head has non-finite values"
    n = reply.metrics.get("n")
    if n_join is not None and n != n_join:
        return f"the board reports {n!r} training windows, {n_join} at join"
    return None


def run_heads(backend, job: dict, note=print) -> dict:
    """The head federation of ``job`` (the ``fedtiny server --board-run`` job file's fields) over
    ``backend`` (``FlowerBackend.ask``); returns the federation record (also written to OUT)."""
    out = Path(job["out"])
    shape = tuple(int(v) for v in job["head_shape"])           # n_in, n_hidden, n_classes
    n_in, hid, k = shape
    n_params = n_in * hid + hid + hid * k + k
    theta = np.asarray(job["init_head"], np.float32)
    if theta.shape != (n_params,):
        raise HeadRunError(f"the run's global head has {theta.size} values, expected {n_params}")
    devices = {int(d): v for d, v in job["devices"].items()}
    seed = int(job["seed"])
    base = {"lr": float(job["lr"]), "momentum": float(job["momentum"]), "n_in": n_in, "n_hidden": hid,
            "n_classes": k}

    def dev_config(d: int) -> dict:
        return {**base, **{key: devices[d][key] for key in ("model_sha256", "input_scale", "input_zero_point")}}

    # 1. join
    replies = backend.ask("head_join", [Task(d, None, {**dev_config(d), "phase": "head_join"})
                                        for d in sorted(devices)], float(job["wait"]))
    joined, failed_join = {}, {}
    for rep in replies:
        n = rep.metrics.get("n") if rep.ok else None
        if not rep.ok or not isinstance(n, int) or n <= 0:
            failed_join[rep.device] = rep.error or f"the board reports {n!r} training windows"
            note(f"device {rep.device}: did not join ({failed_join[rep.device]})")
        else:
            joined[rep.device] = n
            note(f"device {rep.device}: board joined with {n} training and {rep.metrics.get('n_val')} validation "
                 f"windows")
    need = max(1, int(job.get("min_sites") or 1))
    if len(joined) < need:
        raise HeadRunError(f"{len(joined)} board(s) joined, fewer than the {need} needed: "
                           + "; ".join(f"device {d}: {e}" for d, e in sorted(failed_join.items())))

    # 2. head-only rounds
    arrays = {}
    rounds = []
    for r in range(1, int(job["rounds"]) + 1):
        tasks = [Task(d, [theta], {**dev_config(d), "phase": "head_round", "round": r, "epochs": int(job["epochs"]),
                                   "seed": head_seed(seed, d, r)}) for d in sorted(joined)]
        used, failed = [], {}
        for rep in backend.ask("head_round", tasks):
            why = refuse_head(rep, n_params, joined[rep.device])
            if why is None:
                used.append(rep)
            else:
                failed[rep.device] = why
                note(f"head round {r}: device {rep.device} failed ({why})")
        rec = {"round": r, "devices": [x.device for x in used], "failed": {str(d): e for d, e in failed.items()},
               "losses": {str(x.device): x.metrics.get("losses") for x in used},
               "step_units": {str(x.device): x.metrics.get("step_units") for x in used}}
        if used:
            theta, f, scale = head_average(theta, [x.weights[0] for x in used], [joined[x.device] for x in used],
                                           float(job["norm_bound"]), float(job["weight_cap"]))
            rec.update(weights=f.tolist(), clip_scale=scale.tolist())
        else:
            rec["kept"] = True             # no usable reply: the global head stays
        arrays[f"round{r}"] = theta
        rounds.append(rec)
        note(f"head round {r}/{job['rounds']}: averaged {len(used)} board head(s)"
             + (f", {len(failed)} failed" if failed else ""))

    # 3. Phase 3 on every board, from the final global head
    final = {}
    tasks = [Task(d, [theta], {**dev_config(d), "phase": "head_final", "epochs": int(job["phase3_epochs"]),
                               "seed": head_seed(seed, d, 0)}) for d in sorted(joined)]
    for rep in backend.ask("head_final", tasks, float(job["wait"])):
        why = refuse_head(rep, n_params, joined[rep.device])
        if why is not None:
            final[str(rep.device)] = {"error": why}
            note(f"Phase 3 on the board of device {rep.device} failed ({why})")
            continue
        arrays[f"device{rep.device}"] = np.asarray(rep.weights[0], np.float32)
        m = rep.metrics
        final[str(rep.device)] = {key: m.get(key) for key in ("n", "n_val", "threshold", "test", "accuracy",
                                                               "false_alarm_rate", "losses", "step_units",
                                                               "plan_bytes", "clock", "rejoined")}
        note(f"Phase 3 on the board of device {rep.device}: test accuracy {m.get('accuracy')}, false alarms "
             f"{m.get('false_alarm_rate')}")
    arrays["global"] = theta
    record = {"run": str(job["run_dir"]), "head_shape": list(shape), "rounds": int(job["rounds"]),
              "epochs": int(job["epochs"]), "phase3_epochs": int(job["phase3_epochs"]), "lr": base["lr"],
              "momentum": base["momentum"], "seed": seed, "norm_bound": float(job["norm_bound"]),
              "weight_cap": float(job["weight_cap"]), "joined": {str(d): n for d, n in sorted(joined.items())},
              "failed_join": {str(d): e for d, e in failed_join.items()}, "round_records": rounds,
              "phase3": final}
    out.mkdir(parents=True, exist_ok=True)
    atomic_savez(out / "heads.npz", **arrays)
    atomic_write_json(out / "federation.json", record)
    return record


def run_heads_job(grid, job: dict, note=print) -> dict:
    """Connect to every site of the job's run over ``grid`` and run ``run_heads``."""
    from .backend import FlowerBackend, SitesMissing

    nodes = job.get("nodes")
    backend = FlowerBackend(grid, job["cfg"], int(job["cfg"]["devices"]), float(job["timeout"]), float(job["wait"]),
                            note=note, registered={int(d): int(n) for d, n in nodes.items()} if nodes else None)
    try:
        backend.connect_all()
    except SitesMissing as e:
        raise HeadRunError(str(e)) from None
    return run_heads(backend, job, note)
