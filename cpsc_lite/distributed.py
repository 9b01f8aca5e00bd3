"""Data-parallel distillation on several GPUs (or CPU processes) with DistributedDataParallel.

Launch (one process per GPU; every flag of ``cpsc-lite distill`` works unchanged)::

    torchrun --standalone --nproc_per_node=4 -m cpsc_lite distill --teacher T.pth --teacher-model resnet34 \\
        --config configs/c10_resnet34_resnet18.yaml --out runs/c10_r34_r18

``torchrun`` sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``; the command sees them and turns
distributed mode on by itself (``--distributed`` says so explicitly and is needed under a bare
``srun``). Under SLURM, either start one ``torchrun`` per node::

    srun --ntasks-per-node=1 torchrun --nnodes=$SLURM_NNODES --nproc_per_node=4 \\
        --rdzv_backend=c10d --rdzv_endpoint=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1):29500 \\
        -m cpsc_lite distill ...

or one task per GPU, which reads ``SLURM_PROCID``/``SLURM_NTASKS``/``SLURM_LOCALID``::

    export MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1) MASTER_PORT=29500
    srun --ntasks-per-node=4 --gpus-per-task=1 cpsc-lite distill --distributed ...

What is split and what is shared (the choices, and why):

* ``batch_size`` stays the *global* batch: each of N ranks draws ``batch_size / N`` fresh (z, y)
  from its own random stream (seed + rank; rank 0's stream is the single-process one), and
  gradients are averaged, so a step sees the same number of samples as on one GPU.
* Generator and student are wrapped in DDP (parameters start from rank 0's copy; gradients are
  all-reduced during backward). The generator step runs the frozen teacher and the student
  *unwrapped*: they only pass gradients through to the images, and a DDP student whose
  parameters have ``requires_grad=False`` would wait for gradients that never come. The small
  contrast projection (trained with the generator) is not wrapped; its gradients are averaged
  explicitly before the generator's optimiser steps.
* BatchNorm: by default each rank normalises with the statistics of its own share of the batch
  (standard DDP behaviour; running statistics are rank 0's, broadcast at every DDP forward).
  ``--sync-bn`` (CUDA only) uses SyncBatchNorm in the generator and the student instead, so batch
  statistics are over the global batch as on one GPU, at the cost of one all-gather per BN layer.
  The teacher's BN-statistics prior always compares each rank's own batch statistics with the
  teacher's running ones (the teacher stays plain BatchNorm in eval mode): with small per-rank
  batches (< 64) that term is noisier than on one GPU.
* Rank 0 alone evaluates, logs, writes checkpoints, figures and metrics; the others wait at a
  barrier. Checkpoints carry every rank's random state, so ``--resume`` with the same number of
  processes continues each rank's stream exactly. ``--out`` must be on a file system every node
  can read (all ranks load ``state.pt`` on resume).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable, Mapping, Optional

import torch
import torch.distributed as dist
from torch import nn

from . import CpscError


@dataclass
class DistContext:
    """Where this process sits in a data-parallel job; a single process is ``DistContext()``.

    Every collective helper is a no-op for a single process, so callers need no branches.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: Optional[str] = None
    device: Optional[torch.device] = None
    owns_group: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            if self.backend == "nccl":
                dist.barrier(device_ids=[self.device.index])
            else:
                dist.barrier()

    def _comm_device(self) -> torch.device:
        return self.device if self.backend == "nccl" else torch.device("cpu")

    def all_reduce_mean(self, values: torch.Tensor) -> torch.Tensor:
        """The mean over ranks of a tensor (returned on this rank's communication device)."""
        if not self.enabled:
            return values
        out = values.detach().to(self._comm_device(), torch.float64).clone()
        dist.all_reduce(out)
        return out / self.world_size

    def average_gradients(self, params: Iterable[torch.Tensor]) -> None:
        """Average ``.grad`` over ranks for parameters outside any DDP wrapper (one all-reduce)."""
        if not self.enabled:
            return
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()

    def broadcast_module(self, module: nn.Module, buffers_only: bool = False) -> None:
        """Copy rank 0's parameters (unless ``buffers_only``) and buffers to every rank, in place."""
        if not self.enabled:
            return
        tensors = list(module.buffers()) + (
            [] if buffers_only else list(module.parameters())
        )
        with torch.no_grad():
            for t in tensors:
                dist.broadcast(t.data, src=0)

    def all_gather_object(self, obj) -> list:
        if not self.enabled:
            return [obj]
        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast_object(self, obj):
        """Rank 0's ``obj`` on every rank."""
        if not self.enabled:
            return obj
        box = [obj if self.is_main else None]
        # NCCL: on the current device (set at init)
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False


