"""Building real ARC data: determinism, the reference's augmentation protocol, layouts, leakage."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from arc_data.augment import draw_attempts, select_versions
from arc_data.build import build_dataset
from arc_data.dataset import TEST, TRAIN, ArcDataset
from arc_data.errors import DataError
from arc_data.grids import CANVAS, augment, crop
from arc_data.manifest import BuildConfig
from arc_data.sources import load_source


def _reference_puzzle_hash(pairs) -> str:
    # The reference's order-invariant hash: sha256(shape|bytes) per grid, "in|out" per pair, sorted.
    def h(g):
        return hashlib.sha256(bytes(np.asarray(g.shape, np.int64)) + g.tobytes()).hexdigest()
    return hashlib.sha256("|".join(sorted(f"{h(i)}|{h(o)}" for i, o in pairs)).encode()).hexdigest()


# 332efdb3 and 6f8cd79b are symmetric one-colour puzzles whose groups stay short (9 and 18 versions).
@pytest.mark.parametrize("task_id", ["007bbfb7", "3c9b0459", "6150a2bd", "332efdb3", "6f8cd79b", "44f52bb0"])
def test_dedup_matches_reference_hashing(task_id):
    task = next(t for t in load_source("arc1").tasks if t.task_id == task_id)
    pairs = [(p.input, p.output) for p in task.train + task.test]
    n, factor = 60, 5
    tids, cmaps = select_versions(pairs, n, np.random.default_rng(3), factor)
    # Brute force on the same attempt stream, the way the reference does it.
    a_t, a_c = draw_attempts(np.random.default_rng(3), factor * n)
    seen, kept = {_reference_puzzle_hash(pairs)}, [(0, tuple(range(10)))]
    for t, c in zip(a_t, a_c, strict=True):
        h = _reference_puzzle_hash([(augment(i, t, c), augment(o, t, c)) for i, o in pairs])
        if h not in seen:
            seen.add(h)
            kept.append((int(t), tuple(int(x) for x in c)))
        if len(kept) == n + 1:
            break
    assert [(int(t), tuple(int(x) for x in c)) for t, c in zip(tids, cmaps, strict=True)] == kept


def test_same_seed_same_fingerprint_and_different_seed_differs(tmp_path, small_config, small_dataset):
    again = build_dataset(small_config, tmp_path / "again", progress=False)
    assert again.fingerprint == small_dataset.fingerprint
    other = build_dataset(small_config.model_copy(update={"seed": 8}), tmp_path / "other", progress=False)
    assert other.fingerprint != small_dataset.fingerprint
    small_dataset.verify()


def test_protocol_of_built_dataset(small_dataset):
    ds = small_dataset
    c = ds.manifest.counts
    assert c.tasks == 12 and c.eval_tasks == 6 and c.num_identifiers == c.versions + 1
    for t in range(c.tasks):
        lo, hi = ds.version_start[t], ds.version_start[t + 1]
        assert ds.v_tid[lo] == 0 and np.array_equal(ds.v_cmap[lo], np.arange(10))  # version 0 = original
        assert (ds.v_cmap[lo:hi, 0] == 0).all()  # colour 0 fixed
        n_train = ds.n_train[t]
        trans = ds.v_trans[ds.v_trans_start[lo] : ds.v_trans_start[hi]].reshape(hi - lo, n_train, 2)
        untranslated = (trans == 0).all(axis=2).sum(axis=1)
        assert (untranslated >= 1).all()  # one example per version stays at (0, 0)
        assert ds.manifest.build.augmentations + 1 >= hi - lo
    # Evaluation puzzles: demonstrations in the training split, test pairs in the test split.
    for t in np.flatnonzero(ds.n_test):
        assert {ds.ex_kind[e] for e in ds.examples_of(t, TRAIN)} == {"train"}
        assert {ds.ex_kind[e] for e in ds.examples_of(t, TEST)} == {"test"}
    for t in np.flatnonzero(ds.n_test == 0):
        assert {ds.ex_kind[e] for e in ds.examples_of(t, TRAIN)} == {"train", "test"}
    # Names follow the reference: id|||t{tid}|||{colour map digits}.
    name = ds.name(int(ds.version_start[0]) + 2)
    assert name.startswith(ds.task_ids[0] + "|||t") and len(name.split("|||")[2]) == 10


def _shift_to_origin(canvas: np.ndarray) -> np.ndarray:
    rs, cs = np.nonzero(canvas >= 2)  # every cell of a grid is a colour token
    top, left = rs.min(), cs.min()
    return np.pad(canvas[top:, left:], ((0, top), (0, left))).ravel()


@pytest.fixture(scope="module")
def tiny_canvas_dataset(tmp_path_factory) -> ArcDataset:
    out = tmp_path_factory.mktemp("canvas") / "c8"
    build_dataset(BuildConfig(sources=["arc1"], canvas=8, tasks=4, augmentations=6), out, progress=False)
    return ArcDataset(out)


@pytest.mark.parametrize("which", ["full", "canvas8"])
def test_rendered_training_rows_invert_to_base_pairs(small_dataset, tiny_canvas_dataset, which):
    ds = small_dataset if which == "full" else tiny_canvas_dataset
    side = ds.canvas
    assert ds.seq_len == side * side and side == (CANVAS if which == "full" else 8)
    batch = next(iter(ds.train_sampler(16)))
    assert batch.inputs.shape == (16, side * side)
    for row in range(len(batch)):
        e, ident = int(batch.example_index[row]), int(batch.puzzle_identifiers[row])
        inp = crop(_shift_to_origin(batch.inputs[row].reshape(side, side)))
        assert np.array_equal(ds.unaugment(ident, inp), ds.grid(e, "input"))
        labels = batch.labels[row]
        out_canvas = np.where(labels == -100, 0, labels).astype(np.uint8).reshape(side, side)
        out = crop(_shift_to_origin(out_canvas))
        assert np.array_equal(ds.unaugment(ident, out), ds.grid(e, "output"))
        # Supervised cells: the output grid plus its EOS frame, nothing else.
        h, w = out.shape
        assert (labels != -100).sum() == (out_canvas > 0).sum() and (out_canvas >= 2).sum() == h * w


def test_canvas_keeps_only_fitting_tasks(tiny_canvas_dataset):
    ds = tiny_canvas_dataset
    assert max(int(ds.in_shape.max()), int(ds.out_shape.max())) <= 8
    with pytest.raises(ValueError, match="exceeds the canvas side"):
        BuildConfig(sources=["arc1"], canvas=8, max_grid=10)


def test_layouts_kaggle_and_repo(tmp_path):
    def t(v):
        return {"train": [{"input": [[v, 0]], "output": [[0, v]]}], "test": [{"input": [[v, v]], "output": [[v, 0]]}]}
    repo = tmp_path / "repo"
    (repo / "training").mkdir(parents=True)
    (repo / "evaluation").mkdir()
    (repo / "training" / "t1.json").write_text(json.dumps(t(1)))
    (repo / "evaluation" / "e1.json").write_text(json.dumps(t(2)))
    kag = tmp_path / "kaggle"
    kag.mkdir()
    (kag / "x_evaluation_challenges.json").write_text(json.dumps({"k1": {"train": t(3)["train"], "test": [{"input": [[3, 3]]}]}}))
    (kag / "x_evaluation_solutions.json").write_text(json.dumps({"k1": [[[3, 0]]]}))
    cfg = BuildConfig(sources=[str(repo), str(kag / "x_evaluation_challenges.json")], augmentations=4)
    m = build_dataset(cfg, tmp_path / "out", progress=False)
    ds = ArcDataset(tmp_path / "out")
    assert ds.subsets == ["repo/training", "repo/evaluation", "evaluation"]
    assert m.counts.eval_tasks == 2 and [s.kind for s in m.sources] == ["directory", "kaggle"]
    k1 = ds.task_index("k1")
    assert np.array_equal(ds.grid(ds.examples_of(k1, TEST)[0], "output"), [[3, 0]])


def test_leakage_guard_arc2_training_vs_arc1_evaluation(tmp_path):
    cfg = BuildConfig(sources=["arc1", "arc2"], subsets=["arc1/evaluation", "arc2/training"], augmentations=0)
    with pytest.raises(DataError, match="is in both arc1/evaluation and arc2/training.*--allow-overlap"):
        build_dataset(cfg, tmp_path / "o", progress=False)
    assert not (tmp_path / "o").exists()
    m = build_dataset(cfg.model_copy(update={"allow_overlap": True, "tasks": 30}), tmp_path / "o", progress=False)
    assert m.counts.tasks == 60


def test_arc1_duplicate_task_is_decontaminated(tmp_path):
    # ARC-1 training 40853293 duplicates evaluation 070dd51e: its test pair must not be trained on.
    cfg = BuildConfig(sources=["arc1"], augmentations=0)
    m = build_dataset(cfg, tmp_path / "o", progress=False)
    assert m.counts.dropped_leaking_pairs == 1
    ds = ArcDataset(tmp_path / "o")
    dup = ds.task_index("40853293")
    assert {ds.ex_kind[e] for e in ds.examples_of(dup, TRAIN)} == {"train"}
