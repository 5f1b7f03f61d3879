"""What losing a node costs: a 2-worker DIS run on a two-node Ray cluster on this machine (Ray's
`ray.cluster_utils.Cluster`, 1 CPU per node), the second node removed once the run has a complete
checkpoint and a node added back later, for a fixed run (runtime.workers=2) and an elastic one
(runtime.workers=[1,2]), side by side in one run.

    .venv/bin/python bench/node_loss.py [--budget 40] [--eval-every 4] [--return-after 20]

Measured from each run's metrics log and the clock: seconds from the node's loss to the first
newly trained batch, batches redone (trained before the loss and again after it, because they
came after the last checkpoint), and for the elastic run the seconds from the node's return to
training on 2 workers again and the batches that resize redid. The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from trainer.runs import Run
from trainer.storage import Storage

BIN = Path(sys.executable).parent


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(what, until, timeout: float = 600) -> float:
    deadline = time.monotonic() + timeout
    while not until():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.1)
    return time.time()


def one_run(workers: str, args, root: Path) -> dict:
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "gcs_server_port": _port(), "include_dashboard": False,
        "temp_dir": tempfile.mkdtemp(prefix="rb"), "dashboard_agent_listen_port": _port()})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        name = "elastic" if "," in workers else "fixed"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "RAY_AUTH"))}
        env |= {"RAY_AUTH_MODE": "disabled", "OMP_NUM_THREADS": "1"}
        driver = subprocess.Popen(
            [str(BIN / "disco"), "train", "--config", "dis_cpu_tiny", "--address", cluster.address, "--storage",
             str(root), "--name", name, "--no-progress", "--set", f"runtime.workers={workers}",
             "--set", "runtime.resize_check_s=5", "--set", f"train.budget={args.budget}",
             "--set", f"train.eval_interval={args.eval_every}", "--set", "train.log_interval=1",
             "--set", "tracking.wandb=off", "--set", "runtime.max_failures=3",
             "--set", "runtime.resource_timeout_minutes=1"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        run = Run(Storage.of(str(root)), name)

        peak = [0]  # the highest batch ever trained (the log is cut back to the checkpoint on a resume)

        def trained() -> list[dict]:
            records = [r for r in run.metrics() if r["kind"] in ("train", "resume")]
            peak[0] = max([peak[0]] + [r["batch"] for r in records if r["kind"] == "train"])
            return records

        _wait("a checkpoint", lambda: any(c.complete and c.batch >= 2 * args.eval_every for c in run.checkpoints()))
        before = max(r["batch"] for r in trained() if r["kind"] == "train")
        cluster.remove_node(cluster.list_all_nodes()[1])
        lost = time.time()
        if "," in workers:  # elastic: goes on alone; the node comes back once it does
            _wait("training on one worker", lambda: any(r["kind"] == "resume" for r in trained())
                  and trained()[-1]["kind"] == "train")
            again, resumed = time.time(), next(r for r in trained() if r["kind"] == "resume")
            time.sleep(max(0.0, args.return_after - (again - lost)))
        else:
            time.sleep(args.return_after)
        cluster.add_node(num_cpus=1)
        returned = time.time()
        if "," not in workers:
            _wait("training again", lambda: any(r["kind"] == "resume" for r in trained())
                  and trained()[-1]["kind"] == "train")
            again, resumed = time.time(), next(r for r in trained() if r["kind"] == "resume")
        out = {"workers": workers, "lost_at_batch": before, "resumed_from_batch": resumed["batch"],
               "batches_redone": before - resumed["batch"], "loss_to_training_s": round(again - lost, 1),
               "node_returned_after_s": round(returned - lost, 1)}
        if "," in workers:
            trained()
            before_regrow = peak[0]
            grown = _wait("two workers again", lambda: any(r["kind"] == "resume" and r.get("world_size") == 2
                                                           for r in trained()) and trained()[-1]["kind"] == "train")
            regrow = [r for r in trained() if r["kind"] == "resume"][-1]
            out |= {"return_to_two_workers_s": round(grown - returned, 1), "regrow_resumed_from_batch": regrow["batch"],
                    "regrow_batches_redone": max(0, before_regrow - regrow["batch"]),
                    "worlds": [r.get("world_size") for r in run.metrics() if r["kind"] in ("start", "resume")]}
        _, err = driver.communicate(timeout=900)
        if driver.returncode != 0:
            raise SystemExit(f"{name} run failed: {err[-2000:]}")
        batches = [r["batch"] for r in run.metrics("train")]
        out["metrics_log_each_batch_once"] = batches == list(range(1, args.budget + 1))
        return out
    finally:
        cluster.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=int, default=40)
    ap.add_argument("--eval-every", type=int, default=4, help="batches between checkpoints")
    ap.add_argument("--return-after", type=float, default=20, help="seconds until a node is added back")
    args = ap.parse_args()
    current = Path("/tmp/ray/ray_current_cluster")  # Cluster rewrites it: put it back afterwards
    saved = current.read_text() if current.exists() else None
    results = []
    try:
        with tempfile.TemporaryDirectory(prefix="disco-nodeloss-") as tmp:
            for workers in ("2", "[1,2]"):
                r = one_run(workers, args, Path(tmp) / workers.strip("[]").replace(",", "-"))
                print(f"runtime.workers={workers}: node lost at batch {r['lost_at_batch']}, training again after "
                      f"{r['loss_to_training_s']} s from checkpoint batch {r['resumed_from_batch']} "
                      f"({r['batches_redone']} batches redone); node back after {r['node_returned_after_s']} s"
                      + (f"; 2 workers again {r['return_to_two_workers_s']} s after its return, from batch "
                         f"{r['regrow_resumed_from_batch']} ({r['regrow_batches_redone']} redone; worlds "
                         f"{r['worlds']})" if "," in workers else "")
                      + f"; metrics log holds each batch once: {r['metrics_log_each_batch_once']}", flush=True)
                results.append(r)
    finally:
        if saved is not None:
            current.write_text(saved)
    print(json.dumps({"bench": "node_loss", "date": time.strftime("%Y-%m-%d"), "machine": platform.machine(),
                      "cores": os.cpu_count(), "budget": args.budget, "eval_every": args.eval_every,
                      "runs": results}))


if __name__ == "__main__":
    main()
