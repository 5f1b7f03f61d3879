"""Runs in storage: the typed run record (run.json) and a `Run` handle over one run's files.

`<storage>/<name>/` holds `run.json` (the driver's record: spec, dataset, status, best checkpoint,
final metrics), `metrics.jsonl` (rank 0's log), Ray's `checkpoint_<batch>/` directories and
`wandb/`. Every command reads runs through `Run`; which checkpoint is best is decided in one
place, `best_of`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from arc_data.errors import DiscoError

from . import checkpoint as ckpt
from .config import DatasetRef, RunSpec
from .storage import Storage
from .tracking import METRICS_FILE, read_metrics

RUN_FILE = "run.json"
RAY_SNAPSHOT = "checkpoint_manager_snapshot.json"  # Ray Train V2's, beside ours
Status = Literal["running", "finished", "paused", "failed", "interrupted"]  # paused: stopped at train(until_evaluation=)


def now() -> str:
    """A timestamp for records (local time with its UTC offset)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def stamp() -> str:
    """A compact timestamp for generated names."""
    return time.strftime("%Y%m%d-%H%M%S")


class RunRecord(BaseModel):
    """run.json. Which checkpoint is best is not recorded here: `Run.best` reads it from the
    checkpoints themselves, so every command agrees (older records' `best_checkpoint` is ignored)."""

    model_config = ConfigDict(extra="ignore")

    name: str
    status: Status
    spec: RunSpec
    dataset: DatasetRef
    storage: str = Field(description="where the run lives (path or URI)")
    created: str = Field(default_factory=now)
    updated: str = Field(default_factory=now)
    metrics: dict[str, float | int | str | None] = Field(default_factory=dict, description="final evaluation")

    @property
    def method(self) -> str:
        return self.spec.method


@dataclass
class CheckpointInfo:
    name: str
    batch: int
    complete: bool  # COMMIT and a valid meta.json are there (contents are verified on load)
    metrics: dict = field(default_factory=dict)


def _rank(c: CheckpointInfo, metric: str) -> tuple:
    value = c.metrics.get(metric)
    return (value if isinstance(value, int | float) else float("-inf"), c.batch)


def ranked(checkpoints: list[CheckpointInfo], metric: str) -> list[CheckpointInfo]:
    """The complete checkpoints, best first by `metric` (higher is better); ties go to the later one."""
    return sorted((c for c in checkpoints if c.complete), key=lambda c: _rank(c, metric), reverse=True)


def best_of(checkpoints: list[CheckpointInfo], metric: str) -> CheckpointInfo | None:
    """The complete checkpoint with the highest `metric`; ties go to the later one."""
    return next(iter(ranked(checkpoints, metric)), None)


def to_retain(checkpoints: list[CheckpointInfo], keep: int, metric: str) -> set[str]:
    """The `keep` best complete checkpoints, the latest complete one (which a resume starts from)
    and every checkpoint newer than that: still uploading (asynchronous uploads run one at a time,
    oldest first) or the latest attempt. Only incomplete checkpoints older than a complete one are
    damaged."""
    done = ranked(checkpoints, metric)
    newest = max((c.batch for c in done), default=-1)
    return {c.name for c in done[:keep]} | {c.name for c in checkpoints if c.batch >= newest}


