"""The TRM baseline: deep supervision with a learned halting head (ACT, Q-halt; spec §4).

Rows persist across calls: a row keeps its sample and carry until it halts, then takes the row of
the next incoming batch (the rest of that batch is not used, as in the reference). Each call is
one supervision step (T cycles, T-1 without grad) and one optimizer step. In training a row halts
at N_sup steps, or earlier when q_halt > 0, subject to exploration (with probability p a row must
run at least U{2..N_sup} steps). At evaluation every row runs all steps.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from ..losses import IGNORE, LOSSES, row_mean_loss
from ..model import Carry
from .common import Prediction, StepOutput, TorchBatch, token_metrics, unwrap


class ACTConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: Literal["trm"] = Field("trm", description="objective: TRM deep supervision with ACT halting")
    halt_exploration_prob: float = Field(0.1, ge=0, le=1, description="chance a row must run U{2..N} steps")
    q_loss_weight: float = Field(0.5, ge=0, description="weight of the Q-halt BCE against exact correctness")
    loss: Literal["stablemax", "softmax"] = Field("stablemax", description="token cross-entropy")


@dataclass
class _Rows:
    carry: Carry
    steps: torch.Tensor  # [B] supervision steps taken by the current sample
    halted: torch.Tensor  # [B] bool: take a new sample at the next call
    data: TorchBatch


class ACTObjective:
    def __init__(self, cfg: ACTConfig, steps: int, seed: int = 0, device: torch.device | None = None):
        self.cfg, self.steps = cfg, steps
        self.ce = LOSSES[cfg.loss]
        self.generator = torch.Generator(device=device or "cpu").manual_seed(seed)
        self.rows: _Rows | None = None

    def reset(self) -> None:
        self.rows = None

    def train_steps(self, model, emb, batch: TorchBatch) -> Iterator[StepOutput]:
        core = unwrap(model)
        b = batch.inputs.shape[0]
        if self.rows is None or self.rows.steps.shape[0] != b:
            self.rows = _Rows(core.initial_carry(b, core.compute_dtype),
                              torch.zeros(b, dtype=torch.long, device=batch.inputs.device),
                              torch.ones(b, dtype=torch.bool, device=batch.inputs.device), batch)
        r = self.rows
        new = r.halted
        r.data = TorchBatch(*(torch.where(new.view(-1, *([1] * (x.dim() - 1))), x, old)
                              for x, old in ((batch.inputs, r.data.inputs), (batch.labels, r.data.labels),
                                             (batch.puzzle_identifiers, r.data.puzzle_identifiers))))
        r.carry = core.reset(r.carry, new)
        steps = torch.where(new, 0, r.steps) + 1

        r.carry, logits, q = model(r.carry, r.data.inputs, emb(r.data.puzzle_identifiers, train=True))
        q_halt = q[:, 0]
        labels = r.data.labels
        with torch.no_grad():
            preds = logits.argmax(-1)
            mask = labels != IGNORE
            seq_correct = (((preds == labels) & mask).sum(-1) == mask.sum(-1)) & mask.any(-1)
            halted = steps >= self.steps
            if self.steps > 1 and model.training:
                halted |= q_halt > 0
                u = torch.rand(b, generator=self.generator, device=steps.device)
                floor = torch.randint(2, self.steps + 1, (b,), generator=self.generator, device=steps.device)
                halted &= steps >= torch.where(u < self.cfg.halt_exploration_prob, floor, 0)
        lm_loss = row_mean_loss(self.ce(logits, labels), labels)
        q_loss = F.binary_cross_entropy_with_logits(q_halt, seq_correct.float())
        loss = lm_loss + self.cfg.q_loss_weight * q_loss

        grad_apps, nograd_apps = core.applications_per_step
        with torch.no_grad():
            done = halted & mask.any(-1)
            n_done = done.sum().clamp_min(1)
            metrics: dict = token_metrics(preds, labels, rows=halted)
            metrics |= {
                "loss": loss.detach(), "lm_loss": lm_loss.detach(), "q_halt_loss": q_loss.detach(),
                "q_halt_accuracy": (((q_halt >= 0) == seq_correct) & done).sum() / n_done,
                "steps": (steps * done).sum() / n_done,
                "block_apps_per_sample": (steps * done).sum() / n_done * (grad_apps + nograd_apps),
            }
        r.steps, r.halted = steps, halted
        yield StepOutput(loss, metrics, grad_apps, nograd_apps)

    @torch.inference_mode()
    def predict(self, model, emb, batch: TorchBatch, steps: int | None = None) -> Prediction:
        core = unwrap(model)
        steps = steps or self.steps
        carry = core.initial_carry(batch.inputs.shape[0], core.compute_dtype)
        pe = emb(batch.puzzle_identifiers, train=False)
        step_preds = []
        for _ in range(steps):
            carry, logits, q = model(carry, batch.inputs, pe)
            step_preds.append(logits.argmax(-1))
        grad_apps, nograd_apps = core.applications_per_step
        return Prediction(step_preds[-1], torch.sigmoid(q[:, 0].double()).float(), step_preds,
                          steps * (grad_apps + nograd_apps))
