"""Checkpoints: atomic writes, safe loads (``weights_only=True``), plain metadata.

Every file holds a dict ``{"format": "cpsc_lite", "kind": ..., "state_dict": ...,
"meta": {...}}`` built only from tensors and plain Python data, so it loads
with ``torch.load(..., weights_only=True)``: loading never runs code from the file.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import re
import shutil
import signal
import tempfile
import threading
import warnings
from typing import Any, Optional

import torch

from . import CpscError, Terminated, __version__

FORMAT = "cpsc_lite"


# ------------------------------------------------------------------ termination
_termination = {"requested": False, "polling": 0, "immediate": False}


def termination_requested() -> bool:
    """True once SIGTERM arrived under :func:`stop_on_sigterm`: training loops check it between whole
    iterations (or epochs), save a checkpoint and raise :class:`~cpsc_lite.Terminated`."""
    return _termination["requested"]


@contextlib.contextmanager
def polling_for_termination():
    """Mark a loop that checks :func:`termination_requested` often (between iterations, epochs, or
    while it waits for worker processes): under ``stop_on_sigterm(immediate=True)`` SIGTERM only
    sets the flag there, so the loop can save first; everywhere else it stops at once."""
    _termination["polling"] += 1
    try:
        yield
    finally:
        _termination["polling"] -= 1


class StopNow(BaseException):
    """SIGTERM that stopped a command at once, outside a loop that saves first (the command line's
    mode of :func:`stop_on_sigterm`). A BaseException, as KeyboardInterrupt is, so that no
    ``except Exception`` on its way turns it into another error; the command line says what
    the command had saved."""


@contextlib.contextmanager
def stop_on_sigterm(immediate: bool = False):
    """Turn SIGTERM (what SLURM and Colab send before they stop a job) into a request that the running
    loop honours at its next checkpoint-safe point, instead of dying without one. A second SIGTERM
    stops at once. With ``immediate`` (the command line), SIGTERM outside a loop that polls for it
    (:func:`polling_for_termination`) stops at once too: files are written whole or not at all, so
    stopping there loses nothing that was saved. Only the main thread can install signal handlers;
    elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if _termination["requested"]:
            if _termination["immediate"]:
                raise StopNow(
                    "Stopped by a second SIGTERM before a checkpoint was written."
                )
            raise Terminated(
                "Stopped by a second SIGTERM before a checkpoint could be written; the previous "
                "checkpoint is kept. Rerun the same command with --resume to continue from it."
            )
        _termination["requested"] = True
        if _termination["immediate"] and not _termination["polling"]:
            raise StopNow("Stopped by SIGTERM.")

    previous = signal.signal(signal.SIGTERM, handler)
    _termination["immediate"] = immediate
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        _termination.update(requested=False, immediate=False)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str, writer, replace: bool = True) -> None:
    """Call ``writer(file)`` on a temporary file next to ``path``, then rename it into place.

    A crash mid-write leaves the previous ``path`` untouched: the rename is atomic. The file gets
    the permissions any new file would (0666 minus the umask), not the 0600 of a temporary file,
    so collaborators on a shared file system can read it. A failed write (disk full, permission,
    a read-only file system) raises a :class:`CpscError` that says so; the previous file stays.
    With ``replace=False`` a file that appeared at ``path`` meanwhile is never replaced (the new
    one is linked into place, which fails if the name exists).
    """
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory
        )
    except OSError as exc:
        raise _write_problem(path, exc) from None
    try:
        with os.fdopen(fd, "wb") as f:
            writer(f)
            f.flush()
            _unless_unsupported(os.fsync, f.fileno())
        _unless_unsupported(os.chmod, tmp, 0o666 & ~_umask())
        if replace:
            os.replace(tmp, path)
        else:
            _place_new(tmp, path)
    except BaseException as exc:
        # Diagnose while the partial file still fills the disk, then remove it.
        problem = (
            _write_problem(path, exc)
            if isinstance(exc, (OSError, RuntimeError))
            else None
        )
        if os.path.exists(tmp):
            os.remove(tmp)
        if problem is not None:
            raise problem from None
        raise


