"""Whole experiments: a teacher trained on the data (unless one is given), then a student distilled
from it without the data. ``cpsc-lite demo`` runs it on the built-in digits; :func:`run_preset`
runs a shipped preset end to end (book chapter 8, Colab)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Optional

from . import CpscError, folders
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
    interrupted = os.path.exists(os.path.join(teacher_dir, TEACHER_STATE))
    if resume and os.path.exists(path) and not interrupted:
        say(f"      reusing {path}")
        return path
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
    the distillation's metrics. ``out`` is locked throughout, and checked whole before the teacher
    trains (:func:`check_experiment_folder`), so that a folder the distillation may not write is
    refused before any work."""
    with folders.hold(out, "a teacher, then a distillation"):
        if teacher_path is None:
            check_experiment_folder(
                out, teacher_dir or out, teacher_metrics, resume, overwrite
            )
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


def check_experiment_folder(
    out: str, teacher_dir: str, teacher_metrics: str, resume: bool, overwrite: bool
) -> None:
    """Refuse, before a teacher trains, a folder that the teacher-then-student experiment (the
    demo) may not write: one that holds another command's files (a teacher's metrics.json, a
    distillation that is not this experiment's), or this experiment already (unless ``resume`` or
    ``overwrite``). Deletes nothing."""
    from .checkpoint import metrics_owner
    from .runner import STATE_FILE

    teacher = os.path.join(teacher_dir, "teacher.pt")
    theirs = folders.present(out, (STATE_FILE, *folders.DISTILL_RESULTS))
    if metrics_owner(os.path.join(out, "metrics.json")) == "distillation":
        theirs.append("metrics.json")
    ours = os.path.exists(teacher) or os.path.exists(os.path.join(out, TEACHER_STATE))
    if teacher_dir == out and theirs and not overwrite and not ours:
        raise CpscError(
            f"{out} holds a distillation run ({', '.join(theirs)}) that is not this experiment's "
            "(it has no teacher.pt of its own), and this command would train a teacher into it. "
            "Choose another --out directory, or pass --overwrite to replace that run."
        )
    checks = dict(say=lambda *_: None, take_over=False)
    folders.prepare_output_dir(
        out, state_file=STATE_FILE, owner="distillation", what="a distillation run",
        resume=resume, overwrite=overwrite, results=folders.DISTILL_RESULTS, **checks,
    )  # fmt: skip
    if os.path.exists(teacher) and not (resume or overwrite):
        raise CpscError(
            f"{out} already holds this experiment ({teacher}"
            + (f", {', '.join(theirs)}" if theirs else "")
            + "). Pass --resume to continue it (the teacher is reused), --overwrite to start over, "
            "or choose another --out directory."
        )
    if not os.path.exists(teacher):
        folders.prepare_output_dir(
            teacher_dir, state_file=TEACHER_STATE, owner="teacher",
            what="an interrupted teacher training", resume=resume, overwrite=overwrite,
            products=("teacher.pt",), metrics_file=teacher_metrics, **checks,
        )  # fmt: skip


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
    from .costs import preset_config

    cfg, run = preset_config(name, iters)
    cfg = cfg.replace(device=device)
    with folders.hold(folder, f"the preset {name}"):
        return _run_preset(
            cfg, run, Path(folder), teacher, teacher_epochs, data_root, download, device,
            progress, timing_iters, command, say,
        )  # fmt: skip


def _run_preset(
    cfg, run, folder, teacher, teacher_epochs, data_root, download, device, progress,
    timing_iters, command, say,
) -> dict:  # fmt: skip
    from .costs import seconds_per_iteration
    from .data import load_dataset
    from .teacher import teacher_recipe

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
