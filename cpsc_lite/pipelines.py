"""Whole experiments: a teacher trained on the data (unless one is given), then a student distilled
from it without the data. ``cpsc-lite demo`` runs it on the built-in digits; :func:`run_preset`
runs a shipped preset end to end (book chapter 8, Colab)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Optional

from .config import DistillConfig, TeacherConfig
from .data import DataBundle
from .engine import Acceleration
from .runner import run_distill
from .teacher import STATE_FILE as TEACHER_STATE
from .teacher import run_teacher


def train_or_reuse_teacher(
    bundle: DataBundle,
    teacher_cfg: TeacherConfig,
    teacher_dir: str,
    *,
    metrics_name: str = "teacher_metrics.json",
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    accel: Optional[Acceleration] = None,
    say: Callable[[str], None] = print,
) -> str:
    """``teacher_dir/teacher.pt``: reused when ``resume`` finds it, else trained (an interrupted
    training in that folder continues when ``resume``). Returns its path."""
    path = os.path.join(teacher_dir, "teacher.pt")
    if resume and os.path.exists(path):
        say(f"      reusing {path}")
        return path
    interrupted = os.path.exists(os.path.join(teacher_dir, TEACHER_STATE))
    tm = run_teacher(
        bundle,
        teacher_cfg,
        teacher_dir,
        progress=progress,
        metrics_name=metrics_name,
        resume=resume and interrupted,
        overwrite=overwrite,
        accel=accel,
        say=say,
    )
    say(
        f"      {teacher_cfg.model} test accuracy {tm['test_acc']:.4f} in {tm['seconds']:.0f} s"
    )
    return path


def teacher_then_distil(
    bundle: DataBundle,
    teacher_cfg: TeacherConfig,
    cfg: DistillConfig,
    out: str,
    *,
    teacher_path: Optional[str] = None,
    teacher_dir: Optional[str] = None,
    teacher_metrics: str = "teacher_metrics.json",
    teacher_model: Optional[str] = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    accel: Optional[Acceleration] = None,
    command: Optional[str] = None,
    say: Callable[[str], None] = print,
    announce: Optional[str] = None,
) -> dict:
    """Train ``teacher_cfg`` on ``bundle`` into ``teacher_dir`` (default: ``out``; skipped when
    ``teacher_path`` names a teacher, or when ``resume`` finds the teacher already trained; an
    interrupted teacher training continues), then distil ``cfg`` into ``out`` (saying ``announce`` first). Returns
    the distillation's metrics."""
    if teacher_path is None:
        teacher_path = train_or_reuse_teacher(
            bundle,
            teacher_cfg,
            teacher_dir or out,
            metrics_name=teacher_metrics,
            resume=resume,
            overwrite=overwrite,
            progress=progress,
            accel=accel,
            say=say,
        )
    if announce:
        say(announce)
    return run_distill(
        teacher_path,
        bundle,
        cfg,
        out,
        resume=resume,
        overwrite=overwrite,
        progress=progress,
        teacher_model=teacher_model,
        accel=accel,
        command=command,
        say=say,
    )


def run_preset(
    name: str,
    folder: str,
    teacher: Optional[str] = None,
    teacher_epochs: Optional[int] = None,
    iters: Optional[int] = None,
    data_root: Optional[str] = None,
    download: bool = True,
    device: str = "auto",
    progress: bool = True,
    timing_iters: int = 3,
    command: Optional[str] = None,
    say: Callable[[str], None] = print,
) -> dict:
    """A preset end to end, resumable: its data set (downloaded if needed), a teacher trained with
    the package's recipe for ``teacher_epochs`` (default: the preset's ``teacher_epochs``, else 40)
    into ``folder/teacher`` (or the ``teacher`` file), a
    measured estimate of the distillation's time from ``timing_iters`` iterations, then the
    distillation into ``folder/student``. Running it again after a disconnect continues from the
    last checkpoints. Returns the run's metrics and its folder."""
    from .costs import preset_config, seconds_per_iteration
    from .data import load_dataset
    from .teacher import teacher_recipe

    cfg, run = preset_config(name, iters)
    cfg = cfg.replace(device=device)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    bundle = load_dataset(run["dataset"], data_root, download=download)
    say(bundle.describe())
    student_dir = folder / "student"
    teacher_path = teacher
    if teacher_path is None:
        tcfg = teacher_recipe(
            bundle.name,
            model=run["teacher_model"],
            epochs=teacher_epochs or run.get("teacher_epochs", 40),
            device=device,
        )
        if not (folder / "teacher" / "teacher.pt").exists():
            say(
                f"training the teacher: {tcfg.model}, {tcfg.epochs} epochs (the only step "
                "that reads training images)"
            )
        teacher_path = train_or_reuse_teacher(
            bundle,
            tcfg,
            str(folder / "teacher"),
            metrics_name="metrics.json",
            resume=True,
            progress=progress,
            accel=Acceleration(),
            say=say,
        )
    if not (student_dir / "state.pt").exists():
        per_iter = seconds_per_iteration(
            teacher_path, bundle, cfg, run["teacher_model"], timing_iters
        )
        say(
            f"measured {per_iter:.2f} s per iteration on {device}: about "
            f"{per_iter * cfg.budget.iters / 60:.0f} min for {cfg.budget.iters} iterations "
            "(plus evaluation)"
        )
    metrics = run_distill(
        teacher_path,
        bundle,
        cfg,
        str(student_dir),
        resume=True,
        progress=progress,
        teacher_model=run["teacher_model"],
        accel=Acceleration(),
        command=command,
        say=say,
    )
    return dict(metrics, folder=str(student_dir))