def _place_new(tmp: str, path: str) -> None:
    """Move ``tmp`` to ``path`` unless ``path`` exists: a hard link fails on an existing name (a
    file system without hard links gets a check, then a rename)."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise CpscError(
            f"{path} appeared while it was being written (another command?); it was left as it "
            "is. Choose another name, or pass --overwrite to replace it."
        ) from None
    except OSError:
        if os.path.exists(path):
            raise CpscError(
                f"{path} appeared while it was being written; it was left as it is. Choose another "
                "name, or pass --overwrite to replace it."
            ) from None
        os.replace(tmp, path)
    else:
        os.remove(tmp)


#: What file systems that lack a feature answer (FUSE mounts such as Google Drive on Colab, some
#: network file systems): the write itself worked, only fsync or chmod is not offered.
_UNSUPPORTED = {
    errno.EINVAL,
    errno.ENOSYS,
    errno.ENOTSUP,
    errno.EOPNOTSUPP,
    errno.EPERM,
    errno.EACCES,
}


def _unless_unsupported(call, *args) -> None:
    """``call(*args)``, where a file system that does not offer it is no error: fsync on a FUSE
    mount that does not implement it, chmod where permissions are the mount's (Google Drive). A
    real failure, such as a full disk reported at fsync, still raises."""
    try:
        call(*args)
    except OSError as exc:
        if exc.errno not in _UNSUPPORTED:
            raise


def _write_problem(path: str, exc: BaseException) -> CpscError:
    """A failed write as one sentence with its cause; torch reports a full disk as a RuntimeError
    ("unexpected pos ..."), so the free space is checked to name it."""
    directory = os.path.dirname(os.path.abspath(path))
    full = getattr(exc, "errno", None) in (
        errno.ENOSPC,
        errno.EDQUOT,
    ) or "unexpected pos" in str(exc)
    try:
        full = full or shutil.disk_usage(_existing_parent(directory)).free < 1 << 20
    except OSError:
        pass
    if full:
        why = "the disk (or your quota) is full"
    elif getattr(exc, "errno", None) in (errno.EACCES, errno.EPERM, errno.EROFS):
        why = "you may not write there (permissions or a read-only file system)"
    else:
        why = f"{exc.__class__.__name__}: {str(exc).splitlines()[0][:200] if str(exc) else 'no detail'}"
    return CpscError(
        f"Could not write {path}: {why}. Any previous version of the file is unchanged. Free some "
        "space or choose another --out directory, then rerun (with --resume where the command has it)."
    )


def _existing_parent(path: str) -> str:
    path = os.path.abspath(path)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


#: Temporary files :func:`atomic_write_bytes` leaves behind only when the process is killed mid-write.
_TEMPORARY = re.compile(r"^\..+\.[A-Za-z0-9_]{6,}\.tmp$")


def remove_stale_temporaries(directory: str) -> list[str]:
    """Delete the half-written temporary files a killed run left in ``directory`` (never a finished
    file: those are renamed into place whole). Call it when a command takes the folder over."""
    removed = []
    if not os.path.isdir(directory):
        return removed
    for name in os.listdir(directory):
        full = os.path.join(directory, name)
        if _TEMPORARY.match(name) and os.path.isfile(full) and not os.path.islink(full):
            try:
                os.remove(full)
                removed.append(name)
            except OSError:
                pass
    return removed


def check_output_dir(path: str, flag: str = "--out") -> str:
    """Make sure ``path`` is (or can become) a folder we can write, before any work starts.

    Returns the absolute path; raises a :class:`CpscError` naming the problem and the fix: an
    empty path, a path that is a file or lies under one, a folder that cannot be created or
    written, or a disk with less than 1 MiB free."""
    if not isinstance(path, str) or not path.strip():
        raise CpscError(
            f"{flag} is empty. Give the folder to write into, e.g. {flag} runs/my_run."
        )
    full = os.path.abspath(os.path.expanduser(path))
    if os.path.exists(full) and not os.path.isdir(full):
        raise CpscError(
            f"{flag} {path} is a file, not a folder. Choose a folder (it is created if needed)."
        )
    parent = _existing_parent(full)
    if not os.path.isdir(parent):
        raise CpscError(
            f"{flag} {path} lies under {parent}, which is a file, not a folder. Choose another path."
        )
    try:
        os.makedirs(full, exist_ok=True)
        with tempfile.TemporaryFile(dir=full):
            pass
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise CpscError(
                f"Cannot write into {path}: the disk (or your quota) is full. Free some space or "
                f"choose another {flag}."
            ) from None
        raise CpscError(
            f"Cannot write into {path} ({exc.strerror or exc}). Choose a folder you may write to with "
            f"{flag}, or fix its permissions."
        ) from None
    if shutil.disk_usage(full).free < 1 << 20:
        raise CpscError(
            f"The disk holding {path} has less than 1 MiB free, too little for a checkpoint. Free "
            f"some space or choose another {flag}."
        )
    return full


def save(obj: Any, path: str) -> None:
    """``torch.save`` through :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, lambda f: torch.save(obj, f))


