"""`disco sweep | best | pull | compare`: experiments over many runs."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from arc_data.cli import command, next_step


def register(sub: argparse._SubParsersAction) -> None:
    s = command(sub, "sweep", "search configs with Ray Tune + Optuna (TPE), stopping weak trials early (synchronous halving)", [
        "disco sweep --space cpu_tiny --name tiny", "disco sweep --space width --name w --objective pareto",
        "disco sweep --resume tiny"], "Run a hyperparameter sweep; every trial is a real disco training run.")
    s.add_argument("--space", help="search space YAML, or the name of a shipped one (configs/sweeps/: cpu_tiny, cpu_wide, "
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

    b = command(sub, "best", "leaderboard of a sweep (or a run's checkpoints, best first)",
                ["disco best tiny", "disco best width --pareto", "disco best tiny --watch", "disco best tiny --json",
                 "disco best dis-20261205-101010"])
    b.add_argument("sweep", metavar="SWEEP|RUN")
    b.add_argument("--pareto", action="store_true",
                   help="mark and print the front of the metric against block applications per sample; write its plot")
    b.add_argument("--watch", action="store_true", help="refresh the leaderboard until the sweep stops running")
    b.add_argument("--interval", type=float, default=10.0, help="--watch: seconds between refreshes (default 10)")
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
        "disco compare --preset cpu_tiny --seeds 1", "disco compare --preset compact --budget apps=1e11 --address auto",
        "disco compare --from dis-a trm-a --out report/", "disco compare --from width"])
    c.add_argument("--preset", help="compact | medium | cpu_tiny (pairs configs/dis_X.yaml with configs/trm_X.yaml)")
    c.add_argument("--from", dest="runs", nargs="+", metavar="RUN|SWEEP",
                   help="assemble finished runs instead of training, or one sweep (its best trial of each method, "
                        "and its Pareto front)")
    c.add_argument("--seeds", type=int, default=3, help="seeds per method (default 3)")
    c.add_argument("--budget", help="per run: samples=N (training rows), apps=N (block applications: the same "
                                    "compute for both methods), flops=F, or minutes=M (training wall time)")
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


def _print_leaderboard(storage, name: str, pareto: bool = False) -> None:
    from .leaderboard import format_table, leaderboard, plot_pareto

    record, rows = leaderboard(storage, name, pareto)
    print(format_table(record, rows))
    if any("pareto" in r for r in rows):
        with tempfile.TemporaryDirectory(prefix="disco-pareto-") as tmp:
            storage.upload(plot_pareto(record, rows, Path(tmp, "pareto.png")), name, "pareto.png")
        print(f"Pareto front plot: {storage.join(name, 'pareto.png')}")


def _best(args: argparse.Namespace) -> None:
    from arc_data.errors import DiscoError
    from trainer.storage import Storage

    from .leaderboard import leaderboard, run_checkpoints, watch
    from .sweep import read_sweep

    storage = Storage.of(args.storage)
    if read_sweep(storage, args.sweep, missing_ok=True) is None:
        if (table := run_checkpoints(storage, args.sweep)) is None:
            raise DiscoError(f"no sweep or run named {args.sweep!r} in {storage.uri} (see `disco runs list`)")
        print(json.dumps({k: v for k, v in table.items() if k != "text"}, indent=2) if args.json else table["text"])
    elif args.watch:
        watch(storage, args.sweep, args.interval, args.pareto)
    elif args.json:
        record, rows = leaderboard(storage, args.sweep, args.pareto)
        print(json.dumps({"sweep": record.name, "metric": record.metric, "rows": rows}, indent=2))
    else:
        _print_leaderboard(storage, args.sweep, args.pareto)


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

    from .compare import check_comparable, collect, pair_specs, run_pair, sweep_pick
    from .report import publish_report, write_report
    from .sweep import read_sweep

    storage = Storage.of(args.storage)
    if bool(args.preset) == bool(args.runs):
        raise DiscoError("give either --preset compact|medium|cpu_tiny or --from RUN... | --from SWEEP")
    when, sweep, label = stamp(), None, args.preset or "runs"
    if args.preset:
        specs = pair_specs(args.preset, args.seeds, args.budget, args.set)  # every run validated before Ray starts
        names, source = run_pair(specs, storage, f"cmp-{args.preset}-{when}", args.address), storage
    elif len(args.runs) == 1 and read_sweep(storage, args.runs[0], missing_ok=True) is not None:
        source, names, sweep = sweep_pick(storage, args.runs[0])
        label = args.runs[0]
    else:
        names, source = args.runs, storage
    runs = collect(source, names)
    # A sweep's best trials differ in what was searched (e.g. width): that is the comparison asked for.
    check_comparable([(r.spec, r.run.record.dataset.fingerprint) for r in runs],
                     allow=args.allow_mismatch or sweep is not None)
    title = (f"DIS vs TRM-ACT: best trial of each method in sweep {label}" if sweep
             else f"DIS vs TRM-ACT: {args.preset or 'selected runs'}")
    if args.out:
        report = write_report(runs, args.out, title, sweep)
        where, text = str(report.parent), report.read_text()
    else:
        where, text = publish_report(runs, storage, f"compare-{label}-{when}", title, sweep)
    print(text)
    print(f"\nwrote report.md and report.html in {where}")
