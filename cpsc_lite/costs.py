"""What a run costs (book chapter 8): one iteration timed against its floor (``cpsc-lite bench
--profile``), and the floating-point operations and hours of a preset's distillation and of its
teacher's training."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import torch

from . import __version__, checkpoint
from .config import DistillConfig
from .bench import ensure_teacher
from .data import load_dataset
from .distill import build_distiller
from .engine import describe_machine, timed
from .methods import make_config
from .teacher import load_classifier


# ------------------------------------------------------------------ profile
def seconds_per_iteration(
    teacher_path: str, bundle, cfg: DistillConfig, teacher_model=None, repeats: int = 3
) -> float:
    """Mean seconds of ``repeats`` iterations of ``cfg`` with the teacher at ``teacher_path`` (a
    community file read as ``teacher_model``) after one warm-up iteration (cuDNN autotuning,
    first allocations): a measured estimate of a run's time, before it starts."""
    from .teacher import load_teacher

    model, meta = load_teacher(teacher_path, bundle, teacher_model, say=lambda *_: None)
    d = build_distiller(model, meta, cfg)
    per_iter = timed(d.iterate, repeats, statistic="mean")[0]
    d.close()
    return per_iter


def _floor(d, repeats: int, rounds) -> float:
    """The bare passes of one iteration of ``d``, measured alone (no loss term, hook or optimiser
    step), under ``d``'s precision: g_steps x (G forward, T and S forward, backward to G) +
    s_steps x (G and T forward without gradients, S forward and backward)."""
    g, s, t, b = d.generator, d.student, d.teacher, d.batch_size
    if d.bn_loss is not None:
        d.bn_loss.enabled = False

    def g_pass():
        z, y = g.sample_inputs(b, d.device)
        with d.autocast():
            x = g(z, y)
            s.requires_grad_(False)
            out = t(x, return_features=True)[0].sum()
            out = out + s(x, return_features=True)[0].sum()
        out.float().backward()
        s.requires_grad_(True)

    def s_pass():
        z, y = g.sample_inputs(b, d.device)
        with torch.no_grad(), d.autocast():
            x = g(z, y)
            t(x)
        with d.autocast():
            out = s(x).sum()
        out.float().backward()

    budget = d.cfg.budget
    return budget.g_steps * rounds(g_pass) + budget.s_steps * rounds(s_pass)


def profile_iteration(
    teacher, meta: dict, cfg, repeats: int = 15, precisions=("off", "bf16")
) -> dict:
    """Seconds per CPSC iteration in each of ``precisions`` (``--amp`` values), side by side in
    one process (the iterations alternate between them, so that a busy machine slows them alike),
    each against its floor: the same forward and backward passes measured alone.

    The top-level numbers are those of the path ``--amp auto`` picks on this machine; ``paths``
    holds every precision measured, ``speedup`` each one's float32 time over its own, and
    ``cpu_capability`` what the CPU offers (bf16 runs emulated where it has no AVX512-BF16/AMX:
    the same numbers, slower)."""
    import copy
    import statistics

    from .engine import Acceleration, cpu_capability, native_bf16, resolve_amp

    runs = {
        amp: build_distiller(
            copy.deepcopy(teacher), meta, cfg, accel=Acceleration(amp=amp)
        )
        for amp in precisions
    }
    for d in runs.values():
        for _ in range(2):
            d.iterate()
    times = {amp: [] for amp in runs}
    for _ in range(repeats):  # alternate: one iteration of each precision per round
        for amp, d in runs.items():
            times[amp].append(timed(d.iterate, 1, warmup=0)[0])
    paths = {}
    for amp, d in runs.items():

        def rounds(fn, d=d):
            return timed(fn, repeats)[0]

        floor = _floor(d, repeats, rounds)
        per_iter = statistics.median(times[amp])
        name = d.runtime()["amp"]
        paths[amp] = dict(
            amp=name if name != "off" else "float32",
            seconds_per_iter=per_iter,
            floor_seconds=floor,
            floor_ratio=per_iter / floor,
        )
        d.close()
    base = paths.get("off")
    for p in paths.values():
        p["speedup"] = (
            base["seconds_per_iter"] / p["seconds_per_iter"] if base else None
        )
    any_d = next(iter(runs.values()))
    auto = resolve_amp("auto", any_d.device)
    chosen = "bf16" if auto == torch.bfloat16 and "bf16" in paths else "off"
    chosen = chosen if chosen in paths else next(iter(paths))
    budget = cfg.budget
    return dict(
        seconds_per_iter=paths[chosen]["seconds_per_iter"],
        floor_seconds=paths[chosen]["floor_seconds"],
        floor_ratio=paths[chosen]["floor_ratio"],
        auto_picks=paths[chosen]["amp"],
        paths=paths,
        cpu_capability=cpu_capability(),
        native_bf16=native_bf16(any_d.device),
        batch_size=budget.batch_size,
        g_steps=budget.g_steps,
        s_steps=budget.s_steps,
        teacher=meta["model"],
        student=cfg.student,
        img_size=meta["img_size"],
        device=str(any_d.device),
        machine=describe_machine(),
        threads=torch.get_num_threads(),
    )


