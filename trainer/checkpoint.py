"""Checkpoints: what one holds, how it is written, checked and restored. Nothing here unpickles code.

A checkpoint directory holds
  model.safetensors  the network's weights and persistent buffers plus the puzzle table
                     (`puzzle_emb.weight`), as trained
  ema.safetensors    the exponential average of the trained parameters, when the run keeps one
                     (`optim.ema_rate`); evaluation and export then use it in their place
  trainer.pt         the state every rank shares: optimizer moments and step (`engine`), sampler
                     position (`sampler`), loop clock (`progress`), whole-run averages (`averages`)
  rank<R>.pt         the state of rank R alone: its objective's RNG and, for TRM-ACT, the rows in
                     flight (`objective`); each rank writes its own file
  meta.json          run spec, model config, batch and step, dataset path + fingerprint, metrics
  eval/              that evaluation's metrics, submission and per-puzzle report (informational)
  COMMIT             sha256 of every file above except eval/, written last by rank 0
A directory without COMMIT, or whose files do not match it, is incomplete or corrupt and is never
loaded. `.pt` files are read with `weights_only=True` (tensors, numbers, strings, containers).
Ray copies every rank's files into the same storage directory; the commit record makes the copy's
completeness checkable wherever it ends up.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
import torch.distributed as dist
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from safetensors.torch import load_file, save_file

from arc_data.errors import DiscoError
from arc_data.fsio import atomic_output

from .config import DatasetRef, RunSpec
from .device import is_distributed
from .model import ModelConfig
from .objectives import unwrap
from .puzzle_emb import PuzzleEmbedding

FORMAT = 2  # 1: trainer.pt held the ranks' RNG states in a list (upgraded on load)
MODEL, EMA, TRAINER, META, COMMIT = "model.safetensors", "ema.safetensors", "trainer.pt", "meta.json", "COMMIT"
REQUIRED = (MODEL, META)  # enough to evaluate; the rest is needed to resume
NAME = re.compile(r"^checkpoint_(\d+)$")


class CheckpointError(DiscoError):
    pass


class CheckpointMeta(BaseModel):
    """meta.json: what a checkpoint is, readable without torch."""

    model_config = ConfigDict(extra="forbid")

    format: int = FORMAT
    name: str = Field(description="run name")
    batch: int = Field(description="training batches done")
    step: int = Field(description="optimizer steps done")
    world_size: int = Field(1, description="ranks that wrote it (one rank<R>.pt each)")
    spec: RunSpec
    model: ModelConfig = Field(description="the network's config, with seq_len and table size from the data")
    dataset: DatasetRef
    metrics: dict[str, float | int | str | None] = Field(default_factory=dict, description="the evaluation here")
    created: str = Field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    exported_from: str | None = Field(None, description="set by `disco pull`")


class Stateful(Protocol):
    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class ModelState:
    """The network (unwrapped from DDP/compile) and its puzzle table, as one flat tensor dict."""

    TABLE = "puzzle_emb.weight"

    def __init__(self, model: torch.nn.Module, emb: PuzzleEmbedding):
        self.model, self.emb = model, emb

    def state_dict(self) -> dict[str, torch.Tensor]:
        state = dict(unwrap(self.model).state_dict())
        if self.emb.dim:
            state[self.TABLE] = self.emb.weight
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        state = dict(state)
        table = state.pop(self.TABLE, None)
        unwrap(self.model).load_state_dict(state)
        if table is not None:
            self.emb.load_state_dict({"weight": table})


def dir_name(batch: int) -> str:
    return f"checkpoint_{batch:09d}"


def step_of(name: str) -> int | None:
    m = NAME.match(name)
    return int(m.group(1)) if m else None


def rank_file(rank: int) -> str:
    return f"rank{rank:05d}.pt"


def digest(path: Path) -> str:
    """sha256 of a file."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def commit(d: Path, digests: dict[str, str]) -> None:
    """Record the checksums of the files in COMMIT, last: from then on the directory counts."""
    with atomic_output(d / COMMIT) as tmp:
        tmp.write_text(json.dumps(digests, indent=2) + "\n")


def problem(directory: str | Path) -> str | None:
    """Why `directory` is not a loadable checkpoint, or None when it is complete and intact."""
    d = Path(directory)
    if not d.is_dir():
        return "not found"
    if not (d / COMMIT).is_file():
        return "incomplete (no COMMIT record)"
    try:
        record = json.loads((d / COMMIT).read_text())
    except json.JSONDecodeError:
        return "corrupt COMMIT record"
    if not isinstance(record, dict) or not set(REQUIRED) <= record.keys():
        return "incomplete (COMMIT lists no model)"
    for f, expected in record.items():
        if not (d / f).is_file():
            return f"incomplete ({f} missing)"
        if digest(d / f) != expected:
            return f"corrupt ({f} does not match its checksum)"
    return None


def read_meta(text: str, where: str) -> CheckpointMeta:
    try:
        return CheckpointMeta.model_validate_json(text)
    except ValidationError as e:
        err = e.errors()[0]
        raise CheckpointError(f"checkpoint {where}: meta.json: {'.'.join(map(str, err['loc']))}: {err['msg']}") from None