def write_json(obj: Any, path: str) -> None:
    atomic_write_bytes(
        path, lambda f: f.write((json.dumps(obj, indent=2) + "\n").encode())
    )


def make(kind: str, state_dict: dict, meta: dict, **extra) -> dict:
    meta = dict(meta, version=__version__)
    return dict(format=FORMAT, kind=kind, state_dict=state_dict, meta=meta, **extra)


def load(path: str, kind: Optional[str] = None, what: str = "checkpoint") -> dict:
    """Load a cpsc_lite checkpoint safely, with clear errors for every way it can go wrong.

    Never unpickles code (``weights_only=True``); checks the marker, the kind, the metadata the
    kind needs (types and ranges) and that every weight is finite."""
    obj = read_weights_file(
        path,
        what,
        pickled_advice="cpsc_lite's own files never contain any. Use a file "
        "cpsc_lite wrote, or re-save only the weights from a copy you trust.",
    )
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CpscError(
            f"{path} is not a cpsc_lite {what} (no 'format: cpsc_lite' marker). cpsc_lite reads the "
            "files it writes itself; to use a community teacher (a bare state dict), pass "
            "--teacher-model NAME so it can be wrapped."
        )
    if kind is not None and obj.get("kind") != kind:
        raise CpscError(
            f"{path} holds a {obj.get('kind')!r} checkpoint, but a {kind!r} checkpoint is needed "
            f"here. Pass the {kind}.pt file instead."
        )
    problem = metadata_problem(obj)
    if problem:
        raise CpscError(
            f"The {what} {path} is damaged or was edited: {problem}. Re-create it with the command "
            "that made it, or restore a good copy."
        )
    refuse_diverged(
        obj.get("state_dict") or {},
        f"{what} {path}",
        "It comes from a training that diverged: re-create it (e.g. with lower learning rates).",
    )
    return obj


def load_weights(model, state_dict: dict, path: str, what: str) -> None:
    """``model.load_state_dict(state_dict)``, where weights that do not fit are a message saying
    which file and what to do (every checkpoint loader's last step)."""
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as exc:
        raise CpscError(
            f"The weights in {path} do not fit {what}: {str(exc).splitlines()[0]}. The file may "
            "come from another version or be damaged: re-create it, or restore a good copy."
        ) from None


