"""The output-folder policy of every command that writes (teacher, distill, demo, bench, sample,
record, profile): one writer per folder, and no file replaced that the command did not write.

* **One lock per folder.** :func:`hold` takes an exclusive lock on a folder for as long as a
  command writes into it: ``.cpsc-lite.lock`` in the folder, locked with ``fcntl.flock`` and
  holding the owner's pid, host, command and start time. A second writer is refused with a
  message naming the first. The kernel releases the lock when its process ends, however it ends
  (``kill -9`` included), so a lock file left behind by a killed process is recognised as stale
  and taken over. Where the file system has no ``flock`` (some FUSE mounts), the lock file is
  created exclusively instead and is stale once its process (same host) is gone.
* **Whose files are these.** :func:`prepare_output_dir` decides, before any work, whether a
  command may write into a folder: an earlier run of the same kind needs ``--resume`` (continue
  it) or ``--overwrite`` (replace it); a folder holding a run's results without the state to
  continue them is still a previous run; files another kind of command wrote (a teacher's
  metrics.json, a distillation's) are never replaced, with or without ``--overwrite``.
* :func:`clear_run` deletes, on ``--overwrite``, exactly the files a command of that kind writes,
  nothing else.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import glob
import json
import os
import shlex
import socket
import sys
from typing import Callable, Optional

from . import CpscError
from .checkpoint import check_output_dir, metrics_owner, remove_stale_temporaries

try:
    import fcntl
except ImportError:  # Windows: the exclusive-create lock below
    fcntl = None

LOCK_NAME = ".cpsc-lite.lock"

#: What a distillation run writes into its folder (its progress figures and TensorBoard events
#: are matched by :data:`DISTILL_PATTERNS`).
DISTILL_FILES = (
    "state.pt",
    "student.pt",
    "generator.pt",
    "transfer_set.npz",
    "metrics.json",
    "log.jsonl",
    "samples.png",
    "curves.png",
)
DISTILL_PATTERNS = ("samples/iter_*.png", "tensorboard/events.out.tfevents.*")
#: The files that make a folder hold a distillation's *results* (a previous run, whether or not
#: its state.pt is still there).
DISTILL_RESULTS = ("student.pt", "generator.pt", "transfer_set.npz")

# ------------------------------------------------------------------ the lock
#: Locks this process holds: lock file -> [descriptor, depth, mode]. A command that calls another
#: (the demo trains a teacher, then distils, into one folder) takes the same lock again.
_HELD: dict = {}
#: errno values of file systems that do not offer flock.
_NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EINVAL}


def _command_line() -> str:
    argv = list(sys.argv)
    first = os.path.basename(argv[0]) if argv else ""
    shown = (
        ["cpsc-lite", *argv[1:]]
        if first in ("cpsc-lite", "__main__.py")
        else [sys.executable and "python", *argv]
    )
    text = shlex.join(shown)
    return text if len(text) <= 300 else text[:297] + "..."


def _owner_record(what: str) -> dict:
    return dict(
        pid=os.getpid(),
        host=socket.gethostname(),
        command=_command_line(),
        what=what,
        since=_dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
    )


def _read_record(fd: int) -> Optional[dict]:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        raw = os.read(fd, 65536)
        record = json.loads(raw.decode("utf-8", "replace")) if raw.strip() else None
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _write_record(fd: int, record: dict) -> None:
    os.lseek(fd, 0, os.SEEK_SET)
    os.ftruncate(fd, 0)
    os.write(fd, (json.dumps(record) + "\n").encode())


def _busy(folder: str, lock_path: str, owner: Optional[dict], flag: str, soft: bool):
    """The refusal of a second writer, naming the first."""
    if owner:
        who = (
            f"pid {owner.get('pid')} on {owner.get('host')}, running `{owner.get('command')}` "
            f"({owner.get('what')}) since {owner.get('since')}"
        )
        stop = f" (or stop it: kill {owner.get('pid')} on {owner.get('host')})"
    else:
        who, stop = "a process that has not said who it is yet", ""
    stale = (
        f" If that process no longer runs (this file system offers no flock, so a killed "
        f"process leaves its lock behind), delete {lock_path} and rerun."
        if soft
        else ""
    )
    return CpscError(
        f"{folder} is in use by another cpsc-lite command: {who}. Two commands writing one folder "
        f"would mix or replace each other's files, so this one stops before writing anything. Wait "
        f"for it to finish{stop}, or choose another {flag}.{stale}"
    )


def _alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _lock_flock(lock_path: str, record: dict, folder: str, flag: str):
    """``(descriptor, stale record or None)``, or None where the file system has no flock."""
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            owner = _read_record(fd)
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise _busy(folder, lock_path, owner, flag, soft=False) from None
            if exc.errno in _NO_FLOCK:
                return None
            raise
        # The previous owner may have removed the file between our open and our flock: then
        # this descriptor locks a file nobody else will see. Start again with the path's file.
        try:
            same = os.stat(lock_path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            continue
        stale = _read_record(fd)
        _write_record(fd, record)
        return fd, stale


def _lock_exclusive(lock_path: str, record: dict, folder: str, flag: str):
    """The lock where flock is missing: the lock file created exclusively; stale when its
    process, on this host, is gone."""
    for _ in range(3):
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            try:
                with open(lock_path, "rb") as f:
                    owner = json.loads(f.read().decode("utf-8", "replace") or "null")
            except (OSError, ValueError):
                owner = None
            if (
                isinstance(owner, dict)
                and owner.get("host") == socket.gethostname()
                and not _alive(owner.get("pid"))
            ):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(lock_path)
                continue
            raise _busy(folder, lock_path, owner, flag, soft=True) from None
        _write_record(fd, record)
        return fd, None
    raise _busy(folder, lock_path, None, flag, soft=True)


@contextlib.contextmanager
def hold(
    folder: str,
    what: str,
    *,
    flag: str = "--out",
    lock_name: str = LOCK_NAME,
    enabled: bool = True,
    say: Callable[[str], None] = lambda text: print(text, file=sys.stderr),
):
    """Hold the exclusive lock of ``folder`` (created if needed) while the block runs.

    ``what`` says what the holder writes (shown to a refused second writer, with the holder's pid,
    host, command and start time). The same process may take it again inside (re-entrant).
    ``enabled=False`` (ranks other than 0 of a distributed run) does nothing."""
    if not enabled:
        yield
        return
    full = check_output_dir(folder, flag=flag)
    lock_path = os.path.join(full, lock_name)
    key = os.path.realpath(lock_path)
    if key in _HELD:
        _HELD[key][1] += 1
        try:
            yield
        finally:
            _HELD[key][1] -= 1
        return
    record = _owner_record(what)
    try:
        got = _lock_flock(lock_path, record, folder, flag) if fcntl else None
        mode = "flock"
        if got is None:
            got, mode = _lock_exclusive(lock_path, record, folder, flag), "file"
    except OSError as exc:
        raise CpscError(
            f"Cannot lock {folder} ({exc.strerror or exc}). Choose a folder you may write to "
            f"with {flag}."
        ) from None
    fd, stale = got
    if stale and stale.get("pid") != os.getpid():
        say(
            f"note: {folder} kept the lock file of an earlier command that did not end normally "
            f"(pid {stale.get('pid')} on {stale.get('host')}, `{stale.get('command')}`); it no "
            "longer holds the folder, so this command takes it over."
        )
    _HELD[key] = [fd, 1, mode]
    try:
        yield
    finally:
        del _HELD[key]
        _release(lock_path, fd, mode)


def _release(lock_path: str, fd: int, mode: str) -> None:
    """Remove the lock file (only if it is still ours), then unlock: a waiting process that
    opened the old file sees that it was replaced and starts again."""
    try:
        if os.stat(lock_path).st_ino == os.fstat(fd).st_ino:
            os.remove(lock_path)
    except OSError:
        pass
    try:
        if mode == "flock":
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def writer_of(folder: str, lock_name: str = LOCK_NAME) -> Optional[dict]:
    """The record of the process that holds ``folder``'s lock now (None if none does, or if it
    is this process), without taking it: for commands that read a folder another may write."""
    lock_path = os.path.join(os.path.abspath(os.path.expanduser(folder)), lock_name)
    if os.path.realpath(lock_path) in _HELD or not os.path.exists(lock_path):
        return None
    try:
        fd = os.open(lock_path, os.O_RDONLY)
    except OSError:
        return None
    try:
        record = _read_record(fd)
        if fcntl is None:
            return record
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in _NO_FLOCK:
                alive = isinstance(record, dict) and (
                    record.get("host") != socket.gethostname()
                    or _alive(record.get("pid"))
                )
                return record if alive else None
            return record or {}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def refuse_if_written(folder: str, doing: str) -> None:
    """Refuse to read ``folder`` while another command writes it (e.g. record a running run)."""
    owner = writer_of(folder)
    if owner is not None:
        who = (
            f"pid {owner.get('pid')} on {owner.get('host')}, `{owner.get('command')}`, since "
            f"{owner.get('since')}"
            if owner
            else "another cpsc-lite command"
        )
        raise CpscError(
            f"{folder} is being written right now ({who}), so {doing} would see a mix of old and "
            "new files. Wait for that command to finish, then rerun this one."
        )


# ------------------------------------------------------------------ whose files are these
_KINDS = {
    "teacher": "a teacher training",
    "distillation": "a distillation run",
    "unknown": "not cpsc-lite",
}


def present(folder: str, names) -> list[str]:
    """Which of ``names`` exist in ``folder``."""
    return [n for n in names if os.path.exists(os.path.join(folder, n))]


def clear_run(folder: str, names=DISTILL_FILES, patterns=DISTILL_PATTERNS) -> list[str]:
    """Delete the files a command of one kind writes (``names``, and files matching ``patterns``),
    and nothing else: what ``--overwrite`` replaces. Returns what was deleted."""
    gone = []
    found = present(folder, names)
    for pattern in patterns:
        found += [
            os.path.relpath(p, folder)
            for p in sorted(glob.glob(os.path.join(glob.escape(folder), pattern)))
        ]
    for name in found:
        full = os.path.join(folder, name)
        if os.path.isfile(full) or os.path.islink(full):
            os.remove(full)
            gone.append(name)
    return gone


def prepare_output_dir(
    out_dir: str,
    *,
    state_file: str,
    owner: str,
    what: str,
    resume: bool = False,
    overwrite: bool = False,
    products: tuple = (),
    results: tuple = (),
    metrics_file: str = "metrics.json",
    say=print,
    take_over: bool = True,
) -> bool:
    """The one output-folder policy of every command that writes a run (teacher, distill, demo).

    Returns whether there is a run to resume. Before any work, and deleting nothing:

    * another kind of command's ``metrics_file`` (a teacher's metrics.json in a distillation's
      folder, or the reverse) is refused, with or without ``overwrite``: a new run would replace
      it, and ``--overwrite`` replaces only files a command of the same kind wrote;
    * an earlier run's ``state_file`` needs ``resume`` (continue it) or ``overwrite`` (start over);
    * ``products`` (e.g. ``teacher.pt``), ``results`` (files that only a finished or stopped run
      leaves, e.g. ``student.pt``) and an own ``metrics_file`` without ``state_file`` are a
      previous run that cannot be continued: ``overwrite`` replaces it, nothing else does.

    With ``take_over`` (the process that writes), half-written files of a killed run are removed.
    """
    check_output_dir(out_dir)  # before any work: a bad --out must not cost a run
    kind = _KINDS.get(owner, owner)
    found = metrics_owner(os.path.join(out_dir, metrics_file))
    if found not in (None, owner):
        by = _KINDS.get(found, found)
        raise CpscError(
            f"{out_dir} holds another command's {metrics_file} ({by}'s), which {kind} would "
            f"replace. --overwrite replaces only what {kind} wrote, never another command's "
            f"files: choose another --out directory (e.g. {os.path.join(out_dir, owner)}), or "
            f"move {metrics_file} away yourself if you no longer need it."
        )
    has_state = os.path.exists(os.path.join(out_dir, state_file))
    if has_state and not (resume or overwrite):
        raise CpscError(
            f"{out_dir} already holds {what} ({state_file}). Pass --resume to continue it, "
            "--overwrite to start over and replace it, or choose another --out directory."
        )
    if not has_state and not overwrite:
        earlier = present(out_dir, (*products, *results)) + (
            [metrics_file] if found == owner else []
        )
        if earlier:
            why = (
                f"--resume has nothing to continue: its {state_file} is gone (deleted, or the "
                "run finished and removed it)"
                if resume
                else f"there is no {state_file} to continue it from"
            )
            raise CpscError(
                f"{out_dir} already holds the results of {kind} ({', '.join(earlier)}), and {why}. "
                "Pass --overwrite to replace that run, or choose another --out directory."
            )
    if resume and not has_state:
        say(f"note: nothing to resume in {out_dir}; starting a new run")
    if take_over:
        remove_stale_temporaries(out_dir)
    return resume and has_state
