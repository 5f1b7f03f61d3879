"""ARC evaluation (docs/reference.md §7): crop, invert each version's augmentation, vote, pass@k, submission.

By default a prediction set is scored exactly as the reference evaluator scores it: each test row's
prediction is cropped by its EOS frame (an empty crop is a candidate like any other), mapped back
through its version's inverse transform and pooled with every prediction of the same puzzle for the
same test input. Candidates rank by votes, then by mean confidence (sigmoid(q_halt) in float64;
DIS never trains its Q head, so its confidence is constant and ties go to the first prediction
seen). A pair counts as solved at k if the true output is among the top k; a puzzle's score is the
fraction of its test pairs solved, and pass@k is the mean over all scored puzzles (pairs without
predictions count as wrong). Test inputs without a solution (an ARC Prize test set) get attempts in
submission.json like every other and are left out of pass@k (`unlabelled_pairs` counts them). Every deviation that can change a score is a named `ScoringConfig`
option, off by default, and every result names the scoring that produced it (`scoring`).

Two differences from the reference code stay, because they are fixes, not scores: votes are reset
for every evaluation (the reference keeps pooling them across checkpoints, so its later scores mix
earlier checkpoints' votes), and a test pair with no candidate keeps its slot in submission.json
with `[[0]]` attempts (the reference leaves it out, which shifts the attempts of later test inputs
of that puzzle in a Kaggle submission). Neither changes a pass@k of one evaluation.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.distributed as dist
from pydantic import BaseModel, ConfigDict, Field

from arc_data.dataset import TEST, ArcDataset
from arc_data.fsio import atomic_write_json
from arc_data.grids import crop

from .device import is_distributed, rank_and_world
from .objectives import Objective, TorchBatch, token_metrics

PASS_KS = (1, 2, 5, 10, 100, 1000)


class ScoringConfig(BaseModel):
    """How predictions become pass@k. The defaults are the reference evaluator's rules."""

    model_config = ConfigDict(extra="forbid")

    empty_crops: Literal["vote", "skip"] = Field(
        "vote", description="vote: a prediction with no grid at the top-left is a candidate that takes a vote and "
                            "an attempt slot (reference); skip: it is not a candidate")
    confidence: Literal["q_halt", "answer_probability"] = Field(
        "q_halt", description="tie-break between equal votes: sigmoid(q_halt) in float64 (reference) or the mean "
                              "top probability over the predicted answer cells (gives DIS, whose Q head is never "
                              "trained, a real tie-break)")

    @property
    def label(self) -> str:
        """`reference`, or the deviations from it."""
        changed = {k: v for k, v in self.model_dump().items() if v != type(self).model_fields[k].default}
        return "reference" if not changed else "disco(" + ", ".join(f"{k}={v}" for k, v in changed.items()) + ")"


@dataclass
class EvalResult:
    metrics: dict[str, float | int | str]
    submission: dict[str, list[dict[str, list[list[int]]]]]
    puzzles: list[dict] = field(default_factory=list)

    def write(self, out: str | Path) -> None:
        out = Path(out)
        atomic_write_json(out / "metrics.json", self.metrics)
        atomic_write_json(out / "submission.json", self.submission)
        atomic_write_json(out / "puzzles.json", self.puzzles)


Record = tuple[int, tuple[int, int], bytes, float]  # (test example, grid shape, grid bytes, confidence)


