"""Many nodes and nodes that disappear, for real: a Ray cluster of several nodes on this machine
(Ray's own `ray.cluster_utils.Cluster`, its own ports), 2-worker DDP runs with a worker on each
node, a node removed mid-run and capacity returned, for a fixed and an elastic run; and a resized
run that learns exactly what a fixed one does. (~4 min; slow.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
from fault_injection import KillLastRankOnce
from ports import free_port
from safetensors.torch import load_file

from arc_data.errors import DiscoError
from trainer import checkpoint as ckpt
from trainer.config import derive
from trainer.launch import train
from trainer.runs import Run
from trainer.storage import Storage

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def _losses(run: Run) -> dict[int, float]:
    return {r["batch"]: r["loss"] for r in run.metrics("train")}


@pytest.mark.parametrize(("method", "before", "after"), [("dis", 2, 1), ("trm", 1, 2)])
def test_a_resized_run_learns_what_a_fixed_one_does(ray_local, data10, tmp_path, tiny_spec, method, before, after):
    """The same run on 2 workers throughout, and on `before` workers until a crash after batch 5
    then resumed on `after` (the restore an elastic resize does): same losses, same weights."""
    storage = Storage.of(str(tmp_path))
    spec = tiny_spec(data10, method, workers=2, budget=8, eval_interval=4)
    train(spec, storage, name="fixed", progress=False)
    first = derive(spec, {"runtime": {"workers": before, "max_failures": 0}})
    with pytest.raises(DiscoError):
        train(first, storage, name="resized", progress=False, worker_callbacks=[KillLastRankOnce(at=5)])
    train(derive(spec, {"runtime": {"workers": after}}), storage, name="resized", resume=True, progress=False)
    fixed, resized = Run(storage, "fixed"), Run(storage, "resized")
    assert [r["checkpoint"] for r in resized.metrics("resume")] == [ckpt.dir_name(4)]
    a, b = _losses(fixed), _losses(resized)
    assert sorted(b) == list(range(1, 9))  # every batch logged once
    assert all(abs(a[k] - b[k]) <= 1e-4 * abs(a[k]) for k in a), (a, b)
    weights = [load_file(str(Path(tmp_path, name, ckpt.dir_name(8), ckpt.MODEL))) for name in ("fixed", "resized")]
    for key, value in weights[0].items():
        assert torch.allclose(value, weights[1][key], rtol=1e-4, atol=1e-5), key


# ----------------------------------------------------------------------------- a real multi-node cluster



@pytest.fixture
def cluster(tmp_path):
    """A head and one more node, 1 CPU each: a 2-worker run has a worker on each."""
    from ray.cluster_utils import Cluster

    current = Path("/tmp/ray/ray_current_cluster")  # Cluster points `address="auto"` here: put it back after
    before = current.read_text() if current.exists() else None
    c = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "gcs_server_port": free_port(), "include_dashboard": False, "temp_dir": tempfile.mkdtemp(prefix="rc"),
        "dashboard_agent_listen_port": free_port()})
    try:
        c.add_node(num_cpus=1)
        c.wait_for_nodes()
        yield c
    finally:
        c.shutdown()
        if before is None:
            current.unlink(missing_ok=True)
        else:
            current.write_text(before)


def _run_through_node_loss(cluster, tmp_path: Path, name: str, workers: str, budget: int) -> dict:
    """Train on the cluster; once the first checkpoint is in, remove the second node (its worker
    dies with it). An elastic run must go on with one worker before a node is added back; a fixed
    one gets it back after 10 s. Returns what happened, from the metrics log."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "RAY_AUTH"))}
    env |= {"RAY_AUTH_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    driver = subprocess.Popen(
        [str(BIN / "disco"), "train", "--config", "dis_cpu_tiny", "--address", cluster.address, "--storage",
         str(tmp_path), "--name", name, "--no-progress", "--set", f"runtime.workers={workers}",
         "--set", "runtime.resize_check_s=5", "--set", f"train.budget={budget}", "--set", "train.eval_interval=4",
         "--set", "train.log_interval=1", "--set", "tracking.wandb=off", "--set", "runtime.max_failures=3",
         "--set", "runtime.resource_timeout_minutes=1"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run = Run(Storage.of(str(tmp_path)), name)
    deadline = time.monotonic() + 300
    while not any(c.complete for c in run.checkpoints()):
        assert driver.poll() is None and time.monotonic() < deadline, driver.communicate()[1][-3000:]
        time.sleep(0.2)
    lost_at_batch = max(r["batch"] for r in run.metrics("train"))
    cluster.remove_node(cluster.list_all_nodes()[1])
    lost = time.time()
    if workers == "2":
        time.sleep(10)
    else:
        deadline = time.monotonic() + 300
        while not any(r["batch"] > lost_at_batch for r in run.metrics("train")):  # training again, on one worker
            assert driver.poll() is None and time.monotonic() < deadline, (lost_at_batch, run.metrics())
            time.sleep(0.2)
    cluster.add_node(num_cpus=1)
    out, err = driver.communicate(timeout=600)
    assert driver.returncode == 0, err[-3000:]
    records = run.metrics()
    resumes = [r for r in records if r["kind"] == "resume"]
    trained = [r for r in records if r["kind"] == "train"]
    assert [r["batch"] for r in trained] == list(range(1, budget + 1))  # nothing trained twice, nothing lost
    return {"resumes": resumes, "lost_at_batch": lost_at_batch, "lost": lost, "records": records, "out": out,
            "worlds": [r.get("world_size") for r in records if r["kind"] in ("start", "resume")]}


def test_a_fixed_run_waits_for_its_node_and_finishes_from_its_last_checkpoint(cluster, tmp_path):
    seen = _run_through_node_loss(cluster, tmp_path, "fixed", "2", budget=16)
    assert seen["resumes"] and all(r["checkpoint"].startswith("checkpoint_") for r in seen["resumes"])
    assert "run fixed: DIS, 16 batches" in seen["out"]


def test_an_elastic_run_goes_on_with_fewer_workers_and_grows_back(cluster, tmp_path):
    seen = _run_through_node_loss(cluster, tmp_path, "elastic", "[1,2]", budget=24)
    assert seen["worlds"][0] == 2 and 1 in seen["worlds"][1:] and seen["worlds"][-1] == 2, seen["worlds"]
    assert "run elastic: DIS, 24 batches" in seen["out"]
    print(json.dumps({k: v for k, v in seen.items() if k in ("worlds", "lost_at_batch")}))
