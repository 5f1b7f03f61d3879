"""`disco train` on a real embedded Ray: 2 gloo DDP workers, checkpoints, fault tolerance, resume,
tracking, and the eval/predict/runs commands on what it wrote. (~1.5 min; marked slow.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from arc_data.build import build_dataset
from arc_data.dataset import TEST, TRAIN, ArcDataset
from arc_data.errors import DiscoError
from arc_data.manifest import BuildConfig
from cluster.cli import main
from cluster.storage import Storage
from trainer import checkpoint as ckpt
from trainer.launch import train
from trainer.runs import checkpoints, metrics

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data10(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("d10") / "d"
    build_dataset(BuildConfig(sources=["arc1"], canvas=10, tasks=4, augmentations=4, seed=3), out, progress=False)
    return str(out)


@pytest.fixture(scope="module")
def finished(ray_local, data10, tmp_path_factory, tiny_spec):
    storage = Storage.of(str(tmp_path_factory.mktemp("runs")))
    out = train(tiny_spec(data10), storage, name="base", progress=False)
    return storage, out


def _batches(records, kind):
    return [r["batch"] for r in records if r["kind"] == kind]


def test_two_workers_stay_in_sync_and_every_record_is_kept(finished):
    storage, out = finished
    records = metrics(storage, "base")
    start = records[0]
    assert start["kind"] == "start" and start["world_size"] == 2 and start["threads"] == 1
    assert _batches(records, "train") == [1, 2, 3, 4, 5, 6]
    evals = [r for r in records if r["kind"] == "eval"]
    assert [e["batch"] for e in evals] == [2, 4, 6]
    assert all(e["rank_weight_spread"] == 0.0 for e in evals)  # identical weights + tables on both ranks
    assert all(r["step"] == 2 * r["batch"] for r in records if r["kind"] == "train")  # 2 DIS steps per batch
    assert out.metrics["batch"] == 6 and out.metrics["block_apps_per_sample"] == 2 * 2

    run = json.loads(Path(out.run_dir, "run.json").read_text())
    assert run["status"] == "finished" and run["best_checkpoint"] == out.best
    assert ckpt.problem(out.best) is None
    kept = [c["batch"] for c in checkpoints(storage, "base")]
    assert 6 in kept and len(kept) <= 3  # top-2 by train_accuracy plus the latest
    assert list(Path(out.run_dir, "wandb").glob("offline-run-*")), "offline W&B run directory missing"


def test_existing_name_is_refused(finished, data10, tiny_spec):
    storage, _ = finished
    with pytest.raises(DiscoError, match="already exists"):
        train(tiny_spec(data10), storage, name="base", progress=False)


def test_killed_worker_resumes_from_last_checkpoint(ray_local, data10, tmp_path, monkeypatch, tiny_spec):
    monkeypatch.setenv("DISCO_FAULT_AT_BATCH", "3")  # the last rank exits hard after batch 3, once
    storage = Storage.of(str(tmp_path))
    out = train(tiny_spec(data10), storage, name="faulty", progress=False)
    records = metrics(storage, "faulty")
    resumes = [r for r in records if r["kind"] == "resume"]
    assert [r["batch"] for r in resumes] == [2]
    assert _batches(records, "train") == [1, 2, 3, 4, 5, 6]  # nothing lost, nothing twice
    assert out.metrics["batch"] == 6


def test_corrupt_latest_checkpoint_falls_back_and_resume_continues(ray_local, data10, tmp_path, tiny_spec):
    storage = Storage.of(str(tmp_path))
    first = train(tiny_spec(data10, budget=4), storage, name="resumable", progress=False)
    latest = Path(first.run_dir, ckpt.dir_name(4), "model.safetensors")
    latest.write_bytes(latest.read_bytes()[:100])  # truncated, as by a crash mid-copy
    assert "corrupt" in ckpt.problem(latest.parent)
    out = train(tiny_spec(data10, budget=6), storage, name="resumable", resume=True, progress=False)
    records = metrics(storage, "resumable")
    assert [r["checkpoint"] for r in records if r["kind"] == "resume"] == [ckpt.dir_name(2)]
    assert _batches(records, "train") == [1, 2, 3, 4, 5, 6]
    assert out.metrics["batch"] == 6


def test_eval_predict_and_runs_commands(finished, data10, small_dataset, tmp_path, capsys):
    storage, out = finished
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
