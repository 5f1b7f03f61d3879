"""Sweep search spaces: a YAML file naming a base preset, what to search and how to judge.

    base: dis_cpu_tiny.yaml                  # a preset path (relative: also looked up in configs/)
    set: {train.budget: 120}                 # fixed overrides of the base for every trial
    metric: val_accuracy                     # a checkpoint metric, higher is better
    validation_fraction: 0.5                 # puzzles held out for selection (not reported as test)
    params:
      objective.schedule: {choice: [linear, cosine, "power(2)"]}
      model.hidden_size: {choice: [64, 128]}
      optim.lr: {loguniform: [3.0e-4, 3.0e-3]}
      method: {choice: [dis, trm]}           # (or objective.method) switches the objective and what
                                             # its network needs (DIS's timestep embedding)
    methods:                                 # each method's own fixed values, applied when drawn
      dis: {model.supervision_steps: 6}
      trm: {model.supervision_steps: 16}

Every key under `params` is a dotted run-config path (or `method`); every trial's config is
validated by the same pydantic model as `disco train`, before the sweep starts for the base.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from arc_data.errors import DiscoError
from trainer.config import (
    SELECT_METRICS,
    RunSpec,
    absolute_data,
    load_spec,
    merge,
    preset_path,
    read_yaml_mapping,
)


class Param(BaseModel):
    """Exactly one of the distributions."""

    model_config = ConfigDict(extra="forbid")

    choice: list[Any] | None = Field(None, min_length=1, description="categorical values")
    uniform: tuple[float, float] | None = Field(None, description="float in [low, high]")
    loguniform: tuple[float, float] | None = Field(None, description="float, log scale, low > 0")
    randint: tuple[int, int] | None = Field(None, description="integer in [low, high]")
    step: int | None = Field(None, ge=1, description="integer step (with randint)")

    @model_validator(mode="after")
    def _one(self) -> Param:
        given = [k for k in ("choice", "uniform", "loguniform", "randint") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of choice, uniform, loguniform, randint")
        for k in ("uniform", "loguniform", "randint"):
            bounds = getattr(self, k)
            if bounds is not None and not bounds[0] < bounds[1]:
                raise ValueError(f"{k} needs low < high")
        if self.loguniform is not None and self.loguniform[0] <= 0:
            raise ValueError("loguniform needs low > 0")
        return self

    def tune_domain(self):
        from ray import tune

        if self.choice is not None:
            return tune.choice(self.choice)
        if self.uniform is not None:
            return tune.uniform(*self.uniform)
        if self.loguniform is not None:
            return tune.loguniform(*self.loguniform)
        lo, hi = self.randint
        return tune.qrandint(lo, hi, self.step) if self.step else tune.randint(lo, hi + 1)


class Scheduler(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["halving", "asha", "fifo"] = Field(
        "halving", description="halving: synchronous successive halving, trials paused at each rung until "
        "all have reported (tuning/halving.py); asha: asynchronous, promotions rechecked as peers report "
        "(tuning/asha.py); fifo: every trial to the end")
    grace_period: int = Field(2, ge=1, description="evaluations every trial gets before it may be stopped (rung 1)")
    reduction_factor: float = Field(2, gt=1, description="the top 1/reduction_factor go on at each rung "
                                    "(rungs at grace_period x reduction_factor^k evaluations)")


class SweepSpace(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base: str = Field(description="run-config preset every trial starts from")
    set: dict[str, Any] = Field(default_factory=dict, description="fixed dotted overrides for every trial")
    params: dict[str, Param] = Field(min_length=1, description="searched dotted config keys")
    methods: dict[Literal["dis", "trm"], dict[str, Any]] = Field(
        default_factory=dict, description="per method, fixed dotted overrides applied to its trials (e.g. its own "
        "supervision steps) after the sampled params")
    metric: str = Field("val_pass@2", description="what trials are ranked by (higher is better)")
    validation_fraction: float = Field(0.5, gt=0, lt=1, description="share of scored puzzles held out for "
                                       "selection; the others are the reported test split")
    trials: int = Field(8, ge=1, description="default --trials")
    concurrency: int = Field(2, ge=1, description="default --concurrency")
    scheduler: Scheduler = Field(default_factory=Scheduler)
    seed: int = Field(0, ge=0, description="sampler seed")

    @field_validator("metric")
    @classmethod
    def _metric(cls, v: str) -> str:
        if v not in SELECT_METRICS:
            raise ValueError(f"{v!r} is not one of {', '.join(sorted(SELECT_METRICS))}")
        return v

    @field_validator("params")
    @classmethod
    def _keys(cls, v: dict) -> dict:
        for key in v:
            if key != "method" and "." not in key:
                raise ValueError(f"{key!r}: use a dotted config path such as optim.lr, or method")
        if "method" in v and "objective.method" in v:
            raise ValueError("give method or objective.method, not both")
        return {("method" if k == "objective.method" else k): p for k, p in v.items()}

    @model_validator(mode="after")
    def _methods(self) -> SweepSpace:
        for method, fixed in self.methods.items():
            if clash := sorted(set(fixed) & set(self.params)):
                raise ValueError(f"methods.{method}.{clash[0]} is also a searched parameter; keep one")
        return self

    def first_values(self) -> dict[str, Any]:
        """The first value (or lower bound) of every parameter: one concrete trial config."""
        return {k: p.choice[0] if p.choice is not None else (p.uniform or p.loguniform or p.randint)[0]
                for k, p in self.params.items()}

    def trial_spec(self, base: RunSpec, params: dict[str, Any], overrides: dict[str, Any] | None = None) -> RunSpec:
        """The run config of one trial, validated like the command line: the base preset, then the
        space's `set`, then the command line's `--set` (dotted keys; it wins over the file, as
        everywhere), then the sampled params (dotted keys, or `method`) and the sweep's selection settings."""
        from trainer.objectives import CONFIGS

        raw = merge(base.model_dump(mode="json"), {"data": {"validation_fraction": self.validation_fraction},
                                                   "train": {"select_metric": self.metric}})
        params = {("method" if k == "objective.method" else k): v for k, v in params.items()}
        method = params.get("method", base.method)
        for key, value in {**self.set, **(overrides or {}), **params, **self.methods.get(method, {})}.items():
            if key == "method":  # the network follows the objective (e.g. DIS's step embedding)
                raw = merge(raw, {"objective": {"method": value}, "model": CONFIGS[value].model_settings})
            else:
                raw = merge(raw, _nest(key, value))
        # Keys of the other method's objective (e.g. a searched DIS schedule in a TRM trial) do not apply.
        fields = CONFIGS[raw["objective"].get("method", base.method)].model_fields
        raw["objective"] = {k: v for k, v in raw["objective"].items() if k in fields}
        return RunSpec.model_validate(raw)


