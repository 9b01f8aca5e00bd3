"""A distillation run on disk (book chapters 6 and 7): the training loop with its log, evaluation,
NaN stop and checkpoint cadence; saving and resuming; the end-of-run metrics and figures.

:mod:`cpsc_lite.distill` holds the method (what one iteration computes); :mod:`cpsc_lite.engine`
how it executes. Nothing here changes the numbers a run produces.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from typing import Callable, Optional

import torch
from tqdm.auto import tqdm

from . import CpscError, checkpoint, folders
from .config import DistillConfig
from .data import ArrayDataset, DataBundle
from .diagnostics import collapse_warning
from .distill import (
    Distiller,
    budget_marks,
    build_distiller,
    generator_meta,
    student_meta,
    time_to_accuracy,
)
from .distributed import DistContext, launch_environment
from .engine import Acceleration, pick_device, resolve_amp
from .loop import read_log, run_loop
from .utils import evaluate


class NonFiniteLossError(CpscError):
    """A loss became NaN or Inf; the run stops and keeps its last good checkpoint."""


STATE_FILE = "state.pt"


class DistillJob:
    """A distillation as :func:`cpsc_lite.loop.run_loop` drives it: one unit is one iteration.
    With several processes only rank 0 evaluates and writes; all of them log and save together."""

    def __init__(self, d: Distiller, out_dir: Optional[str] = None):
        self.d, self.out = d, out_dir
        self.total = d.cfg.budget.iters

    @property
    def done(self) -> int:
        return self.d.iteration

    @property
    def elapsed(self) -> float:
        return self.d.elapsed

    @elapsed.setter
    def elapsed(self, value: float) -> None:
        self.d.elapsed = value

    def step(self) -> dict:
        return self.d.iterate()

    def evaluate_due(self, it: int) -> bool:
        d = self.d
        return d.test_set is not None and (
            it % d.cfg.log.eval_every == 0 or it in budget_marks(d.cfg).values()
        )

    def log_due(self, it: int, end: int) -> bool:
        log = self.d.cfg.log
        return (
            it % log.log_every == 0
            or self.evaluate_due(it)
            or it == end
            or it % log.ckpt_every == 0
        )

    def record(self, sums: dict, n: int, it: int) -> dict:
        d = self.d
        # the only place loss tensors reach the host (one sync per log line, not per step)
        means = _mean_over_ranks(d, sums, n)
        bad = sorted(k for k, v in means.items() if not math.isfinite(v))
        if bad:
            raise NonFiniteLossError(_non_finite_message(bad, it, self.out))
        record = dict(
            iter=it,
            lr_student=d.opt_s.param_groups[0]["lr"],
            lr_generator=d.opt_g.param_groups[0]["lr"],
            seconds=round(d.elapsed, 3),
            **{k: round(v, 6) for k, v in means.items()},
        )
        if self.evaluate_due(it):
            if d.dist.is_main:
                _evaluate_into(d, record, it)
            d.dist.barrier()  # the other ranks wait while rank 0 evaluates
        return record

    def save_due(self, it: int, end: int) -> bool:
        return bool(self.out) and (it % self.d.cfg.log.ckpt_every == 0 or it == end)

    def save(self) -> None:
        if self.out:
            save(self.d, self.out)

    def stop_requested(self, it: int) -> bool:
        return _termination_requested(self.d, it)

    def stop_message(self, it: int) -> str:
        where = (
            f"; a checkpoint of that iteration is in {self.out}. Rerun the same command with "
            "--resume to continue from it."
            if self.out
            else " (no --out, so nothing was saved)."
        )
        return f"Stopped by SIGTERM after iteration {it} of {self.total}" + where


def _non_finite_message(bad: list, it: int, out: Optional[str]) -> str:
    kept = (
        f"The last good checkpoint in {out} (state.pt, student.pt, generator.pt) was kept. "
        if out and os.path.exists(os.path.join(out, STATE_FILE))
        else ""
    )
    return (
        f"Loss term(s) {', '.join(bad)} became NaN/Inf by iteration {it}; training stopped. "
        + kept
        + "Start again with lower learning rates (--set lr_generator=..., --set lr_student=...) or "
        "a lower weight of that term, and --overwrite (or another --out): --resume would continue "
        "with the stored settings. Check also that the teacher's own outputs are finite."
    )


def _evaluate_into(d: Distiller, record: dict, it: int) -> None:
    """Rank 0's evaluation: test accuracy, and the diagnostics of the synthetic images."""
    d.last_student_acc = evaluate(d.student, d.test_set, d.device)
    d.best_student_acc = max(d.best_student_acc or 0.0, d.last_student_acc)
    d.acc_history = [h for h in d.acc_history if h[0] < it] + [[it, d.last_student_acc]]
    record["student_acc"] = d.last_student_acc
    if not d.cfg.log.diagnostics:
        return
    diag = d.diagnostics()
    record.update(
        {
            k: round(v, 5)
            for k, v in diag.items()
            if isinstance(v, float) and math.isfinite(v)
        }
    )
    warning = collapse_warning(diag, d.teacher_meta["class_names"])
    if warning and it >= 0.2 * d.cfg.budget.iters:  # early on, imbalance is normal
        record["collapsed_classes"] = diag["collapsed_classes"]
        tqdm.write(f"iteration {it}: {warning}")


