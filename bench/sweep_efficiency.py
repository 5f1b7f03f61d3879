"""Early stopping's saving: each search space swept twice in one run, with the scheduler defaults a
user gets (synchronous halving, tuning/halving.py) and with every trial run to the end (FIFO), and
the share of training the first spends.

    .venv/bin/python bench/sweep_efficiency.py [--spaces cpu_tiny cpu_wide] [--trials 8] [--budget 160]
                                               [--eval-every 10]

Both sweeps of a space use the same seed and number of trials on the `make run` data. With at
most 10 trials, Optuna's TPE is still in its random start-up phase, so both draw the same
configurations and differ only in the scheduler. Counts training batches actually run (from each
trial's metrics.jsonl; a batch trained twice, e.g. after a pause, counts twice). Target:
budget_fraction = early-stopped batches / full batches <= 0.35 with the same best configuration, on
each space. Also replays synchronous halving on the full sweep's learning curves for reduction
factors 2, 3, 4 (how the defaults were chosen). Last line: JSON.
"""

from __future__ import annotations

import argparse
import json
import math
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
from tuning.space import Scheduler  # noqa: E402
from tuning.sweep import RUNS, plan_sweep, run_sweep  # noqa: E402


def batches_run(storage: Storage, sweep: str, log_interval: int) -> int:
    """Training batches run by all trials: one train record per `log_interval` batches (the budget
    is a multiple of it), so batches trained twice (redone after a restart) count twice."""
    runs = storage.child(sweep, RUNS)
    return sum(len(Run(runs, name).metrics("train")) * log_interval for name in runs.listdir())


def curves(storage: Storage, sweep: str, metric: str) -> dict[str, list[float]]:
    """Each trial's metric at every evaluation (the full sweep's learning curves), in the order the
    trials were drawn (their runs' creation, then name)."""
    runs = storage.child(sweep, RUNS)
    names = sorted(runs.listdir(), key=lambda n: (Run(runs, n).record.created, n))
    return {name: [e[metric] for e in Run(runs, name).metrics("eval")] for name in names}


def replay_halving(curves: dict[str, list[float]], rf: int, grace: int = 1) -> tuple[float, str]:
    """Synchronous successive halving on recorded curves, by the rule of tuning/halving.py (the
    best score so far at the rung; ties to the trial drawn first): (share of evaluations spent,
    the trial with the best metric among what it would have trained)."""
    full = max(len(c) for c in curves.values())
    drawn = list(curves)
    alive, spent, reached = list(drawn), 0, {name: 0 for name in drawn}
    rung = grace
    while alive:
        stop_at = min(rung, full)
        for name in alive:
            spent += stop_at - reached[name]
            reached[name] = stop_at
        if stop_at == full:
            break
        alive = sorted(alive, key=lambda n: (-max(curves[n][:stop_at]), drawn.index(n)))[: math.ceil(len(alive) / rf)]
        rung *= rf
    best = max(curves, key=lambda n: max(curves[n][: reached[n]]))
    return spent / sum(len(c) for c in curves.values()), best


def sweep_once(space: dict, kind: str, storage: Storage, tmp: str, log_interval: int) -> dict:
    space = {**space, "scheduler": {**space.get("scheduler", {}), "type": kind}}
    name = f"{space['name']}-{kind}"
    path = Path(tmp, f"{name}.yaml")
    path.write_text(yaml.safe_dump({k: v for k, v in space.items() if k != "name"}))
    t0 = time.perf_counter()
    run_sweep(plan_sweep(str(path), name, storage), storage)
    record, rows = leaderboard(storage, name)
    out = {"sweep": name, "batches": batches_run(storage, name, log_interval), "wall_s": time.perf_counter() - t0,
           "best": rows[0]["params"], "best_metric": rows[0][record.metric],
           "stopped_early": sum(r["status"] == "stopped early" for r in rows)}
    print(f"  {kind:5} {out['batches']:5d} batches  {out['wall_s']:6.1f} s  {out['stopped_early']} stopped early  "
          f"best {rows[0]['params']} ({record.metric} {rows[0][record.metric]:.4f})", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spaces", nargs="+", default=["cpu_tiny", "cpu_wide"])
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--budget", type=int, default=160, help="batches per full trial")
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--batch", type=int, default=16, help="global batch size")
    args = ap.parse_args()
    if args.budget % args.eval_every:
        raise SystemExit("--budget must be a multiple of --eval-every (batches are counted from log records)")
    if args.trials > 10:
        raise SystemExit("--trials must be <= 10 (TPE's random phase; otherwise the sweeps draw different configs)")
    summary = {}
    with tempfile.TemporaryDirectory(prefix="disco-bench-") as tmp:
        data = Path(tmp, "data")
        build_dataset(BuildConfig(sources=["arc1"], canvas=10, tasks=8, augmentations=2), data, progress=False)
        storage = Storage.of(str(Path(tmp, "runs")))
        for name in args.spaces:
            shipped = preset_path(name, "sweep")
            space = yaml.safe_load(shipped.read_text())
            space["base"] = str(shipped.parent.parent / space["base"])
            space["set"] |= {"data.path": str(data), "train.budget": args.budget, "train.eval_interval": args.eval_every,
                             "train.global_batch_size": args.batch, "train.log_interval": args.eval_every}
            space |= {"trials": args.trials, "name": name}
            scheduler = Scheduler(**space.get("scheduler", {})).model_dump()
            print(f"space {name}: {scheduler['type']}, grace {scheduler['grace_period']}, reduction factor "
                  f"{scheduler['reduction_factor']:g} (evaluations); {args.trials} trials", flush=True)
            full = sweep_once(space, "fifo", storage, tmp, args.eval_every)
            early = sweep_once(space, scheduler["type"], storage, tmp, args.eval_every)
            learned = curves(storage, full["sweep"], yaml.safe_load(shipped.read_text()).get("metric", "val_pass@2"))
            fifo_best = max(learned, key=lambda n: max(learned[n]))
            for rf in (2, 3, 4):
                share, best = replay_halving(learned, rf, scheduler["grace_period"])
                print(f"  replayed synchronous halving, rf {rf}: {share:.3f} of the evaluations, "
                      f"same best: {best == fifo_best}", flush=True)
            fraction = early["batches"] / full["batches"]
            same = early["best"] == full["best"]
            print(f"  budget fraction ({scheduler['type']} / full): {fraction:.3f}   target <= 0.35;  "
                  f"same best configuration: {same}", flush=True)
            summary[name] = {"scheduler": scheduler["type"], "early_batches": early["batches"],
                             "full_batches": full["batches"], "budget_fraction": round(fraction, 3), "same_best": same,
                             "early_best": early["best"], "full_best": full["best"],
                             "early_best_metric": early["best_metric"], "full_best_metric": full["best_metric"],
                             "stopped_early": early["stopped_early"], "early_wall_s": round(early["wall_s"], 1),
                             "full_wall_s": round(full["wall_s"], 1), "reduction_factor": scheduler["reduction_factor"],
                             "grace_period": scheduler["grace_period"]}
    print(json.dumps({"bench": "sweep_efficiency", "date": time.strftime("%Y-%m-%d"), "machine": platform.machine(),
                      "cores": os.cpu_count(), "trials": args.trials, "batches_per_full_trial": args.budget,
                      "evaluations_per_full_trial": math.ceil(args.budget / args.eval_every), "spaces": summary}))


if __name__ == "__main__":
    main()
