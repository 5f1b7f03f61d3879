"""The ARC Prize workflow's data: test sets without solutions, roles by a printed rule, corpora of
concept folders (ConceptARC) with groups, and generated sets (re-arc) with a per-puzzle cap."""

from __future__ import annotations

import json

import numpy as np
import pytest

from arc_data.build import build_dataset
from arc_data.dataset import TEST, ArcDataset
from arc_data.grids import encode
from arc_data.manifest import BuildConfig
from cluster.main import main
from trainer.evaluate import ArcEvaluator


def _task(v: int, n_test: int = 1, solved: bool = True) -> dict:
    pair = {"input": [[v, 0], [0, v]], "output": [[0, v], [v, 0]]}
    test = [{"input": [[v, v], [0, i]]} | ({"output": [[i, v]]} if solved else {}) for i in range(n_test)]
    return {"train": [pair, pair | {"input": [[v, 1]]}], "test": test}


def test_an_arc_prize_test_file_builds_predicts_and_is_never_scored(tmp_path, capsys):
    """`*_test_challenges.json` ships no solutions: its test pairs are predicted (attempts in
    submission.json), left out of pass@k, and the build says so."""
    kaggle = tmp_path / "kaggle"
    kaggle.mkdir()
    (kaggle / "arc-agi_test_challenges.json").write_text(json.dumps({"t1": _task(1, 2, solved=False),
                                                                     "t2": _task(2, solved=False)}))
    (kaggle / "arc-agi_evaluation_challenges.json").write_text(json.dumps({"e1": _task(3)}))
    (kaggle / "arc-agi_evaluation_solutions.json").write_text(json.dumps({"e1": [[[0, 3]]]}))
    assert main(["data", "build", "--source", str(kaggle), "--out", str(tmp_path / "d"), "--augmentations", "3"]) == 0
    out = capsys.readouterr().out
    assert "subset       kaggle/test: eval (its name does not mention 'train'" in out
    assert "3 test pairs (0 with solutions)" in out and "(3 without solutions: predicted, not scored)" in out
    ds = ArcDataset(tmp_path / "d")
    t1, e1 = ds.task_index("t1"), ds.task_index("e1")
    assert ds.n_test[t1] == 2 and ds.n_scored[t1] == 0 and ds.n_scored[e1] == 1
    assert ds.manifest.counts.unlabelled_test_pairs == 3 and ds.task(t1).test[0].output is None
    assert np.array_equal(ds.task(e1).test[0].output, [[0, 3]])
    # Unlabelled rows render with nothing to supervise.
    versions, examples = ds.test_rows()
    _, labels = ds.render_rows(versions, examples, None)
    assert ((labels != -100).any(axis=1) == ds.labelled[examples]).all()

    # Every test input gets attempts; only e1 is scored.
    ev = ArcEvaluator(ds)
    preds = np.stack([encode(np.array([[0, 3]] if ds.ex_task[e] == e1 else [[5]]), canvas_side=ds.canvas)
                      for e in examples])
    ev.update(examples, versions + 1, preds, np.full(examples.size, 0.5))
    res = ev.result()
    assert sorted(res.submission) == ["e1", "t1", "t2"] and len(res.submission["t1"]) == 2
    assert res.submission["t1"][0]["attempt_1"] == [[5]]
    m = res.metrics
    assert m["puzzles"] == 1 and m["test_pairs"] == 1 and m["unlabelled_pairs"] == 3 and m["pass@1"] == 1.0


