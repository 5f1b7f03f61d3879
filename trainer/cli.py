"""`disco train | eval | predict | runs`."""

from __future__ import annotations

import argparse
import json
import sys

from .device import DEVICE_CHOICES


def _storage_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage", help="run storage: a directory or s3://, gs://… (default ./runs or $DISCO_STORAGE)")


def register(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("train", help="train a model on Ray Train (embedded local Ray unless --address)",
                       description="Train DIS or TRM-ACT with Ray Train workers doing torch DDP.")
    t.add_argument("--config", help="YAML file or shipped preset name, e.g. dis_cpu_tiny or configs/dis_cpu_tiny.yaml (not needed with --resume)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set optim.lr=3e-4 (repeatable)")
    t.add_argument("--name", help="run name (default: <method>-<timestamp>); an existing name is refused")
    t.add_argument("--resume", metavar="RUN", help="continue RUN from its newest intact checkpoint")
    t.add_argument("--address", help="Ray cluster: auto, HOST:PORT or ray://HOST:PORT (default: embedded local Ray)")
    t.add_argument("--workers", type=int, help="Ray Train workers (overrides runtime.workers)")
    t.add_argument("--cpus-per-worker", type=float, help="CPUs per worker (overrides runtime.cpus_per_worker)")
    t.add_argument("--gpus-per-worker", type=float, help="GPUs per worker (overrides runtime.gpus_per_worker)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    _storage_arg(t)
    t.set_defaults(func=_train)

    e = sub.add_parser("eval", help="evaluate a checkpoint: pass@k, submission.json, per-puzzle report")
    e.add_argument("--checkpoint", required=True, help="checkpoint directory, or a run name (its best checkpoint)")
    e.add_argument("--data", help="dataset directory (default: the one the checkpoint was trained on)")
    e.add_argument("--eval-steps", type=int, help="supervision steps at inference (default: as trained)")
    e.add_argument("--votes", type=int, help="augmented versions voted per test pair (default: the run's setting)")
    e.add_argument("--out", help="write metrics.json, submission.json and puzzles.json here")
    e.add_argument("--batch-size", type=int, default=64)
    e.add_argument("--device", choices=DEVICE_CHOICES, default="auto")
    e.add_argument("--allow-fingerprint-mismatch", action="store_true",
                   help="evaluate on data other than the checkpoint's own")
    e.add_argument("--empty-crops", choices=("vote", "skip"),
                   help="vote: an empty crop is a candidate (reference, default); skip: it is not")
    e.add_argument("--confidence", choices=("q_halt", "answer_probability"),
                   help="tie-break between equal votes (default q_halt, the reference's)")
    _storage_arg(e)
    e.set_defaults(func=_eval)

    p = sub.add_parser("predict", help="predict the test outputs of an ARC task JSON file")
    p.add_argument("--checkpoint", required=True, help="checkpoint directory or run name")
    p.add_argument("--task", required=True, help="ARC task JSON ({'train': [...], 'test': [...]})")
    p.add_argument("--png", help="also draw input, every supervision step and target to this PNG")
    p.add_argument("--steps", type=int, help="supervision steps (default: as trained)")
    p.add_argument("--device", choices=DEVICE_CHOICES, default="auto")
    _storage_arg(p)
    p.set_defaults(func=_predict)

    r = sub.add_parser("runs", help="list runs in the storage, or show one")
    r.add_argument("action", nargs="?", choices=("list", "show"), default="list")
    r.add_argument("name", nargs="?", help="run name (for show)")
    r.add_argument("--json", action="store_true")
    _storage_arg(r)
    r.set_defaults(func=_runs)


def _worker_flags(args: argparse.Namespace) -> list[str]:
    """--workers/--cpus-per-worker/--gpus-per-worker as overrides, so they are validated like --set."""
    flags = (("workers", "runtime.workers"), ("cpus_per_worker", "runtime.cpus_per_worker"),
             ("gpus_per_worker", "runtime.gpus_per_worker"))
    return [f"{key}={getattr(args, flag)}" for flag, key in flags if getattr(args, flag) is not None]


def _train(args: argparse.Namespace) -> None:
    from arc_data.errors import DiscoError

    from .config import load_spec
    from .launch import train
    from .runs import Run
    from .storage import Storage

    storage = Storage.of(args.storage)
    sets = [*args.set, *_worker_flags(args)]
    if args.resume:
        if args.config or args.name:
            raise DiscoError("--resume takes the run's own config and name; use --set to change a value")
        record = Run(storage, args.resume).record
        spec = load_spec(None, sets, base=record.spec.model_dump(mode="json"))
    else:
        if not args.config:
            raise DiscoError("--config is required (e.g. --config configs/dis_cpu_tiny.yaml), or --resume RUN")
        spec = load_spec(args.config, sets)
    out = train(spec, storage, name=args.resume or args.name, address=args.address, resume=bool(args.resume),
                progress=not args.no_progress)
    print(_summary(out, spec))


def _summary(out, spec) -> str:
    m = out.metrics
    lines = [f"run {out.name}: {spec.method.upper()}, {m.get('batch', 0)} batches, {m.get('step', 0)} optimizer steps"]
    if m:
        lines.append(f"  pass@1 {m.get('pass@1', 0):.3f}  pass@2 {m.get('pass@2', 0):.3f}  on {m.get('puzzles', 0)} "
                     f"test puzzles ({m.get('selection_split', 'test')} split used for selection)")
        lines.append(f"  training puzzles: exact {m.get('train_exact_accuracy', 0):.3f}  token accuracy "
                     f"{m.get('train_accuracy', 0):.3f}")
        lines.append(f"  block applications per sample at evaluation: {m.get('block_apps_per_sample', 0)}")
    lines.append(f"  best checkpoint: {out.best}")
    lines.append(f"  metrics: {out.run_dir}/metrics.jsonl")
    return "\n".join(lines)


def _load(args):
    from .inference import load
    from .runs import open_checkpoint
    from .storage import Storage

    with open_checkpoint(args.checkpoint, Storage.of(args.storage)) as path:
        return load(path, device=args.device)  # everything is in memory once loaded


def _eval(args: argparse.Namespace) -> None:
    from .inference import evaluate_checkpoint, open_dataset

    loaded = _load(args)
    ds = open_dataset(loaded, args.data, args.allow_fingerprint_mismatch)
    changes = {k: getattr(args, k) for k in ("empty_crops", "confidence") if getattr(args, k)}
    scoring = type(loaded.spec.scoring).model_validate(loaded.spec.scoring.model_dump() | changes)
    result = evaluate_checkpoint(loaded, ds, args.eval_steps, args.votes, args.batch_size, scoring)
    m = result.metrics
    print(f"checkpoint {loaded.path} (scoring: {m['scoring']})")
    print("  " + "  ".join(f"{k} {m[k]:.3f}" for k in m if k.startswith("pass@")))
    print(f"  {m['puzzles']} puzzles, {m['test_pairs']} test pairs, {m['predictions']} predictions; test token "
          f"accuracy {m.get('test_accuracy', 0):.3f}, exact {m.get('test_exact_accuracy', 0):.3f}")
    if args.out:
        result.write(args.out)
        print(f"  wrote {args.out}/metrics.json, submission.json, puzzles.json")


def _predict(args: argparse.Namespace) -> None:
    from arc_data.show import save_png, side_by_side
    from arc_data.sources import read_task_file

    from .inference import open_dataset, predict_task

    task = read_task_file(args.task)
    loaded = _load(args)
    try:
        ds = open_dataset(loaded, None)
    except Exception:  # noqa: BLE001 - predicting needs no dataset; it only supplies learned embeddings
        ds = None
    preds, known = predict_task(loaded, task, ds, args.steps)
    if not known:
        print(f"note: task {task.task_id} was not in the training data, so it has no learned puzzle embedding; "
              "the blank embedding is used and predictions are unlikely to be right", file=sys.stderr)
    rows = []
    for p in preds:
        status = "" if p.target is None else ("  (correct)" if p.final.shape == p.target.shape
                                              and (p.final == p.target).all() else "  (wrong)")
        print(f"test pair {p.test_pair}: predicted {p.final.shape[0]}x{p.final.shape[1]}{status}")
        print(side_by_side([p.input, p.final] + ([p.target] if p.target is not None else []), colour=sys.stdout.isatty()))
        rows.append((f"test {p.test_pair}: input, steps 1..{len(p.steps)}" + (", target" if p.target is not None else ""),
                     [p.input, *p.steps] + ([p.target] if p.target is not None else [])))
    if args.png:
        save_png(rows, args.png)
        print(f"wrote {args.png}")


def _runs(args: argparse.Namespace) -> None:
    from .storage import Storage

    storage = Storage.of(args.storage)
    if args.action == "list":
        _list_runs(storage, args.json)
    else:
        _show_run(storage, args.name, args.json)


def _list_runs(storage, as_json: bool) -> None:
    from .runs import list_runs

    runs = list_runs(storage)
    if as_json:
        print(json.dumps([r.model_dump(mode="json") for r in runs], indent=2))
        return
    if not runs:
        print(f"no runs in {storage.uri}")
        return
    print(f"{'name':32} {'method':6} {'status':11} {'batch':>7} {'pass@2':>7} {'train exact':>11}  updated")
    for r in runs:
        m = r.metrics
        print(f"{r.name:32} {r.method:6} {r.status:11} {m.get('batch', '-'):>7} "
              f"{m.get('pass@2', float('nan')):7.3f} {m.get('train_exact_accuracy', float('nan')):11.3f}  {r.updated}")


def _show_run(storage, name: str | None, as_json: bool) -> None:
    from dataclasses import asdict

    from arc_data.errors import DiscoError

    from .runs import Run

    if not name:
        raise DiscoError("runs show needs a run name")
    run = Run(storage, name)
    record, checkpoints, evals = run.record, run.checkpoints(), run.metrics("eval")
    if as_json:
        print(json.dumps(record.model_dump(mode="json") | {"checkpoints": [asdict(c) for c in checkpoints],
                                                           "evaluations": evals}, indent=2))
        return
    print(f"run {record.name} ({record.status}), {record.method}, dataset {record.dataset.path} "
          f"[{record.dataset.fingerprint[:12]}]")
    if train := run.metrics("train"):
        t = train[-1]
        print(f"  last log: batch {t['batch']}  loss {t['loss']:.4f}  accuracy {t.get('accuracy', 0):.3f}  "
              f"exact {t.get('exact_accuracy', 0):.3f}  {t['samples_per_s']:.1f} samples/s")
    for ev in evals:
        print(f"  eval @ batch {ev['batch']:>6}: pass@1 {ev.get('pass@1', 0):.3f}  pass@2 {ev.get('pass@2', 0):.3f}  "
              f"train exact {ev.get('train_exact_accuracy', 0):.3f}")
    for c in checkpoints:
        print(f"  {c.name}{'' if c.complete else '  (incomplete)'}")
    print(f"  best checkpoint: {record.best_checkpoint}")
