"""folders.py: one writer per output folder (a lock naming its owner, released however the
owner ends, stale locks taken over), and the policy of whose files a command may replace."""

import errno
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from cpsc_lite import CpscError, folders

from conftest import REPO


def _policy(out, **kw):
    notes = []
    args = dict(
        state_file="state.pt",
        owner="distillation",
        what="a distillation run",
        results=folders.DISTILL_RESULTS,
        say=notes.append,
    )
    return folders.prepare_output_dir(str(out), **dict(args, **kw)), notes


# ------------------------------------------------------------ the output-folder policy
def test_policy_new_folder_and_resume_of_nothing(tmp_path):
    assert _policy(tmp_path / "new") == (False, [])
    resuming, notes = _policy(tmp_path / "new", resume=True)
    assert not resuming and "nothing to resume" in notes[0]


def test_policy_an_earlier_run_needs_resume_or_overwrite(tmp_path):
    (tmp_path / "state.pt").write_bytes(b"x")
    with pytest.raises(
        CpscError, match="already holds a distillation run.*--resume.*--overwrite"
    ):
        _policy(tmp_path)
    assert _policy(tmp_path, resume=True)[0] is True
    assert _policy(tmp_path, overwrite=True)[0] is False
    # the policy decides; it deletes nothing of the user's
    assert (tmp_path / "state.pt").exists()


@pytest.mark.parametrize("left", ["student.pt", "generator.pt", "metrics.json"])
def test_policy_a_run_without_its_state_is_still_a_run(tmp_path, left):
    """A finished run whose state.pt was deleted: neither a plain run nor --resume replaces it."""
    content = '{"student_acc": 0.9}' if left == "metrics.json" else "x"
    (tmp_path / left).write_text(content)
    for resume in (False, True):
        with pytest.raises(CpscError, match=f"results of a distillation run.*{left}"):
            _policy(tmp_path, resume=resume)
    assert _policy(tmp_path, overwrite=True)[0] is False
    assert (tmp_path / left).read_text() == content


def test_policy_a_log_without_a_checkpoint_is_no_run(tmp_path):
    """A run stopped before its first checkpoint left only its log: the same command starts again."""
    (tmp_path / "log.jsonl").write_text('{"iter": 1}\n')
    assert _policy(tmp_path) == (False, [])


def test_policy_products_need_overwrite_and_foreign_metrics_are_never_replaced(
    tmp_path,
):
    (tmp_path / "teacher.pt").write_bytes(b"x")
    teacher = dict(owner="teacher", products=("teacher.pt",), results=())
    with pytest.raises(CpscError, match="teacher.pt.*--overwrite"):
        _policy(tmp_path, **teacher)
    assert _policy(tmp_path, overwrite=True, **teacher)[0] is False
    # a teacher's metrics.json: a distillation would replace it, --overwrite or not
    (tmp_path / "metrics.json").write_text('{"test_acc": 0.9, "history": []}')
    for overwrite in (False, True):
        with pytest.raises(
            CpscError, match="teacher training's.*never another command's"
        ):
            _policy(tmp_path, overwrite=overwrite)
    assert _policy(tmp_path, overwrite=True, **teacher)[0] is False  # its own kind


def test_policy_take_over_removes_only_half_written_files(tmp_path):
    from cpsc_lite import checkpoint

    checkpoint.atomic_write_bytes(str(tmp_path / "kept.json"), lambda f: f.write(b"{}"))
    # a killed atomic write's temporary
    (tmp_path / ".student.pt.a1b2c3d4.tmp").write_bytes(b"half")
    names = set(p.name for p in tmp_path.iterdir())
    _policy(tmp_path, take_over=False)
    assert set(p.name for p in tmp_path.iterdir()) == names
    _policy(tmp_path)
    assert set(p.name for p in tmp_path.iterdir()) == names - {
        ".student.pt.a1b2c3d4.tmp"
    }


