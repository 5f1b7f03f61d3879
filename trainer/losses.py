"""Token cross-entropies behind one signature: (logits [B,L,V], labels [B,L]) -> per-token loss [B,L].

Ignored positions (label -100) get loss 0; callers normalise per row by the supervised count.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from arc_data.grids import IGNORE_LABEL as IGNORE  # label of unsupervised cells (-100, torch's default)


def _stablemax_log_probs(x: torch.Tensor) -> torch.Tensor:
    # s(x) = 1/(1-x) for x < 0, x+1 otherwise: a softmax substitute that grows linearly (docs/reference.md §4.3).
    s = torch.where(x < 0, 1 / (1 - x + 1e-30), x + 1)
    return torch.log(s / s.sum(dim=-1, keepdim=True))


def stablemax_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Computed in float64, as the reference."""
    mask = labels != IGNORE
    log_p = _stablemax_log_probs(logits.double())
    picked = log_p.gather(-1, torch.where(mask, labels, 0).long().unsqueeze(-1)).squeeze(-1)
    return torch.where(mask, -picked, 0.0)


def softmax_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    loss = F.cross_entropy(logits.float().transpose(1, 2), labels.long(), ignore_index=IGNORE, reduction="none")
    return loss


LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "stablemax": stablemax_cross_entropy,
    "softmax": softmax_cross_entropy,
}


def row_mean_loss(token_loss: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-row mean over supervised tokens, then the mean over rows: [] scalar (float32)."""
    count = (labels != IGNORE).sum(-1).clamp_min(1)
    return (token_loss.sum(-1) / count).float().mean()
