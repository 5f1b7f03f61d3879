"""`disco finetune`: test-time training on puzzles a checkpoint has never seen.

TRM and DIS condition every answer on a learned per-puzzle embedding, so a new puzzle is useless to
a trained model until it has one (with the blank embedding, accuracy is near zero). Fine-tuning
gives it one the way the model got its own: train on the new puzzles' demonstration pairs
(augmented as the build augments them), then vote over the augmented versions of each test input.
The run is an ordinary run (`disco train` machinery: Ray Train, checkpoints, resume, tracking)
whose network starts from the checkpoint (`RunSpec.init`) and whose puzzle table is new.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from arc_data.dataset import ArcDataset
from arc_data.errors import DiscoError

from . import checkpoint as ckpt
from .config import RunSpec, load_spec
from .evaluate import EvalResult
from .runs import Run, local_copy

# The fine-tuning run's own defaults; everything else comes from the checkpoint's run.
SELECT_ON = "train_exact_accuracy"  # the demonstrations: the only answers a test set has


def finetune_spec(location: str, data: str, budget: float | None, unit: Literal["batches", "epochs"] = "epochs",
                  minutes: float | None = None, trainable: Literal["embeddings", "all"] = "all",
                  sets: list[str] | None = None) -> RunSpec:
    """The run config of fine-tuning the checkpoint at `location` on the dataset `data`: the
    checkpoint's own config with this data, a budget (or a training-time limit, or both), one
    evaluation before the first batch and one at the end, selection on the demonstrations."""
    if budget is None and minutes is None:
        raise DiscoError("give --budget (in --unit) or --minutes (a training-time limit), or both")
    with local_copy(location) as d:
        if why := ckpt.problem(d):
            raise DiscoError(f"checkpoint {location}: {why}")
        meta = ckpt.read_meta((d / ckpt.META).read_text(), location)
    ds = ArcDataset(data)  # fail here, before Ray starts, when the data is missing
    if ds.seq_len != meta.model.seq_len:
        raise DiscoError(f"dataset {ds.root} has a {ds.canvas}x{ds.canvas} canvas; the checkpoint was trained on "
                         f"{meta.model.seq_len} tokens ({round(meta.model.seq_len ** 0.5)}x{round(meta.model.seq_len ** 0.5)}): "
                         "rebuild the data with the same --canvas")
    if not ds.n_train.any():
        raise DiscoError(f"dataset {ds.root} has no demonstration pairs to fine-tune on")
    budget = budget if budget is not None else 10**9  # the time limit ends the run
    base = meta.spec.model_dump(mode="json")
    base["data"] = {"path": str(ds.root), "eval_versions": meta.spec.data.eval_versions}
    base["train"] |= {"budget": budget, "unit": unit, "eval_interval": budget, "select_metric": SELECT_ON,
                      "time_limit_minutes": minutes}
    base["init"] = {"checkpoint": location, "train": trainable}
    return load_spec(None, sets or [], base=base)


def before_and_after(run: Run) -> tuple[dict, dict]:
    """The evaluation before the first batch (blank embeddings) and the last one."""
    evals = run.metrics("eval")
    first = next((e for e in evals if e.get("batch") == 0), {})
    return first, evals[-1] if evals else {}


def read_result(directory: str | Path) -> EvalResult:
    """An evaluation a checkpoint holds (its eval/ directory) as an EvalResult."""
    import json

    d = Path(directory)
    try:
        return EvalResult(*(json.loads((d / f).read_text()) for f in ("metrics.json", "submission.json", "puzzles.json")))
    except (OSError, ValueError) as e:
        raise DiscoError(f"{d}: no readable evaluation ({e})") from None
