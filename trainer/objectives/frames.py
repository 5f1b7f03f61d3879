"""DIS targets: a discrete path of frames from the input grid to the solution (docs/reference.md §5.2).

Frame 0 is the input, frame N the label. Each sample reveals its differing cells in one random
order; a schedule says how many are revealed at step s, so frames are nested and the Hamming
distance to the label never increases. Unrevealed cells keep the *input* value (no mask token).
"""

from __future__ import annotations

import math
import re

import torch

from ..losses import IGNORE

_POWER = re.compile(r"^power\((\d+(\.\d+)?)\)$")


def parse_schedule(name: str) -> str:
    """Validate a schedule name: linear | cosine | power(p) with p > 0."""
    if name in ("linear", "cosine"):
        return name
    m = _POWER.match(name)
    if m and float(m.group(1)) > 0:
        return name
    raise ValueError(f"unknown DIS schedule {name!r}; use linear, cosine or power(p) with p > 0")


def revealed_counts(schedule: str, steps: int, n: torch.Tensor) -> torch.Tensor:
    """Cells revealed at each frame 0..steps, for n differing cells per row: [B, steps+1] long.

    linear is the reference's floor(s*n/N); cosine reveals slowly first; power(p) is (s/N)^p.
    All are monotone with exact endpoints (0 at s=0, n at s=N).
    """
    s = torch.arange(steps + 1, device=n.device)
    if schedule == "linear":
        return (s[None] * n[:, None]) // steps
    frac = s.double() / steps
    if schedule == "cosine":
        shape = (1 - torch.cos(math.pi * frac)) / 2
    else:
        shape = frac ** float(_POWER.match(schedule).group(1))
    counts = torch.floor(shape[None] * n[:, None].double()).long()
    counts[:, -1] = n  # guard the endpoint against rounding
    return counts


def diffusion_frames(inputs: torch.Tensor, labels: torch.Tensor, steps: int, schedule: str = "linear",
                     diff: str = "reference", generator: torch.Generator | None = None,
                     scores: torch.Tensor | None = None) -> torch.Tensor:
    """Target frames [B, steps+1, L].

    diff="reference": every cell where input != label differs, including PAD inputs under ignored
    labels, so early frames ask for PAD outside the answer (the reference's behaviour).
    diff="supervised": only cells the final label supervises can differ, and cells it ignores are
    ignored in every frame. `scores` (uniform [B, L]) orders the cells revealed; drawn from
    `generator` when not given.
    """
    differs = inputs != labels
    if diff == "supervised":
        differs &= labels != IGNORE
    n = differs.sum(-1)
    if scores is None:
        scores = torch.rand(inputs.shape, generator=generator, device=inputs.device)
    scores = scores.masked_fill(~differs, float("inf"))
    rank = scores.argsort(-1).argsort(-1)  # differing cells first, in a random order
    counts = revealed_counts(schedule, steps, n)  # [B, S]
    reveal = rank[:, None, :] < counts[:, :, None]
    frames = torch.where(reveal, labels[:, None, :], inputs[:, None, :])
    if diff == "supervised":
        frames = frames.masked_fill((labels == IGNORE)[:, None, :], IGNORE)
    return frames