class Run:
    """One run's files in storage."""

    def __init__(self, storage: Storage, name: str):
        self.storage, self.name = storage, name

    @property
    def location(self) -> str:
        return self.storage.join(self.name)

    def exists(self) -> bool:
        return self.storage.exists(self.name)

    def read(self) -> RunRecord | None:
        raw = self.storage.read_json(self.name, RUN_FILE)
        if raw is None:
            return None
        try:
            return RunRecord.model_validate(raw)
        except ValidationError as e:
            err = e.errors()[0]
            raise DiscoError(f"{self.storage.join(self.name, RUN_FILE)}: {'.'.join(map(str, err['loc']))}: "
                             f"{err['msg']}") from None

    @cached_property
    def record(self) -> RunRecord:
        record = self.read()
        if record is None:
            raise DiscoError(f"no run named {self.name!r} in {self.storage.uri} (see `disco runs list`)")
        return record

    def write(self, record: RunRecord) -> None:
        self.storage.write_json(record.model_dump(mode="json"), self.name, RUN_FILE)
        self.__dict__["record"] = record

    def metrics(self, kind: str | None = None) -> list[dict]:
        records = read_metrics(self.storage.read_text(self.name, METRICS_FILE))
        return records if kind is None else [r for r in records if r.get("kind") == kind]

    def checkpoints(self) -> list[CheckpointInfo]:
        """The run's checkpoints in storage, oldest first."""
        out = []
        for d in self.storage.listdir(self.name):
            if (batch := ckpt.step_of(d)) is None:
                continue
            text = self.storage.read_text(self.name, d, ckpt.META)
            try:
                meta = ckpt.read_meta(text, d) if text is not None else None
            except ckpt.CheckpointError:
                meta = None
            complete = meta is not None and self.storage.exists(self.name, d, ckpt.COMMIT)
            out.append(CheckpointInfo(d, batch, complete, dict(meta.metrics) if meta else {}))
        return sorted(out, key=lambda c: c.batch)

    def best(self, metric: str | None = None) -> CheckpointInfo | None:
        """The best complete checkpoint by `metric` (default: the run's `train.select_metric`)."""
        return best_of(self.checkpoints(), metric or self.record.spec.train.select_metric)

    def checkpoint_location(self, checkpoint: str) -> str:
        return self.storage.join(self.name, checkpoint)

    def retain(self, keep: int, metric: str) -> list[str]:
        """Delete checkpoints beyond the `keep` best and the latest; returns the deleted names."""
        checkpoints = self.checkpoints()
        kept = to_retain(checkpoints, keep, metric)
        gone = [c.name for c in checkpoints if c.name not in kept]
        for name in gone:
            self.storage.delete(self.name, name)
        return gone

    def forget_ray_snapshot(self) -> None:
        """Drop Ray Train's own list of the run's checkpoints before a resume: it goes stale once
        ours are retained or set aside, and Ray's controller refuses to start on a stale one. The
        checkpoints themselves are the record; the workers restore from them."""
        self.storage.delete(self.name, RAY_SNAPSHOT)

    def set_aside(self, checkpoint: str) -> str:
        """Move a damaged checkpoint out of the run's checkpoints (kept, renamed, for inspection)."""
        aside = f"damaged_{checkpoint}"
        self.storage.delete(self.name, aside)
        self.storage.move((self.name, checkpoint), (self.name, aside))
        return aside

    @contextmanager
    def local_checkpoint(self, checkpoint: str) -> Iterator[Path]:
        """A checkpoint directory as a local path (a temporary copy when the storage is remote)."""
        with self.storage.local_dir(self.name, checkpoint) as d:
            yield d


def list_runs(storage: Storage) -> list[RunRecord]:
    return [r for name in storage.listdir() if (r := Run(storage, name).read()) is not None]


@contextmanager
def local_copy(location: str) -> Iterator[Path]:
    """A checkpoint (or any directory) given by its full location, local or a storage URI, as a
    local path (a temporary copy when remote)."""
    parent, _, name = location.rstrip("/").rpartition("/")
    with Storage.of(parent or ("/" if location.startswith("/") else ".")).local_dir(name) as d:
        yield d


def checkpoint_location(ref: str, storage: Storage) -> str:
    """Where `ref` is: a checkpoint directory itself, or the best checkpoint of a run (a run
    directory, or a run name in `storage`)."""
    p = Path(ref).expanduser()
    if p.is_dir() and ((p / ckpt.COMMIT).exists() or (p / ckpt.META).exists()):
        return str(p.resolve())
    run = Run(Storage.of(str(p.parent)), p.name) if p.is_dir() else Run(storage, ref)
    if run.read() is None:
        raise DiscoError(f"{ref!r} is neither a checkpoint directory nor a run in {storage.uri} (see `disco runs list`)")
    best = run.best()
    if best is None:
        raise DiscoError(f"run {ref!r} has no complete checkpoint yet")
    return run.checkpoint_location(best.name)


@contextmanager
def open_checkpoint(ref: str, storage: Storage) -> Iterator[Path]:
    """A local checkpoint directory for `ref` (see `checkpoint_location`)."""
    with local_copy(checkpoint_location(ref, storage)) as d:
        yield d
