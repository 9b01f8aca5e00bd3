"""How a run executes, never what it computes: device, precision, memory layout, compile and
DDP wrapping, the optimiser update, seeding and random state (book chapter 8).

The method (:mod:`cpsc_lite.distill`) and teacher training (:mod:`cpsc_lite.teacher`) call these;
on a CPU, by default, only the channels-last layout is active (since 0.7.0: a quarter faster on two
cores); precision stays float32, and ``--no-channels-last`` gives the plain layout of earlier tables.
"""

from __future__ import annotations

import contextlib
import os
import platform
import random
import statistics
import time
import warnings
from dataclasses import asdict, dataclass
from typing import Callable, Iterable, Optional, Sequence

import numpy as np
import torch
from torch import nn

from . import CpscError


def _mps_available() -> bool:
    return (
        getattr(torch.backends, "mps", None) is not None
        and torch.backends.mps.is_available()
    )


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then CPU; an explicit name is used as given, if it exists here."""
    if name in (None, "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise CpscError(
            f"--device {name!r} is not a device name. Use auto, cpu, cuda, cuda:N or mps."
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise CpscError(
                f"--device {name} was requested, but PyTorch sees no CUDA GPU here "
                f"(torch {torch.__version__}, torch.cuda.is_available() is False). Use --device cpu "
                "(or auto), or install a CUDA build of PyTorch on a machine with an NVIDIA GPU."
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise CpscError(
                f"--device {name} does not exist: this machine has {torch.cuda.device_count()} CUDA "
                f"device(s), cuda:0 to cuda:{torch.cuda.device_count() - 1}."
            )
    if device.type == "mps" and not _mps_available():
        raise CpscError(
            f"--device {name} was requested, but Apple's MPS backend is not available here. "
            "Use --device cpu (or auto)."
        )
    return device


# --------------------------------------------------------------- precision
AMP_CHOICES = ("auto", "bf16", "fp16", "off")


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes in bfloat16 natively (fast), not by emulation.

    CUDA: compute capability 8.0 or newer (Ampere, Hopper, ...); ``torch.cuda.is_bf16_supported()``
    also says True on older GPUs such as Colab's T4 (sm_75), where bf16 is emulated and cuDNN has no
    bf16 convolutions. CPU: AVX512-BF16 or AMX, as torch's own CPU checks report them.
    """
    if device.type == "cuda":
        index = (
            device.index if device.index is not None else torch.cuda.current_device()
        )
        return torch.cuda.get_device_capability(index) >= (8, 0)
    if device.type == "cpu":
        cpu = getattr(torch, "cpu", None)
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)
    return False


def cpu_capability() -> str:
    """The CPU's vector capability as torch sees it, with native bf16 named: e.g. ``AVX2``,
    ``AVX512 + AVX512-BF16``, ``AVX512 + AMX`` (benchmarks print it beside their ratios)."""
    text = torch.backends.cpu.get_cpu_capability()
    cpu = getattr(torch, "cpu", None)
    for name, label in (
        ("_is_avx512_bf16_supported", "AVX512-BF16"),
        ("_is_amx_tile_supported", "AMX"),
    ):
        if bool(getattr(cpu, name, lambda: False)()):
            text += " + " + label
    return text


