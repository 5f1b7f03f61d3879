"""`disco train` on a real embedded Ray: 2 gloo DDP workers, checkpoints, retention, fault tolerance
and resume on remote (pyarrow SubTreeFileSystem) storage, tracking, and the eval/predict/runs
commands on what it wrote. (~1.5 min; marked slow.)

    .venv/bin/python -m pytest -q tests/test_train.py
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from io import StringIO
from pathlib import Path

import pyarrow.fs as pafs
import pytest
from fault_injection import KillLastRankOnce

from arc_data.dataset import TEST, TRAIN, ArcDataset
from arc_data.errors import DiscoError
from cluster.main import main
from trainer import checkpoint as ckpt
from trainer.config import derive
from trainer.inference import evaluate_checkpoint, load, open_dataset
from trainer.launch import train
from trainer.monitor import watch
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

    assert run.record.status == "finished" and run.checkpoint_location(run.best().name) == out.best
    assert ckpt.problem(out.best) is None
    assert {ckpt.rank_file(0), ckpt.rank_file(1)} <= {p.name for p in Path(out.best).iterdir()}
    # Retention: the best 2 by train_accuracy (ties to the later one), plus the latest.
    ranked = sorted(evals, key=lambda e: (e["train_accuracy"], e["batch"]))
    expected = {e["batch"] for e in ranked[-2:]} | {6}
    assert {c.batch for c in run.checkpoints()} == expected
    assert list(Path(out.run_dir, "wandb").glob("offline-run-*")), "offline W&B run directory missing"


def test_existing_name_is_refused(finished_dis, data10, tiny_spec):
    storage, _ = finished_dis
    with pytest.raises(DiscoError, match="already exists"):
        train(tiny_spec(data10), storage, name="base", progress=False)


def test_remote_storage_killed_worker_corrupt_checkpoint_and_resume(ray_local, data10, tmp_path, tiny_spec):
    """train -> checkpoint -> a worker dies -> resume -> a damaged latest checkpoint is set aside on the
    next resume (never the run's best, never retained over the intact one) -> best, all through a
    pyarrow filesystem that is not the local one."""
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
    # A shorter budget, so nothing overwrites the damaged checkpoint: it must still never be best.
    out = train(tiny_spec(data10, budget=3), storage, name="r", resume=True, progress=False)
    records = run.metrics()
    assert [r["checkpoint"] for r in run.metrics("resume")] == [ckpt.dir_name(2)] * 2
    assert _batches(records, "train") == [1, 2, 3]  # nothing lost, nothing twice
    assert _batches(records, "eval") == [2, 3] and out.metrics["batch"] == 3
    names = storage.listdir("r")
    assert f"damaged_{ckpt.dir_name(4)}" in names and ckpt.dir_name(4) not in names
    assert {c.name for c in run.checkpoints()} == {ckpt.dir_name(2), ckpt.dir_name(3)}  # both intact, kept

    assert run.read().status == "finished" and out.best == storage.join("r", run.best().name)
    with run.local_checkpoint(run.best().name) as d:
        assert ckpt.problem(d) is None
        loaded = load(d, device="cpu")
    result = evaluate_checkpoint(loaded, open_dataset(loaded, None))
    assert result.metrics["puzzles"] > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bucket"]  # nothing written beside the storage


def test_an_interrupted_run_reports_its_best_checkpoint_everywhere(finished_dis, capsys):
    """runs list, runs show and eval agree on an interrupted run's best checkpoint (it has no final metrics)."""
    import shutil

    storage, _ = finished_dis
    shutil.copytree(Path(storage.uri, "base"), Path(storage.uri, "halted"))
    run = Run(storage, "halted")
    run.write(run.record.model_copy(update={"name": "halted", "status": "interrupted", "metrics": {}}))
    best = run.best()
    s = ["--storage", storage.uri]
    capsys.readouterr()
    assert main(["runs", "list", *s]) == 0
    (line,) = [x for x in capsys.readouterr().out.splitlines() if x.startswith("halted ")]
    assert "interrupted" in line and f" {best.batch} " in line and " - " not in line
    assert main(["runs", "show", "halted", *s]) == 0
    assert f"best checkpoint: {run.checkpoint_location(best.name)}" in capsys.readouterr().out
    assert main(["eval", "--checkpoint", "halted", *s]) == 0
    assert f"checkpoint {run.checkpoint_location(best.name)}" in capsys.readouterr().out


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
                 "--png", str(tmp_path / "p.png"), "--submission", str(tmp_path / "one.json")]) == 0
    assert "test pair 0: voted over 2 version(s)" in capsys.readouterr().out  # data.eval_versions, as eval
    assert (tmp_path / "p.png").stat().st_size > 0
    # predict votes exactly as the evaluator does: the same two attempts as eval's submission.json
    assert json.loads((tmp_path / "one.json").read_text())[scored[0]] == sub[scored[0]]

    # The checkpoint refuses data it was not trained on.
    assert main(["eval", "--checkpoint", out.best, "--data", str(small_dataset.root)]) == 2
    assert "not the one the checkpoint was trained on" in capsys.readouterr().err

    assert main(["runs", "list", *s]) == 0
    assert "base" in capsys.readouterr().out
    assert main(["runs", "show", "base", "--json", *s]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["status"] == "finished" and len(shown["evaluations"]) == 3


def test_what_cannot_work_fails_before_or_without_retries_and_frees_the_name(ray_local, data10, small_dataset,
                                                                             finished_dis, tmp_path, tiny_spec):
    """Workers that can never be placed fail in one line within runtime.resource_timeout_minutes
    instead of waiting forever; the run never trained, so its name can be used again; a resume on
    other data is refused before Ray starts."""
    import time

    storage = Storage.of(str(tmp_path))
    greedy = derive(tiny_spec(data10, budget=2, eval_interval=2), {"runtime": {"cpus_per_worker": 64,
                                                                                "resource_timeout_minutes": 0.1}})
    t0 = time.monotonic()
    with pytest.raises(DiscoError, match=r"could not start 2 worker\(s\) of 64 CPU each within 0.1 min"):
        train(greedy, storage, name="n", progress=False)
    assert time.monotonic() - t0 < 60
    out = train(tiny_spec(data10, budget=2, eval_interval=2), storage, name="n", progress=False)
    assert out.metrics["batch"] == 2
    with pytest.raises(DiscoError, match="was trained on dataset"):
        train(tiny_spec(str(small_dataset.root)), finished_dis[0], name="base", resume=True, progress=False)


def _wait_for(condition, proc: subprocess.Popen | None = None, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        assert proc is None or proc.poll() is None, proc.stderr.read()[-2000:]
        time.sleep(0.3)


def test_ctrl_c_and_the_end_of_training_say_what_to_run_next(ray_local, data10, tmp_path, tiny_spec, capsys):
    """Ctrl-C on `disco train` (SIGINT to its process group, as a terminal sends it) leaves an
    interrupted run and prints the resume command; the resume finishes and points at eval and pull."""
    import yaml

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_spec(data10, workers=1, budget=400, eval_interval=2).model_dump(mode="json")))
    storage = tmp_path / "runs"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "cluster.main", "train", "--config", str(config), "--name", "cc",
                             "--storage", str(storage), "--no-progress"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    _wait_for(lambda: any(storage.glob("cc/checkpoint_*/COMMIT")), proc)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert f"next: disco train --resume cc --storage {storage}" in err.splitlines()
    run = Run(Storage.of(str(storage)), "cc")
    assert run.record.status == "interrupted" and run.best() is not None

    capsys.readouterr()
    assert main(["train", "--resume", "cc", "--storage", str(storage), "--set", f"train.budget={run.best().batch + 2}",
                 "--no-progress"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == f"next: disco eval --checkpoint cc --storage {storage}   (or: disco pull cc --out best/ --storage {storage})"
    assert run.read().status == "finished"


def test_watch_follows_a_running_run_to_its_end_and_plot_draws_it(ray_local, data10, tmp_path, tiny_spec):
    storage = Storage.of(str(tmp_path))
    trained = threading.Thread(target=train, args=(tiny_spec(data10, workers=1, budget=12), storage, "w"),
                               kwargs={"progress": False})
    trained.start()
    run = Run(storage, "w")
    _wait_for(lambda: run.read() is not None)
    view = StringIO()
    watch(run, interval=0.2, out=view)  # returns once the run stops running
    trained.join()
    blocks = view.getvalue().split("run w  ")[1:]
    assert len(blocks) >= 3, view.getvalue()  # it refreshed while the run trained
    assert blocks[0].startswith("running") and blocks[-1].startswith("finished")
    assert "batch 12/12  (100%)" in blocks[-1] and "eval @ batch 12:" in blocks[-1]

    assert main(["runs", "plot", "w", "--storage", storage.uri, "--out", str(tmp_path / "w.png")]) == 0
    assert (tmp_path / "w.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["runs", "plot", "nope", "--storage", storage.uri, "--out", str(tmp_path / "x.png")]) == 2
    assert not (tmp_path / "x.png").exists()
