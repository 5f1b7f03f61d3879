"""`disco train` on a real embedded Ray: 2 gloo DDP workers, checkpoints, retention, fault tolerance
and resume on remote (pyarrow SubTreeFileSystem) storage, tracking, and the eval/predict/runs
commands on what it wrote. (~1.5 min; marked slow.)

    .venv/bin/python -m pytest -q tests/test_train.py
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.fs as pafs
import pytest
from fault_injection import KillLastRankOnce

from arc_data.dataset import TEST, TRAIN, ArcDataset
from arc_data.errors import DiscoError
from cluster.main import main
from trainer import checkpoint as ckpt
from trainer.inference import evaluate_checkpoint, load, open_dataset
from trainer.launch import train
from trainer.runs import Run
from trainer.storage import Storage

pytestmark = pytest.mark.slow


def _batches(records, kind):
    return [r["batch"] for r in records if r["kind"] == kind]


def test_two_workers_stay_in_sync_and_every_record_is_kept(finished_dis):
    storage, out = finished_dis
    run = Run(storage, "base")
    records = run.metrics()
    start = records[0]
    assert start["kind"] == "start" and start["world_size"] == 2 and start["threads"] == 1
    assert _batches(records, "train") == [1, 2, 3, 4, 5, 6]
    evals = run.metrics("eval")
    assert [e["batch"] for e in evals] == [2, 4, 6]
    assert all(e["rank_weight_spread"] == 0.0 for e in evals)  # identical weights + tables on both ranks
    assert all(r["step"] == 2 * r["batch"] for r in records if r["kind"] == "train")  # 2 DIS steps per batch
    assert out.metrics["batch"] == 6 and out.metrics["block_apps_per_sample"] == 2 * 2

    record = run.record
    assert record.status == "finished" and record.best_checkpoint == out.best
    assert ckpt.problem(out.best) is None
    assert {ckpt.rank_file(0), ckpt.rank_file(1)} <= {p.name for p in Path(out.best).iterdir()}
    # Retention is Ray's: the best 2 by train_accuracy (ties to the later one), plus the latest.
    ranked = sorted(evals, key=lambda e: (e["train_accuracy"], e["batch"]))
    expected = {e["batch"] for e in ranked[-2:]} | {6}
    assert {c.batch for c in run.checkpoints()} == expected
    assert list(Path(out.run_dir, "wandb").glob("offline-run-*")), "offline W&B run directory missing"


def test_existing_name_is_refused(finished_dis, data10, tiny_spec):
    storage, _ = finished_dis
    with pytest.raises(DiscoError, match="already exists"):
        train(tiny_spec(data10), storage, name="base", progress=False)


def test_remote_storage_killed_worker_corrupt_checkpoint_and_resume(ray_local, data10, tmp_path, tiny_spec):
    """train -> checkpoint -> a worker dies -> resume -> a corrupt latest checkpoint is skipped on
    the next resume -> best, all through a pyarrow filesystem that is not the local one."""
    (tmp_path / "bucket").mkdir()
    storage = Storage(pafs.SubTreeFileSystem(str(tmp_path / "bucket"), pafs.LocalFileSystem()), "runs", "mem://runs")
    assert not storage.is_local
    first = train(tiny_spec(data10, budget=4), storage, name="r", progress=False,
                  worker_callbacks=[KillLastRankOnce(at=3)])
    run = Run(storage, "r")
    assert [r["checkpoint"] for r in run.metrics("resume")] == [ckpt.dir_name(2)]  # the worker group restarted
    assert _batches(run.metrics(), "train") == [1, 2, 3, 4] and first.metrics["batch"] == 4

    latest = f"runs/r/{ckpt.dir_name(4)}/{ckpt.MODEL}"
    with storage.fs.open_input_stream(latest) as f:
        truncated = f.read()[:100]
    with storage.fs.open_output_stream(latest) as f:  # as by a crash mid-upload
        f.write(truncated)
    out = train(tiny_spec(data10, budget=6), storage, name="r", resume=True, progress=False)
    records = run.metrics()
    assert [r["checkpoint"] for r in run.metrics("resume")] == [ckpt.dir_name(2)] * 2
    assert _batches(records, "train") == [1, 2, 3, 4, 5, 6]  # nothing lost, nothing twice
    assert _batches(records, "eval") == [2, 4, 6] and out.metrics["batch"] == 6

    assert run.read().status == "finished" and out.best == storage.join("r", run.best().name)
    with run.local_checkpoint(run.best().name) as d:
        assert ckpt.problem(d) is None
        loaded = load(d, device="cpu")
    result = evaluate_checkpoint(loaded, open_dataset(loaded, None))
    assert result.metrics["puzzles"] > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bucket"]  # nothing written beside the storage


def test_eval_predict_and_runs_commands(finished_dis, data10, small_dataset, tmp_path, capsys):
    storage, out = finished_dis
    s = ["--storage", storage.uri]
    assert main(["eval", "--checkpoint", "base", "--out", str(tmp_path / "ev"), *s]) == 0
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert {"pass@1", "pass@2", "puzzles", "test_pairs"} <= m.keys()
    ds = ArcDataset(data10)
    scored = [ds.task_ids[t] for t in range(len(ds.task_ids)) if ds.n_test[t]]
    sub = json.loads((tmp_path / "ev" / "submission.json").read_text())
    assert sorted(sub) == sorted(scored) and all({"attempt_1", "attempt_2"} <= a[0].keys() for a in sub.values())

    t = ds.task_index(scored[0])
    task = {part: [{"input": ds.grid(int(e), "input").tolist(), "output": ds.grid(int(e), "output").tolist()}
                   for e in ds.examples_of(t, split)] for part, split in (("train", TRAIN), ("test", TEST))}
    (tmp_path / f"{scored[0]}.json").write_text(json.dumps(task))
    capsys.readouterr()
    assert main(["predict", "--checkpoint", out.best, "--task", str(tmp_path / f"{scored[0]}.json"),
                 "--png", str(tmp_path / "p.png")]) == 0
    assert "test pair 0: predicted" in capsys.readouterr().out
    assert (tmp_path / "p.png").stat().st_size > 0

    # The checkpoint refuses data it was not trained on.
    assert main(["eval", "--checkpoint", out.best, "--data", str(small_dataset.root)]) == 2
    assert "not the one the checkpoint was trained on" in capsys.readouterr().err

    assert main(["runs", "list", *s]) == 0
    assert "base" in capsys.readouterr().out
    assert main(["runs", "show", "base", "--json", *s]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["status"] == "finished" and len(shown["evaluations"]) == 3
