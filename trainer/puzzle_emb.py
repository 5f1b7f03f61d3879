"""The sparse per-puzzle embedding table and its SignSGD update (docs/reference.md §3.4).

The table (≈876k x D for ARC-1) is a plain tensor, not a parameter: it stays out of
`model.parameters()`, DDP and the weight optimizer. A training lookup returns a small leaf tensor
of the batch's rows; `step()` applies SignSGD with decoupled weight decay to the touched rows only,
after summing the gradients of duplicate ids across the batch and, when distributed, across ranks
(every rank then applies the identical update to its copy), without waiting for the device.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from .device import is_distributed


class PuzzleEmbedding:
    def __init__(self, num_ids: int, dim: int, device: torch.device):
        self.dim = dim
        self.weight = torch.zeros(num_ids, dim, device=device)  # zero init, as the reference
        self._pending: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __call__(self, ids: torch.Tensor, train: bool) -> torch.Tensor | None:
        if self.dim == 0:
            return None
        rows = self.weight[ids]  # a gather: the table itself is never copied
        if train:
            rows.requires_grad_(True)
            self._pending.append((ids, rows))
        return rows

    @torch.no_grad()
    def step(self, lr: float, weight_decay: float) -> None:
        """Apply SignSGD to the rows looked up since the last step (gradients of the same row summed)."""
        if not self._pending:
            return
        ids = torch.cat([i for i, _ in self._pending])
        grads = torch.cat([r.grad if r.grad is not None else torch.zeros_like(r) for _, r in self._pending])
        self._pending.clear()
        if is_distributed():
            ids, grads = _all_gather(ids), _all_gather(grads)
        # Sum each row's gradient over its duplicates with an N x N match (N = looked-up rows) instead
        # of `unique`, whose output size the host would have to wait for. Duplicates then write the
        # same new value, so the scatter is deterministic.
        summed = (ids[:, None] == ids[None, :]).to(grads.dtype) @ grads
        self.weight[ids] = self.weight[ids] * (1 - lr * weight_decay) - lr * summed.sign()

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"weight": self.weight}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        w = state["weight"]
        if w.shape != self.weight.shape:
            raise ValueError(f"puzzle table shape {tuple(w.shape)} does not match {tuple(self.weight.shape)}")
        self.weight.copy_(w)


def _all_gather(t: torch.Tensor) -> torch.Tensor:
    # Every rank contributes the same number of rows (equal local batches). The list form works on
    # gloo (CPU) as well as NCCL.
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts)