def test_clear_run_deletes_only_what_a_run_writes(tmp_path):
    for name in ("state.pt", "student.pt", "notes.txt", "teacher.pt"):
        (tmp_path / name).write_text("x")
    (tmp_path / "samples").mkdir()
    (tmp_path / "samples" / "iter_0000010.png").write_text("x")
    (tmp_path / "samples" / "mine.png").write_text("x")
    gone = folders.clear_run(str(tmp_path))
    assert sorted(gone) == ["samples/iter_0000010.png", "state.pt", "student.pt"]
    left = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")}
    assert left == {"notes.txt", "teacher.pt", "samples", "samples/mine.png"}


# ------------------------------------------------------------ the lock
def test_the_lock_is_reentrant_and_leaves_nothing_behind(tmp_path):
    with folders.hold(str(tmp_path), "a test"):
        lock = tmp_path / folders.LOCK_NAME
        record = json.loads(lock.read_text())
        assert record["pid"] == os.getpid() and record["what"] == "a test"
        assert record["host"] == socket.gethostname() and record["since"]
        with folders.hold(str(tmp_path), "the same process again"):
            assert folders.writer_of(str(tmp_path)) is None  # ours
        assert lock.exists()
    assert not lock.exists()


HOLDER = """
import sys, time
from cpsc_lite import folders
with folders.hold(sys.argv[1], "a holder in a test"):
    print("held", flush=True)
    sys.stdin.readline()
"""


def _hold(out):
    """Start another process that takes the lock of ``out`` and keeps it until its stdin closes."""
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(out)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


@pytest.fixture
def held(tmp_path):
    """Another process holding the lock of ``tmp_path/out`` until the test ends."""
    out = tmp_path / "out"
    proc = _hold(out)
    yield out, proc
    proc.stdin.close()
    proc.wait(30)


def test_a_second_writer_is_refused_with_the_first_ones_name(held):
    out, proc = held
    with pytest.raises(CpscError) as refused:
        with folders.hold(str(out), "a second writer"):
            pass
    text = " ".join(str(refused.value).split())
    assert f"pid {proc.pid} on {socket.gethostname()}" in text
    assert "a holder in a test" in text and "choose another --out" in text
    assert folders.writer_of(str(out))["pid"] == proc.pid
    with pytest.raises(CpscError, match="being written right now"):
        folders.refuse_if_written(str(out), "recording it")


def test_two_real_commands_race_for_one_folder(held, tmp_path, digits_teacher):
    """A real `cpsc-lite distill` started while another process holds the folder stops before
    writing anything, and names the holder."""
    out, proc = held
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1")
    second = subprocess.run(
        [sys.executable, "-m", "cpsc_lite", "distill", "--teacher", digits_teacher]
        + ["--out", str(out), "--iters", "2", "--no-progress"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert second.returncode == 2, second.stderr
    assert "Traceback" not in second.stderr
    assert f"pid {proc.pid}" in " ".join(second.stderr.split())
    assert sorted(os.listdir(out)) == [folders.LOCK_NAME]


def test_a_killed_owner_leaves_a_stale_lock_that_is_taken_over(tmp_path):
    out = tmp_path / "out"
    proc = _hold(out)
    proc.kill()  # no chance to clean up: the lock file stays, the kernel drops the lock
    proc.wait(30)
    assert (out / folders.LOCK_NAME).exists()
    notes = []
    with folders.hold(str(out), "the next command", say=notes.append):
        assert json.loads((out / folders.LOCK_NAME).read_text())["pid"] == os.getpid()
    assert "did not end normally" in notes[0] and str(proc.pid) in notes[0]


def test_without_flock_the_lock_file_itself_is_the_lock(tmp_path, monkeypatch):
    """A file system without flock (some FUSE mounts): the lock file is created exclusively; it
    is stale once its process on this host is gone, and otherwise names the way out."""

    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "no locks available")

    monkeypatch.setattr(folders.fcntl, "flock", no_flock)
    out = tmp_path / "out"
    out.mkdir()
    lock = out / folders.LOCK_NAME
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock.write_text(
            json.dumps(dict(pid=sleeper.pid, host=socket.gethostname(), what="x"))
        )
        with pytest.raises(CpscError, match=f"pid {sleeper.pid}.*delete"):
            with folders.hold(str(out), "a test"):
                pass
    finally:
        sleeper.kill()
        sleeper.wait()
    time.sleep(0.1)
    with folders.hold(str(out), "a test"):  # the owner is gone: stale, taken over
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert not lock.exists()
