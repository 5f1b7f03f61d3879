"""Pure grid transforms of the ARC protocol (docs/reference.md §1.3-§1.5) and their inverses.

A grid is a 2-D uint8 array of colours 0..9. Tokens on the model's 30x30 canvas are
PAD=0, EOS=1 and colour+2. Every function here is pure: no RNG, no I/O.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np

CANVAS = 30
PAD, EOS, COLOUR_OFFSET = 0, 1, 2
VOCAB_SIZE = 12
IGNORE_LABEL = -100
NUM_DIHEDRAL = 8
# Inverse of each dihedral transform id (rot90 <-> rot270; the rest are involutions).
DIHEDRAL_INVERSE = (0, 3, 2, 1, 4, 5, 6, 7)
IDENTITY_COLOURS = np.arange(10, dtype=np.uint8)


def dihedral(grid: np.ndarray, tid: int) -> np.ndarray:
    """Apply dihedral transform `tid` (0..7) with the reference's numbering."""
    match tid:
        case 0:
            return grid
        case 1:
            return np.rot90(grid, k=1)
        case 2:
            return np.rot90(grid, k=2)
        case 3:
            return np.rot90(grid, k=3)
        case 4:
            return np.fliplr(grid)
        case 5:
            return np.flipud(grid)
        case 6:
            return grid.T
        case 7:
            return np.fliplr(np.rot90(grid, k=1))
    raise ValueError(f"dihedral transform id must be 0..7, got {tid}")


def inverse_dihedral(grid: np.ndarray, tid: int) -> np.ndarray:
    return dihedral(grid, DIHEDRAL_INVERSE[tid])


def invert_colour_map(colour_map: np.ndarray) -> np.ndarray:
    return np.argsort(colour_map).astype(np.uint8)


def augment(grid: np.ndarray, tid: int, colour_map: np.ndarray) -> np.ndarray:
    """Colour permutation then dihedral transform (the two commute)."""
    return np.ascontiguousarray(dihedral(colour_map[grid], tid))


def unaugment(grid: np.ndarray, tid: int, colour_map: np.ndarray) -> np.ndarray:
    """Undo `augment`: inverse dihedral first, then the inverse colour map (docs/reference.md §1.5)."""
    return np.ascontiguousarray(invert_colour_map(colour_map)[inverse_dihedral(grid, tid)])


def encode(grid: np.ndarray, row: int = 0, col: int = 0, canvas_side: int = CANVAS) -> np.ndarray:
    """Place `grid` on the square canvas (30x30 by default) at (row, col) with its EOS frame; flat uint8.

    EOS marks the row below and the column right of the grid; the corner stays PAD (docs/reference.md §1.3).
    """
    h, w = grid.shape
    canvas = np.zeros((canvas_side, canvas_side), dtype=np.uint8)
    canvas[row : row + h, col : col + w] = grid + COLOUR_OFFSET
    if row + h < canvas_side:
        canvas[row + h, col : col + w] = EOS
    if col + w < canvas_side:
        canvas[row : row + h, col + w] = EOS
    return canvas.reshape(-1)


def crop(tokens: np.ndarray) -> np.ndarray:
    """Read a predicted grid from the top-left of a flat square token canvas (the evaluator's crop).

    Scans rows top-down, shrinking the width to the first non-colour token, and keeps the
    rectangle of maximal area. Returns colours 0..9; an empty (0x0) grid if (0,0) is no colour.
    """
    tokens = np.asarray(tokens)
    side = math.isqrt(tokens.size)
    canvas = tokens.reshape(side, side)
    is_colour = (canvas >= COLOUR_OFFSET) & (canvas < VOCAB_SIZE)
    best_area, best_h, best_w, width = 0, 0, 0, side
    for r in range(side):
        stops = np.flatnonzero(~is_colour[r, :width])
        if stops.size:
            width = int(stops[0])
        if width == 0:
            break
        if (r + 1) * width > best_area:
            best_area, best_h, best_w = (r + 1) * width, r + 1, width
    return (canvas[:best_h, :best_w] - COLOUR_OFFSET).astype(np.uint8)


def grid_hash(grid: np.ndarray) -> str:
    """sha256 of shape and bytes: identifies a grid exactly (used for voting)."""
    grid = np.ascontiguousarray(grid, dtype=np.uint8)
    return hashlib.sha256(np.asarray(grid.shape, dtype=np.int64).tobytes() + grid.tobytes()).hexdigest()


def version_name(task_id: str, tid: int, colour_map: np.ndarray) -> str:
    """The reference's name of an augmented version; the original keeps its plain id."""
    if tid == 0 and np.array_equal(colour_map, IDENTITY_COLOURS):
        return task_id
    return f"{task_id}|||t{tid}|||{''.join(str(int(c)) for c in colour_map)}"
