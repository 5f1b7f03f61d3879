"""Property tests of the pure grid transforms and the vectorised canvas renderer."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from arc_data.canvas import render
from arc_data.grids import (
    CANVAS,
    DIHEDRAL_INVERSE,
    EOS,
    PAD,
    augment,
    crop,
    dihedral,
    encode,
    inverse_dihedral,
    unaugment,
)

grids = st.tuples(st.integers(1, 30), st.integers(1, 30), st.integers(0, 2**32 - 1)).map(
    lambda a: np.random.default_rng(a[2]).integers(0, 10, size=(a[0], a[1])).astype(np.uint8))
colour_maps = st.permutations(list(range(1, 10))).map(lambda p: np.array([0, *p], dtype=np.uint8))
tids = st.integers(0, 7)


@given(grids, tids, colour_maps)
def test_unaugment_inverts_augment(grid, tid, cmap):
    out = augment(grid, tid, cmap)
    assert np.array_equal(unaugment(out, tid, cmap), grid)
    assert np.array_equal(inverse_dihedral(dihedral(grid, tid), tid), grid)
    assert np.array_equal(out == 0, dihedral(grid == 0, tid))  # colour 0 is never permuted


def test_dihedral_table_matches_numpy():
    g = np.arange(6, dtype=np.uint8).reshape(2, 3)
    expected = [g, np.rot90(g), np.rot90(g, 2), np.rot90(g, 3), np.fliplr(g), np.flipud(g), g.T, np.fliplr(np.rot90(g))]
    for t, e in enumerate(expected):
        assert np.array_equal(dihedral(g, t), e)
        assert np.array_equal(dihedral(dihedral(g, t), DIHEDRAL_INVERSE[t]), g)
    # The 8 transforms are distinct on an asymmetric grid: the group is complete.
    assert len({dihedral(g, t).tobytes() + bytes(dihedral(g, t).shape) for t in range(8)}) == 8


@given(grids)
def test_encode_crop_roundtrip(grid):
    tokens = encode(grid)
    assert tokens.shape == (CANVAS * CANVAS,)
    assert np.array_equal(crop(tokens), grid)
    canvas = tokens.reshape(CANVAS, CANVAS)
    h, w = grid.shape
    if h < CANVAS:
        assert (canvas[h, :w] == EOS).all()
    if w < CANVAS:
        assert (canvas[:h, w] == EOS).all()
    if h < CANVAS and w < CANVAS:
        assert canvas[h, w] == PAD  # the corner is not marked


def test_crop_of_garbage_is_empty_or_grid():
    assert crop(np.zeros(900, np.uint8)).shape == (0, 0)
    t = np.full(900, 5, np.uint8)  # all colour: the whole canvas
    assert crop(t).shape == (30, 30)


@settings(max_examples=60)
@given(st.lists(st.tuples(grids, tids, colour_maps, st.integers(0, 29), st.integers(0, 29)), min_size=1, max_size=6))
def test_render_matches_reference_encoding(rows):
    cells, starts, hs, ws, ts, cms, rs, cs, expected = [], [], [], [], [], [], [], [], []
    offset = 0
    for grid, tid, cmap, r, c in rows:
        aug = augment(grid, tid, cmap)
        r, c = min(r, CANVAS - aug.shape[0]), min(c, CANVAS - aug.shape[1])
        cells.append(grid.ravel())
        starts.append(offset)
        offset += grid.size
        hs.append(grid.shape[0]), ws.append(grid.shape[1]), ts.append(tid), cms.append(cmap), rs.append(r), cs.append(c)
        expected.append(encode(aug, r, c))
    out = render(np.concatenate(cells), np.array(starts), np.stack([hs, ws], axis=1).astype(np.uint8),
                 np.array(ts, np.uint8), np.stack(cms), np.stack([rs, cs], axis=1).astype(np.uint8))
    assert np.array_equal(out, np.stack(expected))
