"""An exponential moving average of the trained weights (the TRM recipe's `ema=True`, rate 0.999).

shadow ← rate·shadow + (1 − rate)·weights after every optimizer step, on the device with one fused
foreach op (no host sync); the shadow starts as a copy of the initial weights. Only trained
parameters are averaged: buffers and the puzzle table are not (as in the reference). Evaluation,
checkpoint selection and export use the averaged weights (`applied`); training continues on the raw
ones, and a checkpoint holds both.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from .objectives import unwrap


class EMA:
    def __init__(self, model: nn.Module, rate: float):
        self.rate = rate
        named = [(n, p) for n, p in unwrap(model).named_parameters() if p.requires_grad]
        self.names = [n for n, _ in named]
        self.params = [p for _, p in named]
        self.shadow = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def update(self) -> None:
        torch._foreach_lerp_(self.shadow, [p.detach() for p in self.params], 1.0 - self.rate)

    @contextmanager
    @torch.no_grad()
    def applied(self) -> Iterator[None]:
        """The model holds the averaged weights inside the block, its own ones again after it."""
        raw = [p.detach().clone() for p in self.params]
        torch._foreach_copy_(self.params, self.shadow)
        try:
            yield
        finally:
            torch._foreach_copy_(self.params, raw)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged parameters by name (what `ema.safetensors` holds)."""
        return dict(zip(self.names, self.shadow, strict=True))

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = set(self.names) - state.keys()
        if missing:
            raise ValueError(f"EMA state lacks {sorted(missing)[:3]}")
        torch._foreach_copy_(self.shadow, [state[n].to(s.device, s.dtype) for n, s in zip(self.names, self.shadow,
                                                                                           strict=True)])