def launch_environment(env: Optional[Mapping[str, str]] = None) -> Optional[dict]:
    """Rank, world size and local rank from torchrun's or SLURM's variables; None outside a launcher."""
    env = os.environ if env is None else env
    if "RANK" in env and "WORLD_SIZE" in env:
        return dict(
            rank=int(env["RANK"]),
            world_size=int(env["WORLD_SIZE"]),
            local_rank=int(env.get("LOCAL_RANK", 0)),
            launcher="torchrun"
            if "TORCHELASTIC_RUN_ID" in env or "LOCAL_RANK" in env
            else "env",
        )
    if "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
        return dict(
            rank=int(env["SLURM_PROCID"]),
            world_size=int(env["SLURM_NTASKS"]),
            local_rank=int(env.get("SLURM_LOCALID", 0)),
            launcher="slurm",
        )
    return None


def init_distributed(
    device: str = "auto",
    required: bool = False,
    env: Optional[Mapping[str, str]] = None,
) -> DistContext:
    """Join the process group described by the launcher's environment (see the module docstring).

    Outside a launcher (or with one process) this returns a single-process context and
    initialises nothing, unless ``required`` (``--distributed``), which then says how to launch.
    torchrun's variables switch distributed mode on by themselves; SLURM's only with ``required``
    (an ``srun`` job step may run several independent commands). NCCL on CUDA, Gloo on CPU.
    """
    from .engine import pick_device

    info = launch_environment(env)
    if info is not None and info["launcher"] == "slurm" and not required:
        info = None
    if info is None:
        if required:
            raise CpscError(
                "--distributed needs a launcher that starts one process per GPU and tells each its "
                "rank: run `torchrun --standalone --nproc_per_node=N -m cpsc_lite distill ...` (on one "
                "machine), or under SLURM `srun ... cpsc-lite distill --distributed ...` with "
                "MASTER_ADDR exported (details: `python -m pydoc cpsc_lite.distributed`)."
            )
        return DistContext()
    rank, world, local = info["rank"], info["world_size"], info["local_rank"]
    if world <= 1:
        return DistContext()
    env_map = os.environ if env is None else env
    if "MASTER_ADDR" not in env_map:
        raise CpscError(
            "Distributed mode needs MASTER_ADDR (and optionally MASTER_PORT, default 29500): the "
            "host of rank 0. Under SLURM: export MASTER_ADDR=$(scontrol show hostnames "
            '"$SLURM_JOB_NODELIST" | head -n1). torchrun sets it for you.'
        )
    os.environ.setdefault("MASTER_ADDR", env_map["MASTER_ADDR"])
    os.environ.setdefault("MASTER_PORT", env_map.get("MASTER_PORT", "29500"))
    dev = pick_device(device)
    if dev.type == "cuda":
        if dev.index is not None and device not in ("auto", "cuda"):
            raise CpscError(
                f"--device {device} pins every process to one GPU; in distributed mode each process "
                "uses cuda:LOCAL_RANK. Pass --device cuda (or auto), and choose GPUs with "
                "CUDA_VISIBLE_DEVICES."
            )
        dev = torch.device("cuda", cuda_index(local, torch.cuda.device_count()))
        torch.cuda.set_device(dev)
        backend = "nccl"
    elif dev.type == "cpu":
        backend = "gloo"
    else:
        raise CpscError(
            f"Distributed mode runs on CUDA (NCCL) or CPU (Gloo), not on {dev.type}. Pass --device cpu "
            "or run one process."
        )
    if not dist.is_initialized():
        dist.init_process_group(
            backend, init_method="env://", rank=rank, world_size=world
        )
        owns = True
    else:
        owns = False
    return DistContext(
        rank=rank,
        world_size=world,
        local_rank=local,
        backend=backend,
        device=dev,
        owns_group=owns,
    )


def cuda_index(local_rank: int, visible: int) -> int:
    """The GPU a process with ``local_rank`` uses when it sees ``visible`` GPUs.

    Usually ``cuda:LOCAL_RANK``. A scheduler that binds one GPU to each task (SLURM's
    ``--gpus-per-task=1``, or CUDA_VISIBLE_DEVICES set per process) shows every process a single
    device, whatever its local rank: that process uses the one device it sees.
    """
    if visible == 1:
        return 0
    if local_rank >= visible:
        raise CpscError(
            f"Local rank {local_rank} has no GPU: this process sees {visible} GPU(s). Start at most "
            "one process per GPU (--nproc_per_node), or bind one GPU to each task "
            "(srun --gpus-per-task=1)."
        )
    return local_rank


def per_rank_batch(batch_size: int, world_size: int) -> int:
    """Each rank's share of the global batch; it must divide evenly."""
    if batch_size % world_size:
        raise CpscError(
            f"batch_size {batch_size} is the global batch and must divide evenly over {world_size} "
            f"processes; use e.g. {batch_size - batch_size % world_size or world_size}."
        )
    return batch_size // world_size
