"""The ARC evaluator on hand-made predictions pushed through the dataset's real augmentations."""

from __future__ import annotations

import json

import numpy as np
import pytest

from arc_data.grids import augment, encode
from trainer.evaluate import ArcEvaluator


def _rows(ds):
    versions, examples = ds.test_rows()
    return versions, examples


def _predict(ds, versions, examples, choose):
    """Canvas predictions: for each test row, the augmented grid `choose(row, truth)` returns."""
    preds = []
    for i, (v, e) in enumerate(zip(versions, examples, strict=True)):
        _, tid, cmap = ds.version_of(int(v) + 1)
        grid = choose(i, ds.grid(int(e), "output"))
        preds.append(encode(augment(grid, tid, cmap), canvas_side=ds.canvas))
    return np.stack(preds)


def _wrong(truth):
    w = truth.copy()
    w[0, 0] = (w[0, 0] + 1) % 10
    return w


def test_all_correct_and_inverse_applied(small_dataset):
    ds = small_dataset
    v, e = _rows(ds)
    ev = ArcEvaluator(ds)
    ev.update(e, v + 1, _predict(ds, v, e, lambda i, t: t), np.full(v.size, 0.5))
    res = ev.result()
    assert res.metrics["pass@1"] == 1.0 and res.metrics["puzzles"] == ds.manifest.counts.eval_tasks
    # Without inverting the augmentation most versions would disagree: votes prove pooling.
    assert all(p["votes"][0] == ds.n_versions[ds.task_index(p["task_id"])] for p in res.puzzles)


def test_votes_rank_and_pass_at_k_monotone(small_dataset):
    ds = small_dataset
    v, e = _rows(ds)
    first = ds.version_start[ds.v_task[v]]
    position = v - first  # version index within its puzzle
    # Versions 0..2 vote for the truth, all others for one wrong grid: the truth comes second.
    preds = _predict(ds, v, e, lambda i, t: t if position[i] < 3 else _wrong(t))
    ev = ArcEvaluator(ds)
    ev.update(e, v + 1, preds, np.full(v.size, 0.5))
    res = ev.result()
    assert res.metrics["pass@1"] == 0.0 and res.metrics["pass@2"] == 1.0
    ks = [1, 2, 5, 10, 100, 1000]
    assert all(res.metrics[f"pass@{a}"] <= res.metrics[f"pass@{b}"] for a, b in zip(ks, ks[1:], strict=False))
    # Submission: attempt_1 is the (wrong) majority, attempt_2 the truth, in the original colours/orientation.
    task = ds.task_ids[int(np.flatnonzero(ds.n_test)[0])]
    pair = res.submission[task][0]
    truth = ds.grid(int(ds.examples_of(ds.task_index(task), 1)[0]), "output")
    assert pair["attempt_2"] == truth.tolist() and pair["attempt_1"] == _wrong(truth).tolist()
    json.dumps(res.submission)  # Kaggle-style: plain JSON lists


def test_confidence_breaks_ties_and_padding_is_ignored(small_dataset):
    ds = small_dataset
    v, e = _rows(ds)
    keep = np.isin(v - ds.version_start[ds.v_task[v]], [0, 1])  # two versions per pair: 1 vote each
    v, e = v[keep], e[keep]
    odd = (v - ds.version_start[ds.v_task[v]]) == 1
    preds = _predict(ds, v, e, lambda i, t: _wrong(t) if odd[i] else t)
    for conf_truth, expected in ((0.9, 1.0), (0.1, 0.0)):
        ev = ArcEvaluator(ds)
        conf = np.where(odd, 0.5, conf_truth)
        ids = np.concatenate([v + 1, [0, 0]])  # two padding rows with garbage predictions
        ev.update(np.concatenate([e, [-1, -1]]), ids, np.concatenate([preds, preds[:2]]), np.concatenate([conf, [1, 1]]))
        res = ev.result()
        assert res.metrics["pass@1"] == pytest.approx(expected) and res.metrics["pass@2"] == 1.0
        assert res.metrics["predictions"] == v.size


def test_missing_predictions_count_as_wrong_and_write(small_dataset, tmp_path):
    res = ArcEvaluator(small_dataset).result()
    assert res.metrics["pass@1000"] == 0.0
    first = next(iter(res.submission.values()))[0]
    assert first == {"attempt_1": [[0]], "attempt_2": [[0]]}
    res.write(tmp_path / "eval")
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["pass@2"] == 0.0
    assert sorted(p.name for p in (tmp_path / "eval").iterdir()) == ["metrics.json", "puzzles.json", "submission.json"]


