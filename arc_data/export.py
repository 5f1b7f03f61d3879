"""`disco data export`: a fully materialised Parquet file for pandas / polars / Ray Data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from .dataset import TRAIN, ArcDataset
from .fsio import atomic_output


def _schema(seq_len: int) -> pa.Schema:
    return pa.schema([
        ("split", pa.string()),
        ("name", pa.string()),
        ("puzzle_identifier", pa.int32()),
        ("example_index", pa.int32()),
        ("inputs", pa.list_(pa.uint8(), seq_len)),
        ("labels", pa.list_(pa.int16(), seq_len)),
    ])


def _train_rows(ds: ArcDataset, max_versions: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    vs, exs, slots = [], [], []
    for t in np.flatnonzero(ds.n_train):
        n_v = ds.n_versions[t] if max_versions is None else min(max_versions, int(ds.n_versions[t]))
        ex = ds.examples_of(t, TRAIN)
        vs.append(np.repeat(np.arange(ds.version_start[t], ds.version_start[t] + n_v), ex.size))
        exs.append(np.tile(ex, n_v))
        slots.append(np.tile(np.arange(ex.size), n_v))
    return np.concatenate(vs), np.concatenate(exs), np.concatenate(slots)


def export_parquet(ds: ArcDataset, out: str | Path, split: str = "all", max_versions: int | None = None,
                   chunk: int = 8192, progress: bool = True) -> int:
    """Write rows (split, name, identifier, example, inputs, labels); returns the row count."""
    out = Path(out).expanduser().resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    parts = []
    if split in ("train", "all"):
        parts.append(("train", *_train_rows(ds, max_versions)))
    if split in ("test", "all"):
        v, e = ds.test_rows(max_versions)
        parts.append(("test", v, e, None))
    total = sum(p[1].size for p in parts)
    schema = _schema(ds.seq_len)
    with atomic_output(out) as tmp:
        with pq.ParquetWriter(tmp, schema, compression="zstd") as writer, \
                tqdm(total=total, desc="exporting", unit="row", disable=not progress) as bar:
            for name, versions, examples, slots in parts:
                for lo in range(0, versions.size, chunk):
                    sl = slice(lo, lo + chunk)
                    inputs, labels = ds.render_rows(versions[sl], examples[sl], None if slots is None else slots[sl])
                    n = inputs.shape[0]
                    writer.write_batch(pa.record_batch([
                        pa.array([name] * n, pa.string()),
                        pa.array([ds.name(int(v) + 1) for v in versions[sl]], pa.string()),
                        pa.array(versions[sl] + 1, pa.int32()),
                        pa.array(examples[sl], pa.int32()),
                        pa.FixedSizeListArray.from_arrays(pa.array(inputs.ravel()), ds.seq_len),
                        pa.FixedSizeListArray.from_arrays(pa.array(labels.ravel()), ds.seq_len),
                    ], schema=schema))
                    bar.update(n)
    return total

