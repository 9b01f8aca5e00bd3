"""The GPU path, tested where it can be: the GPU check script and benchmark driver on CPU, and the tests
marked ``cuda`` (``benchmarks/gpu_check.sh`` runs them on a GPU; elsewhere they are skipped)."""

import json
import os
import subprocess
import sys
import warnings

import pytest
import torch

from cpsc_lite.config import TeacherConfig
from cpsc_lite.methods import make_config
from cpsc_lite.data import load_dataset
from cpsc_lite.distill import Distiller
from cpsc_lite.engine import Acceleration
from cpsc_lite.teacher import load_classifier, run_teacher

from conftest import REPO, TINY, cuda, cuda_marker, make_colour_npz


# ------------------------------------------------------------ the GPU check script
CHECK_SH = os.path.join(REPO, "benchmarks", "gpu_check.sh")
CHECK_PY = os.path.join(REPO, "benchmarks", "gpu_check.py")
PARTS = [
    "environment",
    "cuda_tests",
    "paper_preset",
    "batch_sweep",
    "fp16_safety",
    "small_presets",
    "cli",
    "compile",
]


def _check_env(**extra):
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1", **extra)
    env.pop("GPU_CHECK_BUDGET_S", None)
    env.pop("GPU_CHECK_DRY_RUN", None)
    return env