@dataclass
class Contents:
    """A verified checkpoint's metadata and weights."""

    path: Path
    meta: CheckpointMeta
    model_state: dict[str, torch.Tensor]  # as trained
    ema_state: dict[str, torch.Tensor] | None  # the averaged parameters, when the run keeps an average

    @property
    def evaluated_state(self) -> dict[str, torch.Tensor]:
        """The weights this checkpoint was evaluated (and is exported) with: the average when there is one."""
        return self.model_state | (self.ema_state or {})


def read(directory: str | Path) -> Contents:
    d = Path(directory).expanduser()
    if why := problem(d):
        raise CheckpointError(f"checkpoint {d}: {why}")
    raw = json.loads((d / META).read_text())
    if raw.get("format") not in (1, FORMAT):
        raise CheckpointError(f"checkpoint {d}: format {raw.get('format')} is not supported (expected {FORMAT})")
    ema = load_file(str(d / EMA)) if (d / EMA).is_file() else None
    return Contents(d, read_meta(json.dumps(raw | {"format": FORMAT}), str(d)), load_file(str(d / MODEL)), ema)


def _load_pt(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _upgrade_v1(trainer: dict) -> dict:
    """Format 1 kept the puzzle table and an unused counter in `engine` and the ranks' objective RNG
    states in one list; format 2 keeps per-rank state in per-rank files."""
    engine = {k: v for k, v in trainer["engine"].items() if k in ("optimizer", "step")}
    return {"engine": engine, "sampler": trainer["sampler"]}


def _save_tensors(state: dict[str, torch.Tensor], path: Path) -> None:
    with atomic_output(path) as tmp:
        save_file({k: v.detach().to("cpu").contiguous() for k, v in state.items()}, str(tmp))


class Checkpointer:
    """Saves and restores a rank's stateful parts: the model and its average (safetensors), the
    state all ranks share (written once, by rank 0) and the state of each rank alone (one file each)."""

    def __init__(self, model: ModelState, shared: dict[str, Stateful], per_rank: dict[str, Stateful],
                 rank: int = 0, world: int = 1, warn=print, ema: Stateful | None = None):
        self.model, self.ema, self.shared, self.per_rank = model, ema, shared, per_rank
        self.rank, self.world, self.warn = rank, world, warn

    def save(self, directory: str | Path, meta: CheckpointMeta) -> Path:
        """Every rank calls this (a collective): each writes its own file, rank 0 the rest and COMMIT."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        mine = d / rank_file(self.rank)
        with atomic_output(mine) as tmp:
            torch.save({k: s.state_dict() for k, s in self.per_rank.items()}, tmp)
        digests = [(mine.name, digest(mine))]
        if is_distributed():
            gathered: list = [None] * self.world
            dist.all_gather_object(gathered, digests[0])
            digests = gathered
        if self.rank != 0:
            return d
        files = [MODEL, TRAINER, META] + ([EMA] if self.ema is not None else [])
        _save_tensors(self.model.state_dict(), d / MODEL)
        if self.ema is not None:
            _save_tensors(self.ema.state_dict(), d / EMA)
        with atomic_output(d / TRAINER) as tmp:
            torch.save({k: s.state_dict() for k, s in self.shared.items()}, tmp)
        with atomic_output(d / META) as tmp:
            tmp.write_text(meta.model_copy(update={"world_size": self.world}).model_dump_json(indent=2) + "\n")
        commit(d, {f: digest(d / f) for f in files} | dict(digests))
        return d

    def restore(self, directory: str | Path) -> CheckpointMeta:
        """Load every part from a verified checkpoint; returns its metadata."""
        c = read(directory)
        self.model.load_state_dict(c.model_state)
        if self.ema is not None and c.ema_state is not None:
            self.ema.load_state_dict(c.ema_state)
        elif self.ema is not None:
            self.warn(f"warning: {c.path.name} has no weight average: it starts from the restored weights")
        trainer = _load_pt(c.path / TRAINER)
        v1 = "rng" in trainer
        if v1:
            trainer = _upgrade_v1(trainer)
        for k, s in self.shared.items():
            if k in trainer:  # parts added after the checkpoint's format start afresh
                s.load_state_dict(trainer[k])
        if v1:  # its per-rank generators predate row-keyed randomness (objectives.RowNoise): start afresh
            return c.meta
        if c.meta.world_size == self.world:
            mine = _load_pt(c.path / rank_file(self.rank))
            for k, s in self.per_rank.items():
                s.load_state_dict(mine[k])
        else:  # an elastic resize (or a resume on another number of workers): every rank's part
            states = [_load_pt(c.path / rank_file(r)) for r in range(c.meta.world_size)]
            for k, s in self.per_rank.items():
                s.load_resharded([st[k] for st in states])
            self.warn(f"{c.path.name} was written by {c.meta.world_size} rank(s), this run has {self.world}: "
                      "each rank continues its slice of the global rows")
        return c.meta
