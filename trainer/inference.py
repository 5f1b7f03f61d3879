"""Checkpoints as models: load one (weights only), evaluate it, predict a user's task."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from arc_data.dataset import ArcDataset
from arc_data.errors import DiscoError
from arc_data.grids import PAD, augment, crop, encode, unaugment
from arc_data.sources import Task

from . import checkpoint as ckpt
from .config import RunSpec
from .device import pick_runtime
from .evaluate import (
    EvalOptions,
    EvalResult,
    ScoringConfig,
    evaluate,
    rank_candidates,
    two_attempts,
    validation_tasks,
)
from .losses import IGNORE
from .model import TinyRecursiveModel
from .objectives import Objective, TorchBatch, build_objective
from .puzzle_emb import PuzzleEmbedding


@dataclass
class LoadedModel:
    """A checkpoint made ready to predict: model, puzzle table and objective on one device."""

    path: Path
    meta: ckpt.CheckpointMeta
    model: TinyRecursiveModel
    emb: PuzzleEmbedding
    objective: Objective
    device: torch.device

    @property
    def spec(self) -> RunSpec:
        return self.meta.spec

    @property
    def canvas(self) -> int:
        return int(round(self.model.cfg.seq_len ** 0.5))


def load(path: str | Path, device: str = "auto") -> LoadedModel:
    """Load a checkpoint's weights (safetensors; nothing unpickled) for evaluation or prediction."""
    c = ckpt.read(path)
    cfg = c.meta.model
    rt = pick_runtime(device, c.meta.spec.runtime.precision if device != "cpu" else "fp32", compile=False)
    model = TinyRecursiveModel(cfg).to(rt.device)
    emb = PuzzleEmbedding(cfg.num_puzzle_identifiers, cfg.puzzle_emb_ndim, rt.device)
    ckpt.ModelState(model, emb).load_state_dict(c.evaluated_state)  # the weight average when the run kept one
    model.eval()
    objective = build_objective(c.meta.spec.objective, cfg, rt.dtype, device=rt.device)
    return LoadedModel(Path(path), c.meta, model, emb, objective, rt.device)


def open_dataset(loaded: LoadedModel, data: str | None, allow_mismatch: bool = False) -> ArcDataset:
    """The data to evaluate on: `data` or the checkpoint's own dataset, fingerprint-checked."""
    path = data or loaded.meta.dataset.path
    recipe = loaded.meta.spec.data.recipe
    if data is None and not Path(path).exists() and recipe is not None:
        # Trained on a recipe elsewhere (another node, or pulled to this machine): build it here, once.
        from arc_data.cache import cached_dataset, default_cache

        path = str(cached_dataset(recipe, default_cache(None)))
    if not Path(path).exists():
        raise DiscoError(f"dataset {path} (recorded in the checkpoint) not found; pass --data DIR")
    ds = ArcDataset(path)
    expected = loaded.meta.dataset.fingerprint
    if ds.fingerprint != expected and not allow_mismatch:
        raise DiscoError(f"dataset {ds.root} (fingerprint {ds.fingerprint[:12]}) is not the one the checkpoint was "
                         f"trained on ({expected[:12]}); puzzle identifiers would not match. Pass "
                         "--allow-fingerprint-mismatch to evaluate anyway")
    if ds.seq_len != loaded.model.cfg.seq_len or ds.num_identifiers != loaded.model.cfg.num_puzzle_identifiers:
        raise DiscoError(f"dataset {ds.root} has canvas {ds.canvas} and {ds.num_identifiers} identifiers; the model "
                         f"expects seq_len {loaded.model.cfg.seq_len} and {loaded.model.cfg.num_puzzle_identifiers}")
    return ds


def evaluate_checkpoint(loaded: LoadedModel, ds: ArcDataset, eval_steps: int | None = None, votes: int | None = None,
                        batch_size: int = 64, scoring: ScoringConfig | None = None) -> EvalResult:
    """Score a checkpoint on `ds`; steps, votes and scoring default to the run's own settings."""
    spec = loaded.spec
    validation = validation_tasks(ds, spec.data.validation_fraction) if spec.data.validation_fraction else None
    options = EvalOptions(batch_size, eval_steps or spec.train.eval_steps, votes or spec.data.eval_versions, validation,
                          scoring or spec.scoring)
    result = evaluate(loaded.model, loaded.emb, loaded.objective, ds, loaded.device, options)
    result.metrics |= {"checkpoint": str(loaded.path), "dataset": str(ds.root), "fingerprint": ds.fingerprint}
    return result


@dataclass
class TaskPrediction:
    test_pair: int
    input: np.ndarray
    steps: list[np.ndarray]  # the grid after every supervision step (DIS intermediate grids)
    target: np.ndarray | None
    halts: list[float] | None = None  # sigmoid(q_halt) after every step (TRM-ACT)
    frames: list[np.ndarray] | None = None  # DIS: one sampled path of training targets, frames 1..N

    @property
    def final(self) -> np.ndarray:
        return self.steps[-1]


