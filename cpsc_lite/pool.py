"""Jobs in worker processes (``cpsc-lite bench --workers N``): how many threads each gets, and a
pool that obeys SIGTERM within a second.

Each worker is a fresh (spawned) Python process; it leaves Ctrl-C and SIGTERM to the main
process, which ends the workers itself and reports what was saved.
"""

from __future__ import annotations

import os
import time
from typing import Callable, Optional, Sequence

import torch

from . import CpscError, Terminated, checkpoint


def _worker_start() -> None:
    """Workers leave Ctrl-C (sent to the whole process group) to the main process, which ends
    them itself."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def omp_threads() -> Optional[int]:
    """The thread count ``OMP_NUM_THREADS`` asks for: its first level (OpenMP's nested syntax,
    ``2,1``, is valid), or None when it is unset or not a positive number."""
    first = (os.environ.get("OMP_NUM_THREADS") or "").split(",")[0].strip()
    return int(first) if first.isdigit() and int(first) > 0 else None


def worker_threads(workers: int, device: str) -> int:
    """Threads per worker. On the CPU, the threads a serial run uses (this process's
    ``torch.get_num_threads()``, which follows ``OMP_NUM_THREADS``): the number of threads changes
    the order of floating-point sums, so only then does each job give the numbers of a serial
    run. On a GPU, where the CPU threads do not touch the numbers, each its share of the cores
    (or ``OMP_NUM_THREADS``)."""
    from .engine import pick_device

    if pick_device(device).type == "cpu":
        return torch.get_num_threads()
    return omp_threads() or max(1, (os.cpu_count() or 1) // workers)


def run_parallel(fn: Callable, jobs: Sequence[tuple], workers: int):
    """``fn(job)`` for every job in ``workers`` spawned processes; yields ``(index, result)`` as
    jobs finish. On SIGTERM (under :func:`checkpoint.stop_on_sigterm`) the workers are killed
    within a second and :class:`~cpsc_lite.Terminated` is raised; a worker that dies is a
    :class:`CpscError`."""
    import concurrent.futures as cf
    import multiprocessing

    pool = cf.ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_worker_start,
    )
    try:
        futures = {pool.submit(fn, job): i for i, job in enumerate(jobs)}
        pending = set(futures)
        with checkpoint.polling_for_termination():
            while pending:
                done, pending = cf.wait(
                    pending, timeout=0.25, return_when=cf.FIRST_COMPLETED
                )
                if checkpoint.termination_requested():
                    raise Terminated("Stopped by SIGTERM.")
                for future in done:
                    yield futures[future], _result(future)
    except BaseException:
        _end_workers(pool)
        raise
    pool.shutdown()


def _result(future):
    from concurrent.futures.process import BrokenProcessPool

    try:
        return future.result()
    except BrokenProcessPool:
        time.sleep(
            0.5
        )  # a SIGTERM to the whole group reaches this process's handler too
        if checkpoint.termination_requested():
            raise Terminated("Stopped by SIGTERM.") from None
        raise CpscError(
            "A worker process ended unexpectedly (killed, or out of memory?). What had finished "
            "is saved; rerun the same command with --resume to run the rest, with fewer "
            "--workers if memory ran out."
        ) from None


def _end_workers(pool) -> None:
    """Kill the worker processes at once (their jobs are not checkpointed), then let the pool go."""
    kill = getattr(pool, "kill_workers", None)  # Python 3.14
    if kill is not None:
        kill()
    else:
        for process in list((getattr(pool, "_processes", None) or {}).values()):
            process.kill()
    pool.shutdown(wait=False, cancel_futures=True)