def run_profile(
    out_dir: str,
    dataset: str = "digits",
    teacher_path: Optional[str] = None,
    teacher_model: Optional[str] = None,
    student: Optional[str] = None,
    img_size: Optional[int] = None,
    num_classes: int = 10,
    channels: int = 3,
    overrides: Optional[dict] = None,
    repeats: int = 15,
    command: str = "",
    say=print,
) -> dict:
    """Profile with a trained teacher (digits default) or a freshly initialised ``teacher_model``.

    Timing does not depend on the weights, so e.g. WRN-40-2 -> WRN-16-2 at 32x32
    can be profiled without a trained teacher or a dataset.
    """
    from .models import create_model

    overrides = dict(overrides or {})
    checkpoint.check_output_dir(out_dir)
    if teacher_model and not teacher_path:
        size = img_size or 32
        teacher = create_model(teacher_model, num_classes, channels, size)
        meta = checkpoint.untrained_meta(teacher_model, num_classes, channels, size)
    else:
        bundle = load_dataset(dataset)
        path = ensure_teacher(
            bundle, out_dir, teacher_path, teacher_model or "cnn_base", 30, False, say
        )
        teacher, meta = load_classifier(path)
    if student:
        overrides["student"] = student
    cfg = make_config("cpsc", **overrides)
    result = profile_iteration(teacher, meta, cfg, repeats)
    result.update(command=command, package_version=__version__)
    checkpoint.write_json(result, os.path.join(out_dir, "profile.json"))
    say(
        f"{result['teacher']} -> {result['student']} at {result['img_size']}x{result['img_size']}, "
        f"batch {result['batch_size']}, {result['g_steps']} G + {result['s_steps']} S steps on "
        f"{result['device']} ({result['threads']} threads; CPU: {result['cpu_capability']})"
    )
    for p in result["paths"].values():
        say(
            f"  {p['amp']:<8} {p['seconds_per_iter']:.4f} s/iter, floor {p['floor_seconds']:.4f} s, "
            f"ratio {p['floor_ratio']:.3f}, {p['speedup']:.2f}x float32's speed"
        )
    say(
        f"  --amp auto picks {result['auto_picks']} here"
        + (
            ""
            if result["native_bf16"]
            else " (no native bf16 on this CPU: bf16 is emulated)"
        )
    )
    return result


# ------------------------------------------------------------ cost estimates (book chapter 8)
#: Classes, channels, image size and training-set size of the data sets the presets use (for cost estimates).
PRESET_DATA = {
    "cifar10": (10, 3, 32, 50000),
    "cifar100": (100, 3, 32, 50000),
    "svhn": (10, 3, 32, 73257),
    "tiny-imagenet": (200, 3, 64, 100000),
}


def preset_file(name: str) -> Path:
    """A shipped preset's YAML file by name (``cpsc-lite presets``), or the path of a YAML file."""
    from .config import resolve_config

    return Path(resolve_config(name))