def predict_task(loaded: LoadedModel, task: Task, ds: ArcDataset | None, steps: int | None = None) -> tuple[list[TaskPrediction], bool]:
    """Predict every test input of `task`; returns (predictions, whether the task's learned puzzle
    embedding was used). A task the model never trained on gets the blank embedding (id 0)."""
    side = loaded.canvas
    ident, known = 0, False
    if ds is not None and task.task_id in ds.task_ids:
        ident, known = ds.original_identifier(ds.task_index(task.task_id)), True
    for i, pair in enumerate(task.test):
        if max(pair.input.shape) > side:
            raise DiscoError(f"task {task.task_id} test pair {i}: grid {pair.input.shape} exceeds the model's "
                             f"{side}x{side} canvas")
    inputs = np.stack([encode(p.input, canvas_side=side) for p in task.test])
    batch = TorchBatch(torch.from_numpy(inputs).long().to(loaded.device),
                       torch.full(inputs.shape, IGNORE, dtype=torch.long, device=loaded.device),
                       torch.full((len(task.test),), ident, dtype=torch.long, device=loaded.device))
    pred = loaded.objective.predict(loaded.model, loaded.emb, batch, steps)
    step_tokens = [sp.cpu().numpy() for sp in (pred.step_preds or [pred.preds])]
    halts = None if pred.step_halts is None else torch.stack(pred.step_halts, 1).tolist()
    frames = _target_frames(loaded, task, inputs)
    out = []
    for i, pair in enumerate(task.test):
        out.append(TaskPrediction(i, pair.input, [_grid(tokens[i]) for tokens in step_tokens], pair.output,
                                  halts[i] if halts else None,
                                  [_grid(f) for f in frames[i, 1:]] if frames is not None else None))
    return out, known


def vote_task(loaded: LoadedModel, task: Task, ds: ArcDataset | None, steps: int | None = None,
              max_versions: int | None = None, batch_size: int = 64) -> tuple[list[dict], int]:
    """Two voted attempts per test input of `task` (the Kaggle entry), as the evaluator votes:
    each test input is predicted under every augmented version the dataset holds for the task
    (each with its learned embedding), mapped back and pooled. A task the model never trained on
    has only the blank embedding: one unaugmented prediction each. Returns (attempts, versions)."""
    side, spec = loaded.canvas, loaded.spec
    if ds is not None and task.task_id in ds.task_ids:
        t = ds.task_index(task.task_id)
        first = int(ds.version_start[t])
        count = int(ds.n_versions[t]) if max_versions is None else min(max_versions, int(ds.n_versions[t]))
        versions = [(first + i + 1, *ds.version_of(first + i + 1)[1:]) for i in range(count)]
    else:
        versions = [(0, 0, np.arange(10, dtype=np.uint8))]
    rows = [(ident, tid, cmap, i, pair.input) for ident, tid, cmap in versions for i, pair in enumerate(task.test)]
    records = []
    for lo in range(0, len(rows), batch_size):
        chunk = rows[lo:lo + batch_size]
        inputs = np.stack([encode(augment(g, tid, cmap), canvas_side=side) for _, tid, cmap, _, g in chunk])
        batch = TorchBatch(torch.from_numpy(inputs).long().to(loaded.device),
                           torch.full(inputs.shape, IGNORE, dtype=torch.long, device=loaded.device),
                           torch.tensor([r[0] for r in chunk], dtype=torch.long, device=loaded.device))
        pred = loaded.objective.predict(loaded.model, loaded.emb, batch, steps)
        conf = pred.confidence if spec.scoring.confidence == "q_halt" else pred.answer_probability
        for (_, tid, cmap, i, _), tokens, c in zip(chunk, pred.preds.cpu().numpy(), conf.double().cpu().numpy(),
                                                       strict=True):
            grid = crop(tokens)
            if grid.size == 0 and spec.scoring.empty_crops == "skip":
                continue
            original = unaugment(grid, tid, cmap)
            records.append((i, original.shape, original.tobytes(), float(c)))
    ranked = rank_candidates(records)
    return [two_attempts(ranked.get(i, [])) for i in range(len(task.test))], len(versions)


def _grid(tokens: np.ndarray) -> np.ndarray:
    g = crop(tokens)
    return g if g.size else np.zeros((1, 1), np.uint8)  # an empty prediction drawn as one black cell


def _target_frames(loaded: LoadedModel, task: Task, inputs: np.ndarray) -> np.ndarray | None:
    """DIS's training targets for these test pairs (when every output is known and fits), else None."""
    frames_of = getattr(loaded.objective, "target_frames", None)
    outputs = [p.output for p in task.test]
    if frames_of is None or any(o is None or max(o.shape) > loaded.canvas for o in outputs):
        return None
    labels = torch.from_numpy(np.stack([encode(o, canvas_side=loaded.canvas) for o in outputs])).long()
    labels[labels == PAD] = IGNORE
    frames = frames_of(torch.from_numpy(inputs).long(), labels)
    return frames.masked_fill(frames == IGNORE, PAD).numpy()
