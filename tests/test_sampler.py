"""The seeded sampler: reproducible, rank-disjoint and complete, resumable; test mode padded."""

from __future__ import annotations

from itertools import islice

import numpy as np
import pytest

from arc_data.dataset import TEST
from arc_data.errors import DataError

GB = 24


def _take(sampler, n):
    return list(islice(iter(sampler), n))


def _key(batch):
    return np.stack([batch.puzzle_identifiers, batch.example_index], axis=1)


def test_same_seed_same_batches(small_dataset):
    a = _take(small_dataset.train_sampler(GB, seed=5), 6)
    b = _take(small_dataset.train_sampler(GB, seed=5), 6)
    c = _take(small_dataset.train_sampler(GB, seed=6), 6)
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x.inputs, y.inputs) and np.array_equal(x.labels, y.labels)
        assert np.array_equal(x.puzzle_identifiers, y.puzzle_identifiers)
    assert any(not np.array_equal(_key(x), _key(z)) for x, z in zip(a, c, strict=True))


@pytest.mark.parametrize("world", [2, 3, 4])
def test_ranks_disjoint_and_complete(small_dataset, world):
    whole = _take(small_dataset.train_sampler(GB, seed=1), 8)
    parts = [_take(small_dataset.train_sampler(GB, rank=r, world_size=world, seed=1), 8) for r in range(world)]
    for step, full in enumerate(whole):
        shards = [p[step] for p in parts]
        assert all(len(s) == GB // world for s in shards)
        assert np.array_equal(np.concatenate([_key(s) for s in shards]), _key(full))
        assert np.array_equal(np.concatenate([s.inputs for s in shards]), full.inputs)


def test_epochs_follow_reference_semantics_and_batches_span_them(small_dataset):
    ds = small_dataset
    sampler = ds.train_sampler(GB, seed=2)
    plan = sampler.plan(0)
    # One version of every puzzle per epoch, each with its own training examples in a random order.
    assert sorted(ds.v_task[plan.version].tolist()) == np.flatnonzero(ds.n_train).tolist()
    assert np.array_equal(ds.v_task[plan.version], plan.task)
    for g in range(plan.task.size):
        slots = plan.slots[plan.start[g] : plan.start[g + 1]]
        assert sorted(slots.tolist()) == list(range(ds.n_train[plan.task[g]]))
    # The stream runs through the epochs: batches are cut from epoch 0's puzzles, then epoch 1's,
    # a puzzle that overflows a batch is truncated, and no partial batch is dropped.
    batches = _take(sampler, 2 * int(np.ceil(sampler.batches_per_epoch)) + 1)
    rows = np.concatenate([_key(b) for b in batches])
    stream = []
    for epoch in range(3):
        p = sampler.plan(epoch)
        stream += [(v + 1, ds.train_ex_first[t] + s) for v, t, lo, hi in zip(p.version, p.task, p.start[:-1], p.start[1:],
                                                                               strict=True) for s in p.slots[lo:hi]]
    stream = np.array(stream)
    i = 0  # walk the batches over the stream, skipping the truncated tails
    for row in rows:
        while not np.array_equal(stream[i], row):
            i += 1
        i += 1
    assert sampler.epoch >= 2  # the batches crossed epoch boundaries
    assert len(rows) == len(batches) * GB and len({tuple(r) for r in rows[:GB]}) == GB  # distinct within a batch


def test_a_set_smaller_than_one_batch_trains_with_repeats(small_dataset):
    ds = small_dataset
    big = ds.examples_per_epoch * 3 + 5
    sampler = ds.train_sampler(big, seed=0)
    assert sampler.repeats_within_batch and sampler.batches_per_epoch < 1
    (batch,) = _take(sampler, 1)
    assert len(batch) == big and sampler.epoch >= 3
    assert not ds.train_sampler(GB, seed=0).repeats_within_batch


def test_resume_from_state_dict_across_epochs(small_dataset):
    sampler = small_dataset.train_sampler(GB, seed=3)
    n = int(np.ceil(sampler.batches_per_epoch)) + 2
    first = _take(sampler, n)  # crosses an epoch boundary
    reference = _take(small_dataset.train_sampler(GB, seed=3), n + 4)
    state = sampler.state_dict()
    assert state["seed"] == 3 and state["epoch"] >= 1 and set(state) == {"seed", "epoch", "cursor"}
    resumed = small_dataset.train_sampler(GB, seed=3)
    resumed.load_state_dict(state)
    for x, y in zip(first + _take(resumed, 4), reference, strict=True):
        assert np.array_equal(_key(x), _key(y))
    with pytest.raises(DataError, match="seed"):
        small_dataset.train_sampler(GB, seed=4).load_state_dict(state)


def test_positions_saved_before_cross_epoch_packing_still_resume(small_dataset):
    """A checkpoint from before batches spanned epochs saved (epoch, batch); within an epoch the
    batches are the same, so the position converts to the puzzle that batch starts with."""
    sampler = small_dataset.train_sampler(GB, seed=3)
    reference = _take(sampler, 2)
    resumed = small_dataset.train_sampler(GB, seed=3)
    resumed.load_state_dict({"seed": 3, "epoch": 0, "batch": 1})
    assert np.array_equal(_key(next(iter(resumed))), _key(reference[1]))


def test_test_mode_sequential_padded_and_complete(small_dataset):
    ds = small_dataset
    versions, examples = ds.test_rows()
    assert versions.size == ds.manifest.counts.test_examples
    for world in (1, 2, 3):
        seen = []
        for r in range(world):
            for b in ds.test_batches(30, rank=r, world_size=world):
                assert len(b) == 30 // world
                pad = b.puzzle_identifiers == 0
                assert (b.example_index[pad] == -1).all() and (b.labels[pad] == -100).all() and (b.inputs[pad] == 0).all()
                seen += list(zip(b.puzzle_identifiers[~pad] - 1, b.example_index[~pad], strict=True))
        assert sorted(seen) == sorted(zip(versions, examples, strict=True))
    # Test rows are untranslated test pairs; --votes style limit keeps the first K versions.
    assert all(ds.ex_split[e] == TEST for e in examples)
    v1, _ = ds.test_rows(max_versions=1)
    assert v1.size == ds.manifest.counts.base_test_pairs and np.isin(v1, ds.version_start[:-1]).all()


def test_bad_batch_sizes(small_dataset):
    with pytest.raises(DataError, match="multiple of the world size"):
        small_dataset.train_sampler(25, rank=0, world_size=2)
