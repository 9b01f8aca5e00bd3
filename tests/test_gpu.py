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
def test_gpu_check_exits_quickly_without_cuda(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the script would run for minutes")
    out = tmp_path / "gpu.json"
    proc = subprocess.run(
        ["bash", os.path.join(REPO, "benchmarks", "gpu_check.sh"), str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, PYTHON=sys.executable),
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "no CUDA" in proc.stderr and not out.exists()


def test_gpu_benchmark_code_runs_on_cpu(tmp_path):
    """The benchmark driver itself, shrunk to tiny models on CPU (its GPU numbers need a GPU)."""
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "benchmarks", "gpu_bench.py"),
            "--out",
            str(out),
            "--allow-cpu",
            "--teacher",
            "cnn_base",
            "--student",
            "cnn_small",
            "--img-size",
            "8",
            "--batch-size",
            "8",
            "--g-steps",
            "1",
            "--s-steps",
            "1",
            "--warmup",
            "1",
            "--iters",
            "1",
            "--ngf",
            "8",
            "--configs",
            "fp32",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    (fp32,) = result["benchmark"]
    assert fp32["status"] == "ok" and fp32["iters_per_second"] > 0 and fp32["finite"], (
        fp32
    )
    assert fp32["speedup_vs_fp32"] == 1.0 and result["workload"]["batch_size"] == 8
    # Past the time budget, a configuration is recorded as skipped rather than started.
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "gpu_bench", os.path.join(REPO, "benchmarks", "gpu_bench.py")
    )
    gpu_bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_bench)
    assert (
        gpu_bench.main(
            [
                "--out",
                str(out),
                "--allow-cpu",
                "--budget-s",
                "0",
                "--configs",
                "bf16+compile",
            ]
        )
        == 0
    )
    (skipped,) = json.loads(out.read_text())["benchmark"]
    assert skipped["name"] == "bf16+compile" and skipped["status"].startswith(
        "skipped"
    ), skipped


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
