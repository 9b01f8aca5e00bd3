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


def profile_iteration(teacher, meta: dict, cfg, repeats: int = 15) -> dict:
    """Seconds per CPSC iteration vs the floor: the same forward/backward passes, measured alone.

    Floor = g_steps x (G forward, T and S forward, backward to G) + s_steps x (G and T
    forward without gradients, S forward and backward), each pass run bare, without
    any loss term, hook or optimiser step.
    """
    d = build_distiller(teacher, meta, cfg)
    for _ in range(2):
        d.iterate()
    per_iter = timed(d.iterate, repeats)[0]
    g, s, t = d.generator, d.student, d.teacher
    if d.bn_loss is not None:
        d.bn_loss.enabled = False
    b, budget = cfg.budget.batch_size, cfg.budget

    def g_pass():
        z, y = g.sample_inputs(b, d.device)
        x = g(z, y)
        s.requires_grad_(False)
        out = t(x, return_features=True)[0].sum() + s(x, return_features=True)[0].sum()
        out.backward()
        s.requires_grad_(True)

    def s_pass():
        z, y = g.sample_inputs(b, d.device)
        with torch.no_grad():
            x = g(z, y)
            t(x)
        s(x).sum().backward()

    floor = (
        budget.g_steps * timed(g_pass, repeats)[0]
        + budget.s_steps * timed(s_pass, repeats)[0]
    )
    d.close()
    return dict(
        seconds_per_iter=per_iter,
        floor_seconds=floor,
        floor_ratio=per_iter / floor,
        batch_size=b,
        g_steps=budget.g_steps,
        s_steps=budget.s_steps,
        teacher=meta["model"],
        student=cfg.student,
        img_size=meta["img_size"],
        device=str(d.device),
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
        f"{result['teacher']} -> {result['student']} at {result['img_size']}x{result['img_size']}, batch "
        f"{result['batch_size']}, {result['g_steps']} G + {result['s_steps']} S steps on {result['device']} "
        f"({result['threads']} threads): {result['seconds_per_iter']:.4f} s/iter, floor "
        f"{result['floor_seconds']:.4f} s, ratio {result['floor_ratio']:.3f}"
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
