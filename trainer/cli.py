"""`disco train | eval | predict | runs`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from arc_data.cli import command, next_step

from .device import DEVICE_CHOICES


def _storage_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage", help="run storage: a directory or s3://, gs://… (default ./runs or $DISCO_STORAGE)")


def _run_args(p: argparse.ArgumentParser) -> None:
    """Where and how a training run runs: the same flags on `train` and `finetune`."""
    p.add_argument("--address", help="Ray cluster: auto, HOST:PORT or ray://HOST:PORT (default: embedded local Ray)")
    p.add_argument("--workers", type=int, help="Ray Train workers (overrides runtime.workers)")
    p.add_argument("--cpus-per-worker", type=float, help="CPUs per worker (overrides runtime.cpus_per_worker)")
    p.add_argument("--gpus-per-worker", type=float, help="GPUs per worker (overrides runtime.gpus_per_worker)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar or batch lines (evaluations still print)")
    _storage_arg(p)


def register(sub: argparse._SubParsersAction) -> None:
    t = command(sub, "train", "train a model on Ray Train (embedded local Ray unless --address)", [
        "disco train --config dis_cpu_tiny --set data.path=data/arc1-tiny",
        "disco train --config dis_compact --address auto --workers 4 --gpus-per-worker 1",
        "disco train --resume dis-20261205-101500 --set train.budget=600"],
        "Train DIS or TRM-ACT with Ray Train workers doing torch DDP.")
    t.add_argument("--config", help="YAML file or shipped preset name, e.g. dis_cpu_tiny or configs/dis_cpu_tiny.yaml (not needed with --resume)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set optim.lr=3e-4 (repeatable)")
    t.add_argument("--name", help="run name (default: <method>-<timestamp>); an existing name is refused")
    t.add_argument("--resume", metavar="RUN", help="continue RUN from its newest intact checkpoint")
    _run_args(t)
    t.set_defaults(func=_train)

    e = command(sub, "eval", "evaluate a checkpoint: pass@k, submission.json, per-puzzle report",
                ["disco eval --checkpoint dis-20261205-101500 --out eval/", "disco eval --checkpoint best/ --votes 8"])
    e.add_argument("--checkpoint", required=True, help="checkpoint directory, or a run name (its best checkpoint)")
    e.add_argument("--data", help="dataset directory (default: the one the checkpoint was trained on)")
    e.add_argument("--eval-steps", type=int, help="supervision steps at inference (default: as trained)")
    e.add_argument("--votes", type=int, help="augmented versions voted per test pair (default: the run's setting)")
    e.add_argument("--out", help="write metrics.json, submission.json and puzzles.json here")
    e.add_argument("--batch-size", type=int, default=64, help="rows per evaluation batch (default 64)")
    e.add_argument("--device", choices=DEVICE_CHOICES, default="auto", help="where to evaluate (default: a GPU if any)")
    e.add_argument("--allow-fingerprint-mismatch", action="store_true",
                   help="evaluate on data other than the checkpoint's own")
    e.add_argument("--empty-crops", choices=("vote", "skip"),
                   help="vote: an empty crop is a candidate (reference, default); skip: it is not")
    e.add_argument("--confidence", choices=("q_halt", "answer_probability"),
                   help="tie-break between equal votes (default q_halt, the reference's)")
    _storage_arg(e)
    e.set_defaults(func=_eval)

    p = command(sub, "predict", "predict the test outputs of an ARC task JSON file",
                ["disco predict --checkpoint dis-20261205-101500 --task 007bbfb7.json --png steps.png",
                 "disco predict --checkpoint ft-dis-20261206-0100 --task t.json --submission submission.json"])
    p.add_argument("--checkpoint", required=True, help="checkpoint directory or run name")
    p.add_argument("--task", required=True, help="ARC task JSON ({'train': [...], 'test': [...]})")
    p.add_argument("--png", help="also draw input, every supervision step and target to this PNG")
    p.add_argument("--steps", type=int, help="supervision steps (default: as trained)")
    p.add_argument("--votes", type=int, help="augmented versions voted per test input (default: the run's setting)")
    p.add_argument("--submission", help="write the two voted attempts per test input here (Kaggle format)")
    p.add_argument("--device", choices=DEVICE_CHOICES, default="auto", help="where to predict (default: a GPU if any)")
    _storage_arg(p)
    p.set_defaults(func=_predict)

    _register_finetune(sub)
    _register_runs(sub)


def _register_finetune(sub: argparse._SubParsersAction) -> None:
    f = command(sub, "finetune", "test-time training: give new puzzles embeddings from a trained checkpoint", [
        "disco finetune --checkpoint dis-20261205-101500 --data data/arc-prize-test --budget 200 --out submission/",
        "disco finetune --checkpoint best/ --data data/mine --minutes 60 --train embeddings"],
        "Train a checkpoint's network on new puzzles' demonstration pairs (augmented like the build) so they get "
        "puzzle embeddings, then predict their test inputs with voting: submission.json, plus pass@k where "
        "solutions exist. An ordinary run: checkpoints, `disco train --resume`, tracking.")
    f.add_argument("--checkpoint", required=True, help="checkpoint directory, or a run name (its best checkpoint)")
    f.add_argument("--data", required=True, help="dataset of the new puzzles (`disco data build`, same --canvas)")
    f.add_argument("--budget", type=float, help="training length in --unit")
    f.add_argument("--unit", choices=("batches", "epochs"), default="epochs", help="unit of --budget (default epochs)")
    f.add_argument("--minutes", type=float, help="stop after this much training time (evaluation not counted)")
    f.add_argument("--train", choices=("embeddings", "all"), default="all", dest="trainable",
                   help="all: the network and the new embeddings (default); embeddings: only the embeddings")
    f.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    f.add_argument("--name", help="run name (default: ft-<method>-<timestamp>)")
    f.add_argument("--out", help="write submission.json, metrics.json, puzzles.json and predictions.html here")
    _run_args(f)
    f.set_defaults(func=_finetune)


def _register_runs(sub: argparse._SubParsersAction) -> None:
    r = command(sub, "runs", "list runs, show one, watch one while it trains, plot runs", [
        "disco runs list", "disco runs show dis-20261205-101500", "disco runs watch dis-20261205-101500",
        "disco runs plot dis-a trm-a --out curves.png"])
    r.add_argument("action", nargs="?", choices=("list", "show", "watch", "plot"), default="list")
    r.add_argument("names", nargs="*", metavar="RUN", help="run name(s): one for show and watch, any for plot")
    r.add_argument("--json", action="store_true", help="list/show: machine-readable output")
    r.add_argument("--out", help="plot: the PNG to write")
    r.add_argument("--interval", type=float, default=5.0, help="watch: seconds between refreshes (default 5)")
    r.add_argument("--once", action="store_true", help="watch: print the view once and exit")
    _storage_arg(r)
    r.set_defaults(func=_runs)

    c = command(sub, "config", "print a preset's fully resolved, validated run config",
                ["disco config show dis_cpu_tiny", "disco config show dis_compact --set optim.lr=3e-4"])
    c.add_argument("action", choices=("show",))
    c.add_argument("preset", help="YAML file or shipped preset name")
    c.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a value (repeatable)")
    c.set_defaults(func=_config)


def _worker_flags(args: argparse.Namespace) -> list[str]:
    """--workers/--cpus-per-worker/--gpus-per-worker as overrides, so they are validated like --set."""
    flags = (("workers", "runtime.workers"), ("cpus_per_worker", "runtime.cpus_per_worker"),
             ("gpus_per_worker", "runtime.gpus_per_worker"))
    return [f"{key}={getattr(args, flag)}" for flag, key in flags if getattr(args, flag) is not None]


def _train(args: argparse.Namespace) -> None:
    from arc_data.errors import DiscoError

    from .config import load_spec
    from .launch import RunInterrupted, train
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
    try:
        out = train(spec, storage, name=args.resume or args.name, address=args.address, resume=bool(args.resume),
                    progress="evals" if args.no_progress else "bar")
    except RunInterrupted as e:
        print(next_step(f"disco train --resume {e.name}", args.storage), file=sys.stderr)
        raise
    print(_summary(out, spec))
    if out.best:
        print(next_step(f"disco eval --checkpoint {out.name}", args.storage,
                        also=f"disco pull {out.name} --out best/"))


def _finetune(args: argparse.Namespace) -> None:
    from arc_data.dataset import ArcDataset

    from .finetune import before_and_after, finetune_spec, read_result
    from .inference import load
    from .launch import RunInterrupted, train
    from .pages import write_page
    from .runs import Run, checkpoint_location, local_copy, stamp
    from .storage import Storage

    storage = Storage.of(args.storage)
    location = checkpoint_location(args.checkpoint, storage)
    spec = finetune_spec(location, args.data, args.budget, args.unit, args.minutes, args.trainable,
                         [*args.set, *_worker_flags(args)])
    name = args.name or f"ft-{spec.method}-{stamp()}"
    try:
        out = train(spec, storage, name=name, address=args.address, progress="evals" if args.no_progress else "bar")
    except RunInterrupted as e:
        print(next_step(f"disco train --resume {e.name}", args.storage), file=sys.stderr)
        raise
    run = Run(storage, out.name)
    first, last = before_and_after(run)
    print(f"run {out.name}: fine-tuned {location} ({args.trainable}) on {spec.data.label}, {last.get('batch', 0)} batches")
    print(f"  demonstrations exact {first.get('train_exact_accuracy', float('nan')):.3f} -> "
          f"{last.get('train_exact_accuracy', float('nan')):.3f}, token accuracy "
          f"{first.get('train_accuracy', float('nan')):.3f} -> {last.get('train_accuracy', float('nan')):.3f} "
          "(blank embeddings -> fine-tuned)")
    if last.get("test_pairs"):
        print(f"  test pairs: pass@1 {last['pass@1']:.3f}  pass@2 {last['pass@2']:.3f} on {last['puzzles']} puzzles")
    print(f"  best checkpoint: {out.best}  (its eval/submission.json holds the attempts)")
    if args.out and out.best:
        with local_copy(out.best) as d:
            result = read_result(d / "eval")
            result.write(args.out)
            page = write_page(load(d, device="cpu"), ArcDataset(spec.data.path), result, Path(args.out) / "predictions.html")
        print(f"  wrote {args.out}/submission.json (Kaggle format), metrics.json, puzzles.json, {page.name}")
    elif out.best:
        print(next_step(f"disco eval --checkpoint {out.name} --out submission/", args.storage))


def _summary(out, spec) -> str:
    m = out.metrics
    lines = [f"run {out.name}: {spec.method.upper()}, {m.get('batch', 0)} batches, {m.get('step', 0)} optimizer steps"]
    if m:
        lines.append(f"  pass@1 {m.get('pass@1', 0):.3f}  pass@2 {m.get('pass@2', 0):.3f}  on {m.get('puzzles', 0)} "
                     f"test puzzles ({m.get('selection_split', 'test')} split used for selection)")
        lines.append(f"  training puzzles: exact {m.get('train_exact_accuracy', 0):.3f}  token accuracy "
                     f"{m.get('train_accuracy', 0):.3f}")
        lines.append(f"  block applications per sample at evaluation: {m.get('block_apps_per_sample', 0)}")
    if "report_blocked_s" in m:
        lines.append(f"  rank 0 blocked in ray.train.report: {m['report_blocked_s']:.2f} s "
                     f"({m['checkpoint_upload']} checkpoint upload)")
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
    from .pages import write_page

    loaded = _load(args)
    ds = open_dataset(loaded, args.data, args.allow_fingerprint_mismatch)
    changes = {k: getattr(args, k) for k in ("empty_crops", "confidence") if getattr(args, k)}
    scoring = type(loaded.spec.scoring).model_validate(loaded.spec.scoring.model_dump() | changes)
    result = evaluate_checkpoint(loaded, ds, args.eval_steps, args.votes, args.batch_size, scoring)
    m = result.metrics
    print(f"checkpoint {loaded.path} (scoring: {m['scoring']})")
    if m["test_pairs"]:
        print("  " + "  ".join(f"{k} {m[k]:.3f}" for k in m if k.startswith("pass@")))
        print(f"  {m['puzzles']} puzzles, {m['test_pairs']} scored test pairs, {m['predictions']} predictions; test "
              f"token accuracy {m.get('test_accuracy', 0):.3f}, exact {m.get('test_exact_accuracy', 0):.3f}")
    else:
        print(f"  nothing to score: the {m['unlabelled_pairs']} test pairs of {ds.root} have no solutions "
              f"({m['predictions']} predictions voted into two attempts each)")
    if m.get("unlabelled_pairs") and m["test_pairs"]:
        print(f"  {m['unlabelled_pairs']} more test pairs have no solution: predicted, not scored")
    if args.out:
        result.write(args.out)
        page = write_page(loaded, ds, result, Path(args.out) / "predictions.html")
        print(f"  wrote {args.out}/metrics.json, submission.json (Kaggle format), puzzles.json, {page.name}")
    elif not m["test_pairs"]:
        print(next_step(f"disco eval --checkpoint {args.checkpoint} --out predictions/", args.storage))


def _predict(args: argparse.Namespace) -> None:
    from arc_data.fsio import atomic_write_json
    from arc_data.show import save_png, side_by_side
    from arc_data.sources import read_task_file

    from .inference import open_dataset, predict_task, vote_task

    task = read_task_file(args.task)
    loaded = _load(args)
    try:
        ds = open_dataset(loaded, None)
    except Exception:  # noqa: BLE001 - predicting needs no dataset; it only supplies learned embeddings
        ds = None
    preds, known = predict_task(loaded, task, ds, args.steps)
    if not known:
        print(f"note: task {task.task_id} was not in the training data, so it has no learned puzzle embedding; "
              "the blank embedding is used and predictions are unlikely to be right (give it one with "
              "`disco finetune`)", file=sys.stderr)
    attempts, versions = vote_task(loaded, task, ds, args.steps, args.votes or loaded.spec.data.eval_versions)
    rows = []
    for p, voted in zip(preds, attempts, strict=True):
        grids = [np.array(voted[k], dtype=np.uint8) for k in ("attempt_1", "attempt_2")]
        right = [p.target is not None and g.shape == p.target.shape and (g == p.target).all() for g in grids]
        status = "" if p.target is None else ("  (attempt 1 correct)" if right[0] else "  (attempt 2 correct)"
                                              if right[1] else "  (wrong)")
        print(f"test pair {p.test_pair}: voted over {versions} version(s){status}; input, attempt 1, attempt 2"
              + (", solution" if p.target is not None else ""))
        shown = [p.input, *(g if g.size else np.zeros((1, 1), np.uint8) for g in grids)]
        print(side_by_side(shown + ([p.target] if p.target is not None else []), colour=sys.stdout.isatty()))
        rows += _step_rows(p, loaded.spec.method)
    if args.submission:
        atomic_write_json(Path(args.submission), {task.task_id: attempts})
        print(f"wrote {args.submission} (Kaggle format: {len(attempts)} test input(s), two attempts each)")
    if args.png:
        save_png(rows, args.png)
        print(f"wrote {args.png}")


def _step_rows(p, method: str) -> list[tuple[str, list]]:
    """PNG rows for one test pair: the input, every supervision step and the target, each captioned;
    TRM-ACT steps carry their halting probability, DIS adds the path of targets the steps train on."""
    n = len(p.steps)
    first_halt = next((s for s, h in enumerate(p.halts or [], start=1) if h > 0.5), None)
    steps = [(f"step {s}/{n}" + (f"\nhalt {p.halts[s - 1]:.2f}" + (" <- halts" if s == first_halt else "")
                                 if p.halts else ""), g) for s, g in enumerate(p.steps, start=1)]
    title = f"test {p.test_pair} ({method.upper()}): input, {n} supervision steps" + (", target" if p.target is not None else "")
    rows = [(title, [("input", p.input), *steps] + ([("target", p.target)] if p.target is not None else []))]
    if p.frames:
        rows.append((f"test {p.test_pair}: DIS training targets (one sampled path) that step s learns to produce",
                     [("input", p.input)] + [(f"frame {s}/{len(p.frames)}", f) for s, f in enumerate(p.frames, 1)]))
    return rows


def _runs(args: argparse.Namespace) -> None:
    from arc_data.errors import DiscoError

    from .storage import Storage

    storage = Storage.of(args.storage)
    if args.action == "list":
        _list_runs(storage, args.json)
        return
    if not args.names or (args.action != "plot" and len(args.names) > 1):
        raise DiscoError(f"runs {args.action} needs {'one or more run names' if args.action == 'plot' else 'a run name'}")
    if args.action == "show":
        _show_run(storage, args.names[0], args.json)
        return
    from .monitor import plot, watch
    from .runs import Run

    runs = [Run(storage, n) for n in args.names]
    for run in runs:
        run.record  # noqa: B018 - one line naming a missing run, before anything runs
    if args.action == "watch":
        watch(runs[0], args.interval, args.once)
        return
    if not args.out:
        raise DiscoError("runs plot needs --out FILE.png")
    print(f"wrote {plot(runs, args.out)}")


def _config(args: argparse.Namespace) -> None:
    import yaml

    from .config import load_spec

    print(yaml.safe_dump(load_spec(args.preset, args.set).model_dump(mode="json"), sort_keys=False), end="")


def _list_runs(storage, as_json: bool) -> None:
    from .runs import Run, list_runs

    rows = []
    for record in list_runs(storage):
        best = Run(storage, record.name).best(record.spec.train.select_metric)
        rows.append((record, best))
    sweeps = [n for n in storage.listdir() if storage.exists(n, "sweep.json")]
    if as_json:
        print(json.dumps({"runs": [r.model_dump(mode="json") | {"best": b.name if b else None, "best_metrics": b.metrics if b
                                   else {}} for r, b in rows], "sweeps": sweeps}, indent=2))
        return
    if not rows and not sweeps:
        print(f"no runs in {storage.uri}")
        return
    width = max([len("name"), *(len(r.name) for r, _ in rows)])
    print(f"{'name':{width}}  {'method':6} {'status':11} {'best':>7} {'pass@2':>7} {'train exact':>11}  updated")
    for r, best in rows:  # a run's figures are its best checkpoint's, whatever state the run is in
        m = best.metrics if best else {}
        cells = [str(best.batch) if best else "-", _cell(m.get("pass@2")), _cell(m.get("train_exact_accuracy"))]
        print(f"{r.name:{width}}  {r.method:6} {r.status:11} {cells[0]:>7} {cells[1]:>7} {cells[2]:>11}  {r.updated}")
    for name in sweeps:
        print(f"{name:{width}}  sweep  (see `disco best {name}`; its trials: --storage {storage.join(name, 'runs')})")


def _cell(value) -> str:
    return f"{value:.3f}" if isinstance(value, int | float) else "-"


def _show_run(storage, name: str | None, as_json: bool) -> None:
    from dataclasses import asdict

    from arc_data.errors import DiscoError

    from .runs import Run

    if not name:
        raise DiscoError("runs show needs a run name")
    run = Run(storage, name)
    record, checkpoints, evals = run.record, run.checkpoints(), run.metrics("eval")
    best = run.best()
    if as_json:
        print(json.dumps(record.model_dump(mode="json") | {"checkpoints": [asdict(c) for c in checkpoints],
                                                           "best_checkpoint": best.name if best else None,
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
    print(f"  best checkpoint: {run.checkpoint_location(best.name) if best else 'none yet'} "
          f"(by {record.spec.train.select_metric})")
