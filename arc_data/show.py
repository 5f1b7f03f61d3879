"""Looking at grids: coloured terminal blocks and PNG sheets."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .fsio import atomic_output

# The usual ARC palette, colours 0..9.
PALETTE = np.array([
    (0, 0, 0), (0, 116, 217), (255, 65, 54), (46, 204, 64), (255, 220, 0),
    (170, 170, 170), (240, 18, 190), (255, 133, 27), (127, 219, 255), (135, 12, 37),
], dtype=np.uint8)


def ansi_rows(grid: np.ndarray) -> list[str]:
    """Rows of a grid as 24-bit-colour terminal blocks (two spaces per cell)."""
    return ["".join(f"\x1b[48;2;{r};{g};{b}m  " for r, g, b in PALETTE[row]) + "\x1b[0m" for row in grid]


def digit_rows(grid: np.ndarray) -> list[str]:
    """Rows of a grid as digits, for logs and pipes."""
    return [" ".join(str(int(c)) for c in row) + " " for row in grid]


def side_by_side(grids: list[np.ndarray], gap: int = 4, colour: bool = True) -> str:
    blocks = [(ansi_rows if colour else digit_rows)(g) for g in grids]
    widths = [2 * g.shape[1] for g in grids]
    lines = []
    for i in range(max(g.shape[0] for g in grids)):
        parts = [b[i] if i < len(b) else " " * w for b, w in zip(blocks, widths, strict=True)]
        lines.append((" " * gap).join(parts))
    return "\n".join(lines)


def save_png(rows: list[tuple[str, list[np.ndarray]]], path: str | Path, cell: int = 12) -> None:
    """One labelled row of grids per entry; written atomically."""
    from PIL import Image, ImageDraw

    pad, label_h = cell, 14
    row_h = [max(g.shape[0] for g in grids) * cell + label_h + pad for _, grids in rows]
    width = max(sum(g.shape[1] * cell + pad for g in grids) for _, grids in rows) + pad
    img = Image.new("RGB", (width, sum(row_h) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    y = pad
    for (label, grids), h in zip(rows, row_h, strict=True):
        draw.text((pad, y), label, fill=(0, 0, 0))
        x = pad
        for g in grids:
            pixels = np.kron(PALETTE[g], np.ones((cell, cell, 1), dtype=np.uint8))
            pixels[::cell, :] = pixels[:, ::cell] = 64  # grid lines
            img.paste(Image.fromarray(pixels), (x, y + label_h))
            x += g.shape[1] * cell + pad
        y += h
    with atomic_output(path) as tmp:
        img.save(tmp, format="PNG")
