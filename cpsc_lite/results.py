"""Provenance of distillation runs, and the ``data/results/`` record of measured runs.

Every distillation run keeps a list of *sessions* (one per start or ``--resume``): the exact
command, where it ran (GPU model or CPU), how many processes, the package and PyTorch versions,
when it started and stopped and which iterations it trained. They live in ``state.pt`` (so an
interrupted session is kept up to its last checkpoint) and in ``metrics.json``.

``cpsc-lite record RUN_DIR --name NAME`` copies a finished run's ``metrics.json``, ``log.jsonl``
and figures into ``data/results/NAME/`` and writes ``run.json`` and ``RUN.md`` from them. The
book's experiments chapter shows what is there (:func:`load_recorded`), so every number it
prints about a full-scale run comes from the run's own files, never from typing.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Optional

import torch

from . import CpscError, __version__, engine

#: Files copied from a run folder by :func:`record_run` (those marked False may be absent).
RECORDED_FILES = {
    "metrics.json": True,
    "log.jsonl": True,
    "samples.png": True,
    "curves.png": False,
}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def _utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


class SessionLog:
    """The sessions of one run (a plain list of dicts, stored in ``state.pt`` and ``metrics.json``)."""

    def __init__(self, sessions: Optional[list] = None):
        self.sessions: list[dict] = [dict(s) for s in (sessions or [])]
        self._t0: Optional[float] = None

    def begin(
        self,
        command: Optional[str],
        device,
        world_size: int,
        launcher: Optional[str],
        iteration: int,
    ) -> None:
        self._t0 = time.time()
        self.sessions.append(
            dict(
                command=command or "(called from Python, not from the command line)",
                launcher=launcher or "none",
                world_size=world_size,
                device=str(device),
                device_name=engine.device_name(device),
                cpsc_lite=__version__,
                torch=str(torch.__version__),
                python=platform.python_version(),
                started_utc=_utc_now(),
                finished_utc=None,
                wall_seconds=0.0,
                from_iter=iteration,
                to_iter=iteration,
            )
        )

    def update(self, iteration: int) -> None:
        """Bring the open session up to date (called before every checkpoint and at the end)."""
        if self._t0 is None:
            return
        s = self.sessions[-1]
        s.update(
            finished_utc=_utc_now(),
            wall_seconds=round(time.time() - self._t0, 1),
            to_iter=iteration,
        )

    def wall_seconds(self) -> float:
        return round(sum(s.get("wall_seconds") or 0.0 for s in self.sessions), 1)


# ------------------------------------------------------------------ record
def _read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CpscError(
            f"Cannot read {what} {path}: {e}. Is it the folder a `cpsc-lite distill --out` wrote?"
        )


def record_run(
    run_dir: str,
    name: str,
    into: str = "data/results",
    overwrite: bool = False,
    partial: bool = False,
) -> Path:
    """Copy a distillation run into ``into/name/`` with its provenance; returns that folder.

    Refuses (with the fix in the message) a folder that is not a finished run, a run without
    session records, an unfinished run unless ``partial``, a run another command is writing, a
    destination inside the run (or the run itself), and an existing ``name`` unless
    ``overwrite``; ``overwrite`` replaces only a folder that ``record`` wrote. The copy is built
    next to its destination and renamed into place.
    """
    from . import folders

    src = Path(os.path.expanduser(run_dir))
    if not _NAME.match(name):
        raise CpscError(
            f"--name {name!r} is not usable as a folder name: use letters, digits, '.', '_' "
            "and '-' (e.g. c10_resnet34_resnet18_fast)."
        )
    metrics = _finished_run(src, partial)
    dest_root = Path(os.path.expanduser(into))
    dest = dest_root / name
    _refuse_overlap(src, dest)
    folders.refuse_if_written(str(src), "recording it")
    with folders.hold(
        str(dest_root), f"recording {name}", flag="--into", lock_name=f".{name}.lock"
    ):
        _refuse_foreign(dest, overwrite)
        try:
            _copy_run(src, dest, name, run_summary(metrics, name))
        except OSError as exc:
            raise CpscError(
                f"Could not write {dest} ({exc.strerror or exc}); nothing was recorded and any "
                "earlier record there is unchanged. Free some space or fix the permissions of "
                "--into, then rerun."
            ) from None
    return dest


def _finished_run(src: Path, partial: bool) -> dict:
    """The metrics of the distillation run in ``src``, after checking that it is one (finished,
    or ``partial``) and that it has session records."""
    from .checkpoint import metrics_owner

    if metrics_owner(str(src / "metrics.json")) == "teacher":
        raise CpscError(
            f"{src} holds a teacher training (teacher.pt and its metrics.json), not a "
            "distillation run. Record the --out folder of `cpsc-lite distill` (or of the demo)."
        )
    if not (src / "metrics.json").is_file():
        raise CpscError(
            f"{src} has no metrics.json, so it is not a finished distillation run. Record the --out "
            "folder of `cpsc-lite distill` after it has ended (or after --stop-after, with --partial)."
        )
    missing = [
        f
        for f, required in RECORDED_FILES.items()
        if required and not (src / f).is_file()
    ]
    if missing:
        raise CpscError(
            f"{src} lacks {', '.join(missing)}; a distillation run writes them. Record the whole --out "
            "folder of one run, unchanged."
        )
    metrics = _read_json(src / "metrics.json", "the metrics file")
    sessions = metrics.get("sessions")
    if not sessions:
        raise CpscError(
            f"{src}/metrics.json has no session records (command, GPU, versions): it was written by a "
            "cpsc-lite older than this one. Run the same distill command again with --resume: a "
            "finished run trains nothing and rewrites metrics.json with a record of that call (the "
            "earlier sessions' commands stay unknown, and RUN.md says so)."
        )
    if not metrics.get("complete") and not partial:
        raise CpscError(
            f"{src} is an unfinished run ({metrics.get('iters')} of {_budget(metrics).iters} "
            "iterations). Finish it with --resume, or pass --partial to record it labelled as partial."
        )
    return metrics


#: What a folder ``record`` wrote holds; ``--overwrite`` replaces no other kind of folder.
RECORD_CONTENT = {*RECORDED_FILES, "run.json", "RUN.md"}


def _refuse_overlap(src: Path, dest: Path) -> None:
    """The record must not be the run itself, lie inside it, or hold it."""
    a, b = os.path.realpath(src), os.path.realpath(dest)
    if a == b or b.startswith(a + os.sep) or a.startswith(b + os.sep):
        where = "is the run folder itself" if a == b else "overlaps the run folder"
        raise CpscError(
            f"The record {dest} {where} ({src}): recording would replace the run's own files "
            "(student.pt, generator.pt, state.pt). Choose another --into (the default is "
            "data/results) or another --name."
        )


def _refuse_foreign(dest: Path, overwrite: bool) -> None:
    """An existing ``dest`` needs ``overwrite``, and must be a folder ``record`` wrote."""
    if not dest.exists() and not dest.is_symlink():
        return
    if dest.is_symlink() or not dest.is_dir():
        raise CpscError(
            f"{dest} exists and is not a folder `cpsc-lite record` wrote, so it is left alone, "
            "--overwrite or not. Choose another --name or --into."
        )
    foreign = sorted(p.name for p in dest.iterdir() if p.name not in RECORD_CONTENT)
    if foreign or not (dest / "run.json").is_file():
        shown = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
        raise CpscError(
            f"{dest} exists and is not a record (it holds "
            + (shown if foreign else "no run.json")
            + "), so it is left alone, --overwrite or not: --overwrite replaces only a folder "
            "that `cpsc-lite record` wrote. Choose another --name or --into."
        )
    if not overwrite:
        raise CpscError(
            f"{dest} already exists. Choose another --name, or pass --overwrite to replace it."
        )


def _copy_run(src: Path, dest: Path, name: str, summary: dict) -> None:
    dest_root = dest.parent
    dest_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=dest_root))
    try:
        for f in RECORDED_FILES:
            if (src / f).is_file():
                shutil.copyfile(src / f, tmp / f)
        (tmp / "run.json").write_text(json.dumps(summary, indent=2) + "\n")
        (tmp / "RUN.md").write_text(run_markdown(summary))
        if dest.exists():
            old = dest_root / f".{name}.old"
            if old.exists():
                shutil.rmtree(old)
            dest.rename(old)
            tmp.rename(dest)
            shutil.rmtree(old)
        else:
            tmp.rename(dest)
    except BaseException:
        if tmp.exists():
            shutil.rmtree(tmp)
        raise


def _budget(metrics: dict):
    """The budget section of the config a metrics.json holds (any version's layout)."""
    from .config import DistillConfig

    return DistillConfig.from_saved(metrics["config"]).budget


def run_summary(metrics: dict, name: str) -> dict:
    """The facts ``run.json`` holds, all read from a run's metrics.json."""
    budget, sessions = _budget(metrics), metrics["sessions"]
    last = sessions[-1]
    return dict(
        name=name,
        recorded_utc=_utc_now(),
        complete=bool(metrics.get("complete")),
        dataset=metrics["dataset"],
        teacher=metrics["teacher"],
        student=metrics["student"],
        method=metrics["method"],
        teacher_acc=metrics["teacher_acc"],
        student_acc=metrics["student_acc"],
        iters=metrics["iters"],
        planned_iters=budget.iters,
        batch_size=budget.batch_size,
        g_steps=budget.g_steps,
        s_steps=budget.s_steps,
        train_seconds=metrics["seconds"],
        wall_seconds=SessionLog(sessions).wall_seconds(),
        device_names=sorted({s["device_name"] for s in sessions}),
        world_sizes=sorted({s["world_size"] for s in sessions}),
        cpsc_lite_versions=sorted({s["cpsc_lite"] for s in sessions}),
        torch=last["torch"],
        commands=[s["command"] for s in sessions],
        first_recorded_iter=sessions[0]["from_iter"],
        runtime=metrics.get("runtime", {}),
        sessions=sessions,
    )


def duration(seconds: float) -> str:
    """Seconds as a person reads them: s, min or h."""
    if seconds >= 7200:
        return f"{seconds / 3600:.2f} h"
    return f"{seconds / 60:.1f} min" if seconds >= 120 else f"{seconds:.0f} s"


def run_markdown(summary: dict) -> str:
    s = summary
    lines = [
        f"# {s['name']}",
        "",
        "Written by `cpsc-lite record` from this folder's metrics.json; nothing here is typed by hand.",
        "",
        f"- {s['method']} on {s['dataset']}: {s['teacher']} -> {s['student']}"
        + (
            ""
            if s["complete"]
            else f" (PARTIAL: {s['iters']} of {s['planned_iters']} iterations)"
        ),
        f"- teacher test accuracy {100 * s['teacher_acc']:.2f} %, student test accuracy "
        f"{100 * s['student_acc']:.2f} %",
        f"- {s['iters']} iterations x batch {s['batch_size']} ({s['g_steps']} generator : {s['s_steps']} student "
        f"steps); training {duration(s['train_seconds'])}, wall {duration(s['wall_seconds'])} over "
        f"{len(s['sessions'])} session(s)",
        f"- hardware: {', '.join(s['device_names'])}; processes: {', '.join(map(str, s['world_sizes']))}; "
        f"cpsc-lite {', '.join(s['cpsc_lite_versions'])}, torch {s['torch']}",
        "",
    ]
    if s["first_recorded_iter"]:
        lines += [
            f"Sessions before iteration {s['first_recorded_iter']} were made by a cpsc-lite that kept no "
            "session records; their commands are unknown.",
            "",
        ]
    lines += [
        "Sessions, in order (iterations, hardware, processes, wall time), each followed by its command:",
        "",
    ]
    for x in s["sessions"]:
        lines += [
            f"- iterations {x['from_iter']}-{x['to_iter']}, {x['device_name']}, {x['world_size']} process(es), "
            f"{x['wall_seconds']:.0f} s, started {x['started_utc']}",
            "",
            f"      {x['command']}",
            "",
        ]
    return "\n".join(lines) + "\n"


def load_recorded(results_dir) -> list[dict]:
    """Every ``run.json`` under ``results_dir`` (sorted by name), with ``folder`` added; [] if there is none."""
    root = Path(results_dir)
    if not root.is_dir():
        return []
    out = []
    for path in sorted(root.glob("*/run.json")):
        if path.parent.name.startswith("."):
            continue
        summary = json.loads(path.read_text())
        summary["folder"] = str(path.parent)
        out.append(summary)
    return out
