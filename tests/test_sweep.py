"""Sweeps on a real embedded Ray: Tune + Optuna (sqlite study) + synchronous halving over real training runs of
both methods, the leaderboard, exporting the best checkpoint, resuming a killed sweep, and requests
refused before Ray starts. (~2.5 min; marked slow.)

    .venv/bin/python -m pytest -q tests/test_sweep.py
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
import yaml
from ports import free_port

from arc_data.build import build_dataset
from arc_data.manifest import BuildConfig
from cluster.main import main
from trainer.runs import Run
from trainer.storage import Storage
from tuning.export import pull
from tuning.leaderboard import leaderboard, watch
from tuning.sweep import RUNS, plan_sweep, read_sweep, run_sweep

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def space_file(tmp_path_factory, tiny_spec) -> Path:
    root = tmp_path_factory.mktemp("sweep")
    build_dataset(BuildConfig(sources=["arc1"], canvas=10, tasks=4, augmentations=2, seed=1), root / "data",
                  progress=False)
    base = tiny_spec(str(root / "data"), budget=8, eval_interval=2, log_interval=2).model_dump(mode="json")
    base["runtime"]["workers"] = 1
    base["tracking"]["wandb"] = "off"
    (root / "base.yaml").write_text(yaml.safe_dump(base))
    # Seed 9: TPE's random start-up draws both methods and both learning rates in the first 4 trials.
    space = {"base": str(root / "base.yaml"), "metric": "val_accuracy", "validation_fraction": 0.5, "seed": 9,
             "trials": 4, "concurrency": 2, "scheduler": {"grace_period": 1, "reduction_factor": 2},
             "params": {"optim.lr": {"choice": [1.0e-6, 3.0e-3]}, "objective.schedule": {"choice": ["linear", "cosine"]},
                        "method": {"choice": ["dis", "trm"]}}}
    (root / "space.yaml").write_text(yaml.safe_dump(space))
    return root / "space.yaml"



def _get_json(url: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return json.loads(response.read())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _study_states(storage: Storage, name: str) -> list[str]:
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{Path(storage.uri, name, 'study.db')}")
    return [t.state.name for t in study.trials]


def test_tiny_sweep_stops_early_records_every_trial_and_exports_the_best(ray_local, space_file, tmp_path, capsys):
    storage = Storage.of(str(tmp_path / "runs"))
    grid = run_sweep(plan_sweep(str(space_file), "s", storage), storage)
    assert len(grid) == 4 and all(r.error is None for r in grid)
    lines = capsys.readouterr().out.splitlines()  # one line per trial state change
    assert sum(" started " in x and "lr=" in x and "method=" in x for x in lines) == 4
    assert any(" eval 1/4 " in x and "val_accuracy" in x for x in lines)
    assert any("stopped early at eval" in x for x in lines) and any("finished after 4" in x for x in lines)
    # Synchronous halving (the default; grace 1, rf 2 -> rungs at evaluations 1 and 2): every trial
    # waits paused at each rung it reaches, the best half goes on, and nothing is trained twice.
    assert sum("paused at rung 1/2 (eval 1)" in x for x in lines) >= 3
    assert any("rung 1/2 (eval 1): 2 of 4 go on" in x for x in lines)
    assert any("rung 2/2 (eval 2): 1 of 2 go on" in x for x in lines)
    logged = {d.name: [r["batch"] for r in Run(storage.child("s", RUNS), d.name).metrics("train")]
              for d in Path(storage.uri, "s", RUNS).iterdir()}
    assert all(len(b) == len(set(b)) for b in logged.values()), logged
    assert sorted(len(b) for b in logged.values()) == [1, 1, 2, 4]  # evaluations 1+1+2+4 of the full 16
    statuses = {n: Run(storage.child("s", RUNS), n).record.status for n in logged}
    assert sorted(statuses.values()) == ["finished", "paused", "paused", "paused"]  # `disco train --resume` continues one
    record, rows = leaderboard(storage, "s")
    assert len(rows) == 4 and record.status == "finished"
    assert [r["rank"] for r in rows] == [1, 2, 3, 4]
    # The space chooses the method: each trial trained what it drew, with only its own objective keys.
    assert {r["method"] for r in rows} == {"dis", "trm"}
    for r in rows:
        spec = Run(storage.child("s", RUNS), r["trial"]).record.spec
        assert r["params"]["method"] == spec.method == spec.objective.method
        assert spec.model.timestep_embedding == (spec.method == "dis")
        assert (r["params"]["objective.schedule"] is not None) == (spec.method == "dis")
    assert rows[0]["val_accuracy"] >= rows[-1]["val_accuracy"]
    assert any(r["status"] == "stopped early" for r in rows), "halving stopped no trial"
    assert any(r["status"] == "complete" for r in rows)
    assert _study_states(storage, "s").count("COMPLETE") == 4  # the persistent Optuna study holds every trial

    out = pull("s", storage, tmp_path / "best")
    assert {"model.safetensors", "config.json", "metrics.json", "MODEL_CARD.md", "COMMIT"} <= {
        p.name for p in out.iterdir()}
    assert main(["eval", "--checkpoint", str(out), "--out", str(tmp_path / "ev")]) == 0
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["selection_split"] == "validation"
    # The export loads with plain torch + trainer.model alone.
    import torch
    from safetensors.torch import load_file

    from trainer.model import ModelConfig, TinyRecursiveModel

    cfg = ModelConfig(**json.loads((out / "config.json").read_text())["model"])
    state = load_file(str(out / "model.safetensors"))
    state.pop("puzzle_emb.weight")
    model = TinyRecursiveModel(cfg)
    model.load_state_dict(state)
    assert torch.equal(model.lm_head.weight, state["lm_head.weight"])

    capsys.readouterr()
    assert main(["best", "s", "--storage", storage.uri, "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["rows"]) == 4

    # The study opens in optuna-dashboard (the `dashboard` extra), with the one command the docs show.
    port = free_port()
    dashboard = subprocess.Popen([str(Path(sys.executable).parent / "optuna-dashboard"),
                                  f"sqlite:///{Path(storage.uri, 's', 'study.db')}", "--host", "127.0.0.1",
                                  "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        studies = _get_json(f"http://127.0.0.1:{port}/api/studies", timeout=60)
        assert [st["study_name"] for st in studies["study_summaries"]] == ["s"]
    finally:
        dashboard.terminate()
        dashboard.wait(timeout=30)

    # `disco best --watch` redraws while the sweep runs and returns when it stops.
    record = read_sweep(storage, "s")
    storage.write_json(record.model_copy(update={"status": "running"}).model_dump(mode="json"), "s", "sweep.json")
    view = io.StringIO()
    watcher = threading.Thread(target=watch, args=(storage, "s", 0.1), kwargs={"out": view})
    watcher.start()
    time.sleep(1.0)
    storage.write_json(record.model_dump(mode="json"), "s", "sweep.json")
    watcher.join(timeout=30)
    assert not watcher.is_alive() and view.getvalue().count("sweep s (running)") == 1
    assert view.getvalue().count("sweep s (finished)") == 1
    capsys.readouterr()

    # Both methods on one axis: the Pareto front of accuracy against compute, and a report from the sweep.
    assert main(["best", "s", "--pareto", "--storage", storage.uri]) == 0
    out = capsys.readouterr().out
    front = [line.split()[0] for line in out.split("cheapest first:")[1].splitlines() if line.strip().startswith("trial-")]
    assert front and set(front) <= {r["trial"] for r in rows} and (tmp_path / "runs" / "s" / "pareto.png").stat().st_size
    assert main(["compare", "--from", "s", "--storage", storage.uri, "--out", str(tmp_path / "rep")]) == 0
    report = (tmp_path / "rep" / "report.md").read_text()
    best_of_method = {m: next(r["trial"] for r in rows if r["method"] == m) for m in ("dis", "trm")}
    assert "best trial of each method in sweep s" in report and "![pareto.png](pareto.png)" in report
    assert all(f"`{t}`" in report for t in best_of_method.values())


def test_asha_remains_available_and_stops_on_the_runs_evaluation_index(ray_local, space_file, tmp_path, capsys):
    space = yaml.safe_load(space_file.read_text())
    space["scheduler"]["type"] = "asha"
    (tmp_path / "asha.yaml").write_text(yaml.safe_dump(space))
    storage = Storage.of(str(tmp_path / "runs"))
    grid = run_sweep(plan_sweep(str(tmp_path / "asha.yaml"), "a", storage), storage)
    assert len(grid) == 4 and all(r.error is None for r in grid)
    assert "paused at rung" not in capsys.readouterr().out and not Path(storage.uri, "a", "scheduler").exists()
    _, rows = leaderboard(storage, "a")
    assert any(r["status"] == "stopped early" for r in rows) and any(r["status"] == "complete" for r in rows)
    assert _study_states(storage, "a").count("COMPLETE") == 4


def test_killed_sweep_resumes_to_exactly_the_requested_trials(ray_local, space_file, tmp_path):
    storage = Storage.of(str(tmp_path / "runs"))
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "cluster.main", "sweep", "--space", str(space_file), "--name", "k",
                             "--storage", storage.uri], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    runs = Path(storage.uri, "k", "runs")
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        evals = sum(1 for f in runs.glob("*/metrics.jsonl") for line in f.read_text().splitlines() if '"eval"' in line)
        if evals >= 2:
            break
        time.sleep(0.5)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and everything it started, at once
    proc.wait()
    assert read_sweep(storage, "k").status == "running"

    grid = run_sweep(read_sweep(storage, "k"), storage, resume=True)
    assert len(grid) == 4 and all(r.error is None for r in grid)
    trial_ids = [r.path for r in grid]
    assert len(set(trial_ids)) == 4
    _, rows = leaderboard(storage, "k")
    assert len(rows) == 4 and {r["trial"] for r in rows} == {f"trial-{Path(p).name.split('_')[2]}" for p in trial_ids}
    states = _study_states(storage, "k")
    assert states.count("COMPLETE") == 4  # re-run trials report into their own study trial
    assert "RUNNING" not in states, states  # nothing the killed driver had in flight is left open ...
    study = optuna.load_study(study_name="k", storage=f"sqlite:///{Path(storage.uri, 'k', 'study.db')}")
    assert all("killed" in t.user_attrs["disco"] for t in study.trials if t.state.name == "FAIL")  # ... and says why


def test_malformed_space_is_one_line_naming_the_field(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"base": "dis_cpu_tiny.yaml", "params": {"optim.lr": {"loguniform": [0, 1]}}}))
    assert main(["sweep", "--space", str(bad), "--name", "x", "--storage", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "params.optim.lr" in err[0] and "low > 0" in err[0]
    assert not (tmp_path / "runs").exists()


def test_invalid_workers_per_trial_fails_at_the_command_line(space_file, tmp_path, capsys):
    """--workers-per-trial is validated with the rest of the trial config, before Ray starts."""
    argv = ["sweep", "--space", str(space_file), "--name", "x", "--storage", str(tmp_path / "runs")]
    assert main([*argv, "--workers-per-trial", "3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "global_batch_size 8 must be a multiple of runtime.workers 3" in err[0]
    assert main([*argv, "--workers-per-trial", "0"]) == 2
    assert "workers_per_trial" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
