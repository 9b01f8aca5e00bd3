"""The one training loop: teacher training and distillation both run through :func:`run_loop`.

A *job* does one unit of work at a time (a teacher epoch, a distillation iteration) and says when
to log, evaluate and checkpoint. The loop owns what every training needs around that work: the
progress bar (rate and projected end), the clock, the loss terms summed between log lines, the
log file, the checkpoint cadence, and SIGTERM (save what can be saved, then stop).
"""

from __future__ import annotations

import json
import os
import time
from typing import Callable, Optional, Protocol

from tqdm.auto import tqdm

from . import Terminated, checkpoint


class Job(Protocol):
    """What :func:`run_loop` drives (:class:`cpsc_lite.runner.DistillJob`,
    :class:`cpsc_lite.teacher.TeacherJob`)."""

    #: units finished so far, and in all
    done: int
    total: int
    #: seconds of training so far (checkpoints keep it: a resumed run's clock continues)
    elapsed: float

    def step(self) -> dict:
        """One unit of work; returns its loss terms (tensors, summed by the loop between log lines)."""

    def log_due(self, done: int, end: int) -> bool:
        """Whether the unit just done gets a log line (``end``: where this call stops)."""

    def record(self, sums: dict, n: int, done: int) -> dict:
        """The log line from the terms summed over the last ``n`` units: raises if a loss is no
        longer finite; evaluates where due."""

    def save_due(self, done: int, end: int) -> bool:
        """Whether a checkpoint is written after the unit just done."""

    def save(self) -> None:
        """Write everything needed to continue, atomically."""

    def stop_requested(self, done: int) -> bool:
        """Whether the process was asked to stop (SIGTERM) and should now."""

    def stop_message(self, done: int) -> str:
        """What the stop says: where it stopped, what was saved, how to continue."""


def run_loop(
    job: Job,
    end: Optional[int] = None,
    log_path: Optional[str] = None,
    progress: bool = True,
    desc: str = "",
    callback: Optional[Callable[[dict], None]] = None,
    postfix: Callable[[dict], dict] = lambda record: {},
) -> None:
    """Run ``job`` until ``end`` units are done (default: all of them).

    Each log line goes to ``log_path`` (JSON lines; lines past the job's resume point are dropped
    first), to the progress bar (``postfix(record)``) and to ``callback(record)``. A checkpoint is
    written where the job says; on SIGTERM one more is written unless the last unit's was, and
    :class:`~cpsc_lite.Terminated` is raised with the job's message.
    """
    end = job.total if end is None else min(end, job.total)
    if log_path:
        truncate_log(log_path, job.done)
    bar = tqdm(
        total=job.total, initial=job.done, desc=desc, disable=not progress, leave=False
    )
    start = time.time() - job.elapsed
    try:
        with checkpoint.polling_for_termination():  # SIGTERM: save, then stop
            _run_units(job, end, log_path, bar, start, callback, postfix)
    finally:
        bar.close()
    job.elapsed = time.time() - start


def _run_units(job, end, log_path, bar, start, callback, postfix) -> None:
    """:func:`run_loop`'s units: step, log, checkpoint, and stop on SIGTERM after saving."""
    sums: dict = {}
    n = 0
    while job.done < end:
        for k, v in job.step().items():
            sums[k] = sums.get(k, 0) + v
        n += 1
        done = job.done
        if job.log_due(done, end):
            job.elapsed = time.time() - start
            record = job.record(sums, n, done)
            sums, n = {}, 0
            if postfix(record):
                bar.set_postfix(postfix(record))
            if log_path:
                with open(log_path, "a") as f:
                    f.write(json.dumps(record) + "\n")
            if callback is not None:
                callback(record)
        saved = job.save_due(done, end)
        if saved:
            job.elapsed = time.time() - start
            job.save()
        bar.update(1)
        if job.stop_requested(done):
            if not saved:
                job.elapsed = time.time() - start
                job.save()
            raise Terminated(job.stop_message(done))


def truncate_log(path: str, done: int, key: str = "iter") -> None:
    """Keep only the log lines up to ``done`` units (a resumed run rewrites what came after)."""
    if not os.path.exists(path):
        return
    keep = []
    with open(path) as f:
        for line in f:
            try:
                if json.loads(line)[key] <= done:
                    keep.append(line)
            except (ValueError, KeyError):
                continue
    checkpoint.atomic_write_bytes(path, lambda fh: fh.write("".join(keep).encode()))


def read_log(path: str) -> list[dict]:
    """The records of a ``log.jsonl``."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