class Progress:
    """What a person watching a run sees besides the progress bar: TensorBoard events of every log
    line in ``out/tensorboard/`` (``log.tensorboard``; ``%tensorboard --logdir out`` in a
    notebook), and every ``log.samples_every`` iterations a sample grid in ``out/samples/`` and
    curves.png so far. Figures and TensorBoard never cost a run its results: a failure there is
    reported once and the run goes on."""

    def __init__(self, d: Distiller, out: str):
        self.d, self.out = d, out
        self.board, self.warned = None, set()
        if d.cfg.log.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.board = SummaryWriter(os.path.join(out, "tensorboard"))
            except (
                ImportError,
                OSError,
            ) as exc:  # the tensorboard package is not installed
                self._warn("tensorboard", exc)

    def _warn(self, what: str, exc: BaseException) -> None:
        if what not in self.warned:
            self.warned.add(what)
            fix = (
                "pip install tensorboard"
                if what == "tensorboard"
                else "the run goes on"
            )
            tqdm.write(f"note: no {what} files ({type(exc).__name__}: {exc}); {fix}")

    def update(self, record: dict) -> None:
        it = record["iter"]
        if self.board is not None:
            for key, value in record.items():
                if key != "iter" and isinstance(value, (int, float)):
                    self.board.add_scalar(key, value, it)
            if "student_acc" in record:
                self.board.flush()
        every = self.d.cfg.log.samples_every
        if every and it % every == 0:
            try:
                self.figures(it)
            except Exception as exc:  # a figure must never stop training
                self._warn("progress figure", exc)

    def figures(self, it: int) -> None:
        from .viz import plot_curves, plot_samples

        d, meta = self.d, self.d.teacher_meta
        grid = d.method.sample_grid(8)
        path = os.path.join(self.out, "samples", f"iter_{it:07d}.png")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        title = f"{d.cfg.method} {grid['what']}, iteration {it}"
        fig = plot_samples(
            grid["images"], grid["labels"], meta["class_names"], meta["mean"],
            meta["std"], title=title, path=path,
        )  # fmt: skip
        _close(fig)
        log_path = os.path.join(self.out, "log.jsonl")
        if os.path.exists(log_path):
            curves = os.path.join(self.out, "curves.png")
            title = f"{d.cfg.method}, so far"
            _close(plot_curves(read_log(log_path), curves, title=title))

    def close(self) -> None:
        if self.board is not None:
            self.board.close()


