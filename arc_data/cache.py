"""Datasets named by recipe: built where they are needed, once, into a cache keyed by their inputs.

A build takes seconds (ARC-1 x1000: ~16 s, ~20 MB), so configs can name their data by how it is
made instead of shipping it. The key covers everything that decides the contents: the build
settings, the dataset schema and the sources' own digests (editing a source's files gives a new
key). Writers race safely: each builds into its own staging directory and renames it into place,
so the cache holds whole datasets or nothing, and a loser of the race uses the winner's copy.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from .build import build_dataset
from .errors import DataError
from .manifest import MANIFEST_FILE, SCHEMA_VERSION, BuildConfig
from .sources import source_digest

CACHE_ENV = "DISCO_DATA_CACHE"
USER_CACHE = Path("~/.cache/disco/datasets")


def recipe_key(recipe: BuildConfig) -> str:
    """What the dataset's contents depend on, hashed (the sources' files, not their parsed tasks:
    a worker finding the dataset cached reads no task)."""
    digests = [source_digest(s) for s in recipe.sources]
    blob = json.dumps({"schema": SCHEMA_VERSION, "build": recipe.model_dump(mode="json"), "sources": digests},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def cached_dataset(recipe: BuildConfig, cache: str | Path, progress: bool = False) -> Path:
    """The directory of the recipe's dataset in `cache`, building it there first if it is missing."""
    cache = Path(cache).expanduser()
    final = cache / recipe_key(recipe)
    if (final / MANIFEST_FILE).is_file():
        return final
    try:
        cache.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=cache))
    except OSError as e:
        raise DataError(f"dataset cache {cache}: {e.strerror or e}") from None
    try:
        build_dataset(recipe, staging / "dataset", progress=progress)
        try:
            os.rename(staging / "dataset", final)
        except OSError:
            if not (final / MANIFEST_FILE).is_file():  # not a lost race: something else is in the way
                raise DataError(f"dataset cache {final} exists but holds no dataset; delete it") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


def default_cache(shared_root: str | None) -> Path:
    """$DISCO_DATA_CACHE, else `.datasets` under storage every node sees (a filesystem path), else
    this node's own ~/.cache/disco/datasets (object storage: each node builds its own copy)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path(shared_root, ".datasets") if shared_root else USER_CACHE.expanduser()
