"""One run's configuration: YAML preset + `--set key=value` overrides, validated by pydantic.

A run config names its dataset, model, objective (DIS or TRM-ACT, chosen by `objective.method`),
optimiser, loop budget, runtime (device, precision, workers) and tracking. The model's
`seq_len` and `num_puzzle_identifiers` are filled from the dataset when the run starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from arc_data.errors import DiscoError

from .device import DevicePreference
from .model import ModelConfig
from .objectives import ACTConfig, DISConfig
from .optim import OptimConfig


class DataConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="dataset directory written by `disco data build`")
    eval_versions: int | None = Field(None, ge=1, description="augmented versions voted per test pair at "
                                      "evaluation (None = all; the reference uses all 1000)")
    validation_fraction: float = Field(0.0, ge=0, lt=1, description="share of scored puzzles held out as the "
                                       "validation split (model selection); the rest is reported as test")
    allow_fingerprint_mismatch: bool = Field(False, description="resume/evaluate a checkpoint on data other than "
                                             "the data it was trained on")


class LoopConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    unit: Literal["batches", "epochs"] = Field("batches", description="unit of the budget and the intervals; an "
                                               "epoch is one random version of every puzzle (the reference)")
    budget: float = Field(gt=0, description="training length in `unit`")
    global_batch_size: int = Field(768, ge=1, description="rows per step over all workers")
    eval_interval: float = Field(gt=0, description="evaluate (and checkpoint) every this many `unit`")
    log_interval: int = Field(10, ge=1, description="log averaged training metrics every this many batches")
    eval_batch_size: int | None = Field(None, ge=1, description="global rows per evaluation batch (None = training size)")
    eval_steps: int | None = Field(None, ge=1, description="supervision steps at evaluation (None = as trained)")
    keep_checkpoints: int = Field(2, ge=1, description="best checkpoints kept by `select_metric` (the latest is "
                                  "always kept too)")
    select_metric: str = Field("val_pass@2", description="evaluation metric ranking checkpoints (higher is better)")
    time_limit_minutes: float | None = Field(None, gt=0, description="stop (with a final evaluation) after this "
                                             "much training wall time")
    seed: int = Field(0, ge=0, description="seed of weights, sampler and objective noise")


class RuntimeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    device: DevicePreference = Field("auto", description="auto = CUDA when the worker has a GPU")
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="auto = bf16 on CUDA, fp32 on CPU")
    compile: bool | None = Field(None, description="torch.compile the model; None = on CUDA only")
    workers: int = Field(1, ge=1, description="Ray Train workers (DDP ranks)")
    cpus_per_worker: float = Field(1, gt=0, description="CPUs reserved per worker (also its torch threads)")
    gpus_per_worker: float = Field(0, ge=0, description="GPUs per worker (> 0 selects NCCL and CUDA)")
    max_failures: int = Field(2, ge=0, description="worker-group restarts from the last checkpoint before failing")


class TrackingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    wandb: Literal["off", "offline", "online"] = Field("offline", description="W&B mode; online needs "
                                                      "WANDB_API_KEY in the environment")
    project: str = Field("disco", description="W&B project")
    entity: str | None = Field(None, description="W&B entity (team)")

    @field_validator("wandb", mode="before")
    @classmethod
    def _yaml_off(cls, v):
        # YAML 1.1 reads an unquoted `off` as False (in files and in --set alike).
        return "off" if v is False else v


# Evaluation metrics a checkpoint can be ranked by (all "higher is better").
PASS_KS = (1, 2, 5, 10, 100, 1000)
SELECT_METRICS = ({f"{split}pass@{k}" for split in ("", "val_") for k in PASS_KS}
                  | {f"{split}_{m}" for split in ("test", "val", "train") for m in ("accuracy", "exact_accuracy")})

Objective = Annotated[DISConfig | ACTConfig, Field(discriminator="method")]


class RunSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    objective: Objective = Field(default_factory=DISConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    train: LoopConfig
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    @model_validator(mode="after")
    def _consistent(self) -> RunSpec:
        if self.objective.method == "dis" and not self.model.timestep_embedding:
            raise ValueError("DIS needs model.timestep_embedding: true (each step is told its index)")
        if self.train.global_batch_size % self.runtime.workers:
            raise ValueError(f"train.global_batch_size {self.train.global_batch_size} must be a multiple of "
                             f"runtime.workers {self.runtime.workers}")
        if self.train.select_metric not in SELECT_METRICS:
            raise ValueError(f"train.select_metric {self.train.select_metric!r} is not one of "
                             f"{', '.join(sorted(SELECT_METRICS))}")
        if self.train.eval_interval > self.train.budget:
            raise ValueError(f"train.eval_interval {self.train.eval_interval} exceeds train.budget {self.train.budget}")
        return self

    @property
    def method(self) -> str:
        return self.objective.method


def parse_overrides(pairs: list[str]) -> dict:
    """["a.b=1", "c=[x, y]"] -> nested dict; values parsed as YAML (numbers, lists, null)."""
    out: dict = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise DiscoError(f"--set {pair!r}: expected KEY=VALUE, e.g. optim.lr=3e-4")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        if isinstance(value, str):  # YAML 1.1 reads 3e-4 as a string
            try:
                value = float(value)
            except ValueError:
                pass
        node = out
        *parents, leaf = key.strip().split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise DiscoError(f"--set {pair!r}: {p} is set twice")
        node[leaf] = value
    return out


def merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for k, v in update.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


PRESETS = Path(__file__).resolve().parents[1] / "configs"


def read_yaml_mapping(path: Path, what: str) -> dict:
    """A YAML file whose top level is a mapping; one-line errors naming the file."""
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise DiscoError(f"{what} {path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(loaded, dict):
        raise DiscoError(f"{what} {path}: expected a mapping at the top level")
    return loaded


def load_spec(path: str | Path | None, overrides: list[str] | None = None, base: dict | None = None) -> RunSpec:
    """Read a YAML preset (or start from `base`), apply overrides, validate."""
    raw: dict = dict(base or {})
    if path is not None:
        path = Path(path)
        if not path.is_file() and (PRESETS / f"{path}.yaml").is_file():
            path = PRESETS / f"{path}.yaml"  # a shipped preset by name, e.g. dis_compact (any working directory)
        if not path.is_file():
            raise DiscoError(f"config {path} not found (shipped presets: "
                             f"{', '.join(sorted(p.stem for p in PRESETS.glob('*.yaml')))})")
        raw = merge(raw, read_yaml_mapping(path, "config"))
    return RunSpec.model_validate(merge(raw, parse_overrides(overrides or [])))
