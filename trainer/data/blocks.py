"""Contiguous time blocks and the windows cut inside them (pure NumPy, shared by the real-data loaders).

A recording (or one same-label run of a CSV file) is a row range [a, b). It is cut into blocks

    block j = [a + j (L + g), a + j (L + g) + L),   j = 0, 1, ...

of L rows separated by guard gaps of g rows that belong to no block. The last block may be shorter
than L (what is left before b) and is kept only when it still holds one window. Windows of W rows
start every H rows inside a block, window i = [s + i H, s + i H + W) with s + i H + W <= block end,
so no window crosses a block boundary, and since blocks are disjoint no raw row belongs to two
blocks. A block is the split unit (a *group*): the trainer never puts windows of one block on two
sides of any split. Every window carries its raw row span, so this can be checked (``spans``).
"""
from __future__ import annotations

import numpy as np


def block_spans(a: int, b: int, block: int, guard: int, min_len: int) -> list[tuple[int, int]]:
    """Blocks [start, stop) of the row range [a, b) as the module doc says: length ``block``, gaps
    of ``guard`` rows; a shorter last block is kept when it holds at least ``min_len`` rows."""
    if block < 1 or guard < 0 or min_len < 1:
        raise ValueError("block >= 1, guard >= 0 and min_len >= 1 are required")
    out = []
    s = a
    while s < b:
        e = min(s + block, b)
        if e - s >= min_len:
            out.append((s, e))
        s = e + guard
    return out


def window_starts(a: int, b: int, width: int, hop: int) -> np.ndarray:
    """Start rows a, a + hop, ... of the windows of ``width`` rows that fit inside [a, b)."""
    if width < 1 or hop < 1:
        raise ValueError("width and hop must be at least 1")
    if b - a < width:
        return np.zeros(0, np.int64)
    return np.arange(a, b - width + 1, hop, dtype=np.int64)


def blocked_windows(a: int, b: int, block: int, guard: int, width: int, hop: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Windows of the row range [a, b): (starts (m,), block index (m,) counted from 0 within [a, b))."""
    starts, blocks = [], []
    for j, (s, e) in enumerate(block_spans(a, b, block, guard, width)):
        w = window_starts(s, e, width, hop)
        starts.append(w)
        blocks.append(np.full(len(w), j, np.int64))
    if not starts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(starts), np.concatenate(blocks)


def equal_blocks(n: int, n_blocks: int) -> int:
    """Block length that cuts n rows into ``n_blocks`` contiguous blocks: floor(n / n_blocks)."""
    return max(1, n // max(1, n_blocks))


def shared_rows(spans: np.ndarray, groups: np.ndarray) -> list[tuple[int, int]]:
    """Pairs of groups whose windows share a raw row. ``spans`` (n, 3) = [source, start, stop) per
    window (source: which file / recording). Empty when no raw row belongs to two groups.

    Per source, each group's rows are the union of its window spans; after sorting the groups' row
    intervals by start, two groups share a row exactly when an interval of one group starts before
    the running end of another's."""
    spans = np.asarray(spans, np.int64)
    groups = np.asarray(groups, np.int64)
    bad = []
    for src in np.unique(spans[:, 0]):
        m = spans[:, 0] == src
        iv = sorted(zip(spans[m, 1].tolist(), spans[m, 2].tolist(), groups[m].tolist()))
        # covered rows per group: merged intervals
        merged: dict[int, list[list[int]]] = {}
        for s, e, g in iv:
            lst = merged.setdefault(g, [])
            if lst and s <= lst[-1][1]:
                lst[-1][1] = max(lst[-1][1], e)
            else:
                lst.append([s, e])
        flat = sorted((s, e, g) for g, lst in merged.items() for s, e in lst)
        end, owner = -1, None
        for s, e, g in flat:
            if s < end and g != owner:
                bad.append((int(owner), int(g)))
            if e > end:
                end, owner = e, g
    return bad
