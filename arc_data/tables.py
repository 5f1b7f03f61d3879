"""Arrow schemas of a dataset's three tables, and the dataset fingerprint.

Tables are Arrow IPC files (uncompressed), so every Ray Train worker on a node memory-maps the
same pages instead of holding its own copy. Schema (docs/data.md):

tasks.arrow     one row per puzzle: task_id, subset, role, [group,] n_train, n_test, n_versions
                (group: only for corpora of concept folders, e.g. ConceptARC)
examples.arrow  one row per *base* pair: task_index, split (0 train / 1 test), kind, pair_index,
                in_h, in_w, out_h, out_w, input/output (row-major colour bytes; a test
                input without a solution has a 0x0 output)
versions.arrow  one row per augmented version = puzzle identifier (row + 1): task_index,
                dihedral (0..7), colour_map [10], translation (row, col per training example)
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa

from .manifest import SCHEMA_VERSION

TRAIN, TEST = 0, 1  # values of examples.arrow's `split` column


# Arrays are assembled from raw buffers: zero-copy, and it keeps `pyarrow.compute` (≈20 MB of
# Python objects that pa.array() imports) out of the build's memory.
def _buf(x: np.ndarray) -> pa.Buffer:
    return pa.py_buffer(np.ascontiguousarray(x))


def _prim(values, dtype: str) -> pa.Array:
    x = np.asarray(values, dtype=dtype)
    return pa.Array.from_buffers(pa.from_numpy_dtype(x.dtype), x.size, [None, _buf(x)])


def _bytes(items: list, typ: pa.DataType) -> pa.Array:
    items = [x.encode() if isinstance(x, str) else x for x in items]
    offsets = np.concatenate([[0], np.cumsum([len(x) for x in items])]).astype(np.int32)
    return pa.Array.from_buffers(typ, len(items), [None, _buf(offsets), pa.py_buffer(b"".join(items))])


def _list(offsets: np.ndarray, values: pa.Array) -> pa.Array:
    return pa.Array.from_buffers(pa.list_(values.type), offsets.size - 1, [None, _buf(offsets.astype(np.int32))],
                                 children=[values])


def _fixed(values: pa.Array, size: int) -> pa.Array:
    return pa.Array.from_buffers(pa.list_(values.type, size), len(values) // size, [None], children=[values])


def _tasks(c: dict) -> pa.Table:
    return pa.table({
        "task_id": _bytes(c["task_id"], pa.string()),
        "subset": _bytes(c["subset"], pa.string()),
        "role": _bytes(c["role"], pa.string()),
        **({"group": _bytes(c["group"], pa.string())} if "group" in c else {}),
        "n_train": _prim(c["n_train"], "int32"),
        "n_test": _prim(c["n_test"], "int32"),
        "n_versions": _prim(c["n_versions"], "int32"),
    })


def _examples(c: dict) -> pa.Table:
    cols = {
        "task_index": _prim(c["task_index"], "int32"),
        "split": _prim(c["split"], "int8"),
        "kind": _bytes(c["kind"], pa.string()),
        "pair_index": _prim(c["pair_index"], "int16"),
    }
    cols |= {k: _prim(c[k], "uint8") for k in ("in_h", "in_w", "out_h", "out_w")}
    cols |= {k: _bytes(c[k], pa.binary()) for k in ("input", "output")}
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
        _prim(c["task_index"], "int32"),
        _prim(c["dihedral"], "uint8"),
        _fixed(_prim(c["colour_map"].ravel(), "uint8"), 10),
        _list(offsets, _prim(values, "uint8")),
    ], schema=VERSIONS_SCHEMA)


TABLES = {"tasks": _tasks, "examples": _examples}


def write_table(table: pa.Table, path: Path) -> None:
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=1 << 20)


def read_table(path: Path) -> pa.Table:
    """Memory-mapped, zero-copy read."""
    return pa.ipc.open_file(pa.memory_map(str(path), "r")).read_all()


def _view(arr: pa.Array, start: int, count: int, dtype) -> np.ndarray:
    """`count` items of `arr`'s data buffer from logical position `start` (no pyarrow.compute)."""
    dtype = np.dtype(dtype)
    return np.frombuffer(arr.buffers()[1], dtype, count=count, offset=(arr.offset + start) * dtype.itemsize)


def _column_buffers(arr: pa.Array) -> list[np.ndarray]:
    """Chunking-independent byte views of a column: values, plus lengths for variable-size types."""
    t, n = arr.type, len(arr)
    if pa.types.is_fixed_size_list(t):
        child = arr.values
        return [_view(child, arr.offset * t.list_size, n * t.list_size, str(child.type))]
    if pa.types.is_list(t) or pa.types.is_string(t) or pa.types.is_binary(t):
        offsets = _view(arr, 0, n + 1, np.int32)
        if pa.types.is_list(t):
            child = arr.values
            values = _view(child, int(offsets[0]), int(offsets[-1] - offsets[0]), str(child.type))
        else:
            values = np.frombuffer(arr.buffers()[2], np.uint8)[offsets[0] : offsets[-1]]
        return [np.diff(offsets).astype(np.int64), values]
    return [_view(arr, 0, n, str(t))]


class Fingerprint:
    """sha256 over every column's values, independent of file encoding and of batch boundaries."""

    def __init__(self, canvas: int) -> None:
        self.canvas = canvas
        self._streams: dict[tuple[str, str, int], hashlib._Hash] = {}

    def update(self, table: str, batch: pa.RecordBatch | pa.Table) -> None:
        for name in batch.column_names:
            col = batch.column(name)
            for chunk in col.chunks if isinstance(col, pa.ChunkedArray) else [col]:
                for i, buf in enumerate(_column_buffers(chunk)):
                    key = (table, f"{name}:{chunk.type}", i)
                    self._streams.setdefault(key, hashlib.sha256()).update(np.ascontiguousarray(buf).view(np.uint8).ravel())

    def hexdigest(self) -> str:
        h = hashlib.sha256(f"disco-arc-dataset/{SCHEMA_VERSION}/canvas={self.canvas}".encode())
        for key in sorted(self._streams):
            h.update(repr(key).encode() + self._streams[key].digest())
        return h.hexdigest()


def fingerprint(tables: dict[str, pa.Table], canvas: int) -> str:
    fp = Fingerprint(canvas)
    for name, table in tables.items():
        fp.update(name, table)
    return fp.hexdigest()
