"""Trainer callbacks that break things on purpose, for the fault-tolerance tests.

Imported by name inside Ray Train workers (conftest puts this folder on their PYTHONPATH).
"""

from __future__ import annotations

import os


class KillLastRankOnce:
    """The last rank exits hard after batch `at` of a run that did not resume (so only once)."""

    def __init__(self, at: int):
        self.at = at

    def after_batch(self, trainer) -> None:
        if trainer.batch == self.at and trainer.rank == trainer.world - 1 and trainer.restored_from is None:
            print(f"[test] rank {trainer.rank}: fault injection at batch {trainer.batch}: exiting", flush=True)
            os._exit(1)