def train(
    d: Distiller,
    out_dir: Optional[str] = None,
    progress: bool = True,
    stop_after: Optional[int] = None,
    callback: Optional[Callable[[Distiller, dict], None]] = None,
) -> dict:
    """Train ``d`` until its budget (or ``stop_after`` more iterations); with ``out_dir``, log to
    ``log.jsonl`` and checkpoint there every ``ckpt_every`` iterations and at the end.

    ``callback(distiller, record)`` is called after every logged iteration
    (the book uses it to keep generator snapshots).
    """
    main = d.dist.is_main  # with several processes only rank 0 evaluates and writes
    log_path = os.path.join(out_dir, "log.jsonl") if out_dir and main else None
    if out_dir and main:
        os.makedirs(out_dir, exist_ok=True)
    end = None if stop_after is None else d.iteration + stop_after
    watch = Progress(d, out_dir) if out_dir and main else None

    def after_log(record: dict) -> None:
        if watch is not None:
            watch.update(record)
        if callback is not None:
            callback(d, record)

    try:
        run_loop(
            DistillJob(d, out_dir),
            end,
            log_path=log_path,
            progress=progress and main,
            desc=f"distill {d.cfg.method}",
            callback=after_log,
            postfix=lambda r: (
                {"acc": f"{r['student_acc']:.3f}"} if "student_acc" in r else {}
            ),
        )
    finally:
        if watch is not None:
            watch.close()
    d.sync_buffers()
    return dict(
        iters=d.iteration, seconds=round(d.elapsed, 2), student_acc=d.last_student_acc
    )


def _termination_requested(d: Distiller, iteration: int) -> bool:
    """SIGTERM arrived (see :func:`checkpoint.stop_on_sigterm`). With several processes the ranks
    agree at log points (one all-reduce they do anyway), so all stop and save together."""
    if not d.dist.enabled:
        return checkpoint.termination_requested()
    if iteration % d.cfg.log.log_every and iteration != d.cfg.budget.iters:
        return False
    flag = torch.tensor([float(checkpoint.termination_requested())], device=d.device)
    return bool(d.dist.all_reduce_mean(flag).item() > 0)


def _mean_over_ranks(d: Distiller, sums: dict, n: int) -> dict:
    """Per-iteration means of the summed loss terms, averaged over ranks (one all-reduce)."""
    keys = sorted(sums)
    if not d.dist.enabled:
        return {k: float(sums[k]) / n for k in sums}
    means = d.dist.all_reduce_mean(
        torch.stack([torch.as_tensor(sums[k]).float() for k in keys])
    )
    return {k: v / n for k, v in zip(keys, means.tolist())}


def save(d: Distiller, out_dir: str) -> None:
    """Write state.pt (everything to resume), student.pt and generator.pt, each atomically.

    With several processes every rank must call it (their random states are gathered);
    rank 0 writes, the others wait.
    """
    bad = checkpoint.diverged_weights(
        d.student.state_dict(), "student"
    ) + checkpoint.diverged_weights(d.generator.state_dict(), "generator")
    if bad:  # the previous checkpoint is the last good one; never replace it with these
        raise NonFiniteLossError(
            f"Weights diverged by iteration {d.iteration} ({', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}"
            f" are NaN, infinite or beyond 1e12); training stopped without saving them. "
            + (
                f"The previous checkpoint in {out_dir} was kept. "
                if os.path.exists(os.path.join(out_dir, STATE_FILE))
                else ""
            )
            + "Start again with lower learning rates (--set lr_generator=..., --set lr_student=...) and "
            "--overwrite (or another --out)."
        )
    d.sessions.update(d.iteration)
    state = d.state_dict()
    if d.dist.enabled:
        state["rng_per_rank"] = d.dist.all_gather_object(state["rng"])
    if d.dist.is_main:
        checkpoint.save(
            checkpoint.make("resume", {}, {"method": d.cfg.method}, state=state),
            os.path.join(out_dir, STATE_FILE),
        )
        checkpoint.save(
            checkpoint.make("student", d.student.state_dict(), student_meta(d)),
            os.path.join(out_dir, "student.pt"),
        )
        # DeepInversion trains no generator; its images are in transfer_set.npz
        if d.method.saves_generator:
            checkpoint.save(
                checkpoint.make(
                    "generator", d.generator.state_dict(), generator_meta(d)
                ),
                os.path.join(out_dir, "generator.pt"),
            )
    d.dist.barrier()


def _config_differences(
    a: DistillConfig,
    b: DistillConfig,
    ignore=("device", "log.eval_every", "log.log_every", "log.ckpt_every"),
) -> list[str]:
    """The settings the method reads in which ``a`` and ``b`` differ (bookkeeping aside)."""
    from .methods import read_sections

    da, db, reads = a.flat(), b.flat(), read_sections(a.method)
    return [
        k
        for k in da
        if k not in ignore
        and da[k] != db[k]
        and ("." not in k or k.split(".")[0] in reads)
    ]


#: The ``--amp`` value that gives each precision a run records in its state.
_AMP_FLAG = {"off": "off", "bfloat16": "bf16", "float16": "fp16"}


def resume_precision(
    accel: Acceleration, stored: Optional[str], device: str, say: Callable[[str], None]
) -> Acceleration:
    """The precision a resumed run continues in: with ``--amp auto``, the one it started with
    (``stored``, as :meth:`Distiller.runtime` names it), so that moving a run to another machine
    does not switch it between float32 and bf16 half-way; an explicit ``--amp`` wins, with a note.
    Runs saved before the precision was stored continue with ``auto``."""
    flag = _AMP_FLAG.get(stored or "")
    if flag is None or accel.amp == flag:
        return accel
    if accel.amp != "auto":
        say(
            f"note: this run started in {stored} and continues in --amp {accel.amp}, as asked; "
            "its numbers mix the two precisions"
        )
        return accel
    try:
        resolve_amp(flag, pick_device(device))
    except CpscError:
        say(
            f"note: this run started in {stored}, which this device does not offer; it continues "
            "with --amp auto, so its numbers mix two precisions"
        )
        return accel
    return dataclasses.replace(accel, amp=flag)


def run_distill(
    teacher_path: str,
    bundle: DataBundle,
    cfg: DistillConfig,
    out_dir: str,
    resume: bool = False,
    overwrite: bool = False,
    stop_after: Optional[int] = None,
    progress: bool = True,
    sample_per_class: int = 8,
    say: Callable[[str], None] = print,
    teacher_model: Optional[str] = None,
    accel: Optional[Acceleration] = None,
    dist: Optional[DistContext] = None,
    command: Optional[str] = None,
) -> dict:
    """Data-free distillation from a teacher checkpoint into ``out_dir``; returns the metrics.

    Writes student.pt, generator.pt (deepinv: transfer_set.npz instead), state.pt (resume), metrics.json, log.jsonl,
    samples.png and curves.png. ``bundle`` is used only for its test split (and, with
    ``teacher_model``, for the shape and normalisation of a community teacher file).
    ``accel`` and ``dist`` choose how it runs (GPU speed-ups, several processes), never what.
    ``command`` (the command line, as typed) is recorded with the session in metrics.json.
    The folder is locked while the run writes it (:func:`folders.hold`); an earlier run there
    is continued only with ``resume`` and replaced only with ``overwrite``, and never a teacher's
    files (:func:`folders.prepare_output_dir`).
    """
    dist = dist or DistContext()
    with folders.hold(out_dir, "a distillation run", enabled=dist.is_main):
        return _run_distill(
            teacher_path, bundle, cfg, out_dir, resume, overwrite, stop_after, progress,
            sample_per_class, say, teacher_model, accel, dist, command,
        )  # fmt: skip


def _run_distill(
    teacher_path, bundle, cfg, out_dir, resume, overwrite, stop_after, progress,
    sample_per_class, say, teacher_model, accel, dist, command,
) -> dict:  # fmt: skip
    from .teacher import check_compatible, load_teacher

    if not dist.is_main:
        say, progress = (lambda *_: None), False
    resuming = folders.prepare_output_dir(
        out_dir,
        state_file=STATE_FILE,
        owner="distillation",
        what="a distillation run",
        resume=resume,
        overwrite=overwrite,
        results=folders.DISTILL_RESULTS,
        say=say,
        take_over=dist.is_main,
    )
    teacher, meta = load_teacher(teacher_path, bundle, teacher_model, say=say)
    check_compatible(meta, bundle, teacher_path)
    state_path = os.path.join(out_dir, STATE_FILE)
    state = None
    if resuming:
        state = checkpoint.load(state_path, kind="resume", what="resume state")["state"]
        stored = _stored_config(state, state_path)
        changed = _config_differences(stored, cfg)
        if changed:
            say(
                f"note: resuming with the settings stored in {state_path}; ignoring changed "
                f"{', '.join(changed)}"
            )
        cfg = stored.replace(device=cfg.device)
        accel = resume_precision(
            accel or Acceleration(), state.get("amp"), cfg.device, say
        )
    dist.barrier()  # every rank has read state.pt before rank 0 may replace anything

    # each rank its own z, y (seed + rank); rank 0 = the single-process run
    distiller = build_distiller(teacher, meta, cfg, bundle, accel=accel, dist=dist)
    inputs = dict(
        teacher=checkpoint.fingerprint(teacher.state_dict()),
        test_data=checkpoint.fingerprint(
            {
                "x": getattr(bundle.test, "images", None),
                "y": getattr(bundle.test, "labels", None),
            }
        ),
    )
    try:
        if state is not None:
            for key, what, flag in (
                ("teacher", "teacher", "--teacher"),
                ("test_data", "evaluation data", "--dataset"),
            ):
                stored_print = (state.get("inputs") or {}).get(key)
                if (
                    stored_print is not None
                    and stored_print != inputs[key]
                    and not overwrite
                ):
                    raise CpscError(
                        f"The run in {out_dir} was started with another {what} than the one given now "
                        f"({flag}), so resuming would mix two experiments. Pass the {what} it was "
                        "started with, or --overwrite (or another --out) to start a new run."
                    )
            _load_state(distiller, state, state_path)
            say(f"resuming at iteration {distiller.iteration} of {cfg.budget.iters}")
        elif dist.is_main:
            # a new run: nothing of an earlier one (its checkpoint, log, metrics, figures) may remain
            folders.clear_run(out_dir)
        distiller.inputs = inputs
        launcher = (
            (launch_environment() or {}).get("launcher") if dist.enabled else None
        )
        distiller.sessions.begin(
            command, distiller.device, dist.world_size, launcher, distiller.iteration
        )
        teacher_acc = (
            evaluate(distiller.teacher, distiller.test_set, distiller.device)
            if dist.is_main
            else None
        )
        if distiller.iteration < cfg.budget.iters:
            train(distiller, out_dir, progress=progress, stop_after=stop_after)
        metrics = None
        if dist.is_main:
            metrics = _finish(
                distiller, bundle, meta, teacher_acc, out_dir, sample_per_class
            )
        return dist.broadcast_object(metrics)
    finally:
        distiller.close()


def _damaged(path: str, exc: BaseException) -> CpscError:
    if isinstance(exc, KeyError):
        what = (
            f"it has no {exc}: it was edited, or written by an older cpsc-lite that did not "
            "save it"
        )
    else:
        what = f"it is damaged or was edited ({str(exc).splitlines()[0][:200]})"
    return CpscError(
        f"The resume state {path} cannot be continued: {what}. Finish the run with the version "
        "that started it, restore a good copy, or pass --overwrite (or another --out) to start "
        "a new run."
    )


def _stored_config(state: dict, path: str) -> DistillConfig:
    try:
        return DistillConfig.from_saved(state["config"])
    except CpscError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise _damaged(path, exc) from None


def _load_state(distiller: Distiller, state: dict, path: str) -> None:
    """``distiller.load_state_dict(state)``, where a state that does not fit is a message."""
    try:
        distiller.load_state_dict(state)
    except CpscError:
        raise
    except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as exc:
        raise _damaged(path, exc) from None


def _finish(
    distiller: Distiller,
    bundle: DataBundle,
    meta: dict,
    teacher_acc: float,
    out_dir: str,
    sample_per_class: int,
) -> dict:
    """Rank 0's end of a run: final accuracy, metrics.json, samples.png, curves.png (and the
    transfer set of a method whose product is its images)."""
    from .viz import plot_curves

    cfg, method = distiller.cfg, distiller.method
    student_acc = evaluate(distiller.student, distiller.test_set, distiller.device)
    best_acc = max(distiller.best_student_acc or 0.0, student_acc)
    complete = distiller.iteration >= cfg.budget.iters
    distiller.sessions.update(distiller.iteration)
    final = final_diagnostics(distiller, bundle)
    metrics = dict(
        teacher_acc=teacher_acc,
        student_acc=student_acc,
        best_student_acc=best_acc,
        reported_acc=best_acc if cfg.authors.report_best else student_acc,
        accuracy_at=time_to_accuracy(distiller),
        **final,
        iters=distiller.iteration,
        seconds=round(distiller.elapsed, 2),
        complete=complete,
        method=cfg.method,
        student=cfg.student,
        teacher=meta["model"],
        dataset=bundle.name,
        device=str(distiller.device),
        config=cfg.to_dict(),
        runtime=distiller.runtime(),
        wall_seconds=distiller.sessions.wall_seconds(),
        sessions=distiller.sessions.sessions,
    )
    checkpoint.write_json(metrics, os.path.join(out_dir, "metrics.json"))
    if hasattr(method, "transfer_set"):
        from .data import save_transfer_set

        # The optimised images are the method's product: kept as a transfer set (--dataset npz:FILE).
        save_transfer_set(
            os.path.join(out_dir, "transfer_set.npz"),
            *method.transfer_set(),
            meta["mean"],
            meta["std"],
            meta["class_names"],
        )
    _figure(
        "samples.png", lambda: _samples_png(distiller, meta, out_dir, sample_per_class)
    )
    log_path = os.path.join(out_dir, "log.jsonl")
    records = read_log(log_path) if os.path.exists(log_path) else []
    if records:
        title = f"{cfg.method}: {meta['model']} -> {cfg.student} on {bundle.name}"
        curves = os.path.join(out_dir, "curves.png")
        _figure(
            "curves.png",
            lambda: plot_curves(records, curves, teacher_acc=teacher_acc, title=title),
        )
    return metrics


def _figure(name: str, draw: Callable) -> None:
    """Draw and close one end-of-run figure. Figures never cost a run its results: by now
    metrics.json and the checkpoints are written, so a failure is a note and the run goes on."""
    try:
        _close(draw())
    except Exception as exc:  # noqa: BLE001 - matplotlib raises many kinds
        text = str(exc).splitlines()[0][:200] if str(exc) else ""
        tqdm.write(
            f"note: could not draw {name} ({type(exc).__name__}: {text}); the run's results "
            "and checkpoints are saved",
            file=sys.stderr,
        )


def _samples_png(distiller: Distiller, meta: dict, out_dir: str, per_class: int):
    from .viz import plot_samples, teacher_predictions

    cfg, method = distiller.cfg, distiller.method
    grid = method.sample_grid(per_class)
    images = grid["images"]
    inverted = not method.saves_generator
    return plot_samples(
        images,
        grid["labels"],
        meta["class_names"],
        meta["mean"],
        meta["std"],
        title=f"{cfg.method} {grid['what']}, iteration {distiller.iteration}",
        path=os.path.join(out_dir, "samples.png"),
        predictions=teacher_predictions(distiller.teacher, images.to(distiller.device))
        if grid["predictions"]
        else None,
        xlabel=f"{len(images) // distiller.num_classes} optimised images per target class"
        if inverted
        else None,
    )


def final_diagnostics(
    distiller: Distiller, bundle: DataBundle, per_class: int = 50
) -> dict:
    """End-of-run measures of the synthetic images (metrics.json; book chapter 7).

    ``teacher_agreement``: share of class-wise samples the teacher assigns to their conditioning
    class. ``pixel_recognition``: the same share for an independent judge, a 5-nearest-neighbour
    classifier on raw pixels fitted to the real training split (present only when the data set has
    one; it judges the samples and never trains anything). Both are None for inputs without a
    conditioning label (noise, real data, an unconditional generator).
    """
    from .diagnostics import PixelJudge, teacher_agreement

    out = dict(teacher_agreement=None, pixel_recognition=None)
    if distiller.bn_loss is not None:
        distiller.bn_loss.enabled = False
    # about 2000 images at most, any K
    per_class = max(1, min(per_class, 2000 // distiller.num_classes))
    drawn = distiller.method.labelled_samples(per_class)
    if drawn is None:
        return out
    x, y = drawn
    distiller.teacher.eval()
    seen = teacher_agreement(distiller.teacher, x, y, distiller.num_classes, 256)
    out["teacher_agreement"] = round(seen["mean_agreement"], 4)
    if bundle.train is not None and isinstance(bundle.train, ArrayDataset):
        judge = PixelJudge(bundle.train)
        meta = distiller.teacher_meta
        out["pixel_recognition"] = round(
            judge.recognition(x, y, meta["mean"], meta["std"]), 4
        )
    return out


def _close(fig) -> None:
    from .viz import _plt

    _plt().close(fig)
