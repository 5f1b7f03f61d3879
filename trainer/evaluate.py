"""ARC evaluation (docs/reference.md §7): crop, invert each version's augmentation, vote, pass@k, submission.

Each test row's prediction is cropped by its EOS frame, mapped back through its version's inverse
transform and pooled with the other versions' predictions of the same test pair. Candidates rank
by votes, then by mean confidence (sigmoid(q_halt) for TRM; mean top probability for DIS, whose
Q head is never trained), then by first appearance. A pair counts as solved at k if the true output
is among the top k; a puzzle's score is the fraction of its test pairs solved, and pass@k is the
mean over all scored puzzles (pairs without predictions count as wrong). Unlike the reference,
votes are reset for every evaluation, so a score belongs to one checkpoint.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from arc_data.dataset import TEST, ArcDataset
from arc_data.fsio import atomic_write_json
from arc_data.grids import crop

from .config import PASS_KS
from .device import is_distributed, rank_and_world
from .objectives import Objective, TorchBatch, token_metrics


@dataclass
class EvalResult:
    metrics: dict[str, float]
    submission: dict[str, list[dict[str, list[list[int]]]]]
    puzzles: list[dict] = field(default_factory=list)

    def write(self, out: str | Path) -> None:
        out = Path(out)
        atomic_write_json(out / "metrics.json", self.metrics)
        atomic_write_json(out / "submission.json", self.submission)
        atomic_write_json(out / "puzzles.json", self.puzzles)


class ArcEvaluator:
    def __init__(self, ds: ArcDataset):
        self.ds = ds
        self.records: list[tuple[int, tuple[int, int], bytes, float]] = []

    def update(self, example_index: np.ndarray, identifiers: np.ndarray, preds: np.ndarray,
               confidence: np.ndarray) -> None:
        """Add one batch of predictions (token canvases [B, L]); padding rows (id 0) are skipped."""
        for row in np.flatnonzero(identifiers > 0):
            grid = crop(preds[row])
            if grid.size == 0:  # no grid at the top-left: not a candidate
                continue
            original = self.ds.unaugment(int(identifiers[row]), grid)
            self.records.append((int(example_index[row]), original.shape, original.tobytes(), float(confidence[row])))

    def gather(self) -> list | None:
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

    def score(self, records: list, ks: tuple[int, ...] = PASS_KS, extra: dict | None = None,
              tasks: np.ndarray | None = None) -> EvalResult:
        """Score gathered records on the scored puzzles in `tasks` (task indices; None = all)."""
        ds = self.ds
        votes: dict[int, dict[tuple, list]] = {}
        for order, (ex, shape, data, conf) in enumerate(records):
            entry = votes.setdefault(ex, {}).setdefault((shape, data), [0, 0.0, order])
            entry[0] += 1
            entry[1] += conf
        solved = {k: [] for k in ks}
        submission, puzzles = {}, []
        scored = np.flatnonzero(ds.n_test)
        for t in scored if tasks is None else np.intersect1d(scored, tasks):
            pairs = sorted(ds.examples_of(t, TEST), key=lambda e: ds.ex_pair[e])
            attempts, per_pair = [], {k: [] for k in ks}
            for ex in pairs:
                cands = sorted(votes.get(int(ex), {}).items(), key=lambda kv: (-kv[1][0], -kv[1][1] / kv[1][0], kv[1][2]))
                truth = ds.grid(int(ex), "output")
                key = (truth.shape, truth.tobytes())
                rank = next((i for i, (c, _) in enumerate(cands) if c == key), None)
                for k in ks:
                    per_pair[k].append(rank is not None and rank < k)
                grids = [np.frombuffer(data, np.uint8).reshape(shape).tolist() for (shape, data), _ in cands[:2]]
                grids = (grids + grids[:1] * 2)[:2] if grids else [[[0]], [[0]]]
                attempts.append({"attempt_1": grids[0], "attempt_2": grids[1]})
                puzzles.append({"task_id": ds.task_ids[t], "test_pair": int(ds.ex_pair[ex]),
                                "candidates": len(cands), "votes": [v[0] for _, v in cands[:5]],
                                "rank_of_truth": rank, "pass@1": rank == 0, "pass@2": rank is not None and rank < 2})
            submission[ds.task_ids[t]] = attempts
            for k in ks:
                solved[k].append(float(np.mean(per_pair[k])))
        n = len(solved[ks[0]])
        metrics = {f"pass@{k}": (float(np.mean(v)) if v else 0.0) for k, v in solved.items()}
        metrics |= {"puzzles": n, "test_pairs": len(puzzles), "predictions": len(records)}
        return EvalResult(metrics | (extra or {}), submission, puzzles)


def validation_tasks(ds: ArcDataset, fraction: float) -> np.ndarray:
    """A fixed share of the scored puzzles, chosen by a hash of the task id (stable across builds)."""
    scored = np.flatnonzero(ds.n_test)
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
    evaluator, sums = ArcEvaluator(ds), _SplitSums(("test", "val") if held_out else ("test",))
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
        evaluator.update(batch.example_index, batch.puzzle_identifiers, pred.preds.cpu().numpy(),
                         pred.confidence.float().cpu().numpy())
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