@pytest.mark.parametrize("method", ["dis", "trm"])
def test_evaluate_runs_the_test_split_through_a_model(tmp_path, method):
    import torch

    from arc_data.build import build_dataset
    from arc_data.dataset import ArcDataset
    from arc_data.manifest import BuildConfig
    from trainer.evaluate import EvalOptions, evaluate
    from trainer.model import ModelConfig, TinyRecursiveModel
    from trainer.objectives import ACTConfig, DISConfig, build_objective
    from trainer.puzzle_emb import PuzzleEmbedding

    build_dataset(BuildConfig(sources=["arc1"], canvas=6, tasks=3, augmentations=4), tmp_path / "d", progress=False)
    ds = ArcDataset(tmp_path / "d")
    dis = method == "dis"
    cfg = ModelConfig(hidden_size=32, num_heads=4, layers=1, seq_len=ds.seq_len, puzzle_emb_ndim=32, puzzle_emb_len=1,
                      num_puzzle_identifiers=ds.num_identifiers, supervision_steps=3, cycles=1 if dis else 2,
                      latent_steps=2, timestep_embedding=dis)
    model = TinyRecursiveModel(cfg)
    emb = PuzzleEmbedding(ds.num_identifiers, 32, torch.device("cpu"))
    objective = build_objective(DISConfig() if dis else ACTConfig(), cfg)
    res = evaluate(model, emb, objective, ds, torch.device("cpu"), EvalOptions(8, steps=5, max_versions=2))
    assert res.metrics["test_rows"] == 2 * ds.manifest.counts.base_test_pairs
    assert res.metrics["block_apps_per_sample"] == 5 * (3 if dis else 6)  # --eval-steps 5
    assert res.metrics["puzzles"] == ds.manifest.counts.eval_tasks
    assert 0.0 <= res.metrics["pass@1"] <= res.metrics["pass@2"] <= 1.0
    assert "test_step5_exact_accuracy" in res.metrics  # per-step accuracy, both methods
    res.write(tmp_path / "out")
    assert set(json.loads((tmp_path / "out" / "submission.json").read_text())) == {
        ds.task_ids[t] for t in np.flatnonzero(ds.n_test)}

    # A held-out validation split: scored apart, left out of the reported test metrics and submission.
    from trainer.evaluate import validation_tasks

    val = validation_tasks(ds, 0.5)
    assert 0 < val.size < ds.manifest.counts.eval_tasks
    assert np.array_equal(val, validation_tasks(ds, 0.5))  # stable
    held = evaluate(model, emb, objective, ds, torch.device("cpu"), EvalOptions(8, steps=5, max_versions=2,
                                                                                validation=val))
    m = held.metrics
    assert m["selection_split"] == "validation" and res.metrics["selection_split"] == "test"
    assert m["puzzles"] + m["val_puzzles"] == ds.manifest.counts.eval_tasks
    assert m["test_rows"] + m["val_rows"] == res.metrics["test_rows"]
    assert set(held.submission) == {ds.task_ids[t] for t in np.setdiff1d(np.flatnonzero(ds.n_test), val)}
    pooled = (m["test_accuracy"] * m["test_rows"] + m["val_accuracy"] * m["val_rows"]) / res.metrics["test_rows"]
    assert abs(pooled - res.metrics["test_accuracy"]) < 1e-6  # float32 per-batch means


def _grid(*rows):
    return [list(r) for r in rows]


# Six hand-made puzzles (a flat folder of task files: every one is scored on its test pairs).
I1, T1, W = _grid((1, 2), (3, 4)), _grid((4, 3), (2, 1)), _grid((5, 5), (5, 5))
SAME_IN, OUT_A, OUT_B = _grid((6, 0), (0, 6)), _grid((6, 6), (0, 0)), _grid((0, 0), (6, 6))
PUZZLES = {
    "a1": {"test": [(I1, T1)]},
    "a2": {"test": [(_grid((1, 1), (2, 2)), T1), (_grid((2, 2), (1, 1)), T1)]},
    "a3": {"test": [(_grid((3, 1), (1, 3)), T1)]},
    "a4": {"test": [(_grid((4, 1), (1, 4)), T1)]},
    "a5": {"test": [(SAME_IN, OUT_A), (SAME_IN, OUT_B)]},  # one input, two answers
    "a6": {"test": [(_grid((7, 1), (1, 7)), T1)]},
}


