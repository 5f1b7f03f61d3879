"""Vectorised materialisation of augmented grids onto the 30x30 token canvas.

Every dihedral transform maps a canvas cell (i, j) to a source cell by an affine function, so a
batch of B grids, each with its own transform, colour map and offset, becomes a handful of
[B, 900] integer array operations instead of a Python loop over rows.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from .grids import CANVAS, COLOUR_OFFSET, EOS, PAD

# Per dihedral id: (swap axes, flip source rows, flip source columns); see grids.dihedral.
_SWAP = np.array([0, 1, 0, 1, 0, 0, 1, 1], dtype=bool)
_FLIP_R = np.array([0, 0, 1, 1, 0, 1, 0, 1], dtype=bool)
_FLIP_C = np.array([0, 1, 1, 0, 1, 0, 0, 1], dtype=bool)


@cache
def _cells(side: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column of every canvas cell, [1, side*side] each."""
    flat = np.arange(side * side, dtype=np.int32)
    return (flat // side)[None], (flat % side)[None]


def render(
    cells: np.ndarray,
    start: np.ndarray,
    shape: np.ndarray,
    tids: np.ndarray,
    colour_maps: np.ndarray,
    offset: np.ndarray,
    side: int = CANVAS,
) -> np.ndarray:
    """Token canvases [B, side*side] uint8 for B grids.

    cells: flat uint8 colours of all base grids; start: [B] where each grid begins in `cells`;
    shape: [B, 2] its (untransformed) height and width; tids: [B] dihedral ids; colour_maps:
    [B, 10]; offset: [B, 2] the top-left (row, column) of the transformed grid on the canvas.
    """
    b = start.shape[0]
    _I, _J = _cells(side)
    h = shape[:, 0].astype(np.int32)
    w = shape[:, 1].astype(np.int32)
    swap, fr, fc = _SWAP[tids], _FLIP_R[tids], _FLIP_C[tids]
    tr_h = np.where(swap, w, h)  # transformed shape
    tr_w = np.where(swap, h, w)
    # Source index = start + p*w + q with p, q affine in (u, v) = (i - row, j - col).
    sign_r = np.where(fr, -1, 1)
    sign_c = np.where(fc, -1, 1)
    base = start.astype(np.int64) + np.where(fr, (h - 1) * w, 0) + np.where(fc, w - 1, 0)
    coef_u = np.where(swap, sign_c, sign_r * w)
    coef_v = np.where(swap, sign_r * w, sign_c)
    r0 = offset[:, 0].astype(np.int32)
    c0 = offset[:, 1].astype(np.int32)
    base = base - coef_u * r0 - coef_v * c0

    u = _I - r0[:, None]
    v = _J - c0[:, None]
    in_rows = (u >= 0) & (u < tr_h[:, None])
    in_cols = (v >= 0) & (v < tr_w[:, None])
    inside = in_rows & in_cols
    src = base[:, None] + coef_u[:, None] * _I + coef_v[:, None] * _J
    np.putmask(src, ~inside, 0)
    lut = (colour_maps.astype(np.int32) + COLOUR_OFFSET).ravel()
    tokens = lut[cells[src] + 10 * np.arange(b, dtype=np.int32)[:, None]].astype(np.uint8)
    tokens[~inside] = PAD
    eos = ((u == tr_h[:, None]) & in_cols) | ((v == tr_w[:, None]) & in_rows)
    tokens[eos] = EOS
    return tokens
