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


Cell = np.ndarray | tuple[str, np.ndarray]  # a grid, or (caption, grid); a caption may hold "\n"


def save_png(rows: list[tuple[str, list[Cell]]], path: str | Path, cell: int = 12) -> None:
    """One labelled row of (optionally captioned) grids per entry; written atomically."""
    from PIL import Image, ImageDraw

    rows = [(label, [c if isinstance(c, tuple) else ("", c) for c in cells]) for label, cells in rows]
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    pad, line_h = cell, 12
    caption_h = max((c.count("\n") + 1 for _, cells in rows for c, _ in cells if c), default=0) * line_h
    widths = [[max(g.shape[1] * cell, *(draw.textlength(t) for t in c.split("\n"))) for c, g in cells]
              for _, cells in rows]
    row_h = [line_h + caption_h + max(g.shape[0] for _, g in cells) * cell + pad for _, cells in rows]
    width = int(max(sum(w) + pad * len(w) for w in widths)) + pad
    img = Image.new("RGB", (width, sum(row_h) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    y = pad
    for (label, cells), ws, h in zip(rows, widths, row_h, strict=True):
        draw.text((pad, y), label, fill=(0, 0, 0))
        x = pad
        for (caption, g), w in zip(cells, ws, strict=True):
            draw.multiline_text((x, y + line_h), caption, fill=(80, 80, 80), spacing=0)
            pixels = np.kron(PALETTE[g], np.ones((cell, cell, 1), dtype=np.uint8))
            pixels[::cell, :] = pixels[:, ::cell] = 64  # grid lines
            img.paste(Image.fromarray(pixels), (x, y + line_h + caption_h))
            x += int(w) + pad
        y += h
    with atomic_output(path) as tmp:
        img.save(tmp, format="PNG")