class ArcEvaluator:
    def __init__(self, ds: ArcDataset, scoring: ScoringConfig | None = None):
        self.ds, self.scoring = ds, scoring or ScoringConfig()
        self.records: list[Record] = []

    def update(self, example_index: np.ndarray, identifiers: np.ndarray, preds: np.ndarray,
               confidence: np.ndarray) -> None:
        """Add one batch of predictions (token canvases [B, L]); padding rows (id 0) are skipped."""
        for row in np.flatnonzero(identifiers > 0):
            grid = crop(preds[row])
            if grid.size == 0 and self.scoring.empty_crops == "skip":
                continue
            original = self.ds.unaugment(int(identifiers[row]), grid)
            self.records.append((int(example_index[row]), original.shape, original.tobytes(), float(confidence[row])))

    def gather(self) -> list[Record] | None:
        """Every rank's records on rank 0 (a collective); None on the other ranks."""
        if not is_distributed():
            return self.records
        parts = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
        dist.gather_object(self.records, parts, dst=0)
        return [r for p in parts for r in p] if parts is not None else None

    def result(self, ks: tuple[int, ...] = PASS_KS, extra: dict | None = None,
               tasks: np.ndarray | None = None) -> EvalResult | None:
        """Votes and scores; None on ranks other than 0 when distributed."""
        records = self.gather()
        return None if records is None else self.score(records, ks, extra, tasks)

    def _input_key(self, example: int) -> tuple:
        """Predictions pool by puzzle and test input (two test pairs with the same input share votes)."""
        grid = self.ds.grid(example, "input")
        return int(self.ds.ex_task[example]), grid.shape, grid.tobytes()

    def _ranked(self, records: list[Record]) -> dict[tuple, list]:
        return rank_candidates((self._input_key(ex), shape, data, conf) for ex, shape, data, conf in records)

    def score(self, records: list[Record], ks: tuple[int, ...] = PASS_KS, extra: dict | None = None,
              tasks: np.ndarray | None = None) -> EvalResult:
        """Score gathered records on the scored puzzles in `tasks` (task indices; None = all)."""
        ds, ranked = self.ds, self._ranked(records)
        solved: dict[int, list[float]] = {k: [] for k in ks}
        submission, puzzles = {}, []
        predicted = np.flatnonzero(ds.n_test)
        for t in predicted if tasks is None else np.intersect1d(predicted, tasks):
            attempts, per_pair = [], {k: [] for k in ks}
            for ex in sorted(ds.examples_of(t, TEST), key=lambda e: ds.ex_pair[e]):
                cands = ranked.get(self._input_key(int(ex)), [])
                entry = {"task_id": ds.task_ids[t], "test_pair": int(ds.ex_pair[ex]), "candidates": len(cands),
                         "votes": [v[0] for _, v in cands[:5]], "labelled": bool(ds.labelled[ex])}
                if ds.labelled[ex]:  # a test input without a solution is predicted, never scored
                    truth = ds.grid(int(ex), "output")
                    rank = next((i for i, (c, _) in enumerate(cands) if c == (truth.shape, truth.tobytes())), None)
                    for k in ks:
                        per_pair[k].append(rank is not None and rank < k)
                    entry |= {"rank_of_truth": rank, "pass@1": rank == 0, "pass@2": rank is not None and rank < 2}
                attempts.append(two_attempts(cands))
                puzzles.append(entry)
            submission[ds.task_ids[t]] = attempts
            if per_pair[ks[0]]:
                for k in ks:
                    solved[k].append(float(np.mean(per_pair[k])))
        metrics: dict = {f"pass@{k}": (float(np.mean(v)) if v else 0.0) for k, v in solved.items()}
        scored_pairs = sum(p["labelled"] for p in puzzles)
        metrics |= {"puzzles": len(solved[ks[0]]), "test_pairs": scored_pairs, "unlabelled_pairs": len(puzzles) - scored_pairs,
                    "predictions": len(records), "scoring": self.scoring.label}
        return EvalResult(metrics | (extra or {}), submission, puzzles)


def rank_candidates(records) -> dict[tuple, list]:
    """(key, grid shape, grid bytes, confidence) records -> per key, its candidate grids ranked by
    votes, then mean confidence, then first appearance: [((shape, bytes), [votes, confidence sum, first])]."""
    votes: dict[tuple, dict[tuple, list]] = {}
    for order, (key, shape, data, conf) in enumerate(records):
        entry = votes.setdefault(key, {}).setdefault((tuple(shape), data), [0, 0.0, order])
        entry[0] += 1
        entry[1] += conf
    return {key: sorted(c.items(), key=lambda kv: (-kv[1][0], -kv[1][1] / kv[1][0], kv[1][2]))
            for key, c in votes.items()}


def two_attempts(ranked: list) -> dict[str, list[list[int]]]:
    """The Kaggle submission entry of one test input: the top two candidates (the first repeated
    when there is one; [[0]] twice when there is none)."""
    grids = [np.frombuffer(data, np.uint8).reshape(shape).tolist() for (shape, data), _ in ranked[:2]]
    grids = (grids + grids[:1] * 2)[:2] if grids else [[[0]], [[0]]]
    return {"attempt_1": grids[0], "attempt_2": grids[1]}


def validation_tasks(ds: ArcDataset, fraction: float) -> np.ndarray:
    """A fixed share of the scored puzzles, chosen by a hash of the task id (stable across builds)."""
    scored = np.flatnonzero(ds.n_scored)
    n = round(fraction * scored.size)
    if fraction > 0 and scored.size > 1:
        n = min(max(n, 1), scored.size - 1)  # both splits non-empty
    order = sorted(scored, key=lambda t: hashlib.sha256(ds.task_ids[t].encode()).hexdigest())
    return np.sort(np.asarray(order[:n], dtype=np.int64))