def test_gpu_check_exits_quickly_without_cuda(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the script would run for minutes")
    out = tmp_path / "gpu"
    proc = subprocess.run(
        ["bash", CHECK_SH, str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        env=_check_env(),
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "no CUDA" in proc.stderr and "--dry-run" in proc.stderr
    assert not out.exists()


def test_gpu_check_dry_run_answers_all_eight_parts_on_cpu(tmp_path):
    """The whole GPU check, every part in its own process, on the CPU with tiny sizes: each part
    is ok, or skipped with a reason where it needs a GPU (the CUDA tests here)."""
    out = tmp_path / "dry"
    proc = subprocess.run(
        ["bash", CHECK_SH, str(out), "--dry-run"],
        capture_output=True,
        text=True,
        timeout=600,
        env=_check_env(),
    )
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-5000:]
    result = json.loads((out / "gpu_check.json").read_text())
    log = (out / "gpu_check.log").read_text()
    assert result["dry_run"] and result["finished"] and list(result["parts"]) == PARTS
    for number, (name, part) in enumerate(result["parts"].items(), 1):
        assert part["part"] == number and part["wall_s"] >= 0, (name, part)
        assert part["status"] in ("ok", "skipped"), (name, part)
        if part["status"] == "skipped":
            assert part["reason"], (name, part)
        assert f"part {number} ({name})" in log
    parts = result["parts"]
    assert parts["cuda_tests"]["status"] == "skipped"  # CUDA is hidden from a dry run
    assert parts["environment"]["triton_compile"]["status"] == "skipped"
    for precision in ("bf16", "fp16", "fp32"):
        run = parts["paper_preset"][precision]
        assert run["status"] == "ok" and run["losses_finite"], run
        assert run["g_step_s"] > 0 and run["s_step_s"] > 0 and run["checkpoint_s"] > 0
        hours = run["projected_hours"]
        assert hours["30000"]["hours"] > hours["3000"]["hours"] > 0
        assert (
            hours["30000"]["evaluations"] == 60
        )  # eval_every 500 (+ the budget marks)
        assert run["preset_settings"]["batch_size"] == 512
    assert [b["batch_per_gpu"] for b in parts["batch_sweep"]["batches"]] == [2, 4]
    safety = parts["fp16_safety"]
    assert safety["skipped_first"] and safety["all_finite"], safety
    small = parts["small_presets"]
    assert (
        small["colab"]["projected_minutes"] > 0 and small["fast"]["teacher_epoch_s"] > 0
    )
    steps = parts["cli"]["steps"]
    assert [s["returncode"] for s in steps.values()] == [0, 0, 0], steps
    assert steps["distill"]["iters"] == 3 and steps["resume"]["complete"], steps
    assert parts["compile"]["recompiles"] >= 0 and parts["compile"]["s_per_iter"] > 0
    assert result["summary"]["fp16_overflow_safe"] is True


def test_gpu_check_records_budget_skips_and_timeouts(tmp_path):
    """A part that does not fit the budget is skipped; one past its limit is killed and recorded
    as a timeout; the JSON is written either way."""
    proc = subprocess.run(
        [sys.executable, CHECK_PY, "--dry-run", "--out-dir", str(tmp_path / "a")]
        + ["--budget-s", "0"],
        capture_output=True,
        text=True,
        timeout=120,
        env=_check_env(),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    parts = json.loads((tmp_path / "a" / "gpu_check.json").read_text())["parts"]
    assert list(parts) == PARTS
    assert all(
        p["status"] == "skipped" and "budget" in p["reason"] for p in parts.values()
    )
    proc = subprocess.run(
        [sys.executable, CHECK_PY, "--dry-run", "--out-dir", str(tmp_path / "b")]
        + ["--only", "fp16_safety", "--limit", "fp16_safety=0.5"],
        capture_output=True,
        text=True,
        timeout=120,
        env=_check_env(),
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    result = json.loads((tmp_path / "b" / "gpu_check.json").read_text())
    (part,) = result["parts"].values()
    assert part["status"] == "timeout" and result["finished"], part


# ------------------------------------------------------------------ CUDA only
@cuda
@cuda_marker
def test_cuda_defaults_bf16_channels_last_fused(digits_teacher):
    teacher, meta = load_classifier(digits_teacher)
    d = Distiller(teacher, meta, make_config("cpsc", device="cuda", **TINY))
    native = torch.cuda.get_device_capability() >= (8, 0)
    assert d.amp_dtype == (torch.bfloat16 if native else torch.float16)
    # fused kernels only without a GradScaler (fp16 on a GPU without native bf16)
    assert d.channels_last and bool(d.opt_s.defaults.get("fused")) == native
    assert bool(d.opt_g.defaults.get("fused")) == native
    assert torch.backends.cudnn.benchmark
    z, y = d.generator.sample_inputs(8, d.device)
    assert d.generate(z, y).is_contiguous(memory_format=torch.channels_last)
    for _ in range(2):
        terms = d.iterate()
    assert all(
        v.dtype == torch.float32 and torch.isfinite(v) for v in terms.values()
    ), terms
    d.close()


@cuda
@cuda_marker
def test_cuda_fp16_scales_both_optimisers(digits_teacher):
    teacher, meta = load_classifier(digits_teacher)
    d = Distiller(
        teacher,
        meta,
        make_config("cpsc", device="cuda", **TINY),
        accel=Acceleration(amp="fp16"),
    )
    assert (
        d.scaler_g is not None
        and d.scaler_s is not None
        and d.scaler_g is not d.scaler_s
    )
    for _ in range(3):
        terms = d.iterate()
    assert all(torch.isfinite(v) for v in terms.values())
    assert d.scaler_g.get_scale() > 0 and d.scaler_s.get_scale() > 0
    d.close()


@cuda
@cuda_marker
def test_cuda_steps_do_not_synchronise_with_the_host(digits_teacher):
    """Loss values stay on the GPU: no .item()/nonzero in a step (they would stall the CPU's kernel queue).

    The student step must be sync-free. The generator step is reported, not asserted: the contrastive
    loss (losses.supcon_loss) selects anchors with a boolean mask, which syncs, and some backward
    kernels (e.g. of the generator's class embeddings) may sync depending on the PyTorch version;
    any sync found is listed as a warning in the test output (and so in gpu_check.json).
    """
    teacher, meta = load_classifier(digits_teacher)
    d = Distiller(teacher, meta, make_config("cpsc", device="cuda", **TINY))
    d.iterate()  # warm-up: cuDNN autotuning and optimiser state creation
    torch.cuda.synchronize()

    def syncs(step):
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
        return [
            str(w.message).splitlines()[0]
            for w in caught
            if "synchroniz" in str(w.message)
        ]

    assert syncs(d.student_step) == []
    found = syncs(d.generator_step)
    if found:
        warnings.warn(f"generator step: {len(found)} host sync(s): {found[:3]}")
    d.close()


@cuda
@cuda_marker
def test_cuda_compile_and_device_flag(digits_teacher):
    teacher, meta = load_classifier(digits_teacher)
    d = Distiller(
        teacher,
        meta,
        make_config("cpsc", device="cuda", **TINY),
        accel=Acceleration(compile="default", compile_backend="aot_eager"),
    )
    terms = d.iterate()
    assert all(torch.isfinite(v) for v in terms.values())
    d.close()
    teacher, meta = load_classifier(digits_teacher)
    on_cpu = Distiller(teacher, meta, make_config("cpsc", device="cpu", **TINY))
    # --device cpu is respected
    assert on_cpu.device.type == "cpu" and on_cpu.amp_dtype is None
    assert next(on_cpu.student.parameters()).device.type == "cpu"
    on_cpu.close()


@cuda
@cuda_marker
def test_cuda_teacher_training_with_amp(tmp_path):
    npz = make_colour_npz(
        tmp_path / "shapes.npz", num_classes=4, size=16, n_train=64, n_test=32
    )
    metrics = run_teacher(
        load_dataset(f"npz:{npz}"),
        TeacherConfig(epochs=2, batch_size=32, device="cuda"),
        str(tmp_path / "t"),
        progress=False,
    )
    assert 0 <= metrics["test_acc"] <= 1 and all(
        h["loss"] == h["loss"] for h in metrics["history"]
    )
