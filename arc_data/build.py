"""`disco data build`: validated sources -> compact Arrow tables + manifest, written atomically.

Instead of materialising every augmented copy (≈7 GB for ARC-1 at 1000 augmentations), the
dataset stores each base pair once and, per augmented version, only its transform: dihedral id,
colour map and the training examples' translations. Readers render token canvases on the fly.
See docs/data.md for the schema.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from .augment import draw_translations, select_versions
from .errors import DataError
from .grids import grid_hash
from .manifest import MANIFEST_FILE, BuildConfig, Counts, FileRecord, Manifest, SourceRecord
from .sources import Source, Task, load_source, sha256_file
from .tables import TABLES, TEST, TRAIN, VERSIONS_SCHEMA, Fingerprint, versions_batch, write_table


def _task_seed(task_id: str) -> int:
    # Seeding each task by its id keeps a task's versions independent of which other tasks are
    # in the build, so `--tasks`/`--max-grid` slices agree with the full dataset.
    return int.from_bytes(hashlib.sha256(task_id.encode()).digest()[:8], "little")


def _select_tasks(sources: list[Source], cfg: BuildConfig) -> list[Task]:
    tasks = [t for s in sources for t in s.tasks]
    if cfg.subsets:
        known = sorted({t.subset for t in tasks})
        for want in cfg.subsets:
            if not any(want in (t.subset, t.subset.split("/")[-1]) for t in tasks):
                raise DataError(f"--subsets: no subset named {want!r}; available: {', '.join(known)}")
        tasks = [t for t in tasks if t.subset in cfg.subsets or t.subset.split("/")[-1] in cfg.subsets]
    if cfg.groups:
        known = sorted({t.group for t in tasks if t.group})
        for want in cfg.groups:
            if want not in known:
                raise DataError(f"--groups: no group named {want!r}; available: {', '.join(known) or 'none'}")
        tasks = [t for t in tasks if t.group in cfg.groups]
    tasks = [t for t in tasks if t.max_side <= cfg.grid_limit]
    by_subset: dict[str, list[Task]] = {}
    for t in tasks:
        by_subset.setdefault(t.subset, []).append(t)
    tasks = []
    for subset_tasks in by_subset.values():
        subset_tasks.sort(key=lambda t: t.task_id)
        tasks += subset_tasks[: cfg.tasks] if cfg.tasks else subset_tasks
    if not tasks:
        raise DataError("no tasks left after --subsets/--max-grid/--canvas/--tasks filtering")
    return tasks


def _check_overlap(tasks: list[Task], allow: bool) -> tuple[list[Task], int]:
    """Refuse tasks that appear in two subsets; drop training pairs equal to a scored test pair.

    Returns the tasks and the number of training pairs dropped. ARC-1 itself has one such case
    (training 40853293 duplicates evaluation 070dd51e), which the reference silently trains on.
    """
    if allow:
        return tasks, 0
    seen: dict[str, str] = {}
    for t in tasks:
        if t.task_id in seen and seen[t.task_id] != t.subset:
            raise DataError(
                f"task {t.task_id} is in both {seen[t.task_id]} and {t.subset} (e.g. ARC-AGI-2 training holds "
                "most ARC-AGI-1 evaluation tasks); drop one with --subsets or pass --allow-overlap"
            )
        seen[t.task_id] = t.subset
    scored = {(grid_hash(p.input), grid_hash(p.output)) for t in tasks if t.role == "eval" for p in t.test
              if p.output is not None}
    dropped, kept = 0, []
    for t in tasks:
        if t.role == "train":
            clean = [p for p in t.test if (grid_hash(p.input), grid_hash(p.output)) not in scored]
            dropped += len(t.test) - len(clean)
            t.test = clean
        if t.train or t.test:
            kept.append(t)
    return kept, dropped


def _train_pairs(t: Task):
    return t.train + (t.test if t.role == "train" else [])


_NO_OUTPUT = np.zeros((0, 0), np.uint8)  # stored for a test input without a solution (0x0: never a real grid)


def _output(p) -> np.ndarray:
    return _NO_OUTPUT if p.output is None else p.output


def _examples_table(tasks: list[Task]) -> dict[str, list]:
    cols: dict[str, list] = {k: [] for k in ("task_index", "split", "kind", "pair_index", "in_h", "in_w",
                                             "out_h", "out_w", "input", "output")}
    for ti, task in enumerate(tasks):
        train_split = [("train", i, p) for i, p in enumerate(task.train)]
        test_split = [("test", i, p) for i, p in enumerate(task.test)]
        if task.role == "train":
            train_split, test_split = train_split + test_split, []
        for split, rows in ((TRAIN, train_split), (TEST, test_split)):
            for kind, i, p in rows:
                # (kind, pair_index) locate the pair in the task JSON's own "train"/"test" list.
                for key, value in (("task_index", ti), ("split", split), ("kind", kind), ("pair_index", i),
                                   ("in_h", p.input.shape[0]), ("in_w", p.input.shape[1]),
                                   ("out_h", _output(p).shape[0]), ("out_w", _output(p).shape[1]),
                                   ("input", p.input.tobytes()), ("output", _output(p).tobytes())):
                    cols[key].append(value)
    return cols


def _task_versions(ti: int, task: Task, cfg: BuildConfig) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([cfg.seed, _task_seed(task.task_id)])
    all_pairs = [(p.input, _output(p)) for p in task.train + task.test]
    tids, cmaps = select_versions(all_pairs, cfg.augmentations, rng, cfg.retries_factor)
    shapes = np.array([[*p.input.shape, *p.output.shape] for p in _train_pairs(task)], dtype=np.int64)
    trans = draw_translations(rng, tids, shapes, cfg.canvas).reshape(tids.size, -1)
    return {"task_index": np.full(tids.size, ti, dtype=np.int32), "dihedral": tids, "colour_map": cmaps,
            "translation": trans}


def _write_versions(tasks: list[Task], cfg: BuildConfig, path: Path, fp: Fingerprint, progress: bool) -> list[int]:
    """Stream the versions table in batches of tasks, so memory stays flat; returns versions per task."""
    n_versions: list[int] = []
    pending: list[dict[str, np.ndarray]] = []
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, VERSIONS_SCHEMA) as writer:

        def flush() -> None:
            trans = [p["translation"] for p in pending]
            lengths = np.concatenate([np.full(t.shape[0], t.shape[1], dtype=np.int32) for t in trans])
            batch = versions_batch({
                "task_index": np.concatenate([p["task_index"] for p in pending]),
                "dihedral": np.concatenate([p["dihedral"] for p in pending]),
                "colour_map": np.concatenate([p["colour_map"] for p in pending]),
                "translation": (np.concatenate([t.ravel() for t in trans]),
                                np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)),
            })
            writer.write_batch(batch)
            fp.update("versions", batch)
            pending.clear()

        for ti, task in enumerate(tqdm(tasks, desc="augmenting", unit="task", disable=not progress)):
            pending.append(_task_versions(ti, task, cfg))
            n_versions.append(pending[-1]["dihedral"].size)
            if len(pending) == 64:
                flush()
        if pending:
            flush()
    return n_versions


def _load_tasks(cfg: BuildConfig) -> tuple[list[Source], list[Task], int]:
    """(sources, selected tasks, training pairs dropped for leaking a scored test pair); every
    problem in every source is reported at once."""
    problems, sources = [], []
    for spec in cfg.sources:
        try:
            sources.append(load_source(spec, cfg.eval_subsets))
        except DataError as e:
            problems += e.problems
    if problems:
        raise DataError(problems)
    tasks, dropped = _check_overlap(_select_tasks(sources, cfg), cfg.allow_overlap)
    return sources, tasks, dropped


def _write_tables(tasks: list[Task], cfg: BuildConfig, folder: Path, progress: bool) -> tuple[Fingerprint, dict]:
    """Write the three tables into `folder`; returns the fingerprint and the per-task counts."""
    fp = Fingerprint(cfg.canvas)
    counts = {"n_versions": np.array(_write_versions(tasks, cfg, folder / "versions.arrow", fp, progress), np.int64),
              "n_train": np.array([len(_train_pairs(t)) for t in tasks], dtype=np.int64),
              "n_test": np.array([len(t.test) if t.role == "eval" else 0 for t in tasks], dtype=np.int64),
              "unlabelled": np.array([t.unlabelled for t in tasks], dtype=np.int64)}
    # Only corpora with groups get the column, so other datasets keep their fingerprints.
    groups = {"group": [t.group for t in tasks]} if any(t.group for t in tasks) else {}
    tables = {
        "tasks": TABLES["tasks"]({"task_id": [t.task_id for t in tasks], "subset": [t.subset for t in tasks],
                                  "role": [t.role for t in tasks], **groups, **counts}),
        "examples": TABLES["examples"](_examples_table(tasks)),
    }
    for name, table in tables.items():
        write_table(table, folder / f"{name}.arrow")
        fp.update(name, table)
    return fp, counts


def _counts(c: dict, cfg: BuildConfig, dropped: int) -> Counts:
    n_versions, n_train, n_test, unlabelled = c["n_versions"], c["n_train"], c["n_test"], c["unlabelled"]
    return Counts(tasks=len(n_versions), eval_tasks=int((n_test > 0).sum()), versions=int(n_versions.sum()),
                  num_identifiers=int(n_versions.sum()) + 1, base_train_pairs=int(n_train.sum()),
                  base_test_pairs=int(n_test.sum()), train_examples=int((n_versions * n_train).sum()),
                  test_examples=int((n_versions * n_test).sum()),
                  short_groups=int((n_versions < cfg.augmentations + 1).sum()), min_group=int(n_versions.min()),
                  dropped_leaking_pairs=dropped, unlabelled_test_pairs=int(unlabelled.sum()),
                  scored_tasks=int(((n_test - unlabelled) > 0).sum()))


def _replace(tmp: Path, out: Path) -> None:
    """Move the finished `tmp` to `out`, replacing an existing dataset only once the new one is whole."""
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old)
    else:
        tmp.rename(out)


def build_dataset(cfg: BuildConfig, out: str | Path, force: bool = False, progress: bool = True) -> Manifest:
    """Validate every source, then write the dataset to `out` atomically (temp dir + rename)."""
    from . import __version__

    out = Path(out).expanduser().resolve()
    if out.exists() and not force:
        raise DataError(f"{out} already exists; pass --force to replace it")
    sources, tasks, dropped = _load_tasks(cfg)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        fp, counts = _write_tables(tasks, cfg, tmp, progress)
        files = [FileRecord(name=f"{name}.arrow", bytes=(tmp / f"{name}.arrow").stat().st_size,
                            sha256=sha256_file(tmp / f"{name}.arrow")) for name in ("tasks", "examples", "versions")]
        manifest = Manifest(
            fingerprint=fp.hexdigest(), build=cfg, counts=_counts(counts, cfg, dropped), files=files,
            sources=[SourceRecord(spec=s.spec, kind=s.kind, sha256=s.sha256, tasks=len(s.tasks)) for s in sources],
            created_at=datetime.now(UTC).isoformat(timespec="seconds"), disco_version=__version__)
        (tmp / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2))
        _replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest
