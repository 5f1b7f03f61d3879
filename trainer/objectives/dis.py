"""Deep Improvement Supervision (docs/reference.md §5): every supervision step has its own target frame.

Per batch: draw fresh frames (a new reveal order each time a sample is used), then run N steps;
step s sees the step index through the timestep embedding, its input is the previous step's argmax
(reference) or the previous target frame (teacher forcing), and its loss targets frame s. No
halting, T=1 and n=2 in the paper: 18 block applications per sample. Unlike the reference, which
trains one step per loader batch and drops 5 of every 6 batches, every batch here goes through
all N steps, with one optimizer step per supervision step.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from arc_data.grids import PAD

from ..losses import IGNORE, LOSSES, row_mean_loss
from ..model import ModelConfig
from .common import (
    Prediction,
    RowNoise,
    StepOutput,
    TorchBatch,
    answer_probability,
    halt_probability,
    token_metrics,
    unwrap,
)
from .frames import diffusion_frames, parse_schedule


class DISConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: ClassVar[str] = "DIS (deep improvement supervision)"
    # What the network needs for this objective: each step is told its index.
    model_settings: ClassVar[dict] = {"timestep_embedding": True}

    method: Literal["dis"] = Field("dis", description="objective: Deep Improvement Supervision")
    schedule: str = Field("linear", description="cells revealed per step: linear | cosine | power(p)")
    diff: Literal["reference", "supervised"] = Field(
        "reference", description="reference: PAD cells under ignored labels count as differing; supervised: not")
    feed: Literal["prediction", "target"] = Field(
        "prediction", description="input of step s: previous argmax (reference) or previous target frame")
    step_weights: Literal["uniform", "linear"] = Field(
        "uniform", description="loss weight per step: uniform (reference) or linearly increasing (paper), mean 1")
    loss: Literal["stablemax", "softmax"] = Field("stablemax", description="token cross-entropy")

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, v: str) -> str:
        return parse_schedule(v)


class DISObjective:
    # Accuracy is measured on every row at the last step, so row weighting only matters for padding.
    row_metrics = frozenset({"accuracy", "exact_accuracy", "block_apps_per_sample"})

    def __init__(self, cfg: DISConfig, model_cfg: ModelConfig, dtype: torch.dtype = torch.float32,
                 noise: RowNoise | None = None, device: torch.device | None = None):
        self.cfg, self.dtype = cfg, dtype
        self.steps = model_cfg.supervision_steps
        self.apps_per_step = sum(model_cfg.applications_per_step)
        self.optimizer_steps_per_batch = self.steps
        self.ce = LOSSES[cfg.loss]
        n = self.steps
        w = torch.arange(1, n + 1, dtype=torch.float32) if cfg.step_weights == "linear" else torch.ones(n)
        self.weights = (w / w.mean()).tolist()
        self.noise = noise or RowNoise(0, device=device)

    def prepare(self, model) -> None:
        unwrap(model).q_head.requires_grad_(False)  # DIS never trains its halting head

    def block_applications_per_row(self) -> int:
        return self.steps * self.apps_per_step

    def _step_index(self, s: int, batch: int, device) -> torch.Tensor:
        return torch.full((batch,), min(s, self.steps), dtype=torch.long, device=device)

    def train_steps(self, model, emb, batch: TorchBatch) -> Iterator[StepOutput]:
        b = batch.inputs.shape[0]
        g, n = self.noise.next(), self.noise.world
        scores = self.noise.mine(torch.rand((b * n, *batch.inputs.shape[1:]), generator=g, device=batch.inputs.device))
        frames = diffusion_frames(batch.inputs, batch.labels, self.steps, self.cfg.schedule, self.cfg.diff,
                                  scores=scores)
        carry = unwrap(model).initial_carry(b, self.dtype)
        tokens = batch.inputs
        for s in range(1, self.steps + 1):
            carry, logits, _ = model(carry, tokens, emb(batch.puzzle_identifiers, train=True),
                                     self._step_index(s, b, tokens.device))
            target = frames[:, s]
            loss = self.weights[s - 1] * row_mean_loss(self.ce(logits, target), target)
            with torch.no_grad():
                preds = logits.argmax(-1)
                metrics: dict = {"loss": loss.detach(), f"step{s}_target_accuracy": token_metrics(preds, target)["accuracy"]}
                if s == self.steps:
                    metrics |= token_metrics(preds, batch.labels)
                    metrics["block_apps_per_sample"] = self.block_applications_per_row()
            yield StepOutput(loss, metrics)
            tokens = preds if self.cfg.feed == "prediction" else target.masked_fill(target == IGNORE, PAD)

    def batch_metrics(self, steps: list[dict]) -> dict:
        """The last step's metrics, every step's target accuracy, and the mean loss over the steps."""
        out = {k: v for o in steps for k, v in o.items() if k.startswith("step")}
        out |= {k: v for k, v in steps[-1].items() if not k.startswith("step")}
        out["loss"] = sum(o["loss"] for o in steps) / len(steps)
        return out

    @torch.inference_mode()
    def predict(self, model, emb, batch: TorchBatch, steps: int | None = None) -> Prediction:
        steps = steps or self.steps
        b = batch.inputs.shape[0]
        carry = unwrap(model).initial_carry(b, self.dtype)
        tokens, step_preds = batch.inputs, []
        for s in range(1, steps + 1):
            carry, logits, q = model(carry, tokens, emb(batch.puzzle_identifiers, train=False),
                                     self._step_index(s, b, tokens.device))
            tokens = logits.argmax(-1)
            step_preds.append(tokens)
        # The Q head is never trained under DIS: its confidence is constant (the reference's votes
        # then break ties by first appearance); scoring.confidence=answer_probability uses the other.
        return Prediction(tokens, halt_probability(q), answer_probability(logits, tokens), step_preds,
                          steps * self.apps_per_step)

    def target_frames(self, inputs: torch.Tensor, labels: torch.Tensor, seed: int = 0) -> torch.Tensor:
        """One path of training targets [B, steps+1, L] (frames differ per draw), for pictures."""
        g = torch.Generator(device=inputs.device).manual_seed(seed)
        return diffusion_frames(inputs, labels, self.steps, self.cfg.schedule, self.cfg.diff, g)

    def state_dict(self) -> dict:
        return self.noise.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.noise.load_state_dict(state)

    def load_resharded(self, states: list[dict]) -> None:
        """The state of a checkpoint written by another number of ranks (all ranks' states in rank order)."""
        self.noise.load_state_dict(states[0])