@pytest.fixture(scope="module")
def hand_made(tmp_path_factory):
    from arc_data.build import build_dataset
    from arc_data.dataset import ArcDataset
    from arc_data.manifest import BuildConfig

    root = tmp_path_factory.mktemp("hand")
    for i, (name, p) in enumerate(PUZZLES.items()):
        task = {"train": [{"input": _grid((i, 9)), "output": _grid((9, i))}],
                "test": [{"input": x, "output": y} for x, y in p["test"]]}
        (root / "tasks").mkdir(exist_ok=True)
        (root / "tasks" / f"{name}.json").write_text(json.dumps(task))
    build_dataset(BuildConfig(sources=[str(root / "tasks")], augmentations=0, canvas=10), root / "d", progress=False)
    return ArcDataset(root / "d")


def _feed(ds, evaluator, rows):
    """rows: (puzzle, test pair, predicted grid or None for a canvas with no grid, confidence)."""
    examples, ids, canvases, conf = [], [], [], []
    for name, pair, grid, q in rows:
        t = ds.task_index(name)
        examples.append(int(sorted(ds.examples_of(t, 1), key=lambda e: ds.ex_pair[e])[pair]))
        ids.append(ds.original_identifier(t))
        canvases.append(np.zeros(ds.seq_len, np.uint8) if grid is None else encode(np.array(grid), canvas_side=ds.canvas))
        conf.append(q)
    evaluator.update(np.array(examples), np.array(ids), np.stack(canvases), np.array(conf, dtype=np.float64))


PREDICTIONS = [
    # a1: three candidates with one vote each, ranked by confidence: W, the empty crop, the truth.
    ("a1", 0, W, 0.9), ("a1", 0, None, 0.8), ("a1", 0, T1, 0.7),
    # a2: pair 0 has the truth twice against one confident wrong vote; pair 1 gets no prediction.
    ("a2", 0, T1, 0.5), ("a2", 0, W, 0.99), ("a2", 0, T1, 0.5),
    # a3: equal votes, confidences equal in float32 but not in float64: the truth ranks first.
    ("a3", 0, W, 0.5), ("a3", 0, T1, 0.5 + 1e-12),
    # a4: equal votes and confidences: the first prediction seen ranks first.
    ("a4", 0, W, 0.6), ("a4", 0, T1, 0.6),
    # a5: both test pairs share an input, so they share the votes: [OUT_A, OUT_B] for both.
    ("a5", 0, OUT_A, 0.7), ("a5", 1, OUT_B, 0.3),
    # a6: nothing.
]


def test_scoring_matches_the_reference_rules_derived_by_hand(hand_made):
    """Per puzzle (pass@1, pass@2) by the reference's rules: a1 (0, 0) — the empty crop takes the
    second attempt; a2 (1/2, 1/2); a3 (1, 1); a4 (0, 1); a5 (1/2, 1); a6 (0, 0). pass@k is the mean
    over the six puzzles: 2/6 and 3.5/6."""
    from trainer.evaluate import ScoringConfig

    ev = ArcEvaluator(hand_made)
    _feed(hand_made, ev, PREDICTIONS)
    m = ev.result().metrics
    assert m["scoring"] == "reference" and m["puzzles"] == 6 and m["test_pairs"] == 8
    assert m["pass@1"] == pytest.approx(2 / 6) and m["pass@2"] == pytest.approx(3.5 / 6)
    res = ev.result()
    assert res.submission["a1"] == [{"attempt_1": W, "attempt_2": []}]  # the empty crop's grid is empty
    assert res.submission["a2"][1] == {"attempt_1": [[0]], "attempt_2": [[0]]}  # keeps its slot (see evaluate.py)

    # The one named deviation: empty crops are not candidates, so a1's truth moves to the second attempt.
    skip = ArcEvaluator(hand_made, ScoringConfig(empty_crops="skip"))
    _feed(hand_made, skip, PREDICTIONS)
    m = skip.result().metrics
    assert m["scoring"] == "disco(empty_crops=skip)"
    assert m["pass@1"] == pytest.approx(2 / 6) and m["pass@2"] == pytest.approx(4.5 / 6)
