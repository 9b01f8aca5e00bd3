"""Data-parallel distillation (DDP) on CPU with the Gloo backend: 2 processes, tiny models.

One ``torchrun --nproc_per_node=2`` launch of this very file (see ``__main__`` at the bottom) does
all the multi-process work, since process start-up dominates the cost: an end-to-end
``cpsc-lite distill`` run (distributed mode switched on by torchrun's variables), an interrupted
and resumed one, a Distiller run whose ranks save their models, and one student step on fixed
inputs that a single process then repeats with the same *global* batch.
"""

import contextlib
import json
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from cpsc_lite import CpscError, checkpoint
from cpsc_lite.cli import main
from cpsc_lite.methods import make_config
from cpsc_lite.distill import Distiller
from cpsc_lite.engine import seed_everything
from cpsc_lite.runner import train
from cpsc_lite.distributed import (
    DistContext,
    init_distributed,
    launch_environment,
    per_rank_batch,
)
from cpsc_lite.models import create_model, register_model
from cpsc_lite.registry import MODELS

TINY = [
    "--set",
    "ngf=8",
    "--set",
    "nz=16",
    "--set",
    "eval_every=2",
    "--set",
    "log_every=1",
    "--set",
    "ckpt_every=2",
]
GLOBAL_BATCH = 16


class NoBNStudent(nn.Module):
    """A BatchNorm-free student: each sample's loss depends on that sample alone (see the equivalence test)."""

    def __init__(self, num_classes, in_channels=1, img_size=8):
        super().__init__()
        self.features = nn.Sequential(
            nn.Flatten(), nn.Linear(in_channels * img_size * img_size, 32), nn.Tanh()
        )
        self.classifier = nn.Linear(32, num_classes)

    def forward(self, x, return_features=False):
        feats = self.features(x)
        logits = self.classifier(feats)
        return (logits, feats) if return_features else logits


@contextlib.contextmanager
def no_bn_student():
    """Register ``test_nobn`` for the duration of a test only (the model list stays clean)."""
    register_model("test_nobn", "test-only BN-free student")(
        lambda num_classes, in_channels, img_size: NoBNStudent(
            num_classes, in_channels, img_size
        )
    )
    try:
        yield "test_nobn"
    finally:
        MODELS.unregister("test_nobn")


def random_teacher(path):
    """An untrained digits-shaped cnn_base teacher in cpsc_lite format: enough for synchronisation checks."""
    torch.manual_seed(0)
    model = create_model("cnn_base", 10, 1, 8)
    meta = dict(
        model="cnn_base",
        num_classes=10,
        channels=1,
        img_size=8,
        mean=[0.3],
        std=[0.3],
        class_names=[str(i) for i in range(10)],
        dataset="digits",
    )
    checkpoint.save(checkpoint.make("teacher", model.state_dict(), meta), str(path))
    return str(path)


def fixed_batch():
    g = torch.Generator().manual_seed(123)
    return torch.randn(GLOBAL_BATCH, 1, 8, 8, generator=g), torch.randint(
        0, 10, (GLOBAL_BATCH,), generator=g
    )


def equivalence_config(student):
    return make_config(
        "cpsc",
        student=student,
        batch_size=GLOBAL_BATCH,
        ngf=8,
        nz=16,
        iters=4,
        device="cpu",
    )


def first_student_step(teacher_path, student, dist):
    """One student step on the fixed global batch, this rank's slice of it; returns loss and gradients."""
    from cpsc_lite.teacher import load_classifier

    teacher, meta = load_classifier(teacher_path)
    # what run_distill does per rank
    seed_everything(equivalence_config(student).seed + dist.rank)
    d = Distiller(teacher, meta, equivalence_config(student), dist=dist)
    x, y = fixed_batch()
    b = d.batch_size
    d.input_sampler = lambda n: (
        x[dist.rank * b : (dist.rank + 1) * b],
        y[dist.rank * b : (dist.rank + 1) * b],
    )
    terms = d.student_step()
    loss = float(dist.all_reduce_mean(terms["total"].reshape(1))[0])
    out = dict(
        loss=loss,
        grads={k: p.grad.clone() for k, p in d.student.named_parameters()},
        params={k: p.detach().clone() for k, p in d.student.named_parameters()},
    )
    d.close()
    return out


