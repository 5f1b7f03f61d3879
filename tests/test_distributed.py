"""Two real processes in a gloo group: the puzzle table's SignSGD sees both ranks' rows, and the
evaluator gathers every rank's predictions on rank 0 (same result as one process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import torch

from trainer.evaluate import ArcEvaluator
from trainer.puzzle_emb import PuzzleEmbedding

WORKER = textwrap.dedent("""
    import json, sys
    import numpy as np, torch, torch.distributed as dist
    from arc_data.dataset import ArcDataset
    from trainer.evaluate import ArcEvaluator
    from trainer.puzzle_emb import PuzzleEmbedding

    rank, store, data, out = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    emb = PuzzleEmbedding(6, 3, torch.device("cpu"))
    ids = torch.tensor([[1, 2], [2, 5]][rank])
    grads = torch.tensor([[[1.0, -1, 0], [2, 0, 0]], [[-3.0, 0, 1], [0, 1, 0]]][rank])
    (emb(ids, train=True) * grads).sum().backward()
    emb.step(lr=0.1, weight_decay=0.0)
    torch.save(emb.weight, f"{out}/weight{rank}.pt")

    ds = ArcDataset(data)
    preds = np.load(f"{out}/preds.npy")
    v, e = ds.test_rows()
    half = slice(rank, None, 2)
    ev = ArcEvaluator(ds)
    ev.update(e[half], v[half] + 1, preds[half], np.full(v[half].size, 0.5))
    res = ev.result()
    if rank == 0:
        json.dump(res.metrics, open(f"{out}/metrics.json", "w"))
    else:
        assert res is None
    dist.destroy_process_group()
""")


def test_two_ranks_share_sparse_updates_and_gather_predictions(tmp_path, small_dataset):
    from arc_data.grids import augment, encode

    ds = small_dataset
    v, e = ds.test_rows()
    rng = np.random.default_rng(0)
    preds = []
    for vv, ee in zip(v, e, strict=True):
        _, tid, cmap = ds.version_of(int(vv) + 1)
        truth = ds.grid(int(ee), "output")
        grid = truth if rng.random() < 0.6 else np.full_like(truth, 3)
        preds.append(encode(augment(grid, tid, cmap), canvas_side=ds.canvas))
    preds = np.stack(preds)
    np.save(tmp_path / "preds.npy", preds)
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, str(script), str(r), str(tmp_path / "store"), str(ds.root),
                               str(tmp_path)], env=env, stderr=subprocess.PIPE, text=True) for r in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err

    w0, w1 = (torch.load(tmp_path / f"weight{r}.pt", weights_only=True) for r in range(2))
    assert torch.equal(w0, w1)  # every rank applied the same update
    single = PuzzleEmbedding(6, 3, torch.device("cpu"))
    (single(torch.tensor([1, 2, 2, 5]), train=True)
     * torch.tensor([[1.0, -1, 0], [2, 0, 0], [-3.0, 0, 1], [0, 1, 0]])).sum().backward()
    single.step(lr=0.1, weight_decay=0.0)
    assert torch.equal(w0, single.weight)  # duplicates (id 2) summed across ranks: (-1, 0, 1) -> sign

    ev = ArcEvaluator(ds)
    ev.update(e, v + 1, preds, np.full(v.size, 0.5))
    expected = ev.result().metrics
    assert json.loads((tmp_path / "metrics.json").read_text()) == expected
