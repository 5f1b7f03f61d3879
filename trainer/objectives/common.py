"""What objectives share: the protocol the Trainer uses, batches as tensors, step outputs,
predictions, token metrics."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from torch import nn

from arc_data.grids import PAD

from ..device import to_device
from ..losses import IGNORE


class RowNoise:
    """Training randomness keyed by (seed, batch, global row), not by rank: each call draws the
    whole global batch's numbers from a generator seeded by the run seed and the call count, and
    a rank keeps its own rows. What a row draws is then the same on 1 rank or 8, so an elastic run
    that changes its world size learns exactly what a fixed one does. The draw costs global-batch
    numbers per rank (kilobytes) and no host sync."""

    def __init__(self, seed: int, rank: int = 0, world: int = 1, device: torch.device | None = None):
        self.seed, self.rank, self.world = seed, rank, world
        self.device = torch.device(device or "cpu")
        self.calls = 0

    def next(self) -> torch.Generator:
        """The generator of the next call (same on every rank)."""
        key = int(np.random.SeedSequence([self.seed, self.calls]).generate_state(1, np.uint64)[0] >> 1)
        self.calls += 1
        return torch.Generator(device=self.device).manual_seed(key)

    def mine(self, whole: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a tensor drawn for the whole global batch."""
        b = whole.shape[0] // self.world
        return whole[self.rank * b:(self.rank + 1) * b]

    def state_dict(self) -> dict:
        return {"calls": self.calls}

    def load_state_dict(self, state: dict) -> None:
        self.calls = int(state.get("calls", 0))  # checkpoints before 2026-12 kept a per-rank generator


@dataclass
class TorchBatch:
    inputs: torch.Tensor  # [B, L] long tokens
    labels: torch.Tensor  # [B, L] long, IGNORE where unsupervised
    puzzle_identifiers: torch.Tensor  # [B] long, 0 = padding row

    @classmethod
    def from_numpy(cls, batch, device: torch.device) -> TorchBatch:
        """From an arc_data Batch (numpy): copied as rendered (uint8 tokens), widened on the device."""
        def t(x):
            return to_device(x, device).long()
        return cls(t(batch.inputs), t(batch.labels), t(batch.puzzle_identifiers))

    def to(self, device: torch.device | str) -> TorchBatch:
        return TorchBatch(self.inputs.to(device), self.labels.to(device), self.puzzle_identifiers.to(device))


@dataclass
class StepOutput:
    """One supervision step: the caller runs backward + one optimizer step on `loss`."""

    loss: torch.Tensor
    metrics: dict[str, torch.Tensor | float] = field(default_factory=dict)


@dataclass
class Prediction:
    preds: torch.Tensor  # [B, L] final tokens
    confidence: torch.Tensor  # [B] float64 sigmoid(q_halt) of the last step: the reference's tie-break
    answer_probability: torch.Tensor  # [B] mean top probability over the predicted answer cells
    step_preds: list[torch.Tensor] | None = None  # [B, L] per supervision step
    applications: int = 0  # block-stack applications per sample
    step_halts: list[torch.Tensor] | None = None  # [B] sigmoid(q_halt) per step, for objectives that halt


def answer_probability(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Mean top-class probability over the cells predicted as part of the answer (not PAD)."""
    top = logits.float().softmax(-1).amax(-1)
    answer = tokens != PAD
    return (top * answer).sum(-1) / answer.sum(-1).clamp_min(1)


def halt_probability(q: torch.Tensor) -> torch.Tensor:
    """sigmoid(q_halt) computed in float64, as the reference ranks candidates with it."""
    return torch.sigmoid(q[:, 0].double())


class Objective(Protocol):
    """Everything objective-specific the Trainer, the Engine and the reports need to know."""

    optimizer_steps_per_batch: int  # optimizer steps one training batch takes
    row_metrics: frozenset[str]  # metrics measured on a batch's `count` scored rows (weighted by rows)

    def prepare(self, model: nn.Module) -> None:
        """Freeze what this objective never trains (DDP must not wait for its gradients)."""

    def block_applications_per_row(self) -> int:
        """Block-stack applications one training batch row costs."""

    def train_steps(self, model: nn.Module, emb, batch: TorchBatch) -> Iterator[StepOutput]:
        """One `StepOutput` per optimizer step on this batch."""

    def batch_metrics(self, steps: list[dict]) -> dict:
        """One record for the batch from the metrics of its optimizer steps."""

    def predict(self, model: nn.Module, emb, batch: TorchBatch, steps: int | None = None) -> Prediction: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DDP / compile wrapper."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


@torch.no_grad()
def token_metrics(preds: torch.Tensor, labels: torch.Tensor, rows: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Mean per-row token accuracy and exact-match rate over `rows` (bool [B]) with supervision."""
    mask = labels != IGNORE
    count = mask.sum(-1)
    correct = ((preds == labels) & mask).sum(-1)
    valid = count > 0 if rows is None else rows & (count > 0)
    n = valid.sum().clamp_min(1)
    return {
        "accuracy": ((correct / count.clamp_min(1)) * valid).sum() / n,
        "exact_accuracy": ((correct == count) & valid).sum() / n,
        "count": valid.sum().float(),
    }