def safe_torch_load(path: str):
    """``torch.load(path, weights_only=True)`` on the CPU, without torch's warnings about odd pickle
    protocols in files that are no checkpoint (the caller explains those in its own words)."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=".*pickle protocol.*", category=UserWarning
        )
        return torch.load(path, map_location="cpu", weights_only=True)


def is_pickled_objects_error(text: str) -> bool:
    """Whether ``torch.load(weights_only=True)`` refused a well-formed pickle for its Python objects
    (classes, functions), as opposed to bytes that are no pickle at all ("Unsupported operand")."""
    return any(
        marker in text
        for marker in (
            "Unsupported global",
            "unsupported GLOBAL",
            "not an allowed global",
        )
    )


def diverged_weights(
    state_dict: dict, prefix: str = "", limit: float = 1e12
) -> list[str]:
    """Names of floating-point tensors that are non-finite or beyond ``limit`` in size: a training that
    blew up, whose weights must not replace a good checkpoint. One host sync for the whole dict."""
    names = [
        name
        for name, t in state_dict.items()
        if isinstance(t, torch.Tensor) and t.is_floating_point() and t.numel()
    ]
    if not names:
        return []
    # NaN stays NaN
    peaks = torch.stack(
        [state_dict[name].detach().abs().amax().float().cpu() for name in names]
    )
    bad = (~torch.isfinite(peaks)) | (peaks > limit)
    return [
        f"{prefix}.{name}" if prefix else name
        for name, b in zip(names, bad.tolist())
        if b
    ]


def refuse_diverged(state_dict: dict, what: str, advice: str) -> None:
    """Raise the one message for a checkpoint whose weights are NaN, infinite or beyond 1e12."""
    bad = diverged_weights(state_dict)
    if bad:
        raise CpscError(
            f"The {what} holds NaN, infinite or absurdly large (beyond 1e12) weights "
            f"({', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}), so everything it predicts is "
            f"meaningless. {advice}"
        )


def fingerprint(tensors: dict) -> str:
    """A short content hash of named tensors (a teacher's weights, a test split), to recognise them
    again on ``--resume`` whatever file or folder they come from."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name]
        if isinstance(t, torch.Tensor):
            t = t.detach().cpu().contiguous()
            digest.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
            digest.update(
                t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
            )
    return digest.hexdigest()[:16]


def _is_int(v, low: int = 1, high: Optional[int] = None) -> bool:
    return (
        isinstance(v, int)
        and not isinstance(v, bool)
        and v >= low
        and (high is None or v <= high)
    )


def _is_numbers(v, n: int) -> bool:
    return (
        isinstance(v, (list, tuple))
        and len(v) == n
        and all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
            for x in v
        )
    )


def metadata_problem(obj: dict) -> Optional[str]:
    """What is wrong with the metadata a checkpoint of its kind needs, or None."""
    meta = obj.get("meta")
    if not isinstance(meta, dict):
        return "it has no metadata ('meta')"
    if not isinstance(obj.get("state_dict"), dict):
        return "it has no weights ('state_dict')"
    kind = obj.get("kind")
    if kind in ("teacher", "student"):
        if not isinstance(meta.get("model"), str):
            return "meta['model'] (the architecture's name) is missing or not text"
        fields = dict(num_classes=(2, 100000), channels=(1, 4), img_size=(4, 1024))
        for name, (low, high) in fields.items():
            if not _is_int(meta.get(name), low, high):
                return f"meta[{name!r}] is {meta.get(name)!r}, not a whole number in {low}..{high}"
        for name in ("mean", "std"):
            if not _is_numbers(meta.get(name), meta["channels"]):
                return f"meta[{name!r}] is {meta.get(name)!r}, not {meta['channels']} numbers (one per channel)"
        if any(x <= 0 for x in meta["std"]):
            return f"meta['std'] is {meta['std']!r}; every entry must be positive"
        names = meta.get("class_names")
        if not (isinstance(names, list) and len(names) == meta["num_classes"]):
            return f"meta['class_names'] does not list {meta['num_classes']} names"
    elif kind == "generator":
        g = meta.get("generator")
        if not isinstance(g, dict):
            return "meta['generator'] (the generator's shape) is missing"
        for name, (low, high) in dict(
            num_classes=(1, 100000),
            img_size=(4, 128),
            channels=(1, 4),
            nz=(1, 1 << 16),
            ngf=(1, 1 << 12),
        ).items():
            if not _is_int(g.get(name), low, high):
                return f"meta['generator'][{name!r}] is {g.get(name)!r}, not a whole number in {low}..{high}"
        if not isinstance(g.get("conditional"), bool):
            return "meta['generator']['conditional'] is not true/false"
        # A distillation's generator also records how to show its images; the book's bare ones do not.
        for name in ("mean", "std"):
            if name in meta and not _is_numbers(meta[name], g["channels"]):
                return (
                    f"meta[{name!r}] is not {g['channels']} numbers (one per channel)"
                )
        names = meta.get("class_names", [None] * g["num_classes"])
        if not (isinstance(names, list) and len(names) == g["num_classes"]):
            return f"meta['class_names'] does not list {g['num_classes']} names"
    elif kind in ("resume", "teacher_resume"):
        if not isinstance(obj.get("state"), dict) or not isinstance(
            obj["state"].get("config"), dict
        ):
            return "its resume state (with the run's settings) is missing"
    return None


