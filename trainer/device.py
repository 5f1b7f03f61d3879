"""The one place that decides device, compute dtype, distributed backend and torch.compile.

CPU: fp32 (bf16 is ~1.7x slower on the dev CPUs), gloo, no compile, one torch thread per
process unless told otherwise. CUDA: bf16, NCCL, compile on request. A training worker uses a GPU
exactly when its run config gives it one (`runtime.gpus_per_worker > 0`), and the same fact picks
the backend, so device and backend cannot disagree. Nothing else in disco names a device type.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:  # torch is imported where used, so the CLI can read the choices cheaply
    import torch

Precision = Literal["auto", "fp32", "bf16"]
DevicePreference = Literal["auto", "cpu", "cuda"]
DEVICE_CHOICES: tuple[str, ...] = ("auto", "cpu", "cuda")


class WorkerResources(Protocol):  # trainer.config.RuntimeConfig
    device: str
    precision: Precision
    compile: bool | None
    gpus_per_worker: float


def uses_accelerator(runtime: WorkerResources) -> bool:
    """Whether a training worker computes on a GPU: exactly when Ray gives it one."""
    return runtime.gpus_per_worker > 0


def resource_conflict(device: str, gpus_per_worker: float) -> str | None:
    """Why a device preference can never work with the GPUs the worker reserves, or None. Ray
    hides GPUs from workers that do not ask for one, and the backend follows gpus_per_worker."""
    if device == "cpu" and gpus_per_worker > 0:
        return (f"runtime.device=cpu with runtime.gpus_per_worker={gpus_per_worker}: a CPU run must not reserve "
                "GPUs (set gpus_per_worker=0, or device auto/cuda)")
    if device == "cuda" and gpus_per_worker == 0:
        return "runtime.device=cuda needs runtime.gpus_per_worker > 0 (Ray gives GPUs only to workers that ask for them)"
    return None


def backend_for(runtime: WorkerResources) -> str:
    """torch.distributed backend of the run's workers: NCCL on GPUs, gloo on CPUs."""
    return "nccl" if uses_accelerator(runtime) else "gloo"


def is_distributed() -> bool:
    """Inside a process group of more than one rank."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the world size (0, 1 outside a process group)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    dtype: torch.dtype  # activations and carries; master weights stay fp32
    compile: bool

    @property
    def is_accelerator(self) -> bool:
        return self.device.type != "cpu"

    def synchronize(self) -> None:
        """Wait for queued device work (for timings); a no-op on CPU."""
        if self.is_accelerator:
            import torch

            torch.cuda.synchronize(self.device)


def pick_runtime(prefer: str = "auto", precision: Precision = "auto", compile: bool | None = None,
                 local_rank: int = 0) -> Runtime:
    """prefer: "auto" | "cpu" | "cuda"; compile None = on for CUDA only."""
    import torch

    use_cuda = torch.cuda.is_available() and prefer in ("auto", "cuda")
    if prefer == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("CUDA was requested but torch sees no GPU")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if precision == "auto":
        dtype = torch.bfloat16 if use_cuda else torch.float32
    else:
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]
    return Runtime(device=device, dtype=dtype, compile=use_cuda if compile is None else compile)


def to_device(array, device: torch.device) -> torch.Tensor:
    """A host (numpy) array on `device`; on CUDA through pinned memory with a non-blocking copy, so
    the copy overlaps the compute already queued."""
    import torch

    t = torch.from_numpy(array)
    return t.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else t


def worker_runtime(runtime: WorkerResources, local_rank: int = 0) -> Runtime:
    """The runtime of a training worker, decided by the same fact as its backend."""
    return pick_runtime("cuda" if uses_accelerator(runtime) else "cpu", runtime.precision, runtime.compile,
                        local_rank)


def set_cpu_threads(default: int = 1) -> int:
    """Torch intra-op threads = OMP_NUM_THREADS (Ray sets it to the worker's CPUs) or `default`."""
    import torch

    n = int(os.environ.get("OMP_NUM_THREADS", default))
    torch.set_num_threads(max(1, n))
    return torch.get_num_threads()
