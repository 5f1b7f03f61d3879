"""What Ray Train costs: the same training steps in a plain loop and in Ray Train, in one run.

    .venv/bin/python bench/ray_overhead.py [--batches 60] [--hidden 128] [--batch 16]

1. plain: the workers' own Trainer loop in this process (no Ray), 1 torch thread;
2. Ray Train, 1 worker (1 CPU): `trainer.launch.train` on an embedded local Ray;
3. Ray Train, 2 workers (1 CPU each, gloo DDP), same global batch;
4. plain again (the plain figure is the mean of 1 and 4, to cancel drift on a noisy box).
Steady-state time per batch inside the workers (their `train_time_s`, which includes the
per-interval metric all-reduce and logging) is compared; Ray's fixed start-up and the
evaluations are reported separately. Target: overhead_ratio = ray_1 / plain <= 1.05.
The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("WANDB_MODE", "disabled")

from arc_data.build import build_dataset  # noqa: E402
from arc_data.manifest import BuildConfig  # noqa: E402
from trainer.config import RunSpec  # noqa: E402
from trainer.loop import Trainer  # noqa: E402
from trainer.runs import Run  # noqa: E402
from trainer.storage import Storage  # noqa: E402


def spec_for(data: str, args, workers: int) -> RunSpec:
    return RunSpec.model_validate({
        "data": {"path": data, "eval_versions": 1},
        "model": {"hidden_size": args.hidden, "num_heads": 4, "expansion": 2, "layers": 1, "latent_steps": 2,
                  "cycles": 1, "supervision_steps": 6, "puzzle_emb_ndim": args.hidden, "puzzle_emb_len": 1,
                  "timestep_embedding": True},
        "objective": {"method": "dis"},
        "optim": {"lr": 1e-3, "warmup_steps": 10},
        "train": {"budget": args.batches, "eval_interval": args.batches, "global_batch_size": args.batch,
                  "log_interval": 10, "select_metric": "train_accuracy"},
        "runtime": {"workers": workers, "cpus_per_worker": 1},
        "tracking": {"wandb": "off"},
    })


def plain(spec: RunSpec, storage: Storage, name: str) -> float:
    """Seconds per batch of the workers' Trainer loop without Ray (after one warm-up batch)."""
    trainer = Trainer(spec, Run(storage, name))
    trainer.restore()
    trainer.train_batch()
    t0 = time.perf_counter()
    while trainer.batch < trainer.plan.total:
        trainer.train_batch()  # includes the per-interval metric reduction and logging
    per_batch = (time.perf_counter() - t0) / (trainer.plan.total - 1)
    trainer.close()
    return per_batch


def in_ray(spec: RunSpec, storage: Storage, name: str) -> dict:
    from trainer.launch import train

    t0 = time.perf_counter()
    train(spec, storage, name=name, progress=False)
    wall = time.perf_counter() - t0
    records = Run(storage, name).metrics()
    train_recs = [r for r in records if r["kind"] == "train"]
    first, last = train_recs[0], train_recs[-1]
    # Per-batch time after the first logged interval (which holds the DDP/first-batch warm-up).
    per_batch = (last["train_time_s"] - first["train_time_s"]) / (last["batch"] - first["batch"])
    evals = sum(r["eval_time_s"] for r in records if r["kind"] == "eval")
    return {"per_batch_s": per_batch, "wall_s": wall, "startup_and_teardown_s": wall - last["train_time_s"] - evals}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=60)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16)
    args = ap.parse_args()

    import ray

    with tempfile.TemporaryDirectory(prefix="disco-bench-") as tmp:
        data = os.path.join(tmp, "data")
        build_dataset(BuildConfig(sources=["arc1"], canvas=10, tasks=12, augmentations=16, seed=0), data,
                      progress=False)
        storage = Storage.of(os.path.join(tmp, "runs"))
        plain_a = plain(spec_for(data, args, 1), storage, "plain-a")
        print(f"plain loop            {plain_a * 1e3:8.1f} ms/batch")
        ray.init(address="local", num_cpus=2, include_dashboard=True, log_to_driver=False,
                 logging_config=ray.LoggingConfig(log_level="ERROR"), _temp_dir=tempfile.mkdtemp(prefix="rt", dir="/tmp"))
        try:
            one = in_ray(spec_for(data, args, 1), storage, "one")
            print(f"Ray Train, 1 worker   {one['per_batch_s'] * 1e3:8.1f} ms/batch  (start-up + teardown "
                  f"{one['startup_and_teardown_s']:.1f} s)")
            two = in_ray(spec_for(data, args, 2), storage, "two")
            print(f"Ray Train, 2 workers  {two['per_batch_s'] * 1e3:8.1f} ms/batch  (start-up + teardown "
                  f"{two['startup_and_teardown_s']:.1f} s)")
        finally:
            ray.shutdown()
        plain_b = plain(spec_for(data, args, 1), storage, "plain-b")
        print(f"plain loop (again)    {plain_b * 1e3:8.1f} ms/batch")
    base = (plain_a + plain_b) / 2
    ratio = one["per_batch_s"] / base
    speedup = one["per_batch_s"] / two["per_batch_s"]
    print(f"overhead ratio (Ray 1 worker / plain): {ratio:.3f}   target <= 1.05")
    print(f"2 workers vs 1: {speedup:.2f}x samples/s on {os.cpu_count()} cores")
    samples = args.batch
    print(json.dumps({"bench": "ray_overhead", "date": time.strftime("%Y-%m-%d"), "machine": platform.machine(),
                      "cores": os.cpu_count(), "batches": args.batches, "hidden": args.hidden, "global_batch": args.batch,
                      "plain_ms_per_batch": round(base * 1e3, 2), "ray1_ms_per_batch": round(one["per_batch_s"] * 1e3, 2),
                      "ray2_ms_per_batch": round(two["per_batch_s"] * 1e3, 2),
                      "ray1_startup_s": round(one["startup_and_teardown_s"], 1),
                      "ray2_startup_s": round(two["startup_and_teardown_s"], 1),
                      "samples_per_s_plain": round(samples / base, 1),
                      "samples_per_s_ray1": round(samples / one["per_batch_s"], 1),
                      "samples_per_s_ray2": round(samples / two["per_batch_s"], 1),
                      "overhead_ratio": round(ratio, 3), "two_worker_speedup": round(speedup, 2)}))


if __name__ == "__main__":
    main()
