"""A golden loss curve: the first 20 logged losses of a seeded `dis_cpu_tiny` run (the `make run`
job's preset and data recipe, one process, a log every batch) must stay what they were, so a change
that alters training shows up. (~25 s; marked slow.)

    .venv/bin/python -m pytest -q tests/test_golden.py
    DISCO_REGENERATE_GOLDEN=1 .venv/bin/python -m pytest -q tests/test_golden.py   # after an intended change

Tolerance: relative 2e-3. The run is deterministic on one machine (fp32, one thread, bit for bit);
other CPUs may pick other SIMD kernels, whose rounding differences grow a little over 20 batches.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from arc_data.build import build_dataset
from arc_data.manifest import BuildConfig
from trainer.config import load_spec
from trainer.loop import Trainer
from trainer.runs import Run
from trainer.storage import Storage

pytestmark = pytest.mark.slow
GOLDEN = Path(__file__).parent / "assets" / "losses" / "dis_cpu_tiny.txt"


def test_golden_loss_curve(tmp_path):
    data = tmp_path / "data"  # the `make run` data recipe
    build_dataset(BuildConfig(sources=["arc1"], canvas=10, tasks=8, augmentations=2), data, progress=False)
    spec = load_spec("dis_cpu_tiny", [f"data.path={data}", "runtime.workers=1", "train.log_interval=1",
                                      "train.budget=20", "train.eval_interval=20", "tracking.wandb=off"])
    threads = torch.get_num_threads()
    try:
        trainer = Trainer(spec, Run(Storage.of(str(tmp_path / "runs")), "golden"))
        trainer.restore()
        while not trainer.train_batch():
            pass
    finally:
        torch.set_num_threads(threads)
    losses = [r["loss"] for r in trainer.run.metrics("train")]
    assert len(losses) == 20
    if os.environ.get("DISCO_REGENERATE_GOLDEN"):
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text("# first 20 logged losses of dis_cpu_tiny (see tests/test_golden.py)\n"
                          + "".join(f"{x!r}\n" for x in losses))
    expected = [float(x) for x in GOLDEN.read_text().splitlines() if not x.startswith("#")]
    assert losses == pytest.approx(expected, rel=2e-3)
