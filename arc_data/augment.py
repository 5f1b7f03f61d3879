"""Choosing the augmented versions of a puzzle (docs/reference.md §1.4), vectorised.

The reference draws up to 5*N (dihedral, colour map) attempts per puzzle, materialises every
grid of every attempt, sha256-hashes them and keeps attempts whose order-invariant puzzle hash is
new (≈9 CPU-minutes for ARC-1). We get the same accept/reject decisions without touching grids
per attempt: a grid is fully described by its *colour pattern* (colours relabelled 1..k in order of
first appearance) plus the colours the pattern's labels map to. So for each of the 8 dihedral
transforms we compute every grid's pattern once, and an attempt's key is, per example, the pattern
ids and the attempt's colour map composed with the pattern's labels. Two attempts give identical
puzzles (as multisets of pairs) exactly when their sorted per-example keys are equal.
"""

from __future__ import annotations

import numpy as np

from .grids import CANVAS, NUM_DIHEDRAL, dihedral

_UNUSED = 255  # pattern label slot that a grid does not use


def _patterns(pairs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Pattern ids [8, E, 2] and label->colour tables [8, E, 2, 9] of every transformed grid."""
    # At most 8 * E * 2 patterns, stored as uint16 in the keys below.
    interned: dict[bytes, int] = {}
    ids = np.zeros((NUM_DIHEDRAL, len(pairs), 2), dtype=np.int32)
    labels = np.full((NUM_DIHEDRAL, len(pairs), 2, 9), _UNUSED, dtype=np.uint8)
    for t in range(NUM_DIHEDRAL):
        for e, pair in enumerate(pairs):
            for s, grid in enumerate(pair):
                g = np.ascontiguousarray(dihedral(grid, t)).ravel()
                colours, first = np.unique(g, return_index=True)
                order = colours[np.argsort(first)]
                order = order[order != 0]  # colour 0 is never permuted
                lut = np.zeros(10, dtype=np.uint8)
                lut[order] = np.arange(1, order.size + 1)
                key = bytes(dihedral(grid, t).shape) + lut[g].tobytes()
                ids[t, e, s] = interned.setdefault(key, len(interned))
                labels[t, e, s, : order.size] = order
    return ids, labels


def draw_attempts(rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` random (dihedral id, colour map) draws; colour 0 stays fixed."""
    tids = rng.integers(0, NUM_DIHEDRAL, size=count).astype(np.uint8)
    perms = np.argsort(rng.random((count, 9)), axis=1).astype(np.uint8) + 1
    cmaps = np.concatenate([np.zeros((count, 1), dtype=np.uint8), perms], axis=1)
    return tids, cmaps


def select_versions(
    pairs: list[tuple[np.ndarray, np.ndarray]],
    augmentations: int,
    rng: np.random.Generator,
    retries_factor: int = 5,
) -> tuple[np.ndarray, np.ndarray]:
    """The original plus up to `augmentations` distinct versions: (tids [V], colour maps [V,10]).

    Version 0 is always the original (identity). Attempts are accepted in draw order, as in the
    reference, until the group is full or `retries_factor * augmentations` attempts are spent.
    """
    ident_t = np.zeros(1, dtype=np.uint8)
    ident_c = np.arange(10, dtype=np.uint8)[None]
    if augmentations == 0:
        return ident_t, ident_c
    tids, cmaps = draw_attempts(rng, retries_factor * augmentations)
    tids = np.concatenate([ident_t, tids])
    cmaps = np.concatenate([ident_c, cmaps])
    ids, labels = _patterns(pairs)
    # Most puzzles fill their group within ~1.1x the wanted count: look at a prefix of the
    # attempt stream first and only scan all of it for puzzles with few distinct versions.
    for prefix in (min(tids.size, (augmentations + 1) * 3 // 2), tids.size):
        accepted = _first_distinct(tids[:prefix], cmaps[:prefix], ids, labels)[: augmentations + 1]
        if accepted.size == augmentations + 1:
            break
    return tids[accepted], cmaps[accepted]


def _first_distinct(tids: np.ndarray, cmaps: np.ndarray, ids: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Indices of the attempts whose puzzle differs from every earlier attempt, in order."""
    lab = labels[tids]  # [A, E, 2, 9]
    attempts, n_ex = lab.shape[:2]
    flat = np.where(lab == _UNUSED, 0, lab).astype(np.int32) + 10 * np.arange(attempts, dtype=np.int32)[:, None, None, None]
    mapped = np.where(lab == _UNUSED, _UNUSED, cmaps.ravel()[flat])  # uint8: colours the labels become
    pid = ids[tids].astype(np.uint16)[..., None].view(np.uint8)  # [A, E, 2, 2]
    rows = np.concatenate([pid, mapped], axis=3).reshape(attempts * n_ex, -1)
    _, example_key = np.unique(rows, axis=0, return_inverse=True)
    puzzle_keys = np.sort(example_key.reshape(attempts, n_ex), axis=1)  # order-invariant, like the reference
    _, first = np.unique(puzzle_keys, axis=0, return_index=True)
    return np.sort(first)


def draw_translations(
    rng: np.random.Generator,
    tids: np.ndarray,
    shapes: np.ndarray,
    canvas: int = CANVAS,
) -> np.ndarray:
    """Top-left offsets [V, E, 2] for each version's E training-split examples.

    `shapes` is [E, 4] = (in_h, in_w, out_h, out_w) of the untransformed pairs. Input and output
    share one offset; per version one uniformly chosen example stays at (0, 0) (docs/reference.md §1.4).
    """
    n_versions, n_ex = tids.size, shapes.shape[0]
    swap = np.isin(tids, (1, 3, 6, 7))[:, None]  # transforms that exchange height and width
    max_h = np.maximum(shapes[:, 0], shapes[:, 2])[None]
    max_w = np.maximum(shapes[:, 1], shapes[:, 3])[None]
    span_r = np.where(swap, max_w, max_h)
    span_c = np.where(swap, max_h, max_w)
    rows = rng.integers(0, canvas - span_r + 1, size=(n_versions, n_ex))
    cols = rng.integers(0, canvas - span_c + 1, size=(n_versions, n_ex))
    keep = rng.integers(0, n_ex, size=n_versions)
    rows[np.arange(n_versions), keep] = 0
    cols[np.arange(n_versions), keep] = 0
    return np.stack([rows, cols], axis=-1).astype(np.uint8)
