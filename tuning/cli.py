"""`disco sweep | best | pull`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("sweep", help="search configs with Ray Tune + Optuna (TPE) + ASHA",
                       description="Run a hyperparameter sweep; every trial is a real disco training run.")
    s.add_argument("--space", help="search space YAML, or the name of a shipped one (configs/sweeps/: cpu_tiny, "
                                    "dis_schedules, width)")
    s.add_argument("--name", help="sweep name (required unless --resume)")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override the base config of every trial, e.g. --set data.path=/mnt/disco/data/arc1")
    s.add_argument("--resume", metavar="SWEEP", help="finish an interrupted sweep (same trials, searcher history)")
    s.add_argument("--trials", type=int, help="number of trials (default: the space's)")
    s.add_argument("--concurrency", type=int, help="trials at once (default: the space's)")
    s.add_argument("--workers-per-trial", type=int, default=1, help="Ray Train workers per trial (default 1)")
    s.add_argument("--objective", choices=("single", "pareto"), default="single",
                   help="pareto: maximise the metric and minimise block applications per training sample")
    s.add_argument("--study-url", help="SQLAlchemy URL of the Optuna study (default: sqlite in the sweep dir)")
    s.add_argument("--address", help="Ray cluster address (default: embedded local Ray)")
    s.add_argument("--storage", help="storage for sweeps and their runs (default ./runs or $DISCO_STORAGE)")
    s.set_defaults(func=_sweep)

    b = sub.add_parser("best", help="leaderboard of a sweep")
    b.add_argument("sweep")
    b.add_argument("--json", action="store_true")
    b.add_argument("--storage")
    b.set_defaults(func=_best)

    p = sub.add_parser("pull", help="export a sweep's (or run's) best checkpoint as a self-contained directory")
    p.add_argument("ref", metavar="SWEEP|RUN")
    p.add_argument("--rank", type=int, default=1, help="leaderboard position to export (default 1)")
    p.add_argument("--out", required=True, help="directory to create")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.add_argument("--storage", help="local path or s3://, gs://… (default ./runs or $DISCO_STORAGE)")
    p.set_defaults(func=_pull)


def _sweep(args: argparse.Namespace) -> None:
    from arc_data.errors import DiscoError
    from cluster.storage import Storage

    from .best import format_table, leaderboard
    from .sweep import run_sweep

    if args.resume and (args.space or args.name or args.set):
        raise DiscoError("--resume takes the sweep's own space, name and overrides")
    name = args.resume or args.name
    if not name:
        raise DiscoError("--name is required (or --resume SWEEP)")
    storage = Storage.of(args.storage)
    if not args.resume:
        from .space import load_space

        load_space(args.space or "", args.set)  # validate before touching Ray
    run_sweep(args.space, name, storage, args.trials, args.concurrency, args.workers_per_trial, args.address,
              args.objective, bool(args.resume), args.study_url, args.set)
    record, rows = leaderboard(storage, name)
    print(format_table(record, rows))
    if record.get("objective") == "pareto" and storage.is_local:
        from .best import plot_pareto

        print(f"Pareto front plot: {plot_pareto(record, rows, Path(storage.uri, name, 'pareto.png'))}")


def _best(args: argparse.Namespace) -> None:
    from cluster.storage import Storage

    from .best import format_table, leaderboard

    record, rows = leaderboard(Storage.of(args.storage), args.sweep)
    print(json.dumps({"sweep": record["name"], "metric": record["metric"], "rows": rows}, indent=2) if args.json
          else format_table(record, rows))


def _pull(args: argparse.Namespace) -> None:
    from cluster.storage import Storage

    from .best import pull

    out = pull(args.ref, Storage.of(args.storage), args.out, args.rank, args.force)
    print(f"exported {out}  (load with `disco eval --checkpoint {out}`; see {out}/MODEL_CARD.md)")