def test_roles_follow_the_printed_rule_or_the_flag(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    (src / "mine_challenges.json").write_text(json.dumps({"m1": _task(1)}))
    (src / "mine_solutions.json").write_text(json.dumps({"m1": [[[0, 1]]]}))
    (src / "extra_training_challenges.json").write_text(json.dumps({"x1": _task(2, solved=False)}))
    # A training subset trains on its test pairs, so they need solutions: refused, naming the fix.
    assert main(["data", "build", "--source", str(src), "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "subset src/training is a training subset" in err[0] and "--eval-subsets" in err[0]
    (src / "extra_training_solutions.json").write_text(json.dumps({"x1": [[[0, 2]]]}))
    assert main(["data", "build", "--source", str(src), "--out", str(tmp_path / "d"), "--augmentations", "1"]) == 0
    out = capsys.readouterr().out
    # "mine" would once have been a training subset with 0 scored puzzles, silently.
    assert "src/mine: eval (its name does not mention 'train'" in out
    assert "src/training: train (its name mentions 'train'" in out
    assert main(["data", "build", "--source", str(src), "--out", str(tmp_path / "d2"), "--augmentations", "1",
                 "--eval-subsets", "training"]) == 0
    out = capsys.readouterr().out
    assert "src/training: eval (named by --eval-subsets)" in out and "src/mine: train (not named by --eval-subsets)" in out


def test_a_corpus_of_concept_folders_records_groups(tmp_path, capsys):
    corpus = tmp_path / "ConceptARC"
    for concept, tasks in (("AboveBelow", 2), ("Center", 3)):
        (corpus / concept).mkdir(parents=True)
        for i in range(tasks):
            (corpus / concept / f"{concept}{i + 1}.json").write_text(json.dumps(_task(i + 1, n_test=2)))
    assert main(["data", "build", "--source", str(corpus), "--out", str(tmp_path / "d"), "--augmentations", "2"]) == 0
    assert "groups       2: AboveBelow 2, Center 3" in capsys.readouterr().out
    ds = ArcDataset(tmp_path / "d")
    assert ds.groups[ds.task_index("Center2")] == "Center" and set(ds.subsets) == {"ConceptARC"}
    assert ds.n_scored.sum() == 10  # a user's corpus is scored on its test pairs
    assert main(["data", "build", "--source", str(corpus), "--out", str(tmp_path / "c"), "--groups", "Center"]) == 0
    assert sorted(ArcDataset(tmp_path / "c").task_ids) == ["Center1", "Center2", "Center3"]
    capsys.readouterr()
    assert main(["data", "build", "--source", str(corpus), "--out", str(tmp_path / "x"), "--groups", "Centre"]) == 2
    assert "no group named 'Centre'; available: AboveBelow, Center" in capsys.readouterr().err
    # Datasets without groups keep their tables (and fingerprints) as before: no group column.
    assert main(["data", "info", str(tmp_path / "d")]) == 0
    assert "groups" in capsys.readouterr().out


def test_generated_sets_build_and_the_per_puzzle_cap_is_a_setting(tmp_path, capsys):
    """re-arc stores a task as a list of generated pairs: all are trained on. By default a puzzle's
    examples in an epoch are cut where a global batch overflows (the reference); the cap draws K
    fresh ones per epoch instead, so every example is seen over the epochs."""
    rng = np.random.default_rng(0)
    gen = tmp_path / "re_arc"
    gen.mkdir()
    for name, n in (("big", 100), ("small", 3)):
        pairs = [{"input": g.tolist(), "output": g.T.tolist()} for g in rng.integers(0, 10, (n, 3, 3))]
        (gen / f"{name}.json").write_text(json.dumps(pairs))
    assert main(["data", "build", "--source", str(gen), "--out", str(tmp_path / "d"), "--augmentations", "1"]) == 0
    assert "up to 100 training examples per puzzle" in capsys.readouterr().out
    ds = ArcDataset(tmp_path / "d")
    big = ds.task_index("big")
    assert ds.n_train[big] == 100 and ds.n_test.sum() == 0 and ds.examples_per_epoch == 103

    capped = ds.train_sampler(16, seed=0, max_examples=8)
    assert capped.examples_per_epoch == 8 + 3
    seen = set()
    for epoch in range(150):
        plan = capped.plan(epoch)
        g = int(np.flatnonzero(plan.task == big)[0])
        slots = plan.slots[plan.start[g]:plan.start[g + 1]]
        assert slots.size == 8 and len(set(slots.tolist())) == 8
        seen |= set(slots.tolist())
    assert len(seen) == 100  # fresh draws: every generated example came up
    rows = np.concatenate([next(iter(capped)).example_index for _ in range(10)])
    assert set(rows.tolist()) <= set(ds.examples_of(big, 0).tolist()) | set(ds.examples_of(ds.task_index("small"), 0).tolist())
    plain = next(iter(ds.train_sampler(16, seed=0)))
    assert (ds.ex_task[plain.example_index] == big).sum() >= 13  # the big puzzle fills the batch


@pytest.mark.parametrize("solved", [True, False])
def test_predict_on_a_task_file_without_solutions(solved, tmp_path):
    from arc_data.sources import read_task_file

    (tmp_path / "t.json").write_text(json.dumps(_task(4, 2, solved=solved)))
    task = read_task_file(tmp_path / "t.json")
    assert task.unlabelled == (0 if solved else 2)
    cfg = BuildConfig(sources=[str(tmp_path)], augmentations=0, canvas=10)
    build_dataset(cfg, tmp_path / "d", progress=False)
    ds = ArcDataset(tmp_path / "d")
    assert (ds.labelled[ds.examples_of(0, TEST)] == solved).all()