def _worker(teacher_path, tmp):
    """One rank of the torchrun launch (torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT)."""
    torch.set_num_threads(1)
    ctx = init_distributed("cpu")  # no --distributed: torchrun's variables are enough
    rank = ctx.rank
    try:
        assert ctx.enabled and ctx.backend == "gloo" and ctx.world_size == 2
        # 1. The command line, end to end; then the same run interrupted after 2 iterations and resumed.
        args = [
            "distill",
            "--teacher",
            teacher_path,
            "--dataset",
            "digits",
            "--iters",
            "4",
            "--batch-size",
            str(GLOBAL_BATCH),
            "--no-progress",
            "--device",
            "cpu",
            *TINY,
        ]
        assert main(args + ["--out", f"{tmp}/full"]) == 0
        assert (
            main(args + ["--out", f"{tmp}/cut", "--stop-after", "2", "--distributed"])
            == 0
        )
        assert main(args + ["--out", f"{tmp}/cut", "--resume", "--distributed"]) == 0
        # 2. Ranks stay in sync: each rank saves the student it ends with.
        from cpsc_lite.teacher import load_classifier

        teacher, meta = load_classifier(teacher_path)
        cfg = make_config(
            "cpsc",
            batch_size=GLOBAL_BATCH,
            ngf=8,
            nz=16,
            iters=3,
            log_every=1,
            device="cpu",
        )
        seed_everything(cfg.seed + ctx.rank)
        d = Distiller(teacher, meta, cfg, dist=ctx)
        train(d, progress=False)
        torch.save(
            dict(student=d.student.state_dict(), generator=d.generator.state_dict()),
            f"{tmp}/sync_rank{rank}.pt",
        )
        d.close()
        # 3. One student step on this rank's half of a fixed global batch.
        with no_bn_student() as student:
            torch.save(
                first_student_step(teacher_path, student, ctx),
                f"{tmp}/step_rank{rank}.pt",
            )
    finally:
        ctx.barrier()
        ctx.close()


@pytest.fixture(scope="module")
def two_rank_run(tmp_path_factory):
    """``torchrun --standalone --nproc_per_node=2 tests/test_distributed.py TMP TEACHER``."""
    tmp = tmp_path_factory.mktemp("ddp")
    teacher_path = random_teacher(tmp / "teacher.pt")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            __file__,
            str(tmp),
            teacher_path,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    (tmp / "stdout.txt").write_text(proc.stdout)
    return tmp, teacher_path


def test_distributed_cli_run_completes_and_rank0_writes_everything(two_rank_run):
    tmp, _ = two_rank_run
    assert (tmp / "stdout.txt").read_text().count(
        "student test accuracy"
    ) == 3  # 3 runs, only rank 0 reports
    for name in (
        "student.pt",
        "generator.pt",
        "state.pt",
        "metrics.json",
        "log.jsonl",
        "samples.png",
        "curves.png",
    ):
        assert (tmp / "full" / name).stat().st_size > 0, name
    metrics = json.loads((tmp / "full" / "metrics.json").read_text())
    assert metrics["iters"] == 4 and metrics["complete"]
    assert (
        metrics["runtime"]["world_size"] == 2
        and metrics["runtime"]["batch_per_rank"] == GLOBAL_BATCH // 2
    )
    # the config keeps the global batch
    assert metrics["config"]["budget"]["batch_size"] == GLOBAL_BATCH
    [session] = metrics["sessions"]  # provenance: launcher and process count of the run
    assert session["launcher"] == "torchrun" and session["world_size"] == 2
    assert session["command"].startswith("cpsc-lite distill --teacher")
    cut = json.loads((tmp / "cut" / "metrics.json").read_text())["sessions"]
    assert [(s["from_iter"], s["to_iter"], s["world_size"]) for s in cut] == [
        (0, 2, 2),
        (2, 4, 2),
    ]
    log = [
        json.loads(line)
        for line in (tmp / "full" / "log.jsonl").read_text().splitlines()
    ]
    assert [r["iter"] for r in log] == [1, 2, 3, 4]  # one writer: no duplicated lines
    state = checkpoint.load(str(tmp / "full" / "state.pt"), "resume")["state"]
    assert len(state["rng_per_rank"]) == 2
    assert not torch.equal(
        state["rng_per_rank"][0]["torch"], state["rng_per_rank"][1]["torch"]
    )


def test_distributed_resume_is_exact(two_rank_run):
    tmp, _ = two_rank_run
    a = checkpoint.load(str(tmp / "full" / "student.pt"), "student")["state_dict"]
    b = checkpoint.load(str(tmp / "cut" / "student.pt"), "student")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    full = [
        json.loads(x) for x in (tmp / "full" / "log.jsonl").read_text().splitlines()
    ]
    cut = [json.loads(x) for x in (tmp / "cut" / "log.jsonl").read_text().splitlines()]
    strip = lambda r: {k: v for k, v in r.items() if k != "seconds"}  # noqa: E731
    assert [strip(r) for r in full] == [strip(r) for r in cut]


