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
import time

from . import checkpoint as ckpt
from .config import RunSpec
from .loop import Trainer
from .runs import Run


def train_loop(config: dict) -> dict:
    """Entry point of every worker; `config` = {"spec": RunSpec dict, "name", "storage", "callbacks",
    "until_evaluation"}. With `until_evaluation`, training pauses after that evaluation (its
    checkpoint saved): the run resumes from there exactly, as if it had never stopped."""
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
    mode = upload_mode(trainer.spec.runtime.checkpoint_upload, trainer.run.storage.is_local)
    until, reported = config.get("until_evaluation"), 0
    while not trainer.done and not (until is not None and trainer.last_metrics.get("evaluation", 0) >= until):
        if trainer.train_batch():
            metrics = trainer.evaluate()
            d = tempfile.mkdtemp(prefix="disco-ckpt-")  # Ray deletes it once uploaded
            trainer.save(d)
            t0 = time.perf_counter()
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d),
                             checkpoint_dir_name=ckpt.dir_name(trainer.batch), checkpoint_upload_mode=mode,
                             delete_local_checkpoint_after_upload=True)
            trainer.progress.report_blocked_s += time.perf_counter() - t0
            reported += 1
            trainer.retain_checkpoints()  # never touches a checkpoint still uploading (runs.to_retain)
    trainer.close()
    return trainer.last_metrics | {"report_blocked_s": round(trainer.progress.report_blocked_s, 3),
                                   "checkpoint_upload": mode.value.lower(), "reported": reported,
                                   "paused": not trainer.done}


def upload_mode(setting: str, local: bool):
    """SYNC copies before report returns (cheap on a local disk); ASYNC uploads in the background,
    one checkpoint at a time, so object storage never stalls training."""
    from ray.train import CheckpointUploadMode

    if setting == "auto":
        setting = "sync" if local else "async"
    return CheckpointUploadMode.SYNC if setting == "sync" else CheckpointUploadMode.ASYNC


def _quiet_report_log() -> None:
    # Ray logs every report under a logger named by its source file's path, which escapes
    # LoggingConfig (docs/training.md); find that path without importing Ray's internals.
    spec = importlib.util.find_spec("ray.train.v2._internal.execution.context")
    if spec is not None and spec.origin:
        logging.getLogger(spec.origin).setLevel(logging.WARNING)
