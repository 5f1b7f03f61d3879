"""A prediction set as one self-contained HTML page: no server, no network, opens from disk.

Per test pair: the input, the grid after every supervision step of the unaugmented puzzle (TRM-ACT
steps with their halting probability), the two voted attempts that went into submission.json, the
solution when the set has one, and whether an attempt was right. The grids travel as JSON inside
the page and are drawn by a few lines of script; `#failures` in the address (or the checkbox)
shows only the pairs that were not solved.
"""

from __future__ import annotations

import html
import json
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from arc_data.dataset import ArcDataset
from arc_data.fsio import atomic_output
from arc_data.show import PALETTE

from .evaluate import EvalResult
from .inference import LoadedModel, predict_task


def page_entries(loaded: LoadedModel, ds: ArcDataset, result: EvalResult, progress: bool | None = None) -> list[dict]:
    """One entry per test pair of `result`: grids as lists of strings (one digit per cell)."""
    by_task: dict[str, list[dict]] = {}
    for p in result.puzzles:
        by_task.setdefault(p["task_id"], []).append(p)
    entries = []
    show = sys.stderr.isatty() if progress is None else progress
    for task_id, pairs in tqdm(by_task.items(), desc="drawing", unit="puzzle", disable=not show):
        task = ds.task(ds.task_index(task_id))
        preds, _ = predict_task(loaded, task, ds)
        for p in pairs:
            i = p["test_pair"]
            pred, attempts = preds[i], result.submission[task_id][i]
            labelled = p.get("labelled", True)
            entries.append({
                "task": task_id, "pair": i, "status": ("solved" if p.get("pass@2") else "failed") if labelled else "unlabelled",
                "input": _rows(pred.input),
                "steps": [_rows(g) for g in pred.steps],
                "halts": pred.halts,
                "attempts": [_attempt(attempts[k]) for k in ("attempt_1", "attempt_2")],
                "solution": _rows(pred.target) if pred.target is not None else None,
                "votes": p["votes"][:2],
            })
    return entries


def _rows(grid: np.ndarray) -> list[str]:
    return ["".join(str(int(c)) for c in row) for row in grid]


def _attempt(grid: list[list[int]]) -> list[str] | None:
    """An attempt from submission.json; None for an empty crop (no grid at the canvas's corner)."""
    return ["".join(str(c) for c in row) for row in grid] if grid and grid[0] else None


def write_page(loaded: LoadedModel, ds: ArcDataset, result: EvalResult, path: str | Path,
               progress: bool | None = None) -> Path:
    """Write the page (atomically); returns its path."""
    m = result.metrics
    title = f"{loaded.spec.method.upper()} predictions on {ds.root.name}"
    summary = (f"pass@1 {m['pass@1']:.3f}, pass@2 {m['pass@2']:.3f} on {m['puzzles']} puzzles ({m['test_pairs']} "
               f"scored test pairs)" if m["test_pairs"] else "nothing to score: no test pair has a solution")
    if m.get("unlabelled_pairs"):
        summary += f"; {m['unlabelled_pairs']} test pairs without solutions (predicted only)"
    data = json.dumps(page_entries(loaded, ds, result, progress), separators=(",", ":"))
    colours = json.dumps([f"rgb({r},{g},{b})" for r, g, b in PALETTE.tolist()])
    text = (_TEMPLATE.replace("__TITLE__", html.escape(title)).replace("__SUMMARY__", html.escape(summary))
            .replace("__CHECKPOINT__", html.escape(str(loaded.path))).replace("__SCORING__", html.escape(m["scoring"]))
            .replace("__COLOURS__", colours).replace("__DATA__", data.replace("</", "<\\/")))
    path = Path(path)
    with atomic_output(path) as tmp:
        Path(tmp).write_text(text)
    return path


_TEMPLATE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>__TITLE__</title>
<style>
body { font: 14px system-ui, sans-serif; margin: 1.5em; color: #222; }
.pair { border-top: 1px solid #ddd; padding: .6em 0; }
.pair h3 { margin: .2em 0 .4em; font-size: 14px; }
.solved h3 span { color: #1a7f37; } .failed h3 span { color: #cf222e; } .unlabelled h3 span { color: #777; }
.row { display: flex; flex-wrap: wrap; gap: 14px; align-items: flex-start; }
figure { margin: 0; } figcaption { font-size: 11px; color: #555; white-space: pre; }
.grid { display: inline-grid; gap: 1px; background: #555; border: 1px solid #555; }
.grid div { width: 10px; height: 10px; }
.hit { outline: 3px solid #1a7f37; }
body.failures-only .solved { display: none; }
</style></head>
<body>
<h1>__TITLE__</h1>
<p>__SUMMARY__ &middot; scoring: __SCORING__ &middot; checkpoint <code>__CHECKPOINT__</code></p>
<label><input type="checkbox" id="only"> show only failures (or open with <code>#failures</code>)</label>
<div id="pairs"></div>
<script id="data" type="application/json">__DATA__</script>
<script>
const COLOURS = __COLOURS__;
const entries = JSON.parse(document.getElementById("data").textContent);
function grid(rows, caption, hit) {
  const fig = document.createElement("figure");
  const cap = document.createElement("figcaption");
  cap.textContent = rows ? caption : caption + "\n(empty grid)";
  if (!rows) { fig.append(cap); return fig; }
  const g = document.createElement("div");
  g.className = "grid" + (hit ? " hit" : "");
  g.style.gridTemplateColumns = `repeat(${rows[0].length}, 10px)`;
  for (const row of rows) for (const c of row) {
    const cell = document.createElement("div");
    cell.style.background = COLOURS[+c];
    g.appendChild(cell);
  }
  fig.append(g, cap);
  return fig;
}
const root = document.getElementById("pairs");
for (const e of entries) {
  const div = document.createElement("div");
  div.className = "pair " + e.status;
  const h = document.createElement("h3");
  h.innerHTML = `${e.task} &middot; test pair ${e.pair} &middot; <span>${e.status}</span>`;
  const row = document.createElement("div");
  row.className = "row";
  row.appendChild(grid(e.input, "input"));
  e.steps.forEach((s, i) => row.appendChild(grid(s, `step ${i + 1}/${e.steps.length}` +
    (e.halts ? `\nhalt ${e.halts[i].toFixed(2)}` : ""))));
  const key = r => r ? r.join("/") : "";
  e.attempts.forEach((a, i) => row.appendChild(grid(a, `attempt ${i + 1}` +
    (e.votes[i] !== undefined ? ` (${e.votes[i]} vote${e.votes[i] === 1 ? "" : "s"})` : ""), e.solution && key(a) === key(e.solution))));
  if (e.solution) row.appendChild(grid(e.solution, "solution"));
  div.append(h, row);
  root.appendChild(div);
}
const only = document.getElementById("only");
function apply() { document.body.classList.toggle("failures-only", only.checked); }
only.addEventListener("change", apply);
only.checked = location.hash === "#failures";
apply();
</script>
</body></html>
"""
