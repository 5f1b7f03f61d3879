"""Small file helpers: every file is written to a temporary sibling, then renamed into place."""

from __future__ import annotations

import json
from pathlib import Path

from arc_data.fsio import atomic_output


def atomic_write_text(path: str | Path, text: str) -> Path:
    with atomic_output(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def atomic_write_json(path: str | Path, obj) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2) + "\n")
