"""What objectives share: batches as tensors, step outputs, predictions, token metrics."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..losses import IGNORE


@dataclass
class TorchBatch:
    inputs: torch.Tensor  # [B, L] long tokens
    labels: torch.Tensor  # [B, L] long, IGNORE where unsupervised
    puzzle_identifiers: torch.Tensor  # [B] long, 0 = padding row

    @classmethod
    def from_numpy(cls, batch, device: torch.device) -> TorchBatch:
        """From an arc_data Batch (numpy)."""
        def t(x):
            return torch.from_numpy(x).to(device=device, dtype=torch.long, non_blocking=True)
        return cls(t(batch.inputs), t(batch.labels), t(batch.puzzle_identifiers))


@dataclass
class StepOutput:
    """One supervision step: the caller runs backward + one optimizer step on `loss`."""

    loss: torch.Tensor
    metrics: dict[str, torch.Tensor | float] = field(default_factory=dict)
    grad_applications: int = 0  # block-stack applications per sample in this step, with grad
    nograd_applications: int = 0  # ... and without grad


@dataclass
class Prediction:
    preds: torch.Tensor  # [B, L] final tokens
    confidence: torch.Tensor  # [B] in [0, 1], the vote tie-break
    step_preds: list[torch.Tensor] | None = None  # [B, L] per supervision step (DIS)
    applications: int = 0  # block-stack applications per sample


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