def resolve_amp(amp: str, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype for ``amp`` on ``device``, or None for full float32.

    ``auto``: on CUDA, bf16 where the GPU has it natively (:func:`native_bf16`: Ampere or newer),
    else fp16 with gradient scaling (e.g. Colab's T4); on a CPU, bf16 where it computes bf16
    natively (AVX512-BF16 or AMX; student accuracy and teacher agreement stayed within float32's
    95 % interval over five paired seeds on the digits and ``shapes``, ``data/bench/precision/``),
    float32 elsewhere (emulated bf16 took eight times as long on an AVX2 CPU); float32 on every
    other device. ``bf16`` is
    refused on a GPU without native bf16; on a CPU it is honoured (emulated where the CPU lacks
    AVX512-BF16/AMX: same numbers, slower). ``fp16`` is honoured on CUDA and CPU. On Apple MPS
    both fall back to float32 with a warning.
    """
    if amp not in AMP_CHOICES:
        raise CpscError(f"--amp must be one of {', '.join(AMP_CHOICES)}, not {amp!r}.")
    if amp == "off":
        return None
    if device.type == "cuda":
        native = native_bf16(device)
        if amp == "auto":
            return torch.bfloat16 if native else torch.float16
        if amp == "bf16" and not native:
            raise CpscError(
                f"--amp bf16 needs a GPU with native bfloat16 (NVIDIA Ampere or newer, compute "
                f"capability 8.0+); this {torch.cuda.get_device_name(device)} emulates it, slowly, "
                "and cuDNN has no bf16 convolutions for it. Use --amp fp16 (or --amp auto, which "
                "picks fp16 with gradient scaling here)."
            )
        return torch.bfloat16 if amp == "bf16" else torch.float16
    if amp == "auto":
        return torch.bfloat16 if device.type == "cpu" and native_bf16(device) else None
    if device.type == "mps":
        warnings.warn(
            f"--amp {amp} is not supported on Apple MPS here; running in float32.",
            stacklevel=2,
        )
        return None
    return torch.bfloat16 if amp == "bf16" else torch.float16


@dataclass
class Acceleration:
    """How to run fast. None of it changes the method; on CPU, by default, only channels-last is active.

    * ``amp``: mixed precision (see :func:`resolve_amp`); losses are still computed in float32.
    * ``compile``: ``torch.compile`` mode for the forward passes (``"default"``, ``"max-autotune"``, ...),
      or None for eager; ``compile_backend`` is torch.compile's backend (tests use ``"aot_eager"``).
    * ``channels_last``: NHWC memory layout for the networks and generated images; None = on for CUDA
      and CPU (on two AVX2 cores a digits iteration took 0.76 x as long; the numbers change only in
      float rounding), off for MPS.
    * ``sync_bn``: with several CUDA processes, SyncBatchNorm in the generator and the student
      (batch statistics over the global batch instead of each GPU's share).
    """

    amp: str = "auto"
    compile: Optional[str] = None
    compile_backend: str = "inductor"
    channels_last: Optional[bool] = None
    sync_bn: bool = False

    def use_channels_last(self, device: torch.device) -> bool:
        return (
            device.type in ("cuda", "cpu")
            if self.channels_last is None
            else bool(self.channels_last)
        )

    def to_dict(self) -> dict:
        return asdict(self)


def autocast(device: torch.device, dtype: Optional[torch.dtype]):
    """``torch.autocast`` for ``dtype``, or a context that does nothing when ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def grad_scaler(device: torch.device, dtype: Optional[torch.dtype]):
    """A GradScaler for fp16 (whose small range needs loss scaling); None for bf16 and float32.
    Optimisers stepped through it must not be fused (:func:`fused_optimizer_kwargs`)."""
    return torch.amp.GradScaler(device.type) if dtype == torch.float16 else None


def fused_optimizer_kwargs(
    device: torch.device, amp_dtype: Optional[torch.dtype] = None
) -> dict:
    """``fused=True`` on CUDA (one kernel per optimiser step), unless fp16 (``amp_dtype``) needs a
    GradScaler.

    With fp16 the scaler skips a step whose gradients overflow, common in the first steps. The fused
    SGD kernel creates its momentum buffers with ``empty_like`` on its first step even when that
    step is skipped, so a skipped first step leaves them uninitialised and the next step reads
    garbage (``tests/test_engine.py`` reproduces it with the CPU kernel). So with a scaler the
    optimisers use the multi-tensor (foreach) implementation. Nothing elsewhere: CPU stays unchanged.
    """
    if device.type != "cuda":
        return {}
    return dict(foreach=True) if amp_dtype == torch.float16 else dict(fused=True)


def configure_backends(device: torch.device) -> None:
    """CUDA-only global switches: cuDNN autotuning (fixed shapes here) and TF32 matmuls."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.set_float32_matmul_precision("high")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state(device: Optional[torch.device] = None) -> dict:
    """Every random state a run draws from, as plain tensors/lists (checkpoint-safe).

    On CUDA, the state of the one GPU the run uses (``device``), not of every visible GPU: a run
    resumed where fewer GPUs are visible (Colab after a 2-GPU machine, another
    CUDA_VISIBLE_DEVICES, one DDP rank per GPU) must still find its state.
    """
    state = dict(
        torch=torch.get_rng_state(),
        python=_py_state_to_list(random.getstate()),
        numpy=_np_state_to_list(np.random.get_state()),
    )
    if device is not None and torch.device(device).type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(torch.device(device))
    return state


def set_rng_state(state: dict, device: Optional[torch.device] = None) -> None:
    """Restore :func:`rng_state`; a CUDA state goes to ``device`` when the run is on a GPU.

    Checkpoints written before one state per run was kept hold a list, one per GPU that was
    visible then; the entry of this device's index is used (the first if there are fewer)."""
    torch.set_rng_state(state["torch"])
    random.setstate(_list_to_py_state(state["python"]))
    np.random.set_state(_list_to_np_state(state["numpy"]))
    cuda = state.get("cuda")
    if cuda is None or device is None or torch.device(device).type != "cuda":
        return
    device = torch.device(device)
    if isinstance(cuda, (list, tuple)):
        if not cuda:
            return
        index = (
            device.index if device.index is not None else torch.cuda.current_device()
        )
        cuda = cuda[index] if index < len(cuda) else cuda[0]
    torch.cuda.set_rng_state(cuda, device)


def _py_state_to_list(s):
    return [s[0], list(s[1]), s[2]]


def _list_to_py_state(s):
    return (s[0], tuple(s[1]), s[2])


def _np_state_to_list(s):
    return [
        s[0],
        torch.from_numpy(s[1].astype(np.int64)),
        int(s[2]),
        int(s[3]),
        float(s[4]),
    ]


def _list_to_np_state(s):
    return (s[0], s[1].numpy().astype(np.uint32), s[2], s[3], s[4])


# ------------------------------------------------------------ one update
def update(
    optimizers: Sequence[torch.optim.Optimizer],
    loss: torch.Tensor,
    scaler=None,
    before_step: Optional[Callable[[], None]] = None,
) -> None:
    """zero_grad, backward, step: the one optimiser update of teacher training and both distillation steps.

    With fp16 the ``scaler`` scales the loss and skips steps whose gradients overflow; ``before_step``
    runs between backward and step (e.g. averaging gradients over processes outside DDP).
    """
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    (loss if scaler is None else scaler.scale(loss)).backward()
    if before_step is not None:
        before_step()
    for opt in optimizers:
        opt.step() if scaler is None else scaler.step(opt)
    if scaler is not None:
        scaler.update()


def step_scheduler(scheduler, scaler=None) -> None:
    """Advance a learning-rate schedule once. With fp16 the GradScaler may have skipped the optimiser step
    (overflow); the schedule still advances once per iteration, as intended, so torch's warning is silenced."""
    if scaler is None:
        scheduler.step()
        return
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore",
            message="Detected call of `lr_scheduler.step",
            category=UserWarning,
        )
        scheduler.step()


# ------------------------------------------------------------- wrapping
def compiler(accel: Acceleration) -> Callable[[nn.Module], nn.Module]:
    """``net -> torch.compile(net)`` for ``accel.compile`` (identity when it is off).

    Teacher and student often share one forward (``CifarResNet.forward``); each is compiled for
    grad / no-grad / frozen-parameter calls, which can exceed dynamo's default of 8 variants.
    """
    mode = accel.compile
    if not mode or mode == "off":
        return lambda net: net
    import torch._dynamo

    dynamo, name = torch._dynamo.config, "recompile_limit"
    # its name before torch 2.6
    name = name if hasattr(dynamo, name) else "cache_size_limit"
    setattr(dynamo, name, max(getattr(dynamo, name), 32))
    options = dict(
        backend=accel.compile_backend, mode=None if mode == "default" else mode
    )
    return lambda net: torch.compile(net, **options)


def data_parallel(nets: Iterable[nn.Module], device: torch.device) -> list[nn.Module]:
    """Each module wrapped in DistributedDataParallel (the process group must be initialised)."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = dict(device_ids=[device.index]) if device.type == "cuda" else {}
    return [DDP(net, **ids) for net in nets]


# ------------------------------------------------------------- timing and the machine
def timed(
    fn: Callable[[], object], repeats: int, warmup: int = 1, statistic: str = "median"
) -> tuple:
    """``(seconds per call, the last call's result)`` over ``repeats`` calls after ``warmup`` untimed ones.

    Each timed call waits for the GPU before the clock is read. ``statistic``: ``"median"`` (robust to
    one descheduled call on a shared CPU) or ``"mean"``.
    """
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    result = None
    for _ in range(warmup):
        result = fn()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        result = fn()
        sync()
        times.append(time.perf_counter() - start)
    return (
        statistics.median(times) if statistic == "median" else statistics.fmean(times)
    ), result


def device_name(device) -> str:
    """What a person would call the hardware a run used: the GPU model, or the CPU and its threads."""
    device = torch.device(device)
    if device.type == "cuda":
        index = (
            device.index if device.index is not None else torch.cuda.current_device()
        )
        return torch.cuda.get_device_name(index)
    if device.type == "mps":
        return "Apple GPU (MPS)"
    return f"CPU ({platform.machine() or 'unknown'}, {torch.get_num_threads()} torch threads)"


def machine_info() -> dict:
    """The machine, as benchmarks record it: Python, torch, CUDA, CPU threads and, if there is one, the GPU."""
    info = dict(
        python=platform.python_version(),
        torch=torch.__version__,
        cuda=torch.version.cuda,
        cudnn=torch.backends.cudnn.version()
        if torch.backends.cudnn.is_available()
        else None,
        host=platform.node(),
        arch=platform.machine(),
        cpus=os.cpu_count(),
        cpu_capability=cpu_capability(),
        torch_threads=torch.get_num_threads(),
    )
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(
            gpu=props.name,
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            capability=f"{props.major}.{props.minor}",
            bf16=native_bf16(torch.device("cuda", 0)),
        )
    return info


def describe_machine() -> str:
    """:func:`machine_info` in one line (results.json of a benchmark, the book's set-up cell)."""
    info = machine_info()
    return (
        f"{info['arch']} {info['cpus']} cpu threads ({info['torch_threads']} used by torch), "
        f"torch {info['torch']}, device {info.get('gpu', 'cpu')}"
    )
