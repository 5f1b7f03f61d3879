"""One run's configuration: YAML preset + `--set key=value` overrides, validated by pydantic.

A run config names its dataset, model, objective (DIS or TRM-ACT, chosen by `objective.method`),
optimiser, loop budget, runtime (device, precision, workers) and tracking. The model's
`seq_len` and `num_puzzle_identifiers` are filled from the dataset when the run starts.
"""

from __future__ import annotations

import difflib
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from arc_data.errors import DiscoError
from arc_data.manifest import BuildConfig

from .device import DevicePreference, resource_conflict
from .evaluate import PASS_KS, ScoringConfig
from .model import ModelConfig
from .objectives import ACTConfig, DISConfig
from .optim import OptimConfig


class DataConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str | None = Field(None, description="dataset directory written by `disco data build`; overrides recipe")
    recipe: BuildConfig | None = Field(None, description="build settings of `disco data build` (sources, "
                                       "augmentations, canvas, seed, filters): the dataset is built where it is "
                                       "needed, once, into a cache keyed by its inputs (see cache)")
    cache: str | None = Field(None, description="where recipe builds are kept (default: $DISCO_DATA_CACHE, else "
                              ".datasets in the run storage when it is a path, else ~/.cache/disco/datasets)")
    eval_versions: int | None = Field(None, ge=1, description="augmented versions voted per test pair at "
                                      "evaluation (None = all; the reference uses all 1000)")
    validation_fraction: float = Field(0.0, ge=0, lt=1, description="share of scored puzzles held out as the "
                                       "validation split (model selection); the rest is reported as test")
    allow_fingerprint_mismatch: bool = Field(False, description="resume/evaluate a checkpoint on data other than "
                                             "the data it was trained on")
    max_examples_per_puzzle: int | None = Field(
        None, ge=1, description="train on at most K random examples of each puzzle per epoch (a new draw every "
        "epoch); None = all of them, as the reference (a puzzle that overflows a global batch is truncated there: "
        "set this for generated sets such as re-arc)")

    @model_validator(mode="after")
    def _one_source(self) -> DataConfig:
        if self.path is None and self.recipe is None:
            raise ValueError("data needs a path (a built dataset) or a recipe (how to build one)")
        if self.path is not None and self.recipe is not None:
            self.recipe = None  # `--set data.path=...` on a preset that has a recipe: the path wins
        return self

    @property
    def label(self) -> str:
        """How the data is named in messages and reports."""
        if self.path is not None:
            return self.path
        r = self.recipe
        return (f"recipe {'+'.join(r.sources)} x{r.augmentations} canvas {r.canvas}" + (f" tasks {r.tasks}" if r.tasks
                else "") + (f" seed {r.seed}" if r.seed != 42 else ""))


class DatasetRef(BaseModel):
    """The dataset a run or checkpoint was trained on."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="absolute dataset directory")
    fingerprint: str = Field(description="the dataset's content fingerprint (manifest.json)")


class LoopConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    unit: Literal["batches", "epochs", "apps", "flops"] = Field(
        "batches", description="unit of the budget and the intervals: batches; epochs (one random version of every "
        "puzzle, the reference); apps (block-stack applications to training rows: the same compute for DIS and "
        "TRM-ACT on any hardware); flops (the training FLOPs those imply, from the model's shape)")
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


class InitConfig(BaseModel):
    """Start from a trained checkpoint's weights instead of random ones (`disco finetune`): the
    network comes from the checkpoint, the puzzle table is new (zeros, as a fresh run: every puzzle
    starts at the blank embedding) and sized for this run's data."""

    model_config = ConfigDict(extra="forbid")

    checkpoint: str = Field(description="checkpoint location: an absolute directory or a storage URI")
    train: Literal["embeddings", "all"] = Field(
        "all", description="what trains: only the new puzzle embeddings (the network stays frozen), or everything")
    eval_at_start: bool = Field(True, description="evaluate once before the first batch (batch 0: the "
                                "checkpoint's network with blank embeddings), for comparison")


class RuntimeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    device: DevicePreference = Field("auto", description="auto = CUDA when the worker has a GPU")
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="auto = bf16 on CUDA, fp32 on CPU")
    compile: bool | None = Field(None, description="torch.compile the model; None = on CUDA only")
    workers: Annotated[int, Field(ge=1)] | tuple[Annotated[int, Field(ge=1)], Annotated[int, Field(ge=1)]] = Field(
        1, description="Ray Train workers (DDP ranks); [min, max] = elastic: the run goes on with as many as the "
        "cluster holds (at least min) and grows back to max when nodes return (docs/cluster.md)")
    resize_check_s: float = Field(60, gt=0, description="elastic runs: how often a healthy run checks whether more "
                                  "workers fit (growing restarts the workers from the latest checkpoint)")
    cpus_per_worker: float = Field(1, gt=0, description="CPUs reserved per worker (also its torch threads)")
    gpus_per_worker: float = Field(0, ge=0, description="GPUs per worker (> 0 selects NCCL and CUDA)")
    max_failures: int = Field(2, ge=0, description="worker-group restarts from the last checkpoint before failing")
    resource_timeout_minutes: float = Field(10, gt=0, description="fail, in one line, when the workers cannot be "
                                            "placed on the cluster within this time (instead of waiting forever)")
    checkpoint_upload: Literal["auto", "sync", "async"] = Field(
        "auto", description="how ray.train.report moves a checkpoint to storage: sync (training waits for the "
        "copy), async (a background upload, one at a time; training goes on); auto = async for object storage")

    @property
    def world_sizes(self) -> range:
        """Every number of workers the run may train on."""
        lo, hi = (self.workers, self.workers) if isinstance(self.workers, int) else self.workers
        return range(lo, hi + 1)

    @property
    def max_workers(self) -> int:
        return self.world_sizes[-1]

    @model_validator(mode="after")
    def _device_matches_resources(self) -> RuntimeConfig:
        if isinstance(self.workers, tuple) and self.workers[0] > self.workers[1]:
            raise ValueError(f"runtime.workers {list(self.workers)}: min exceeds max")
        if why := resource_conflict(self.device, self.gpus_per_worker):
            raise ValueError(why)
        return self


class TrackingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    wandb: Literal["off", "offline", "online"] = Field("offline", description="W&B mode; online needs "
                                                      "WANDB_API_KEY in the environment")
    project: str = Field("disco", description="W&B project")
    entity: str | None = Field(None, description="W&B entity (team)")
    tensorboard: bool = Field(False, description="also write TensorBoard event files to <run>/tensorboard/ "
                              "(`tensorboard --logdir <storage>`)")

    @field_validator("wandb", mode="before")
    @classmethod
    def _yaml_off(cls, v):
        # YAML 1.1 reads an unquoted `off` as False (in files and in --set alike).
        return "off" if v is False else v


# Evaluation metrics a checkpoint can be ranked by (all "higher is better").
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
    scoring: ScoringConfig = Field(default_factory=ScoringConfig)
    init: InitConfig | None = Field(None, description="start from a trained checkpoint (test-time fine-tuning)")

    @model_validator(mode="after")
    def _consistent(self) -> RunSpec:
        for key, value in self.objective.model_settings.items():
            # DIS tells each step its index; TRM without a step table may still carry one (unused).
            if value and getattr(self.model, key) != value:
                raise ValueError(f"objective.method={self.objective.method} needs model.{key}: {str(value).lower()}")
        # Ranks slice one global order into equal parts, so what is learned never depends on how many there are.
        if bad := [n for n in self.runtime.world_sizes if self.train.global_batch_size % n]:
            raise ValueError(f"train.global_batch_size {self.train.global_batch_size} must be a multiple of "
                             + (f"runtime.workers {self.runtime.workers}" if isinstance(self.runtime.workers, int)
                                else f"every worker count in runtime.workers {list(self.runtime.workers)} "
                                f"(not {', '.join(map(str, bad))})"))
        if self.train.select_metric not in SELECT_METRICS:
            raise ValueError(f"train.select_metric {self.train.select_metric!r} is not one of "
                             f"{', '.join(sorted(SELECT_METRICS))}")
        if self.train.eval_interval > self.train.budget:
            raise ValueError(f"train.eval_interval {self.train.eval_interval} exceeds train.budget {self.train.budget}")
        return self

    @property
    def method(self) -> str:
        return self.objective.method