def preset_config(name: str, iters: Optional[int] = None) -> tuple[DistillConfig, dict]:
    """A preset's DistillConfig (``iters`` overrides its length) and its run settings (dataset, teacher_model)."""
    from .config import load_preset

    base, run = load_preset(str(preset_file(name)))
    return make_config("cpsc", base, iters=iters), run


_FLOPS_PER_SAMPLE: dict = {}


def preset_cost(
    name: str, teacher_epochs: int, iters: Optional[int] = None, tflops=(5.0, 10.0)
) -> dict:
    """Chapter 8: floating-point operations of a preset's distillation and of its teacher's training,
    and the hours they take at each assumed sustained throughput in ``tflops`` (an *estimate*).

    The operations are counted (``torch.utils.flop_counter``) on one real iteration of the
    package's own loop at a small batch, scaled linearly to the preset's batch; the teacher
    epoch is counted as forward plus backward (3x a forward) over the training set. Only
    convolutions and matrix products are counted, so the figures are slight underestimates.
    """
    from torch.utils.flop_counter import FlopCounterMode
    from .models import create_model

    cfg, run = preset_config(name, iters)
    classes, channels, size, n_train = PRESET_DATA[run["dataset"]]
    small = 4
    teacher = create_model(run["teacher_model"], classes, channels, size)
    meta = checkpoint.untrained_meta(run["teacher_model"], classes, channels, size)
    key = (
        run["dataset"],
        run["teacher_model"],
        cfg.student,
        cfg.budget.g_steps,
        cfg.budget.s_steps,
        cfg.generator.nz,
        cfg.generator.ngf,
    )
    # one counted iteration per model pair and schedule
    if key not in _FLOPS_PER_SAMPLE:
        d = build_distiller(teacher, meta, cfg.replace(batch_size=small, device="cpu"))
        with FlopCounterMode(display=False) as counter:
            d.iterate()
        d.close()
        _FLOPS_PER_SAMPLE[key] = counter.get_total_flops() / small
    per_iter = _FLOPS_PER_SAMPLE[key] * cfg.budget.batch_size
    with FlopCounterMode(display=False) as counter:
        teacher.eval()(torch.zeros(1, channels, size, size))
    per_epoch = 3 * counter.get_total_flops() * n_train
    distill, teach = per_iter * cfg.budget.iters, per_epoch * teacher_epochs
    return dict(
        preset=name,
        dataset=run["dataset"],
        teacher=run["teacher_model"],
        student=cfg.student,
        iters=cfg.budget.iters,
        batch_size=cfg.budget.batch_size,
        g_steps=cfg.budget.g_steps,
        s_steps=cfg.budget.s_steps,
        teacher_epochs=teacher_epochs,
        tflop_per_iter=per_iter / 1e12,
        distill_pflop=distill / 1e15,
        teacher_pflop=teach / 1e15,
        hours={
            t: dict(
                teacher=teach / (t * 1e12) / 3600, distill=distill / (t * 1e12) / 3600
            )
            for t in tflops
        },
    )


def preset_cost_table(plan, tflops=(5.0, 10.0)):
    """Chapter 8: :func:`preset_cost` for each ``(preset, teacher_epochs)`` in ``plan``; returns the
    cost dicts and a table of them (hours include the teacher's training)."""
    import pandas as pd

    costs = [
        preset_cost(name, teacher_epochs=epochs, tflops=tflops) for name, epochs in plan
    ]
    rows = [
        {
            "preset": c["preset"],
            "iterations": c["iters"],
            "TFLOP / iteration": c["tflop_per_iter"],
            "teacher epochs": c["teacher_epochs"],
            **{f"hours at {t:g} TFLOP/s": sum(c["hours"][t].values()) for t in tflops},
        }
        for c in costs
    ]
    formats = {
        "TFLOP / iteration": "{:.1f}",
        **{f"hours at {t:g} TFLOP/s": "{:.1f}" for t in tflops},
    }
    return costs, pd.DataFrame(rows).style.hide(axis="index").format(formats)
