"""Data by recipe: one build per recipe in the cache, racing builders leave one whole dataset,
a changed source is a new entry, and configs name data by recipe or path (path wins)."""

from __future__ import annotations

import json
import multiprocessing as mp
import shutil
from pathlib import Path

import pytest

from arc_data.cache import cached_dataset, recipe_key
from arc_data.dataset import ArcDataset
from arc_data.errors import DataError
from arc_data.manifest import BuildConfig
from trainer.config import DataConfig, load_spec, presets
from trainer.storage import Storage, dataset_dir

RECIPE = BuildConfig(sources=["arc1"], canvas=10, tasks=2, augmentations=1, seed=5)


def _build(cache: str, queue) -> None:
    queue.put(str(cached_dataset(RECIPE, cache)))


def test_a_recipe_is_built_once_and_reused(tmp_path):
    first = cached_dataset(RECIPE, tmp_path)
    made = (first / "manifest.json").stat().st_mtime_ns
    assert cached_dataset(RECIPE, tmp_path) == first and (first / "manifest.json").stat().st_mtime_ns == made
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no staging directory left behind
    assert ArcDataset(first).fingerprint == ArcDataset(cached_dataset(RECIPE, tmp_path / "other")).fingerprint
    assert recipe_key(RECIPE.model_copy(update={"seed": 6})) != first.name


def test_racing_builders_leave_one_whole_dataset(tmp_path):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_build, args=(str(tmp_path), queue)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    answers = {queue.get(timeout=5) for _ in procs}
    assert len(answers) == 1 and [p.name for p in tmp_path.iterdir()] == [Path(answers.pop()).name]
    ArcDataset(next(tmp_path.iterdir())).verify()


def test_an_edited_source_is_a_new_entry_and_bad_sources_fail_in_one_line(tmp_path):
    task = {"train": [{"input": [[1, 2]], "output": [[2, 1]]}], "test": [{"input": [[3, 4]], "output": [[4, 3]]}]}
    src = tmp_path / "mine" / "evaluation"
    src.mkdir(parents=True)
    (src / "a.json").write_text(json.dumps(task))
    recipe = BuildConfig(sources=[str(tmp_path / "mine")], augmentations=1, canvas=4)
    before = cached_dataset(recipe, tmp_path / "cache")
    (src / "a.json").write_text(json.dumps({**task, "test": [{"input": [[3, 3]], "output": [[4, 4]]}]}))
    after = cached_dataset(recipe, tmp_path / "cache")
    assert after != before and ArcDataset(after).fingerprint != ArcDataset(before).fingerprint
    (src / "a.json").write_text('{"train": [{"input": [[12]]')
    with pytest.raises(DataError, match="a.json"):
        cached_dataset(recipe, tmp_path / "cache")
    blocked = tmp_path / "blocked"
    (blocked / recipe_key(RECIPE)).mkdir(parents=True)
    (blocked / recipe_key(RECIPE) / "stray").write_text("x")
    with pytest.raises(DataError, match="holds no dataset; delete it"):
        cached_dataset(RECIPE, blocked)
    assert sorted(p.name for p in blocked.iterdir()) == [recipe_key(RECIPE)]


def test_configs_name_data_by_recipe_or_path(tmp_path, monkeypatch):
    for name in presets():  # every stock preset builds its own data
        assert load_spec(name).data.recipe is not None, name
    assert load_spec("dis_cpu_tiny", ["data.path=/x"]).data.recipe is None  # a path overrides the recipe
    with pytest.raises(ValueError, match="a path .* or a recipe"):
        DataConfig()
    # The cache: $DISCO_DATA_CACHE, else .datasets in local run storage.
    data = DataConfig(recipe=RECIPE)
    monkeypatch.delenv("DISCO_DATA_CACHE", raising=False)
    local = Path(dataset_dir(data, Storage.of(str(tmp_path / "runs"))))
    assert local.parent == tmp_path / "runs" / ".datasets"
    monkeypatch.setenv("DISCO_DATA_CACHE", str(tmp_path / "env"))
    assert Path(dataset_dir(data, Storage.of(str(tmp_path / "runs")))).parent == tmp_path / "env"
    shutil.rmtree(tmp_path / "env")
