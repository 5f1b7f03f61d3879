"""Checkpoints that load without unpickling code and that count only once complete.

A checkpoint directory holds
  model.safetensors  weights, persistent buffers and the puzzle table (`puzzle_emb.weight`)
  trainer.pt         optimizer state, sampler position, RNG states per rank (torch.save of plain
                     tensors/numbers; read with weights_only=True)
  meta.json          run spec, step, dataset path + fingerprint, metrics, block applications
  COMMIT             sha256 of each file above, written last
A directory without COMMIT, or whose files do not match it, is incomplete or corrupt and is never
loaded. Ray copies the directory into storage; the commit record makes the copy's completeness
checkable wherever it ends up.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from arc_data.errors import DiscoError
from arc_data.fsio import atomic_output

FORMAT = 1
FILES = ("model.safetensors", "trainer.pt", "meta.json")
REQUIRED = ("model.safetensors", "meta.json")  # enough to evaluate; trainer.pt is needed to resume
COMMIT = "COMMIT"
NAME = re.compile(r"^checkpoint_(\d+)$")


class CheckpointError(DiscoError):
    pass


def dir_name(step: int) -> str:
    return f"checkpoint_{step:09d}"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def write(directory: str | Path, model_state: dict[str, torch.Tensor], trainer_state: dict, meta: dict) -> Path:
    """Write the files, then COMMIT (each file itself written atomically)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model_state.items()}
    with atomic_output(d / "model.safetensors") as tmp:
        save_file(tensors, str(tmp))
    with atomic_output(d / "trainer.pt") as tmp:
        torch.save(trainer_state, tmp)
    with atomic_output(d / "meta.json") as tmp:
        tmp.write_text(json.dumps({"format": FORMAT, **meta}, indent=2, default=str) + "\n")
    commit(d, FILES)
    return d


def commit(d: Path, files) -> None:
    """Record the checksums of `files` in COMMIT, last: from then on the directory counts."""
    with atomic_output(d / COMMIT) as tmp:
        tmp.write_text(json.dumps({f: _sha256(d / f) for f in files}, indent=2) + "\n")


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
    for f, digest in record.items():
        if not (d / f).is_file():
            return f"incomplete ({f} missing)"
        if _sha256(d / f) != digest:
            return f"corrupt ({f} does not match its checksum)"
    return None


@dataclass
class Loaded:
    path: Path
    meta: dict
    model_state: dict[str, torch.Tensor]

    def trainer_state(self) -> dict:
        return torch.load(self.path / "trainer.pt", map_location="cpu", weights_only=True)


def load(directory: str | Path) -> Loaded:
    d = Path(directory).expanduser()
    if why := problem(d):
        raise CheckpointError(f"checkpoint {d}: {why}")
    meta = json.loads((d / "meta.json").read_text())
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {d}: format {meta.get('format')} is not supported (expected {FORMAT})")
    return Loaded(d, meta, load_file(str(d / "model.safetensors")))


def step_of(name: str) -> int | None:
    m = NAME.match(name)
    return int(m.group(1)) if m else None


def newest_valid(run_dir: str | Path, warn=print) -> Path | None:
    """The newest complete checkpoint under a local run directory; broken ones are skipped with a warning."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return None
    candidates = sorted((c for c in run_dir.iterdir() if step_of(c.name) is not None), key=lambda c: step_of(c.name),
                        reverse=True)
    for c in candidates:
        if why := problem(c):
            warn(f"skipping checkpoint {c}: {why}")
            continue
        return c
    return None
