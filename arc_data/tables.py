"""Arrow schemas of a dataset's three tables, and the dataset fingerprint.

Tables are Arrow IPC files (uncompressed), so every Ray Train worker on a node memory-maps the
same pages instead of holding its own copy. Schema (docs/data.md):

tasks.arrow     one row per puzzle (group): task_id, subset, role, n_train, n_test, n_versions
examples.arrow  one row per *base* pair: task_index, split (0 train / 1 test), kind, pair_index,
                in_h, in_w, out_h, out_w, input/output (row-major colour bytes)
versions.arrow  one row per augmented version = puzzle identifier (row + 1): task_index,
                dihedral (0..7), colour_map [10], translation (row, col per training example)
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa

from .manifest import SCHEMA_VERSION


def _tasks(c: dict) -> pa.Table:
    return pa.table({
        "task_id": pa.array(c["task_id"], pa.string()),
        "subset": pa.array(c["subset"], pa.string()),
        "role": pa.array(c["role"], pa.string()),
        "n_train": pa.array(c["n_train"], pa.int32()),
        "n_test": pa.array(c["n_test"], pa.int32()),
        "n_versions": pa.array(c["n_versions"], pa.int32()),
    })


def _examples(c: dict) -> pa.Table:
    cols = {
        "task_index": pa.array(c["task_index"], pa.int32()),
        "split": pa.array(c["split"], pa.int8()),
        "kind": pa.array(c["kind"], pa.string()),
        "pair_index": pa.array(c["pair_index"], pa.int16()),
    }
    cols |= {k: pa.array(c[k], pa.uint8()) for k in ("in_h", "in_w", "out_h", "out_w")}
    cols |= {k: pa.array(c[k], pa.binary()) for k in ("input", "output")}
    return pa.table(cols)


VERSIONS_SCHEMA = pa.schema([
    ("task_index", pa.int32()),
    ("dihedral", pa.uint8()),
    ("colour_map", pa.list_(pa.uint8(), 10)),
    ("translation", pa.list_(pa.uint8())),
])


def versions_batch(c: dict) -> pa.RecordBatch:
    values, offsets = c["translation"]
    return pa.record_batch([
        pa.array(c["task_index"], pa.int32()),
        pa.array(c["dihedral"], pa.uint8()),
        pa.FixedSizeListArray.from_arrays(pa.array(c["colour_map"].ravel(), pa.uint8()), 10),
        pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(values, pa.uint8())),
    ], schema=VERSIONS_SCHEMA)


TABLES = {"tasks": _tasks, "examples": _examples}


def write_table(table: pa.Table, path: Path) -> None:
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=1 << 20)


def read_table(path: Path) -> pa.Table:
    """Memory-mapped, zero-copy read."""
    return pa.ipc.open_file(pa.memory_map(str(path), "r")).read_all()


def _column_buffers(arr: pa.Array) -> list[np.ndarray]:
    """Chunking-independent byte views of a column: values, plus lengths for variable-size types."""
    t = arr.type
    if pa.types.is_fixed_size_list(t):
        return [arr.flatten().to_numpy()]
    if pa.types.is_list(t):
        return [np.diff(np.asarray(arr.offsets)).astype(np.int64), arr.flatten().to_numpy()]
    if pa.types.is_string(t) or pa.types.is_binary(t):
        items = [x.encode() if isinstance(x, str) else x for x in arr.to_pylist()]
        return [np.array([len(x) for x in items], dtype=np.int64), np.frombuffer(b"".join(items), np.uint8)]
    return [arr.to_numpy(zero_copy_only=False)]


class Fingerprint:
    """sha256 over every column's values, independent of file encoding and of batch boundaries."""

    def __init__(self) -> None:
        self._streams: dict[tuple[str, str, int], hashlib._Hash] = {}

    def update(self, table: str, batch: pa.RecordBatch | pa.Table) -> None:
        for name in batch.column_names:
            col = batch.column(name)
            for chunk in col.chunks if isinstance(col, pa.ChunkedArray) else [col]:
                for i, buf in enumerate(_column_buffers(chunk)):
                    key = (table, f"{name}:{chunk.type}", i)
                    self._streams.setdefault(key, hashlib.sha256()).update(np.ascontiguousarray(buf).view(np.uint8).ravel())

    def hexdigest(self) -> str:
        h = hashlib.sha256(f"disco-arc-dataset/{SCHEMA_VERSION}".encode())
        for key in sorted(self._streams):
            h.update(repr(key).encode() + self._streams[key].digest())
        return h.hexdigest()


def fingerprint(tables: dict[str, pa.Table]) -> str:
    fp = Fingerprint()
    for name, table in tables.items():
        fp.update(name, table)
    return fp.hexdigest()
