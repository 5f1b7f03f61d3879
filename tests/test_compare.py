"""The DIS-vs-TRM report from two tiny real runs: numbers come from the runs' files, plots exist,
mismatched data or widths are refused. (~1 min; marked slow.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from arc_data.build import build_dataset
from arc_data.errors import DiscoError
from arc_data.manifest import BuildConfig
from cluster.cli import main
from cluster.compare import check_comparable, collect, summarise, wilson
from cluster.storage import Storage
from trainer.launch import train

pytestmark = pytest.mark.slow


def test_wilson_interval():
    lo, hi = wilson(5, 10)
    assert lo < 0.5 < hi and round(lo, 3) == 0.237 and round(hi, 3) == 0.763
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == 1.0


@pytest.fixture(scope="module")
def two_runs(ray_local, tiny_spec, tmp_path_factory):
    root = tmp_path_factory.mktemp("cmp")
    build_dataset(BuildConfig(sources=["arc1"], canvas=10, tasks=4, augmentations=2, seed=5), root / "data",
                  progress=False)
    storage = Storage.of(str(root / "runs"))
    dis = tiny_spec(str(root / "data"), budget=4, eval_interval=2)
    from trainer.config import RunSpec

    raw = dis.model_dump(mode="json")
    raw["objective"] = {"method": "trm"}
    raw["model"]["timestep_embedding"] = False
    raw["model"]["supervision_steps"] = 4
    trm = RunSpec.model_validate(raw)
    train(dis, storage, name="d", progress=False)
    train(trm, storage, name="t", progress=False)
    return storage, root


def test_report_from_two_real_runs(two_runs, tmp_path, capsys):
    storage, _ = two_runs
    assert main(["compare", "--from", "d", "t", "--storage", storage.uri, "--out", str(tmp_path / "rep")]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    runs = collect(storage, ["d", "t"])
    table = summarise(runs)
    final_d = [json.loads(x) for x in Path(storage.uri, "d", "metrics.jsonl").read_text().splitlines()][-1]
    assert final_d["kind"] == "eval"
    assert table["dis"]["train_exact"] == final_d["train_exact_accuracy"]
    assert table["dis"]["apps_eval"] == 2 * 2 and table["trm"]["apps_eval"] == 4 * 2  # N*T*(n+1), n=1
    assert f"{table['dis']['samples_per_s']:.1f}" in md and "DIS" in md and "TRM" in md
    for png in ("accuracy.png", "dis_steps.png", "examples.png"):
        assert (tmp_path / "rep" / png).stat().st_size > 1000, png
    assert "<table>" in (tmp_path / "rep" / "report.html").read_text()


def test_mismatched_runs_are_refused(two_runs, tiny_spec, capsys):
    storage, root = two_runs
    runs = collect(storage, ["d", "t"])
    specs = [(r["method"], r["spec"], r["fingerprint"]) for r in runs]
    wide = json.loads(json.dumps(specs[1][1]))
    wide["model"]["hidden_size"] = 64
    with pytest.raises(DiscoError, match="widths differ"):
        check_comparable([specs[0], ("trm", wide, specs[1][2])], allow=False)
    with pytest.raises(DiscoError, match="different datasets"):
        check_comparable([specs[0], ("trm", specs[1][1], "0" * 64)], allow=False)
    check_comparable([specs[0], ("trm", wide, "0" * 64)], allow=True)