def model_meta(model_name: str, bundle, **extra) -> dict:
    """Plain-data facts about a classifier and the data it expects."""
    return dict(
        model=model_name,
        num_classes=bundle.num_classes,
        channels=bundle.channels,
        img_size=bundle.img_size,
        mean=list(bundle.mean),
        std=list(bundle.std),
        class_names=list(bundle.class_names),
        dataset=bundle.name,
        **extra,
    )


def untrained_meta(
    model_name: str, num_classes: int, channels: int, img_size: int
) -> dict:
    """The facts :class:`~cpsc_lite.distill.Distiller` needs about a teacher that was never trained:
    timing and FLOP counts (``bench --profile``, book chapter 8, ``benchmarks/gpu_check.py``)."""
    return dict(
        model=model_name,
        num_classes=num_classes,
        channels=channels,
        img_size=img_size,
        mean=[0.5] * channels,
        std=[0.25] * channels,
        class_names=[str(i) for i in range(num_classes)],
    )


def metrics_owner(path: str) -> Optional[str]:
    """Which command wrote the metrics.json at ``path``: "distillation", "teacher", "unknown", or None if
    there is none. Commands check it before writing into a folder, so that none replaces another's file."""
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            saved = json.load(f)
    except (OSError, ValueError):
        return "unknown"
    if isinstance(saved, dict) and "student_acc" in saved:
        return "distillation"
    return "teacher" if isinstance(saved, dict) and "history" in saved else "unknown"


def read_weights_file(
    path: str, what: str = "teacher checkpoint", pickled_advice: Optional[str] = None
):
    """Any torch file (ours or a community ``.pth``) read with ``torch.load(weights_only=True)``: one clear
    error for a folder, a missing file, a truncated or foreign file, or one holding pickled Python objects
    (never unpickled: loading those can run code); ``pickled_advice`` says what to do about the last."""
    if os.path.isdir(path):
        raise CpscError(
            f"The {what} {path} is a folder, not a file. Pass the file inside it (for a teacher: "
            f"{os.path.join(path, 'teacher.pt')})."
        )
    if not os.path.isfile(path):
        raise CpscError(
            f"The {what} {path} does not exist. Check the path; a teacher is made with "
            "`cpsc-lite teacher ... --out DIR` (it writes DIR/teacher.pt)."
        )
    try:
        return safe_torch_load(path)
    except Exception as exc:
        text = str(exc)
        if is_pickled_objects_error(text):
            advice = pickled_advice or (
                "If you trust the file, re-save just the weights: python -c \"import torch; o = torch.load('IN.pth', "
                "weights_only=False); torch.save(o.get('state_dict', o), 'OUT.pth')\" and pass OUT.pth."
            )
            raise CpscError(
                f"The {what} {path} holds pickled Python objects besides tensors and plain data. "
                "cpsc_lite refuses to unpickle them, because loading such a file can run code from "
                f"it. {advice}"
            ) from None
        raise CpscError(
            f"Cannot read the {what} {path}: it is truncated, corrupt, or not a PyTorch file "
            f"({exc.__class__.__name__}: {text.splitlines()[0][:200] if text else ''}). "
            "Re-create it (for a teacher: `cpsc-lite teacher ...`) or restore a good copy."
        ) from None
