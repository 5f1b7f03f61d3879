"""Self-contained checkpoint exports (`disco pull`): weights, configs, metrics and a model card."""

from __future__ import annotations

import os
import posixpath
import shutil
from pathlib import Path

from safetensors.torch import save_file

from arc_data.errors import DiscoError
from arc_data.fsio import atomic_write_json, atomic_write_text
from trainer import checkpoint as ckpt
from trainer.runs import Run
from trainer.storage import Storage

from .leaderboard import leaderboard
from .sweep import RUNS, read_sweep


def pull(ref: str, storage: Storage, out: str | Path, rank: int = 1, force: bool = False) -> Path:
    """Export a sweep's rank-K checkpoint, or a run's best, as a self-contained directory."""
    out = Path(out).expanduser().resolve()
    if out.exists() and not force:
        raise DiscoError(f"{out} already exists (use --force to replace it)")
    run, name = _source(ref, storage, rank)
    with run.local_checkpoint(name) as local:
        if why := ckpt.problem(local):
            raise DiscoError(f"checkpoint {run.checkpoint_location(name)} is {why}; nothing exported")
        return _export(local, run.checkpoint_location(name), out)


def _source(ref: str, storage: Storage, rank: int) -> tuple[Run, str]:
    """(run, checkpoint name) of a sweep's rank-K trial or of a run's best checkpoint."""
    if storage.exists(ref) and read_sweep(storage, ref, missing_ok=True) is not None:
        _, rows = leaderboard(storage, ref)
        if not 1 <= rank <= len(rows):
            raise DiscoError(f"sweep {ref!r} has {len(rows)} ranked trials; --rank {rank} is out of range")
        row = rows[rank - 1]
        return Run(storage.child(ref, RUNS), row["trial"]), posixpath.basename(row["checkpoint"])
    run = Run(storage, ref)
    if run.read() is None:
        raise DiscoError(f"{ref!r} is neither a sweep nor a run in {storage.uri}")
    best = run.best()
    if best is None:
        raise DiscoError(f"run {ref!r} has no complete checkpoint")
    return run, best.name


def _export(src: Path, source: str, out: Path) -> Path:
    """Stage the export next to `out`, then rename it into place: never a half-written directory."""
    contents = ckpt.read(src)
    meta = contents.meta.model_copy(update={"exported_from": source})
    staging = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        save_file(contents.evaluated_state, str(staging / ckpt.MODEL))  # the weights that were evaluated
        atomic_write_text(staging / ckpt.META, meta.model_dump_json(indent=2) + "\n")
        atomic_write_json(staging / "config.json", {"model": meta.model.model_dump(mode="json"),
                                                    "spec": meta.spec.model_dump(mode="json"),
                                                    "dataset": meta.dataset.model_dump(mode="json")})
        atomic_write_json(staging / "metrics.json", meta.metrics)
        atomic_write_text(staging / "MODEL_CARD.md", _card(meta, source))
        if (src / "eval").is_dir():
            shutil.copytree(src / "eval", staging / "eval")
        ckpt.commit(staging, {f: ckpt.digest(staging / f) for f in ckpt.REQUIRED})
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def _card(meta: ckpt.CheckpointMeta, source: str) -> str:
    spec, model, m = meta.spec, meta.model, meta.metrics
    side = int(model.seq_len ** 0.5)
    return f"""# disco checkpoint: {meta.name} @ batch {meta.batch}

- method: {spec.objective.title}
- model: D={model.hidden_size}, {model.layers} layer(s), T={model.cycles}, n={model.latent_steps}, \
{model.supervision_steps} supervision steps, canvas {side}x{side}
- weights: {f'the exponential average of the trained weights (rate {spec.optim.ema_rate}), as evaluated' if spec.optim.ema_rate else 'as trained'}
- trained on dataset `{meta.dataset.path}` (fingerprint `{meta.dataset.fingerprint}`); its puzzle
  embeddings only mean something for that dataset's puzzles
- metrics at this checkpoint: pass@1 {m.get('pass@1', 0):.3f}, pass@2 {m.get('pass@2', 0):.3f} (test split),
  validation pass@2 {m.get('val_pass@2', 0):.3f} (selection split: {m.get('selection_split', 'test')}),
  training puzzles exact {m.get('train_exact_accuracy', 0):.3f}
- exported from `{source}`

Files: `model.safetensors` (weights, buffers, `puzzle_emb.weight`), `config.json` (model config and run
spec), `metrics.json`, `meta.json`, `eval/` (that evaluation's submission and per-puzzle report),
`COMMIT` (checksums).

    disco eval --checkpoint THIS_DIR [--data DATASET]
    disco predict --checkpoint THIS_DIR --task task.json

Plain torch:

    import json, torch
    from safetensors.torch import load_file
    from trainer.model import ModelConfig, TinyRecursiveModel
    cfg = ModelConfig(**json.load(open("config.json"))["model"])
    state = load_file("model.safetensors"); table = state.pop("puzzle_emb.weight", None)
    model = TinyRecursiveModel(cfg); model.load_state_dict(state)
"""
