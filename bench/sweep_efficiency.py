"""ASHA's saving: the same sweep with early stopping and with every trial run to the end, one run.

    .venv/bin/python bench/sweep_efficiency.py [--trials 8] [--budget 80] [--eval-every 10]

Both sweeps use the `cpu_tiny` space (configs/sweeps/cpu_tiny.yaml) on the `make run` data, the
same seed and the same number of trials. With at most 10 trials, Optuna's TPE is still in its
random start-up phase, so both sweeps draw the same configurations and differ only in ASHA.
Counts training batches actually run (from each trial's metrics.jsonl). Target:
budget_fraction = ASHA batches / full batches <= 0.4, and whether both rank the same
configuration first. The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import yaml  # noqa: E402

from arc_data.build import build_dataset  # noqa: E402
from arc_data.manifest import BuildConfig  # noqa: E402
from trainer.config import preset_path  # noqa: E402
from trainer.runs import Run  # noqa: E402
from trainer.storage import Storage  # noqa: E402
from tuning.leaderboard import leaderboard  # noqa: E402
from tuning.sweep import RUNS, plan_sweep, run_sweep  # noqa: E402


def batches_run(storage: Storage, sweep: str) -> int:
    runs = storage.child(sweep, RUNS)
    return sum(max((r["batch"] for r in Run(runs, name).metrics("train")), default=0) for name in runs.listdir())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--budget", type=int, default=80, help="batches per full trial")
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--batch", type=int, default=16, help="global batch size")
    args = ap.parse_args()
    if args.trials > 10:
        raise SystemExit("--trials must be <= 10 (TPE's random phase; otherwise the sweeps draw different configs)")
    with tempfile.TemporaryDirectory(prefix="disco-bench-") as tmp:
        data = Path(tmp, "data")
        build_dataset(BuildConfig(sources=["arc1"], canvas=10, tasks=8, augmentations=2), data, progress=False)
        shipped = preset_path("cpu_tiny", "sweep")
        space = yaml.safe_load(shipped.read_text())
        space["base"] = str(shipped.parent.parent / space["base"])
        space["set"] |= {"data.path": str(data), "train.budget": args.budget, "train.eval_interval": args.eval_every,
                         "train.global_batch_size": args.batch, "train.log_interval": args.eval_every}
        space["trials"] = args.trials
        storage = Storage.of(str(Path(tmp, "runs")))
        results = {}
        for kind in ("asha", "fifo"):
            space["scheduler"]["type"] = kind
            path = Path(tmp, f"{kind}.yaml")
            path.write_text(yaml.safe_dump(space))
            t0 = time.perf_counter()
            run_sweep(plan_sweep(str(path), kind, storage), storage)
            record, rows = leaderboard(storage, kind)
            results[kind] = {"batches": batches_run(storage, kind), "wall_s": time.perf_counter() - t0,
                             "best": rows[0]["params"], "best_metric": rows[0][record.metric],
                             "stopped_early": sum(r["status"] == "stopped early" for r in rows)}
            print(f"{kind:5} {results[kind]['batches']:5d} batches  {results[kind]['wall_s']:6.1f} s  "
                  f"{results[kind]['stopped_early']} stopped early  best {rows[0]['params']} "
                  f"({record.metric} {rows[0][record.metric]:.4f})")
    fraction = results["asha"]["batches"] / results["fifo"]["batches"]
    same = results["asha"]["best"] == results["fifo"]["best"]
    print(f"budget fraction (ASHA / full): {fraction:.3f}   target <= 0.4;  same best configuration: {same}")
    print(json.dumps({"bench": "sweep_efficiency", "date": time.strftime("%Y-%m-%d"), "machine": platform.machine(),
                      "cores": os.cpu_count(), "trials": args.trials, "batches_per_full_trial": args.budget,
                      "asha_batches": results["asha"]["batches"], "full_batches": results["fifo"]["batches"],
                      "asha_wall_s": round(results["asha"]["wall_s"], 1), "full_wall_s": round(results["fifo"]["wall_s"], 1),
                      "stopped_early": results["asha"]["stopped_early"], "budget_fraction": round(fraction, 3),
                      "same_best": same}))


if __name__ == "__main__":
    main()