def _nest(key: str, value: Any) -> dict:
    out: dict = value
    for part in reversed(key.split(".")):
        out = {part: out}
    return out


def load_space(ref: str | Path) -> tuple[SweepSpace, RunSpec]:
    """The space (a file, or a shipped space by name) and its base preset's config, with every
    dataset path made absolute (trials run in Ray's session directory)."""
    space, base = read_space(ref)
    if "data.path" in space.set:
        space = space.model_copy(update={"set": space.set | {"data.path": absolute(space.set["data.path"])}})
    return space, absolute_data(base)


def read_space(ref: str | Path) -> tuple[SweepSpace, RunSpec]:
    """The space and its base preset's config, as written."""
    path = preset_path(ref, "sweep")
    try:
        space = SweepSpace.model_validate(read_yaml_mapping(path, "search space"))
    except ValidationError as e:  # one line naming the field
        err = e.errors()[0]
        raise DiscoError(f"search space {path}: {'.'.join(str(x) for x in err['loc'])}: {err['msg']}") from None
    # The base preset: as given (absolute or from the working directory), beside the space file or
    # up to two levels above it (configs/sweeps/x.yaml -> configs/...), else a shipped preset.
    candidates = [Path(space.base), *(parent / space.base for parent in list(path.resolve().parents)[:3])]
    return space, load_spec(next((c for c in candidates if c.is_file()), space.base))


def absolute(path: str) -> str:
    return str(Path(path).expanduser().resolve())
