"""The TRM baseline: deep supervision with a learned halting head (ACT, Q-halt; docs/reference.md §4).

Rows persist across calls: a row keeps its sample and carry until it halts, then takes the row of
the next incoming batch (the rest of that batch is not used, as in the reference). Each call is
one supervision step (T cycles, T-1 without grad) and one optimizer step. In training a row halts
at N_sup steps, or earlier when q_halt > 0, subject to exploration (with probability p a row must
run at least U{2..N_sup} steps). At evaluation every row runs all steps. The rows in flight are
part of the objective's state, so a resumed run continues them instead of starting them afresh.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from ..losses import IGNORE, LOSSES, row_mean_loss
from ..model import Carry, ModelConfig
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


class ACTConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: ClassVar[str] = "TRM with ACT halting"
    model_settings: ClassVar[dict] = {"timestep_embedding": False}  # the reference TRM has no step table

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

    def state_dict(self) -> dict:
        tensors = {"answer": self.carry.answer, "latent": self.carry.latent, "steps": self.steps, "halted": self.halted,
                   "inputs": self.data.inputs, "labels": self.data.labels,
                   "puzzle_identifiers": self.data.puzzle_identifiers}
        return {k: t.detach().to("cpu") for k, t in tensors.items()}

    @classmethod
    def from_state(cls, state: dict, device: torch.device) -> _Rows:
        t = {k: v.to(device) for k, v in state.items()}
        return cls(Carry(t["answer"], t["latent"]), t["steps"], t["halted"],
                   TorchBatch(t["inputs"], t["labels"], t["puzzle_identifiers"]))


class ACTObjective:
    optimizer_steps_per_batch = 1
    # TRM-ACT scores only the rows that halt at a step, and halting comes in bursts: these are
    # averaged over scored rows, so a batch where nothing halted does not pull them towards zero.
    row_metrics = frozenset({"accuracy", "exact_accuracy", "steps", "block_apps_per_sample", "q_halt_accuracy"})

    def __init__(self, cfg: ACTConfig, model_cfg: ModelConfig, dtype: torch.dtype = torch.float32,
                 noise: RowNoise | None = None, device: torch.device | None = None):
        self.cfg, self.dtype = cfg, dtype
        self.steps = model_cfg.supervision_steps
        self.apps_per_step = sum(model_cfg.applications_per_step)
        self.ce = LOSSES[cfg.loss]
        self.device = torch.device(device or "cpu")
        self.noise = noise or RowNoise(0, device=device)
        self.rows: _Rows | None = None

    def prepare(self, model) -> None:
        pass  # every part of the model is trained

    def block_applications_per_row(self) -> int:
        return self.apps_per_step  # one supervision step of the row's carried sample

    def _admit(self, model, batch: TorchBatch) -> _Rows:
        """Rows that halted at the previous call take the same row of `batch`, with a fresh carry."""
        b = batch.inputs.shape[0]
        if self.rows is None or self.rows.steps.shape[0] != b:
            device = batch.inputs.device
            self.rows = _Rows(unwrap(model).initial_carry(b, self.dtype), torch.zeros(b, dtype=torch.long, device=device),
                              torch.ones(b, dtype=torch.bool, device=device), batch)
        r = self.rows
        new = r.halted
        r.data = TorchBatch(*(torch.where(new.view(-1, *([1] * (x.dim() - 1))), x, old)
                              for x, old in ((batch.inputs, r.data.inputs), (batch.labels, r.data.labels),
                                             (batch.puzzle_identifiers, r.data.puzzle_identifiers))))
        r.carry = unwrap(model).reset(r.carry, new)
        r.steps = torch.where(new, 0, r.steps)
        return r

    def train_steps(self, model, emb, batch: TorchBatch) -> Iterator[StepOutput]:
        r = self._admit(model, batch)
        b = batch.inputs.shape[0]
        steps = r.steps + 1
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
                g, n = self.noise.next(), self.noise.world
                u = self.noise.mine(torch.rand(b * n, generator=g, device=steps.device))
                floor = self.noise.mine(torch.randint(2, self.steps + 1, (b * n,), generator=g, device=steps.device))
                halted &= steps >= torch.where(u < self.cfg.halt_exploration_prob, floor, 0)
        lm_loss = row_mean_loss(self.ce(logits, labels), labels)
        q_loss = F.binary_cross_entropy_with_logits(q_halt, seq_correct.float())
        loss = lm_loss + self.cfg.q_loss_weight * q_loss

        with torch.no_grad():
            done = halted & mask.any(-1)
            n_done = done.sum().clamp_min(1)
            metrics: dict = token_metrics(preds, labels, rows=halted)
            metrics |= {
                "loss": loss.detach(), "lm_loss": lm_loss.detach(), "q_halt_loss": q_loss.detach(),
                "q_halt_accuracy": (((q_halt >= 0) == seq_correct) & done).sum() / n_done,
                "steps": (steps * done).sum() / n_done,
                "block_apps_per_sample": (steps * done).sum() / n_done * self.apps_per_step,
            }
        r.steps, r.halted = steps, halted
        yield StepOutput(loss, metrics)

    def batch_metrics(self, steps: list[dict]) -> dict:
        (only,) = steps  # one optimizer step per batch
        return dict(only)

    @torch.inference_mode()
    def predict(self, model, emb, batch: TorchBatch, steps: int | None = None) -> Prediction:
        steps = steps or self.steps
        carry = unwrap(model).initial_carry(batch.inputs.shape[0], self.dtype)
        pe = emb(batch.puzzle_identifiers, train=False)
        step_preds, step_halts = [], []
        for _ in range(steps):
            carry, logits, q = model(carry, batch.inputs, pe)
            step_preds.append(logits.argmax(-1))
            step_halts.append(halt_probability(q))
        return Prediction(step_preds[-1], step_halts[-1], answer_probability(logits, step_preds[-1]), step_preds,
                          steps * self.apps_per_step, step_halts)

    def state_dict(self) -> dict:
        return self.noise.state_dict() | {"rows": None if self.rows is None else self.rows.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.noise.load_state_dict(state)
        self.rows = None if state.get("rows") is None else _Rows.from_state(state["rows"], self.device)

    def load_resharded(self, states: list[dict]) -> None:
        """The state of a checkpoint written by another number of ranks (all ranks' states in rank
        order). Ranks hold consecutive slices of the global batch and a halted row takes the same
        row of the next batch, so the rows in flight concatenated in rank order are the global
        rows: this rank continues its slice of them."""
        self.noise.load_state_dict(states[0])
        if any(s.get("rows") is None for s in states):
            self.rows = None
            return
        whole = {k: torch.cat([s["rows"][k] for s in states]) for k in states[0]["rows"]}
        self.rows = _Rows.from_state({k: self.noise.mine(v) for k, v in whole.items()}, self.device)