def test_ranks_end_with_identical_models(two_rank_run):
    tmp, _ = two_rank_run
    r0, r1 = (torch.load(tmp / f"sync_rank{r}.pt", weights_only=True) for r in (0, 1))
    for net in ("student", "generator"):
        for k, v in r0[net].items():
            assert torch.equal(v, r1[net][k]), (net, k)


def test_two_ranks_match_one_process_with_the_same_global_batch(two_rank_run):
    """The first student step, 2 x 8 samples vs 1 x 16: same loss, same averaged gradient.

    What can be equal: with the same fixed inputs (``input_sampler``), the same initial weights
    (DDP starts from rank 0's, which are the single process's: same seed) and a student without
    BatchNorm, the global loss is the mean of per-sample losses and DDP's averaged gradient equals
    the single-process gradient exactly in real arithmetic. (With BatchNorm in the student each
    rank normalises with its own 8 samples' statistics, so the two runs would legitimately differ;
    the generator step is batch-coupled through the generator's BatchNorm and the contrastive loss
    in the same way.) In float32 the sums are taken in a different order (two means of 8 combined
    by all-reduce, vs one mean of 16), so agreement is to rounding: values are O(1-10), and float32
    has ~1e-7 relative precision, accumulated over a few dozen terms -> rtol 1e-5, atol 1e-6.
    """
    tmp, teacher_path = two_rank_run
    r0, r1 = (torch.load(tmp / f"step_rank{r}.pt", weights_only=True) for r in (0, 1))
    with no_bn_student() as student:
        single = first_student_step(teacher_path, student, DistContext())
    assert r0["loss"] == pytest.approx(single["loss"], rel=1e-5)
    # the logged (all-reduced) loss is the same on every rank
    assert r1["loss"] == r0["loss"]
    for k, g in single["grads"].items():
        torch.testing.assert_close(r0["grads"][k], g, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(r1["grads"][k], r0["grads"][k], rtol=0, atol=0)
        torch.testing.assert_close(
            r0["params"][k], single["params"][k], rtol=1e-5, atol=1e-6
        )


# ----------------------------------------------------------- single-process checks
def test_launch_environment_reads_torchrun_and_slurm_variables():
    assert launch_environment({}) is None
    torchrun = dict(RANK="3", WORLD_SIZE="8", LOCAL_RANK="1", TORCHELASTIC_RUN_ID="x")
    assert launch_environment(torchrun) == dict(
        rank=3, world_size=8, local_rank=1, launcher="torchrun"
    )
    slurm = dict(SLURM_PROCID="5", SLURM_NTASKS="8", SLURM_LOCALID="1")
    assert launch_environment(slurm) == dict(
        rank=5, world_size=8, local_rank=1, launcher="slurm"
    )
    # SLURM variables alone do not switch distributed mode on (an srun step may run unrelated commands) ...
    assert not init_distributed("cpu", env=slurm).enabled
    # ... and with --distributed, rank 0's address must be known.
    with pytest.raises(CpscError, match="MASTER_ADDR"):
        init_distributed("cpu", required=True, env=slurm)
    # A one-process launch is a plain single-process run.
    assert not init_distributed(
        "cpu", env=dict(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    ).enabled


def test_distributed_flag_without_a_launcher_is_a_clear_error(
    tmp_path, capsys, monkeypatch
):
    for key in ("RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS"):
        monkeypatch.delenv(key, raising=False)
    code = main(
        [
            "distill",
            "--teacher",
            random_teacher(tmp_path / "t.pt"),
            "--out",
            str(tmp_path / "o"),
            "--distributed",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and "torchrun" in err


def test_global_batch_must_split_evenly():
    assert per_rank_batch(512, 8) == 64
    with pytest.raises(CpscError, match="divide evenly"):
        per_rank_batch(100, 8)


def test_single_process_context_is_a_no_op():
    ctx = DistContext()
    assert not ctx.enabled and ctx.is_main
    t = torch.tensor([1.0, 2.0])
    assert ctx.all_reduce_mean(t) is t
    assert ctx.all_gather_object("x") == ["x"] and ctx.broadcast_object(5) == 5
    ctx.barrier()
    ctx.close()


if __name__ == "__main__":  # launched by torchrun from the two_rank_run fixture
    _worker(teacher_path=sys.argv[2], tmp=sys.argv[1])


def test_one_bound_gpu_per_task_is_used_whatever_the_local_rank():
    """SLURM's --gpus-per-task=1 shows each task one GPU: local rank 3 uses cuda:0."""
    from cpsc_lite.distributed import cuda_index

    assert cuda_index(3, 1) == 0 and cuda_index(0, 1) == 0
    assert cuda_index(2, 4) == 2
    with pytest.raises(CpscError, match="gpus-per-task"):
        cuda_index(4, 2)
