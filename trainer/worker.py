"""What each Ray Train worker runs: one rank's Trainer, reporting every checkpoint to Ray.

`ray.train.report` is a barrier that can block up to RAY_TRAIN_HEALTH_CHECK_INTERVAL_S, so it is
called only at evaluations. Every rank reports its own part of the checkpoint (the same directory
name); Ray merges them into one directory in storage and registers it once all ranks have.
"""

from __future__ import annotations

import importlib.util
import logging
import posixpath
import tempfile

from . import checkpoint as ckpt
from .config import RunSpec
from .loop import Trainer
from .runs import Run


def train_loop(config: dict) -> dict:
    """Entry point of every worker; `config` = {"spec": RunSpec dict, "name", "storage", "callbacks"}."""
    import ray.train

    _quiet_report_log()
    ctx = ray.train.get_context()
    trainer = Trainer(RunSpec.model_validate(config["spec"]), Run(config["storage"], config["name"]),
                      rank=ctx.get_world_rank(), world=ctx.get_world_size(), local_rank=ctx.get_local_rank(),
                      callbacks=config.get("callbacks", ()))
    given = ray.train.get_checkpoint()  # Ray's latest after a worker-group restart or a re-run
    trainer.restore(posixpath.basename(given.path.rstrip("/")) if given is not None else None, config.get("session"))
    if trainer.restored_from is None and trainer.spec.init is not None and trainer.spec.init.eval_at_start:
        trainer.evaluate()  # batch 0: the pretrained network with blank puzzle embeddings
    while not trainer.done:
        if trainer.train_batch():
            metrics = trainer.evaluate()
            with tempfile.TemporaryDirectory(prefix="disco-ckpt-") as d:
                trainer.save(d)
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d),
                                 checkpoint_dir_name=ckpt.dir_name(trainer.batch))
            trainer.retain_checkpoints()  # the report returned: the checkpoint is in storage
    trainer.close()
    return trainer.last_metrics


def _quiet_report_log() -> None:
    # Ray logs every report under a logger named by its source file's path, which escapes
    # LoggingConfig (docs/training.md); find that path without importing Ray's internals.
    spec = importlib.util.find_spec("ray.train.v2._internal.execution.context")
    if spec is not None and spec.origin:
        logging.getLogger(spec.origin).setLevel(logging.WARNING)
