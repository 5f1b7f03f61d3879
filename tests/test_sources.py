"""Every malformed input gets a one-line error naming file, task and pair, a non-zero exit,
and leaves no output behind."""

from __future__ import annotations

import json

import pytest

from cluster.main import main

OK_PAIR = {"input": [[1, 2], [3, 4]], "output": [[4, 3], [2, 1]]}


def task(train=None, test=None):
    return {"train": [OK_PAIR] if train is None else train, "test": [OK_PAIR] if test is None else test}


# (case name, file content (object or raw text), expected fragment of the error line)
CASES = [
    ("syntax", "{not json", "malformed JSON"),
    ("toplevel_list", [1, 2], "task must be a JSON object with 'train' and 'test' (or a list of"),
    ("missing_train", {"test": [OK_PAIR]}, "'train' must be a non-empty list"),
    ("empty_test", task(test=[]), "'test' must be a non-empty list"),
    ("pair_not_object", task(train=[[1, 2]]), "train pair 0: pair must be an object"),
    ("train_without_output", task(train=[{"input": [[1]]}]), "train pair 0: missing 'output'"),
    ("ragged", task(train=[{"input": [[1, 2], [3]], "output": [[1]]}]), "train pair 0: input: grid is not rectangular"),
    ("too_tall", task(train=[{"input": [[1]] * 31, "output": [[1]]}]), "input: grid is 31x1; each side must be 1..30"),
    ("too_wide", task(test=[{"input": [[0] * 40], "output": [[1]]}]), "test pair 0: input: grid is 1x40"),
    ("empty_grid", task(train=[{"input": [], "output": [[1]]}]), "input: grid must be a non-empty list of rows"),
    ("zero_width", task(train=[{"input": [[]], "output": [[1]]}]), "input: grid is 1x0"),
    ("colour_10", task(train=[{"input": [[1]], "output": [[10]]}]), "output: colour 10 out of range 0..9"),
    ("negative", task(train=[OK_PAIR, {"input": [[-1]], "output": [[1]]}]), "train pair 1: input: colour -1 out of range"),
    ("float", task(train=[{"input": [[1.5]], "output": [[1]]}]), "input: grid values must be integers 0..9"),
    ("bool", task(train=[{"input": [[True]], "output": [[1]]}]), "input: grid values must be integers 0..9"),
    ("string", task(train=[{"input": [["3"]], "output": [[1]]}]), "input: grid values must be integers 0..9"),
    ("row_not_list", task(train=[{"input": [1, 2], "output": [[1]]}]), "input: every row must be a list"),
]


def _run(capsys, *args) -> tuple[int, list[str]]:
    rc = main(["data", "build", *args])
    err = capsys.readouterr().err.strip().splitlines()
    return rc, err


@pytest.mark.parametrize("name,content,fragment", CASES, ids=[c[0] for c in CASES])
def test_malformed_task_file(tmp_path, capsys, name, content, fragment):
    src = tmp_path / "tasks"
    src.mkdir()
    (src / f"{name}.json").write_text(content if isinstance(content, str) else json.dumps(content))
    (src / "fine.json").write_text(json.dumps(task()))
    out = tmp_path / "out"
    rc, err = _run(capsys, "--source", str(src), "--out", str(out), "--augmentations", "2")
    assert rc != 0
    assert len(err) == 1, err  # exactly one problem, on one line
    assert err[0].startswith("disco: error: ") and str(src / f"{name}.json") in err[0]
    assert fragment in err[0]
    if name != "syntax":
        assert f"task {name}" in err[0]
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tasks"]  # no temp dirs left either


def test_kaggle_pair_problems(tmp_path, capsys):
    ch = tmp_path / "arc-agi_evaluation_challenges.json"
    ch.write_text(json.dumps({"aaa": task(test=[{"input": [[1]]}, {"input": [[2]]}]), "bbb": task(test=[{"input": [[1]]}])}))
    (tmp_path / "arc-agi_evaluation_solutions.json").write_text(json.dumps({"aaa": [[[1]]], "bbb": [[[3]]]}))
    rc, err = _run(capsys, "--source", str(ch), "--out", str(tmp_path / "o"))
    assert rc != 0 and len(err) == 1
    assert "task aaa: expected 2 solution grids" in err[0]


def test_several_problems_reported_together(tmp_path, capsys):
    src = tmp_path / "tasks"
    src.mkdir()
    (src / "a.json").write_text(json.dumps(task(train=[{"input": [[11]], "output": [[1]]}])))
    (src / "b.json").write_text(json.dumps(task(test=[{"input": [[1]] * 35, "output": [[1]]}])))
    rc, err = _run(capsys, "--source", str(src), "--out", str(tmp_path / "o"))
    assert rc != 0 and len(err) == 2
    assert "task a: train pair 0" in err[0] and "task b: test pair 0" in err[1]


@pytest.mark.parametrize("args,fragment", [
    (["--source", "/nonexistent/arc"], "no such file or directory"),
    (["--source", "arc1", "--augmentations", "-1"], "augmentations"),
    (["--source", "arc1", "--max-grid", "31"], "max_grid"),
    (["--source", "arc1", "--subsets", "nope"], "no subset named 'nope'"),
])
def test_bad_arguments(tmp_path, capsys, args, fragment):
    rc, err = _run(capsys, *args, "--out", str(tmp_path / "o"))
    assert rc != 0 and len(err) == 1 and fragment in err[0]
    assert not (tmp_path / "o").exists()


def test_empty_directory(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    rc, err = _run(capsys, "--source", str(tmp_path / "empty"), "--out", str(tmp_path / "o"))
    assert rc != 0 and "no *.json task files" in err[0]


def test_failed_rebuild_keeps_existing_dataset(tmp_path, capsys):
    src = tmp_path / "tasks"
    src.mkdir()
    (src / "good.json").write_text(json.dumps(task()))
    out = tmp_path / "out"
    assert main(["data", "build", "--source", str(src), "--out", str(out), "--augmentations", "3"]) == 0
    before = (out / "manifest.json").read_text()
    assert main(["data", "build", "--source", str(src), "--out", str(out)]) != 0  # exists, no --force
    (src / "bad.json").write_text("[")
    assert main(["data", "build", "--source", str(src), "--out", str(out), "--force"]) != 0
    assert (out / "manifest.json").read_text() == before
    capsys.readouterr()