@dataclass(frozen=True)
class EvalOptions:
    batch_size: int  # global rows per evaluation batch
    steps: int | None = None  # supervision steps (None = as trained)
    max_versions: int | None = None  # augmented versions voted per test pair (None = all)
    validation: np.ndarray | None = None  # task indices scored separately for model selection
    scoring: ScoringConfig = field(default_factory=ScoringConfig)


def evaluate(model, emb, objective: Objective, ds: ArcDataset, device: torch.device,
             options: EvalOptions) -> EvalResult | None:
    """Run the test split through `objective.predict` and score it (result on rank 0 only; in a
    process group every rank takes its slice of the rows).

    With `options.validation` (task indices), those puzzles are scored separately as `val_*`
    metrics (pass@k, token and exact accuracy) for model selection and left out of the reported
    pass@k, `test_*` metrics and submission; without it, `val_*` repeat the test scores and
    `selection_split` says so.
    """
    model.eval()
    rank, world = rank_and_world()
    validation = options.validation
    held_out = validation is not None and validation.size > 0
    evaluator, sums = ArcEvaluator(ds, options.scoring), _SplitSums(("test", "val") if held_out else ("test",))
    applications = 0
    for batch in ds.test_batches(options.batch_size, rank, world, options.max_versions):
        tb = TorchBatch.from_numpy(batch, device)
        pred = objective.predict(model, emb, tb, options.steps)
        applications = pred.applications
        real = batch.puzzle_identifiers > 0
        if held_out:
            in_val = real & np.isin(ds.ex_task[np.maximum(batch.example_index, 0)], validation)
            sums.add("test", pred, tb, real & ~in_val)
            sums.add("val", pred, tb, in_val)
        else:
            sums.add("test", pred, tb, real)
        confidence = pred.confidence if options.scoring.confidence == "q_halt" else pred.answer_probability
        evaluator.update(batch.example_index, batch.puzzle_identifiers, pred.preds.cpu().numpy(),
                         confidence.double().cpu().numpy())
    extra = {"block_apps_per_sample": applications} | sums.means(device)
    if not held_out:
        extra |= {f"val_{k.removeprefix('test_')}": v for k, v in extra.items() if k.startswith("test_")}
    records = evaluator.gather()
    if records is None:
        return None
    test_tasks = np.setdiff1d(np.flatnonzero(ds.n_test), validation) if held_out else None
    result = evaluator.score(records, extra=extra, tasks=test_tasks)
    val = evaluator.score(records, tasks=validation).metrics if held_out else result.metrics
    result.metrics |= {f"val_{k}": val[k] for k in val if k.startswith("pass@") or k == "puzzles"}
    result.metrics["selection_split"] = "validation" if held_out else "test"
    return result


class _SplitSums:
    """Row-weighted token metrics per split (rows, accuracy, exact accuracy, per-step exact accuracy)."""

    def __init__(self, splits: tuple[str, ...]):
        self.sums: dict[tuple[str, str], float] = {}
        self.splits = splits

    def add(self, split: str, pred, batch: TorchBatch, rows: np.ndarray) -> None:
        mask = torch.from_numpy(rows).to(batch.labels.device)
        m = token_metrics(pred.preds, batch.labels, rows=mask)
        n = float(m["count"])
        values = {"rows": n, "accuracy": float(m["accuracy"]) * n, "exact_accuracy": float(m["exact_accuracy"]) * n}
        for s, step_pred in enumerate(pred.step_preds or [], start=1):
            values[f"step{s}_exact_accuracy"] = float(token_metrics(step_pred, batch.labels, rows=mask)["exact_accuracy"]) * n
        for k, v in values.items():
            self.sums[(split, k)] = self.sums.get((split, k), 0.0) + v

    def means(self, device: torch.device) -> dict:
        """Summed over ranks; `<split>_rows` counts, the rest are means over rows."""
        keys = sorted(self.sums)
        totals = torch.tensor([self.sums[k] for k in keys], dtype=torch.float64, device=device)
        if is_distributed():
            dist.all_reduce(totals)
        total = dict(zip(keys, totals.cpu().tolist(), strict=True))
        out = {}
        for sp, k in keys:
            n = max(total.get((sp, "rows"), 0.0), 1.0)
            out[f"{sp}_{k}"] = int(total[(sp, k)]) if k == "rows" else total[(sp, k)] / n
        return out
