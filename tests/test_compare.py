"""The DIS-vs-TRM experiment: budgets and seeds derived through validation, and the report from two
tiny real runs (numbers read back from the runs' files, plots, remote storage); mismatched data or
widths are refused. (~30 s; marked slow.)

    .venv/bin/python -m pytest -q tests/test_compare.py
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from arc_data.errors import DiscoError
from cluster.main import main
from trainer.config import derive, load_spec
from trainer.launch import train
from trainer.storage import Storage
from tuning.compare import budget_overrides, check_comparable, collect, pair_specs, summarise, wilson
from tuning.report import publish_report

pytestmark = pytest.mark.slow


def test_wilson_interval():
    lo, hi = wilson(5, 10)
    assert lo < 0.5 < hi and round(lo, 3) == 0.237 and round(hi, 3) == 0.763
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == 1.0


def test_budgets_and_seeds_are_derived_through_validation():
    spec = load_spec("dis_cpu_tiny")  # global batch 32
    assert budget_overrides("samples=320", spec) == ["train.unit=batches", "train.budget=10", "train.eval_interval=3"]
    assert budget_overrides("samples=1", spec)[1] == "train.budget=1"  # at least one batch
    minutes = derive(spec, budget_overrides("minutes=2.5", spec))
    assert minutes.train.time_limit_minutes == 2.5 and minutes.train.budget == 1e9
    apps = [s for s in pair_specs("cpu_tiny", 1, "apps=3e9", []) if s.method in ("dis", "trm")]
    assert {(s.train.unit, s.train.budget, s.train.eval_interval) for s in apps} == {("apps", 3e9, 1e9)}
    assert derive(spec, budget_overrides("flops=1e15", spec)).train.unit == "flops"
    for bad in ("samples", "samples=x", "hours=3", "minutes=-1", "apps=0"):
        with pytest.raises(DiscoError, match="--budget"):
            budget_overrides(bad, spec)
    specs = pair_specs("cpu_tiny", 2, "samples=320", [])
    assert [(s.method, s.train.seed, s.train.budget) for s in specs] == [
        ("dis", 0, 10), ("trm", 0, 10), ("dis", 1, 10), ("trm", 1, 10)]
    with pytest.raises(DiscoError, match=r"no preset dis_nope.yaml for --preset nope \(have: compact, cpu_tiny, medium\)"):
        pair_specs("nope", 1, None, [])
    # A derived value that cannot work fails before anything runs, naming the field.
    with pytest.raises(Exception, match="global_batch_size"):
        pair_specs("cpu_tiny", 1, None, ["runtime.workers=3"])


@pytest.fixture(scope="module")
def two_runs(finished_dis, data10, tiny_spec):
    storage, _ = finished_dis
    train(tiny_spec(data10, method="trm", budget=4, eval_interval=2), storage, name="t", progress=False)
    return storage


def test_report_from_two_real_runs(two_runs, tmp_path, capsys):
    storage = two_runs
    assert main(["compare", "--from", "base", "t", "--storage", storage.uri, "--out", str(tmp_path / "rep")]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    runs = collect(storage, ["base", "t"])
    table = summarise(runs)
    final_d = [json.loads(x) for x in Path(storage.uri, "base", "metrics.jsonl").read_text().splitlines()][-1]
    assert final_d["kind"] == "eval"
    assert table["dis"]["train_exact"] == final_d["train_exact_accuracy"]
    assert table["dis"]["apps_eval"] == 2 * 2 and table["trm"]["apps_eval"] == 4 * 2  # N*T*(n+1), n=1
    assert [r.apps_per_row for r in runs] == [2 * 2, 2]  # what one training row costs each method
    assert f"{table['dis']['samples_per_s']:.1f}" in md and "DIS" in md and "TRM" in md
    for png in ("accuracy.png", "dis_steps.png", "examples.png"):
        assert (tmp_path / "rep" / png).stat().st_size > 1000, png
    assert "<table>" in (tmp_path / "rep" / "report.html").read_text()

    # Without --out the report lands in the storage, next to the runs.
    assert main(["compare", "--from", "base", "t", "--storage", storage.uri]) == 0
    (report,) = Path(storage.uri).glob("compare-runs-*/report.md")
    assert report.read_text() == md


def test_report_into_remote_storage_stays_there(two_runs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bucket").mkdir()
    remote = Storage(pafs.SubTreeFileSystem(str(tmp_path / "bucket"), pafs.LocalFileSystem()), "reports", "s3://b/reports")
    where, text = publish_report(collect(two_runs, ["base", "t"]), remote, "cmp", "DIS vs TRM-ACT")
    assert where == "s3://b/reports/cmp" and text.startswith("# DIS vs TRM-ACT")
    stored = {Path(i.path).name for i in remote.fs.get_file_info(pafs.FileSelector(remote.path("cmp")))}
    assert {"report.md", "report.html", "accuracy.png", "examples.png"} <= stored
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bucket"]  # no local folder named like the URI


def test_mismatched_runs_are_refused(two_runs):
    runs = collect(two_runs, ["base", "t"])
    specs = [(r.spec, r.run.record.dataset.fingerprint) for r in runs]
    wide = derive(specs[1][0], ["model.hidden_size=64", "model.puzzle_emb_ndim=64"])
    with pytest.raises(DiscoError, match="widths differ"):
        check_comparable([specs[0], (wide, specs[1][1])], allow=False)
    with pytest.raises(DiscoError, match="different datasets"):
        check_comparable([specs[0], (specs[1][0], "0" * 64)], allow=False)
    check_comparable([specs[0], (wide, "0" * 64)], allow=True)
    with pytest.raises(DiscoError, match="at least one DIS run and one TRM run"):
        collect(two_runs, ["base"])
