"""`disco sweep | best | pull | compare`: experiments over many runs."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from arc_data.cli import command, next_step


def register(sub: argparse._SubParsersAction) -> None:
    s = command(sub, "sweep", "search configs with Ray Tune + Optuna (TPE) + ASHA", [
        "disco sweep --space cpu_tiny --name tiny", "disco sweep --space width --name w --objective pareto",
        "disco sweep --resume tiny"], "Run a hyperparameter sweep; every trial is a real disco training run.")
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

    b = command(sub, "best", "leaderboard of a sweep", ["disco best tiny", "disco best tiny --json"])
    b.add_argument("sweep")
    b.add_argument("--json", action="store_true")
    b.add_argument("--storage")
    b.set_defaults(func=_best)

    p = command(sub, "pull", "export a sweep's (or run's) best checkpoint as a self-contained directory",
                ["disco pull tiny --out best/", "disco pull dis-20261205-101500 --out best/ --storage s3://bucket/runs"])
    p.add_argument("ref", metavar="SWEEP|RUN")
    p.add_argument("--rank", type=int, default=1, help="leaderboard position to export (default 1)")
    p.add_argument("--out", required=True, help="directory to create")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.add_argument("--storage", help="local path or s3://, gs://… (default ./runs or $DISCO_STORAGE)")
    p.set_defaults(func=_pull)

    c = command(sub, "compare", "DIS vs TRM-ACT at equal width, data, seeds and budget: report.md/.html", [
        "disco compare --preset cpu_tiny --seeds 1", "disco compare --preset compact --budget samples=5120000 --address auto",
        "disco compare --from dis-a trm-a --out report/"])
    c.add_argument("--preset", help="compact | medium | cpu_tiny (pairs configs/dis_X.yaml with configs/trm_X.yaml)")
    c.add_argument("--from", dest="runs", nargs="+", metavar="RUN", help="assemble finished runs instead of training")
    c.add_argument("--seeds", type=int, default=3, help="seeds per method (default 3)")
    c.add_argument("--budget", help="samples=N (training rows per run) or minutes=M (training wall time per run)")
    c.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override both configs")
    c.add_argument("--out", help="local report directory (default: compare-<preset>-<time> in the storage)")
    c.add_argument("--allow-mismatch", action="store_true", help="compare runs with different data or widths")
    c.add_argument("--address", help="Ray cluster address (default: embedded local Ray)")
    c.add_argument("--storage", help="storage of the runs and the report (default ./runs or $DISCO_STORAGE)")
    c.set_defaults(func=_compare)


def _sweep(args: argparse.Namespace) -> None:
    from arc_data.errors import DiscoError
    from trainer.storage import Storage

    from .sweep import SweepRequest, plan_sweep, read_sweep, run_sweep

    if args.resume and (args.space or args.name or args.set):
        raise DiscoError("--resume takes the sweep's own space, name and overrides")
    storage = Storage.of(args.storage)
    if args.resume:
        record = read_sweep(storage, args.resume)
    elif not args.name:
        raise DiscoError("--name is required (or --resume SWEEP)")
    elif not args.space:
        raise DiscoError("--space is required (e.g. --space cpu_tiny), or --resume SWEEP")
    else:
        request = SweepRequest(trials=args.trials, concurrency=args.concurrency,
                               workers_per_trial=args.workers_per_trial, objective=args.objective,
                               study_url=args.study_url)
        record = plan_sweep(args.space, args.name, storage, request, args.set)  # validated before Ray starts
    try:
        run_sweep(record, storage, args.address, resume=bool(args.resume))
    except KeyboardInterrupt:
        print(next_step(f"disco sweep --resume {record.name}", args.storage), file=sys.stderr)
        raise
    _print_leaderboard(storage, record.name)
    print(next_step(f"disco pull {record.name} --out best/", args.storage))


def _print_leaderboard(storage, name: str) -> None:
    from .leaderboard import format_table, leaderboard, plot_pareto

    record, rows = leaderboard(storage, name)
    print(format_table(record, rows))
    if record.objective == "pareto":
        with tempfile.TemporaryDirectory(prefix="disco-pareto-") as tmp:
            storage.upload(plot_pareto(record, rows, Path(tmp, "pareto.png")), name, "pareto.png")
        print(f"Pareto front plot: {storage.join(name, 'pareto.png')}")


def _best(args: argparse.Namespace) -> None:
    from trainer.storage import Storage

    from .leaderboard import format_table, leaderboard

    record, rows = leaderboard(Storage.of(args.storage), args.sweep)
    print(json.dumps({"sweep": record.name, "metric": record.metric, "rows": rows}, indent=2) if args.json
          else format_table(record, rows))


def _pull(args: argparse.Namespace) -> None:
    from trainer.storage import Storage

    from .export import pull

    out = pull(args.ref, Storage.of(args.storage), args.out, args.rank, args.force)
    print(f"exported {out}  (see {out}/MODEL_CARD.md)")
    print(next_step(f"disco eval --checkpoint {out}", also=f"disco predict --checkpoint {out} --task TASK.json"))


def _compare(args: argparse.Namespace) -> None:
    from arc_data.errors import DiscoError
    from trainer.runs import stamp
    from trainer.storage import Storage

    from .compare import check_comparable, collect, pair_specs, run_pair
    from .report import publish_report, write_report

    storage = Storage.of(args.storage)
    if bool(args.preset) == bool(args.runs):
        raise DiscoError("give either --preset compact|medium|cpu_tiny or --from RUN...")
    when = stamp()
    if args.preset:
        specs = pair_specs(args.preset, args.seeds, args.budget, args.set)  # every run validated before Ray starts
        names = run_pair(specs, storage, f"cmp-{args.preset}-{when}", args.address)
    else:
        names = args.runs
    runs = collect(storage, names)
    check_comparable([(r.spec, r.run.record.dataset.fingerprint) for r in runs], allow=args.allow_mismatch)
    title = f"DIS vs TRM-ACT: {args.preset or 'selected runs'}"
    if args.out:
        report = write_report(runs, args.out, title)
        where, text = str(report.parent), report.read_text()
    else:
        where, text = publish_report(runs, storage, f"compare-{args.preset or 'runs'}-{when}", title)
    print(text)
    print(f"\nwrote report.md and report.html in {where}")