def parse_assignments(pairs: list[str]) -> dict[str, Any]:
    """["a.b=1", "c=[x, y]"] -> {"a.b": 1, "c": ["x", "y"]}; values parsed as YAML (numbers, lists, null)."""
    out: dict[str, Any] = {}
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
        out[key.strip()] = value
    return out


def nest(flat: dict[str, Any]) -> dict:
    """{"a.b": 1} -> {"a": {"b": 1}}."""
    out: dict = {}
    for key, value in flat.items():
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise DiscoError(f"--set {key}=…: {p} is set twice")
        node[leaf] = value
    return out


def parse_overrides(pairs: list[str]) -> dict:
    """["a.b=1", "c=[x, y]"] -> nested dict; values parsed as YAML (numbers, lists, null)."""
    return nest(parse_assignments(pairs))


def merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for k, v in update.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


PRESETS = Path(__file__).resolve().parents[1] / "configs"
PRESET_KINDS = {"run": (PRESETS, "config"), "sweep": (PRESETS / "sweeps", "search space")}


def preset_path(ref: str | Path, kind: Literal["run", "sweep"] = "run") -> Path:
    """A config file: `ref` itself when it exists, else the shipped preset of that name
    (e.g. dis_cpu_tiny, or cpu_tiny for a sweep space) from any working directory."""
    folder, what = PRESET_KINDS[kind]
    path = Path(ref).expanduser()
    if path.is_file():
        return path
    shipped = folder / f"{path.name.removesuffix('.yaml')}.yaml"
    if str(ref) == path.name and shipped.is_file():  # a bare name: the shipped preset
        return shipped
    close = difflib.get_close_matches(path.name.removesuffix(".yaml"), presets(kind), n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    raise DiscoError(f"{what} {ref} not found ({hint}shipped: {', '.join(presets(kind))})")


def presets(kind: Literal["run", "sweep"] = "run") -> list[str]:
    """Names of the shipped presets of a kind."""
    return sorted(p.stem for p in PRESET_KINDS[kind][0].glob("*.yaml"))


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
        path = preset_path(path, "run")
        raw = merge(raw, read_yaml_mapping(path, "config"))
    return RunSpec.model_validate(merge(raw, parse_overrides(overrides or [])))


def derive(spec: RunSpec, overrides: list[str] | dict) -> RunSpec:
    """`spec` with overrides (["train.seed=1"] or a nested dict), validated like the command line:
    a derived config (a sweep trial, a comparison seed, a budget) fails here, naming the field."""
    update = parse_overrides(overrides) if isinstance(overrides, list) else overrides
    return RunSpec.model_validate(merge(spec.model_dump(mode="json"), update))


def absolute_data(spec: RunSpec) -> RunSpec:
    """Workers chdir into Ray's session directory: every data path they see must be absolute."""
    def absolute(p: str) -> str:
        return str(Path(p).expanduser().resolve())

    data = spec.data
    if data.path is not None:
        return derive(spec, {"data": {"path": absolute(data.path)}})
    sources = [s if s in ("arc1", "arc2") else absolute(s) for s in data.recipe.sources]
    return derive(spec, {"data": {"recipe": {"sources": sources}} | ({"cache": absolute(data.cache)} if data.cache
                                                                      else {})})


def suggest_key(loc: tuple) -> str | None:
    """For an unknown key at `loc` in a run config, the closest real key ("model.hidden_size")."""
    models: list[type[BaseModel]] = [RunSpec]
    path = []
    for part in loc[:-1]:
        nested = []
        for m in models:
            field = m.model_fields.get(str(part))
            if field is None:
                continue
            for t in (field.annotation, *typing.get_args(field.annotation)):
                for a in (t, *typing.get_args(t)):  # Annotated[A | B, ...] -> A, B
                    if isinstance(a, type) and issubclass(a, BaseModel):
                        nested.append(a)
        if nested:
            models, path = nested, [*path, str(part)]
        # else: a union's tag (objective.dis.…) names no field; stay on its members
    names = sorted({n for m in models for n in m.model_fields})
    close = difflib.get_close_matches(str(loc[-1]), names, n=1)
    return ".".join([*path, close[0]]) if close else None
