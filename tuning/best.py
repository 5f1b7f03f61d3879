"""Leaderboards of sweeps and self-contained checkpoint exports (`disco best`, `disco pull`)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from arc_data.errors import DiscoError
from cluster.storage import Storage
from trainer import checkpoint as ckpt
from trainer.runs import RUN_FILE, best_checkpoint, checkpoints, metrics

from .sweep import APPS_METRIC, RUNS, SWEEP_FILE


def leaderboard(storage: Storage, sweep: str) -> tuple[dict, list[dict]]:
    """(sweep record, one row per trial ranked by the sweep metric of its best checkpoint)."""
    record = storage.read_json(sweep, SWEEP_FILE)
    if record is None:
        raise DiscoError(f"no sweep named {sweep!r} in {storage.uri} (see `disco runs list` for plain runs)")
    metric = record["metric"]
    params = list(record["space"]["params"])
    runs = Storage.of(storage.join(sweep, RUNS))
    rows = []
    for name in runs.listdir():
        run = runs.read_json(name, RUN_FILE)
        if run is None:
            continue
        evals = [r for r in metrics(runs, name) if r.get("kind") == "eval"]
        start = next((r for r in metrics(runs, name) if r.get("kind") == "start"), {})
        done = [c for c in checkpoints(runs, name) if c["complete"]]
        if not done:
            continue
        best = max(done, key=lambda c: (c["metrics"].get(metric, float("-inf")), c["batch"]))
        m = best["metrics"]
        spec = run["spec"]
        total = start.get("batches_total")
        last = evals[-1]["batch"] if evals else 0
        state = "complete" if total and last >= total else ("stopped early" if record["status"] != "running" else "running")
        rows.append({
            "trial": name, "method": spec["objective"]["method"],
            "params": {k: _lookup(spec, k) for k in params},
            metric: m.get(metric), "test_pass@2": m.get("pass@2"), "test_pass@1": m.get("pass@1"),
            "train_exact_accuracy": m.get("train_exact_accuracy"), APPS_METRIC: m.get(APPS_METRIC),
            "parameters": start.get("params"), "batches": last, "samples": last * spec["train"]["global_batch_size"],
            "train_time_s": evals[-1].get("train_time_s") if evals else None, "status": state,
            "checkpoint": runs.join(name, best["name"]),
        })
    rows.sort(key=lambda r: (-(r[metric] if r[metric] is not None else float("-inf")), r["trial"]))
    for i, r in enumerate(rows, start=1):
        r["rank"] = i
    if record.get("objective") == "pareto":
        for r in rows:
            r["pareto"] = not any(_dominates(o, r, metric) for o in rows if o is not r)
    return record, rows


def _dominates(a: dict, b: dict, metric: str) -> bool:
    ka, kb = (a[metric], -a[APPS_METRIC]), (b[metric], -b[APPS_METRIC])
    return all(x >= y for x, y in zip(ka, kb, strict=True)) and ka != kb


def _lookup(spec: dict, key: str):
    if key == "method":
        return spec["objective"]["method"]
    node = spec
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def format_table(record: dict, rows: list[dict]) -> str:
    metric = record["metric"]
    head = (f"sweep {record['name']} ({record['status']}): {len(rows)}/{record['trials']} trials with checkpoints; "
            f"ranked by {metric} on the validation split ({record['validation_fraction']:.0%} of scored puzzles); "
            "test_pass@2 is on the other puzzles")
    cols = ["rank", "trial", "params", metric, "test_pass@2", APPS_METRIC, "batches", "status"]
    if record.get("objective") == "pareto":
        cols.append("pareto")
    table = [cols] + [[_fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(cols))]
    lines = [head, ""] + ["  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)) for row in table]
    if rows:
        lines += ["", f"best checkpoint: {rows[0]['checkpoint']}"]
    return "\n".join(lines)


def plot_pareto(record: dict, rows: list[dict], path: str | Path) -> Path:
    """Validation metric against block applications per training sample; the front highlighted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from arc_data.fsio import atomic_output

    metric = record["metric"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for front, style in ((False, dict(c="0.6", marker="o")), (True, dict(c="C3", marker="*", s=120))):
        pts = [r for r in rows if r.get("pareto", False) == front and r[metric] is not None]
        ax.scatter([r[APPS_METRIC] for r in pts], [r[metric] for r in pts], label="Pareto front" if front else "trial",
                   **style)
        for r in pts:
            ax.annotate(r["method"], (r[APPS_METRIC], r[metric]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("block applications per training sample (lower = cheaper)")
    ax.set_ylabel(f"{metric} (validation split)")
    ax.set_title(f"sweep {record['name']}")
    ax.legend()
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return Path(path)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return " ".join(f"{k.split('.')[-1]}={_fmt(x)}" for k, x in v.items())
    return "-" if v is None else str(v)


def pull(ref: str, storage: Storage, out: str | Path, rank: int = 1, force: bool = False) -> Path:
    """Export a sweep's rank-K checkpoint, or a run's best, as a self-contained directory."""
    out = Path(out).expanduser().resolve()
    if out.exists() and not force:
        raise DiscoError(f"{out} already exists (use --force to replace it)")
    if storage.read_json(ref, SWEEP_FILE) is not None:
        _, rows = leaderboard(storage, ref)
        if not 1 <= rank <= len(rows):
            raise DiscoError(f"sweep {ref!r} has {len(rows)} ranked trials; --rank {rank} is out of range")
        source, src_storage = rows[rank - 1]["checkpoint"], storage
    elif storage.read_json(ref, RUN_FILE) is not None:
        run = storage.read_json(ref, RUN_FILE)
        source = best_checkpoint(storage, ref, run["spec"]["train"]["select_metric"])
        if source is None:
            raise DiscoError(f"run {ref!r} has no complete checkpoint")
        src_storage = storage
    else:
        raise DiscoError(f"{ref!r} is neither a sweep nor a run in {storage.uri}")
    with tempfile.TemporaryDirectory(prefix="disco-pull-") as tmp:
        rel = source.removeprefix(src_storage.uri).lstrip("/")
        local = src_storage.download(rel, Path(tmp, "src"))
        if why := ckpt.problem(local):
            raise DiscoError(f"checkpoint {source} is {why}; nothing exported")
        return _export(local, source, out)


def _export(src: Path, source: str, out: Path) -> Path:
    meta = json.loads((src / "meta.json").read_text())
    staging = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        shutil.copy2(src / "model.safetensors", staging / "model.safetensors")
        (staging / "meta.json").write_text(json.dumps(meta | {"exported_from": source}, indent=2) + "\n")
        (staging / "config.json").write_text(json.dumps({"model": meta["model"], "spec": meta["spec"],
                                                         "dataset": meta["dataset"]}, indent=2) + "\n")
        (staging / "metrics.json").write_text(json.dumps(meta["metrics"], indent=2) + "\n")
        (staging / "MODEL_CARD.md").write_text(_card(meta, source))
        if (src / "eval").is_dir():
            shutil.copytree(src / "eval", staging / "eval")
        ckpt.commit(staging, ckpt.REQUIRED)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def _card(meta: dict, source: str) -> str:
    spec, model, m = meta["spec"], meta["model"], meta["metrics"]
    method = spec["objective"]["method"]
    return f"""# disco checkpoint: {meta['name']} @ batch {meta['batch']}

- method: {'DIS (deep improvement supervision)' if method == 'dis' else 'TRM with ACT halting'}
- model: D={model['hidden_size']}, {model['layers']} layer(s), T={model['cycles']}, n={model['latent_steps']}, \
{model['supervision_steps']} supervision steps, canvas {int(model['seq_len'] ** 0.5)}x{int(model['seq_len'] ** 0.5)}
- trained on dataset `{meta['dataset']['path']}` (fingerprint `{meta['dataset']['fingerprint']}`); its puzzle
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
