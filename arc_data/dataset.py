"""Reading a built dataset: memory-mapped tables, on-the-fly rendering, train and test batches.

Every process (e.g. each Ray Train worker) opens the dataset itself and renders only its own rows
of each global batch; the tables are memory-mapped, so workers on one node share their pages.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from .canvas import render
from .errors import DataError
from .grids import IGNORE_LABEL, PAD, unaugment, version_name
from .manifest import Manifest
from .sources import Pair, Task
from .tables import TEST, TRAIN, fingerprint, read_table

__all__ = ["TEST", "TRAIN", "ArcDataset", "Batch", "TrainSampler"]


@dataclass
class Batch:
    """One rank's rows. `puzzle_identifiers == 0` marks padding rows (test mode only)."""

    inputs: np.ndarray  # [B, seq_len] uint8 tokens: PAD=0, EOS=1, colours 2..11 (seq_len = canvas², 900)
    labels: np.ndarray  # [B, seq_len] int16 tokens, IGNORE_LABEL (-100) where the label is PAD
    puzzle_identifiers: np.ndarray  # [B] int32; identifier = version row + 1
    example_index: np.ndarray  # [B] int32 row of examples.arrow (base pair); -1 for padding

    def __len__(self) -> int:
        return self.inputs.shape[0]


def _binary(col: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    arr = col.combine_chunks()
    offsets = np.frombuffer(arr.buffers()[1], np.int32, count=len(arr) + 1, offset=arr.offset * 4)
    return np.frombuffer(arr.buffers()[2], np.uint8), offsets


def _csr(counts: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


class ArcDataset:
    """A dataset written by `disco data build` (see docs/data.md for the schema)."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()
        self.manifest = Manifest.load(self.root)
        try:
            tasks, examples, versions = (read_table(self.root / f"{n}.arrow") for n in ("tasks", "examples", "versions"))
        except (OSError, pa.ArrowInvalid) as e:
            raise DataError(f"{self.root}: unreadable dataset table ({e}); rebuild it with `disco data build`") from None
        self._tables = {"tasks": tasks, "examples": examples, "versions": versions}
        self.canvas = self.manifest.build.canvas
        self.seq_len = self.canvas * self.canvas
        if len(versions) != self.manifest.counts.versions or len(tasks) != self.manifest.counts.tasks:
            raise DataError(f"{self.root}: tables do not match manifest.json counts; rebuild the dataset")

        self.task_ids: list[str] = tasks.column("task_id").to_pylist()
        self.subsets: list[str] = tasks.column("subset").to_pylist()
        self.roles: list[str] = tasks.column("role").to_pylist()
        self.groups: list[str] = tasks.column("group").to_pylist() if "group" in tasks.column_names else [""] * len(tasks)
        self.n_train = tasks.column("n_train").to_numpy().astype(np.int64)
        self.n_test = tasks.column("n_test").to_numpy().astype(np.int64)
        self.n_versions = tasks.column("n_versions").to_numpy().astype(np.int64)
        self.version_start = _csr(self.n_versions)

        # Examples are stored task by task, train split first, so each task's rows are contiguous.
        self.ex_split = examples.column("split").to_numpy()
        self.ex_task = examples.column("task_index").to_numpy()
        self.ex_kind = examples.column("kind").to_pylist()
        self.ex_pair = examples.column("pair_index").to_numpy()
        self.in_shape = np.stack([examples.column(c).to_numpy() for c in ("in_h", "in_w")], axis=1)
        self.out_shape = np.stack([examples.column(c).to_numpy() for c in ("out_h", "out_w")], axis=1)
        self._in_cells, self._in_start = _binary(examples.column("input"))
        self._out_cells, self._out_start = _binary(examples.column("output"))
        order = np.lexsort((np.arange(len(examples)), self.ex_split, self.ex_task))
        if not np.array_equal(order, np.arange(len(examples))):
            raise DataError(f"{self.root}: examples.arrow is not ordered by task and split; rebuild the dataset")
        self.task_ex_start = _csr(np.bincount(self.ex_task, minlength=len(tasks)))
        self.train_ex_first = self.task_ex_start[:-1]  # training-split rows come first in each task
        # A test input without a solution is stored with a 0x0 output: predicted, never scored.
        self.labelled = self.out_shape[:, 0] > 0
        scored_rows = (self.ex_split == TEST) & self.labelled
        self.n_scored = np.bincount(self.ex_task[scored_rows], minlength=len(tasks)).astype(np.int64)

        self.v_task = versions.column("task_index").to_numpy()
        self.v_tid = versions.column("dihedral").to_numpy()
        self.v_cmap = versions.column("colour_map").combine_chunks().flatten().to_numpy().reshape(-1, 10)
        trans = versions.column("translation").combine_chunks()
        self.v_trans = trans.flatten().to_numpy()
        self.v_trans_start = np.asarray(trans.offsets).astype(np.int64)

    # ------------------------------------------------------------------ basics

    @property
    def fingerprint(self) -> str:
        return self.manifest.fingerprint

    @property
    def num_identifiers(self) -> int:
        return self.manifest.counts.num_identifiers

    @property
    def examples_per_epoch(self) -> int:
        """Training rows of one epoch: every puzzle's training examples, one version each."""
        return int(self.n_train.sum())

    def verify(self) -> None:
        """Recompute the fingerprint from the tables; raise if the data changed since the build."""
        if fingerprint(self._tables, self.canvas) != self.manifest.fingerprint:
            raise DataError(f"{self.root}: contents do not match the manifest fingerprint (modified or corrupt)")

    def task_index(self, task_id: str) -> int:
        try:
            return self.task_ids.index(task_id)
        except ValueError:
            raise DataError(f"no task {task_id!r} in {self.root}") from None

    def grid(self, example: int, side: str) -> np.ndarray:
        """A base (unaugmented) grid: side is "input" or "output"."""
        cells, start, shape = ((self._in_cells, self._in_start, self.in_shape) if side == "input"
                               else (self._out_cells, self._out_start, self.out_shape))
        h, w = (int(x) for x in shape[example])
        return cells[start[example] : start[example] + h * w].reshape(h, w)

    def task(self, index: int) -> Task:
        """A task as its base pairs (test outputs None where the set has no solution)."""
        def pairs(split: int) -> list[Pair]:
            rows = sorted(self.examples_of(index, split), key=lambda e: (self.ex_kind[e] != "train", self.ex_pair[e]))
            return [Pair(self.grid(int(e), "input"), self.grid(int(e), "output") if self.labelled[e] else None)
                    for e in rows]

        return Task(self.task_ids[index], self.subsets[index], self.roles[index], str(self.root), pairs(TRAIN),
                    pairs(TEST), self.groups[index])

    def original_identifier(self, task: int) -> int:
        """The puzzle identifier of a task's unaugmented version (identifier = version row + 1;
        0 is the blank identifier of padding rows)."""
        return int(self.version_start[task]) + 1

    def version_of(self, identifier: int) -> tuple[int, int, np.ndarray]:
        """(task index, dihedral id, colour map) of a puzzle identifier (>= 1)."""
        v = identifier - 1
        return int(self.v_task[v]), int(self.v_tid[v]), self.v_cmap[v]

    def name(self, identifier: int) -> str:
        task, tid, cmap = self.version_of(identifier)
        return version_name(self.task_ids[task], tid, cmap)

    def unaugment(self, identifier: int, grid: np.ndarray) -> np.ndarray:
        _, tid, cmap = self.version_of(identifier)
        return unaugment(grid, tid, cmap)

    def examples_of(self, task: int, split: int) -> np.ndarray:
        rows = np.arange(self.task_ex_start[task], self.task_ex_start[task + 1])
        return rows[self.ex_split[rows] == split]

    # ------------------------------------------------------------------ rendering

    def render_rows(self, versions: np.ndarray, examples: np.ndarray, slots: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Token inputs [B, seq_len] uint8 and labels [B, seq_len] int16 for (version, base example) rows.

        `slots` are the examples' positions within their task's training split; they select the
        stored translations. None renders untranslated (test split).
        """
        tids, cmaps = self.v_tid[versions], self.v_cmap[versions]
        if slots is None:
            offset = np.zeros((len(versions), 2), dtype=np.int32)
        else:
            at = self.v_trans_start[versions] + 2 * slots
            offset = np.stack([self.v_trans[at], self.v_trans[at + 1]], axis=1)
        inputs = render(self._in_cells, self._in_start[examples], self.in_shape[examples], tids, cmaps, offset,
                        self.canvas)
        out = render(self._out_cells, self._out_start[examples], self.out_shape[examples], tids, cmaps, offset,
                     self.canvas)
        labels = out.astype(np.int16)
        labels[out == PAD] = IGNORE_LABEL
        return inputs, labels

    # ------------------------------------------------------------------ batches

    def train_sampler(self, global_batch_size: int, rank: int = 0, world_size: int = 1, seed: int = 0,
                      max_examples: int | None = None) -> TrainSampler:
        return TrainSampler(self, global_batch_size, rank, world_size, seed, max_examples)

    def test_rows(self, max_versions: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(version, base example) of every test row, ordered by task, version, example."""
        vs, exs = [], []
        for t in np.flatnonzero(self.n_test):
            n_v = self.n_versions[t] if max_versions is None else min(max_versions, self.n_versions[t])
            ex = self.examples_of(t, TEST)
            vs.append(np.repeat(np.arange(self.version_start[t], self.version_start[t] + n_v), ex.size))
            exs.append(np.tile(ex, n_v))
        if not vs:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return np.concatenate(vs), np.concatenate(exs)

    def test_batches(self, global_batch_size: int, rank: int = 0, world_size: int = 1,
                     max_versions: int | None = None) -> Iterator[Batch]:
        """Sequential test rows; each rank takes its slice of every global block, padded to B."""
        return self._sequential(*self.test_rows(max_versions), global_batch_size, rank, world_size)

    def original_train_batches(self, global_batch_size: int, rank: int = 0, world_size: int = 1) -> Iterator[Batch]:
        """Every training pair of every puzzle, unaugmented (version 0), untranslated: to measure
        how well the training puzzles themselves are solved."""
        tasks = np.flatnonzero(self.n_train)
        examples = np.concatenate([self.examples_of(t, TRAIN) for t in tasks]) if tasks.size else np.zeros(0, np.int64)
        versions = self.version_start[self.ex_task[examples]]
        return self._sequential(versions, examples, global_batch_size, rank, world_size)

    def _sequential(self, versions: np.ndarray, examples: np.ndarray, global_batch_size: int, rank: int,
                    world_size: int) -> Iterator[Batch]:
        local = _local_batch(global_batch_size, world_size, rank)
        for start in range(0, versions.size, global_batch_size):
            lo = min(start + rank * local, versions.size)
            hi = min(start + (rank + 1) * local, start + global_batch_size, versions.size)
            yield self.render_batch(versions[lo:hi], examples[lo:hi], None, pad_to=local)

    def render_batch(self, versions: np.ndarray, examples: np.ndarray, slots: np.ndarray | None, pad_to: int) -> Batch:
        """Rendered rows of (version, example[, training slot]), padded with blank rows to `pad_to`."""
        inputs, labels = self.render_rows(versions, examples, slots)
        ids = (versions + 1).astype(np.int32)
        ex = examples.astype(np.int32)
        if (pad := pad_to - versions.size) > 0:
            inputs = np.concatenate([inputs, np.full((pad, self.seq_len), PAD, np.uint8)])
            labels = np.concatenate([labels, np.full((pad, self.seq_len), IGNORE_LABEL, np.int16)])
            ids = np.concatenate([ids, np.zeros(pad, np.int32)])
            ex = np.concatenate([ex, np.full(pad, -1, np.int32)])
        return Batch(inputs, labels, ids, ex)


def _local_batch(global_batch_size: int, world_size: int, rank: int) -> int:
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world size {world_size}")
    if global_batch_size < 1 or global_batch_size % world_size:
        raise DataError(f"global batch size {global_batch_size} must be a positive multiple of the world size {world_size}")
    return global_batch_size // world_size


@dataclass(frozen=True)
class _EpochPlan:
    """One epoch's order: a random version of every puzzle, in a random order, each with its
    training examples in a random order (group g's slots are slots[start[g]:start[g+1]])."""

    version: np.ndarray  # [G] version row picked for each group, in epoch order
    task: np.ndarray  # [G] task index of each group, in epoch order
    start: np.ndarray  # [G+1]
    slots: np.ndarray  # positions within each task's training split


class TrainSampler:
    """The reference's training order (docs/reference.md §2), fully seeded.

    Per epoch: permute the puzzles, pick one random version of each, and append all of its
    training examples in random order to one stream that runs on through the epochs. Global batches
    are cut from the stream: a puzzle that overflows a batch is truncated (the rest of it is not
    carried over) and the next batch starts with the next puzzle, also across an epoch boundary,
    so no partial batch is dropped and a set smaller than one batch still trains (its batches hold
    several epochs). Every rank computes the same stream and takes rows [rank*B, (rank+1)*B) of
    each global batch; every batch starts at a puzzle, so (epoch, cursor) resumes exactly.
    `max_examples` caps each puzzle's examples per epoch at a fresh random K (generated sets with
    thousands of examples per puzzle would otherwise fill whole batches and be truncated there).
    """

    def __init__(self, ds: ArcDataset, global_batch_size: int, rank: int, world_size: int, seed: int,
                 max_examples: int | None = None):
        self.ds, self.global_batch_size, self.rank, self.seed = ds, global_batch_size, rank, seed
        self.local_batch_size = _local_batch(global_batch_size, world_size, rank)
        self.groups = np.flatnonzero(ds.n_train)
        if self.groups.size == 0:
            raise DataError(f"{ds.root}: no training examples")
        self.max_examples = max_examples
        self.examples_per_epoch = int(np.minimum(ds.n_train, max_examples or ds.n_train.max()).sum())
        self.epoch, self.cursor = 0, 0  # the puzzle the next batch starts with
        self._plans: dict[int, _EpochPlan] = {}

    @property
    def batches_per_epoch(self) -> float:
        """Training examples of one epoch over the global batch, as the reference counts its steps."""
        return self.examples_per_epoch / self.global_batch_size

    @property
    def repeats_within_batch(self) -> bool:
        """The set is smaller than one global batch: a batch holds examples of several epochs."""
        return self.examples_per_epoch < self.global_batch_size

    def plan(self, epoch: int) -> _EpochPlan:
        if epoch not in self._plans:
            ds = self.ds
            rng = np.random.default_rng([self.seed, epoch])
            order = rng.permutation(self.groups)
            picks = ds.version_start[order] + rng.integers(0, ds.n_versions[order])
            sizes = ds.n_train[order]
            owner = np.repeat(np.arange(order.size), sizes)
            # A random permutation of each puzzle's examples, vectorised: sort by (puzzle, random key).
            perm = np.lexsort((rng.random(owner.size), owner))
            start = _csr(sizes)
            slots = perm - start[owner]
            if self.max_examples is not None:  # the first K of each puzzle's permutation
                slots = slots[np.arange(owner.size) - start[owner] < self.max_examples]
                start = _csr(np.minimum(sizes, self.max_examples))
            self._plans = {e: p for e, p in self._plans.items() if e >= epoch - 1}  # keep the previous one
            self._plans[epoch] = _EpochPlan(picks, order, start, slots)
        return self._plans[epoch]

    def _next_global_batch(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(versions, examples, slots) of the next global batch; advances the position."""
        parts, filled = [], 0
        while filled < self.global_batch_size:
            plan = self.plan(self.epoch)
            lo, hi = plan.start[self.cursor], plan.start[self.cursor + 1]
            take = min(int(hi - lo), self.global_batch_size - filled)
            slots = plan.slots[lo : lo + take]
            parts.append((np.full(take, plan.version[self.cursor]), self.ds.train_ex_first[plan.task[self.cursor]] + slots,
                          slots))
            filled += take
            self.cursor += 1
            if self.cursor == plan.version.size:
                self.epoch, self.cursor = self.epoch + 1, 0
        return tuple(np.concatenate(x) for x in zip(*parts, strict=True))

    def __iter__(self) -> Iterator[Batch]:
        """Endless stream from the current position; `state_dict()` after a batch resumes after it."""
        while True:
            versions, examples, slots = self._next_global_batch()
            lo = self.rank * self.local_batch_size
            hi = lo + self.local_batch_size
            yield self.ds.render_batch(versions[lo:hi], examples[lo:hi], slots[lo:hi], pad_to=self.local_batch_size)

    def state_dict(self) -> dict[str, int]:
        return {"seed": self.seed, "epoch": self.epoch, "cursor": self.cursor}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state["seed"] != self.seed:
            raise DataError(f"sampler state was saved with seed {state['seed']}, not {self.seed}")
        self.epoch = int(state["epoch"])
        # Before 2026-12 a position was (epoch, batch) in epochs packed on their own: the same
        # batches up to the epoch's end, so batch b starts where b batches of a fresh epoch end.
        self.cursor = int(state["cursor"]) if "cursor" in state else self._cursor_after(int(state["batch"]))

    def _cursor_after(self, batches: int) -> int:
        plan, cursor, filled = self.plan(self.epoch), 0, 0
        while batches:
            filled += min(int(plan.start[cursor + 1] - plan.start[cursor]), self.global_batch_size - filled)
            cursor += 1
            if filled == self.global_batch_size:
                batches, filled = batches - 1, 0
        return cursor
