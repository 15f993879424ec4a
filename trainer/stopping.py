"""When Phase 2 stops under ``--rounds auto`` (pure; shared by every backend through
``pipeline.Run``).

After every round r the server records the global validation loss L_r (the mean over sites of the
cross-entropy of the new global weights on their Phase-2 validation windows; lower is better). With
L* the smallest loss so far (a non-finite loss never counts as better, the first of equal losses
wins) reached at round b:

    stop after round r  iff  r - b >= patience  or  r >= max_rounds

and the model carried into Phase 3 is the one of round b (the chosen round). Loss, not accuracy:
on a small validation split accuracy moves in steps and stalls on ties, the loss still ranks two
models.
"""
from __future__ import annotations

import math


def best_round(curve: list[float]) -> int:
    """Round (1-based) of the smallest finite value of ``curve`` (the first on ties; 1 when no value
    is finite)."""
    best, best_v = 1, math.inf
    for i, v in enumerate(curve, start=1):
        if isinstance(v, (int, float)) and math.isfinite(v) and v < best_v:
            best, best_v = i, float(v)
    return best


def should_stop(curve: list[float], patience: int, max_rounds: int) -> bool:
    """True when Phase 2 stops after round len(curve) (module doc)."""
    r = len(curve)
    return r >= max_rounds or (r > 0 and r - best_round(curve) >= patience)
