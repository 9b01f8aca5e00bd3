"""Full-scale features, tested small: community teachers, teacher recipes and resume, presets,
mixed precision / channels-last / torch.compile (on CPU when asked for explicitly), device choice,
and the GPU check script. Tests marked ``cuda`` need a GPU (``benchmarks/gpu_check.sh`` runs them).
"""

import glob
import json
import os
import subprocess
import sys
import warnings

import pytest
import torch

from cpsc_lite import CpscError, checkpoint
from cpsc_lite.cli import main
from cpsc_lite.config import TeacherConfig, load_preset, make_config
from cpsc_lite.data import available_datasets, load_dataset
from cpsc_lite.distill import Distiller, _Float32BNStatsLoss
from cpsc_lite.engine import Acceleration, pick_device, resolve_amp, seed_everything
from cpsc_lite.models import available_models, create_model
from cpsc_lite.teacher import TEACHER_RECIPES, load_classifier, run_teacher, teacher_recipe

from conftest import make_colour_npz

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(iters=2, batch_size=16, ngf=8, nz=16, eval_every=2, log_every=1, ckpt_every=2)
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
# `pytest -m cuda` selects the GPU tests (gpu_check.sh registers the marker with -o markers=...).
# Applied only where CUDA exists, so CPU runs do not warn about an unregistered marker.
cuda_marker = pytest.mark.cuda if torch.cuda.is_available() else (lambda test: test)


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def flat(text):
    return " ".join(text.split()).lower()


# ------------------------------------------------------------ community teachers
@pytest.fixture(scope="module")
def colour32(tmp_path_factory):
    """A 10-class, 3-channel 32x32 dataset (CIFAR's shape) that needs no download."""
    return make_colour_npz(tmp_path_factory.mktemp("c32") / "shapes32.npz", num_classes=10, size=32,
                           n_train=40, n_test=40)


def save_community(path, model_name, num_classes=10, prefix="module.", wrap=True):
    """A randomly initialised model saved the way CMI/DataFree publish teachers: DataParallel keys, wrapped."""
    torch.manual_seed(0)
    model = create_model(model_name, num_classes, 3, 32)
    sd = {prefix + k: v for k, v in model.state_dict().items()}
    torch.save({"state_dict": sd, "best_acc": 0.1, "epoch": 200} if wrap else sd, path)
    return str(path), model


def test_community_teacher_distils_and_evaluates(tmp_path, capsys, colour32):
    path, model = save_community(tmp_path / "wrn16_1.pth", "wrn16_1")
    code, out, err = run_cli(capsys, "evaluate", path, "--teacher-model", "wrn16_1", "--dataset", f"npz:{colour32}")
    assert code == 0, err
    assert "wrn16_1" in out and "accuracy" in out
    code, out, err = run_cli(capsys, "distill", "--teacher", path, "--teacher-model", "wrn16_1", "--dataset",
                             f"npz:{colour32}", "--out", tmp_path / "run", "--iters", "2", "--batch-size", "16",
                             "--no-progress", "--set", "ngf=8", "--set", "nz=16", "--set", "diagnostics=false")
    assert code == 0, err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["teacher"] == "wrn16_1" and metrics["iters"] == 2
    # The student checkpoint carries the dataset's normalisation (it came from the bundle, not the file).
    bundle = load_dataset(f"npz:{colour32}")
    meta = checkpoint.load(str(tmp_path / "run" / "student.pt"), "student")["meta"]
    assert meta["mean"] == list(bundle.mean) and meta["num_classes"] == 10 and "source_file" not in meta


def test_community_teacher_loads_the_exact_weights(tmp_path, colour32):
    from cpsc_lite.teacher import load_teacher
    path, model = save_community(tmp_path / "bare.pth", "wrn16_1", prefix="module.", wrap=False)
    loaded, meta = load_teacher(path, load_dataset(f"npz:{colour32}"), "wrn16_1")
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    assert meta["model"] == "wrn16_1" and meta["img_size"] == 32


def test_community_teacher_errors(tmp_path, capsys, colour32):
    path, _ = save_community(tmp_path / "wrn16_1.pth", "wrn16_1")
    # Without --teacher-model: today's message, which names the flag.
    code, _, err = run_cli(capsys, "distill", "--teacher", path, "--dataset", f"npz:{colour32}", "--out",
                           tmp_path / "o")
    assert code == 2 and "not a cpsc_lite" in flat(err) and "--teacher-model" in flat(err)
    # The wrong architecture: a strict load that names the right one.
    code, _, err = run_cli(capsys, "distill", "--teacher", path, "--teacher-model", "wrn16_2", "--dataset",
                           f"npz:{colour32}", "--out", tmp_path / "o")
    assert code == 2 and "Traceback" not in err and "--teacher-model wrn16_1" in flat(err)
    # The wrong dataset (class count): the shapes say so.
    four = make_colour_npz(tmp_path / "four.npz", num_classes=4, size=32, n_train=32, n_test=8)
    code, _, err = run_cli(capsys, "evaluate", path, "--teacher-model", "wrn16_1", "--dataset", f"npz:{four}")
    assert code == 2 and "10 classes" in flat(err)
    # evaluate needs the dataset to build a community teacher.
    code, _, err = run_cli(capsys, "evaluate", path, "--teacher-model", "wrn16_1")
    assert code == 2 and "--dataset" in flat(err)
    # A file that needs full unpickling is refused, with the way out.
    import numpy as np
    torch.save({"state_dict": {}, "best_acc": np.float64(0.9)}, tmp_path / "pickled.pth")
    code, _, err = run_cli(capsys, "evaluate", tmp_path / "pickled.pth", "--teacher-model", "wrn16_1", "--dataset",
                           f"npz:{colour32}")
    assert code == 2 and "weights_only=false" in flat(err)


def test_cpsc_teacher_with_teacher_model_still_loads(tmp_path, capsys, digits_teacher):
    code, out, err = run_cli(capsys, "evaluate", digits_teacher, "--teacher-model", "cnn_base")
    assert code == 0, err
    assert "accuracy" in out


# ----------------------------------------------------------------- teachers
def test_teacher_recipes():
    assert teacher_recipe("digits") == TeacherConfig()  # today's recipe for the built-in digits
    c10 = teacher_recipe("cifar10")
    assert (c10.model, c10.epochs, c10.batch_size, c10.lr, c10.momentum, c10.weight_decay) == \
        ("resnet34", 200, 128, 0.1, 0.9, 5e-4)
    assert teacher_recipe("tiny-imagenet").model == "resnet34_64"
    assert set(TEACHER_RECIPES) == {"cifar10", "cifar100", "svhn", "tiny-imagenet"}
    assert teacher_recipe("cifar100", epochs=5, lr=None).epochs == 5 and teacher_recipe("cifar100").lr == 0.1
    for recipe in TEACHER_RECIPES.values():
        assert recipe["model"] in available_models()


def test_teacher_training_resumes_exactly(tmp_path, monkeypatch, capsys):
    npz = make_colour_npz(tmp_path / "shapes.npz", num_classes=4, size=8, n_train=96, n_test=32)
    bundle = load_dataset(f"npz:{npz}")
    cfg = TeacherConfig(epochs=4, batch_size=32, device="cpu")
    full = run_teacher(bundle, cfg, str(tmp_path / "full"), progress=False, eval_every=1, ckpt_every=1)
    assert [h["epoch"] for h in full["history"]] == [1, 2, 3, 4] and all("test_acc" in h for h in full["history"])
    assert not (tmp_path / "full" / "teacher_state.pt").exists()  # cleaned up once teacher.pt is written

    import cpsc_lite.teacher as teacher_module
    real_evaluate, calls = teacher_module.evaluate, []

    def interrupt_in_epoch_3(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(teacher_module, "evaluate", interrupt_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        run_teacher(bundle, cfg, str(tmp_path / "cut"), progress=False, eval_every=1, ckpt_every=1)
    monkeypatch.setattr(teacher_module, "evaluate", real_evaluate)
    assert (tmp_path / "cut" / "teacher_state.pt").exists() and not (tmp_path / "cut" / "teacher.pt").exists()
    # The command line refuses to silently restart it, then continues it with --resume.
    code, _, err = run_cli(capsys, "teacher", "--dataset", f"npz:{npz}", "--out", tmp_path / "cut", "--epochs", "4",
                           "--batch-size", "32", "--eval-every", "1", "--ckpt-every", "1", "--no-progress")
    assert code == 2 and "--resume" in err
    code, out, err = run_cli(capsys, "teacher", "--dataset", f"npz:{npz}", "--out", tmp_path / "cut", "--epochs",
                             "4", "--batch-size", "32", "--eval-every", "1", "--ckpt-every", "1", "--no-progress",
                             "--resume", "--device", "cpu")
    assert code == 0, err
    assert "resuming teacher training after epoch 2" in out
    a = checkpoint.load(str(tmp_path / "full" / "teacher.pt"), "teacher")["state_dict"]
    b = checkpoint.load(str(tmp_path / "cut" / "teacher.pt"), "teacher")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    history = json.loads((tmp_path / "cut" / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert [h["loss"] for h in history] == [h["loss"] for h in full["history"]]


def test_teacher_sigterm_saves_the_epoch_and_resume_is_exact(tmp_path, monkeypatch):
    """SIGTERM during epoch 2 (checkpoints every 3 epochs): the epoch finishes, its state is saved, the
    training stops with Terminated, and --resume ends with exactly the uninterrupted teacher."""
    import signal
    from cpsc_lite import Terminated
    npz = make_colour_npz(tmp_path / "shapes.npz", num_classes=4, size=8, n_train=96, n_test=32)
    bundle = load_dataset(f"npz:{npz}")
    cfg = TeacherConfig(epochs=4, batch_size=32, device="cpu")
    full = run_teacher(bundle, cfg, str(tmp_path / "full"), progress=False, eval_every=1, ckpt_every=3)
    import cpsc_lite.teacher as teacher_module
    real_evaluate, calls = teacher_module.evaluate, []

    def term_in_epoch_2(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(teacher_module, "evaluate", term_in_epoch_2)
    with checkpoint.stop_on_sigterm(), pytest.raises(Terminated, match="after epoch 2 of 4.*--resume"):
        run_teacher(bundle, cfg, str(tmp_path / "cut"), progress=False, eval_every=1, ckpt_every=3)
    monkeypatch.setattr(teacher_module, "evaluate", real_evaluate)
    state = checkpoint.load(str(tmp_path / "cut" / "teacher_state.pt"), "teacher_resume")["state"]
    assert state["epoch"] == 2
    again = run_teacher(bundle, cfg, str(tmp_path / "cut"), progress=False, eval_every=1, ckpt_every=3, resume=True)
    assert [h["loss"] for h in again["history"]] == [h["loss"] for h in full["history"]]
    a = checkpoint.load(str(tmp_path / "full" / "teacher.pt"), "teacher")["state_dict"]
    b = checkpoint.load(str(tmp_path / "cut" / "teacher.pt"), "teacher")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_teacher_with_nan_weights_is_refused_not_evaluated(tmp_path, capsys, digits_teacher):
    obj = checkpoint.load(digits_teacher, "teacher")
    obj["state_dict"] = {k: (torch.full_like(v, float("nan")) if v.is_floating_point() else v)
                         for k, v in obj["state_dict"].items()}
    checkpoint.save(obj, str(tmp_path / "nan.pt"))
    code, out, err = run_cli(capsys, "evaluate", tmp_path / "nan.pt")
    assert code == 2 and "NaN, infinite or absurdly large" in " ".join(err.split()), err
    assert "accuracy" not in out.lower()


# ------------------------------------------------------------------ presets
PAIRS = ["c10_resnet34_resnet18", "c10_wrn40_2_wrn16_2", "c100_resnet34_resnet18", "c100_wrn40_2_wrn16_2",
         "svhn_resnet34_resnet18", "tiny_imagenet_resnet34_64_resnet18_64"]


def test_every_preset_has_the_papers_schedule():
    paths = sorted(glob.glob(os.path.join(REPO, "configs", "*.yaml")))
    names = {os.path.basename(p)[:-5] for p in paths}
    assert names == set(PAIRS) | {p + "_fast" for p in PAIRS}
    datasets, models = available_datasets(), available_models()
    for path in paths:
        settings, run = load_preset(path)
        cfg = make_config("cpsc", settings)
        fast = path.endswith("_fast.yaml")
        assert cfg.iters == (3000 if fast else 30000), path  # 50 iterations x 600 epochs (fast: a tenth)
        assert int(cfg.warmup_frac * cfg.iters) == (50 if fast else 500), path  # 10 of 600 epochs
        assert (cfg.batch_size, cfg.g_steps, cfg.s_steps) == (512, 6, 5), path
        assert (cfg.lr_student, cfg.momentum, cfg.weight_decay) == (0.1, 0.9, 5e-4), path
        assert (cfg.lr_generator, tuple(cfg.generator_betas)) == (1e-3, (0.5, 0.999)), path
        assert (cfg.ngf, cfg.nz, cfg.conditional) == (64, 256, True), path
        assert (cfg.alpha, cfg.beta, cfg.gamma, cfg.eta, cfg.temperature) == (5, 1, 0.7, 0.7, 0.07), path
        assert all((cfg.use_adv, cfg.use_ikd, cfg.use_bn, cfg.use_scl, cfg.use_ce, cfg.student_ce)), path
        assert cfg.adv_warmup == 0.0, path
        assert set(run) == {"dataset", "teacher_model"} and run["dataset"] in datasets, path
        assert run["teacher_model"] in models and cfg.student in models, path
        assert cfg.iters % cfg.eval_every == 0 and cfg.iters % cfg.ckpt_every == 0, path


def test_preset_supplies_dataset_and_student_and_flags_override(tmp_path, capsys, digits_teacher, monkeypatch):
    preset = os.path.join(REPO, "configs", "c10_resnet34_resnet18_fast.yaml")
    # Without --dataset the preset's (cifar10) is used: here it is not downloaded, which the error shows.
    monkeypatch.setenv("CPSC_LITE_DATA", str(tmp_path / "no_data"))
    code, _, err = run_cli(capsys, "distill", "--teacher", digits_teacher, "--config", preset, "--out", tmp_path / "a")
    assert code == 2 and "cifar-10" in flat(err)
    # Flags override the preset: dataset, student, budget and any --set.
    code, _, err = run_cli(capsys, "distill", "--teacher", digits_teacher, "--config", preset, "--dataset", "digits",
                           "--student", "cnn_small", "--iters", "2", "--batch-size", "16", "--g-steps", "1",
                           "--s-steps", "1", "--set", "ngf=8", "--set", "nz=16", "--set", "diagnostics=false",
                           "--out", tmp_path / "b", "--no-progress")
    assert code == 0, err
    metrics = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert metrics["dataset"] == "digits" and metrics["student"] == "cnn_small"
    cfg = metrics["config"]
    assert (cfg["iters"], cfg["batch_size"], cfg["g_steps"], cfg["ngf"]) == (2, 16, 1, 8)
    assert (cfg["lr_student"], cfg["nz"], cfg["eval_every"]) == (0.1, 16, 250)  # the rest from the preset


def test_config_takes_a_shipped_preset_by_name_from_any_folder(tmp_path, monkeypatch, capsys):
    from cpsc_lite.config import available_presets, resolve_config
    shipped = os.path.join(REPO, "configs", "c10_wrn40_2_wrn16_2_fast.yaml")
    assert set(available_presets()) == set(PAIRS) | {p + "_fast" for p in PAIRS}
    monkeypatch.chdir(tmp_path)  # outside the checkout, as after `pip install`
    assert os.path.samefile(resolve_config("c10_wrn40_2_wrn16_2_fast"), shipped)
    assert os.path.samefile(resolve_config("configs/c10_wrn40_2_wrn16_2_fast.yaml"), shipped)  # README's spelling
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "c10_wrn40_2_wrn16_2_fast.yaml").write_text("iters: 7\n")
    assert resolve_config("configs/c10_wrn40_2_wrn16_2_fast.yaml") == "configs/c10_wrn40_2_wrn16_2_fast.yaml"
    assert load_preset("configs/c10_wrn40_2_wrn16_2_fast.yaml") == ({"iters": 7}, {})  # a real file wins
    with pytest.raises(CpscError, match="not the name of a shipped preset.*c10_resnet34_resnet18_fast"):
        resolve_config("c10_resnet34_resnet19")
    code, out, _ = run_cli(capsys, "presets")
    assert code == 0 and all(name in out for name in available_presets())
    assert "CIFAR-10: WRN-40-2 teacher -> WRN-16-2 student, FAST preset." in out


# --------------------------------------------------- precision, layout, compile
def test_defaults_on_cpu_change_nothing(digits_teacher):
    teacher, meta = load_classifier(digits_teacher)
    d = Distiller(teacher, meta, make_config("cpsc", device="cpu", **TINY))
    assert d.amp_dtype is None and d.scaler_g is None and d.scaler_s is None and not d.channels_last
    assert type(d.bn_loss).__name__ == "BNStatsLoss"
    assert not d.opt_s.defaults.get("fused") and not d.opt_g.defaults.get("fused")
    assert d._student_train is d.student and d._generator_train is d.generator  # no wrappers at all
    assert d.runtime()["amp"] == "off"
    d.close()


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_explicit_mixed_precision_on_cpu_keeps_losses_in_float32(amp, digits_teacher):
    teacher, meta = load_classifier(digits_teacher)
    d = Distiller(teacher, meta, make_config("cpsc", device="cpu", **TINY), accel=Acceleration(amp=amp))
    assert isinstance(d.bn_loss, _Float32BNStatsLoss)
    assert (d.scaler_g is not None) == (amp == "fp16") and (d.scaler_s is not None) == (amp == "fp16")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. no scheduler-order warning when fp16 skips a step
        terms = d.iterate()
        terms = d.iterate()
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in terms.values()), terms
    state = d.state_dict()
    assert ("scaler_g" in state) == (amp == "fp16")
    teacher, meta = load_classifier(digits_teacher)
    again = Distiller(teacher, meta, make_config("cpsc", device="cpu", **TINY), accel=Acceleration(amp=amp))
    again.load_state_dict(state)
    if amp == "fp16":
        assert again.scaler_s.get_scale() == d.scaler_s.get_scale()
    d.close()
    again.close()


def test_channels_last_and_compile_on_cpu(digits_teacher):
    """channels_last and torch.compile (the aot_eager backend: traces like inductor, compiles in seconds)."""
    cfg = make_config("cpsc", device="cpu", **TINY)
    teacher, meta = load_classifier(digits_teacher)
    seed_everything(cfg.seed)
    eager = Distiller(teacher, meta, cfg)
    eager_terms = eager.iterate()
    teacher, meta = load_classifier(digits_teacher)
    fast = Distiller(teacher, meta, cfg, accel=Acceleration(channels_last=True, compile="default",
                                                            compile_backend="aot_eager"))
    z, y = fast.generator.sample_inputs(4)
    assert fast._generate(z, y).is_contiguous(memory_format=torch.channels_last)
    fast.close()
    teacher, meta = load_classifier(digits_teacher)  # a fresh one: the same random stream as the eager run
    seed_everything(cfg.seed)
    fast = Distiller(teacher, meta, cfg, accel=Acceleration(channels_last=True, compile="default",
                                                            compile_backend="aot_eager"))
    fast_terms = fast.iterate()
    assert fast.runtime()["compile"] == "default" and fast.runtime()["channels_last"]
    for k, v in eager_terms.items():
        torch.testing.assert_close(fast_terms[k], v, rtol=1e-4, atol=1e-5)
    # The checkpoint holds the plain modules' weights (no '_orig_mod.' or 'module.' prefixes).
    assert set(fast.state_dict()["student"]) == set(eager.student.state_dict())
    eager.close()
    fast.close()


def test_amp_resolution_per_device():
    cpu, mps = torch.device("cpu"), torch.device("mps")
    assert resolve_amp("auto", cpu) is None and resolve_amp("off", cpu) is None
    assert resolve_amp("bf16", cpu) == torch.bfloat16 and resolve_amp("fp16", cpu) == torch.float16
    assert resolve_amp("auto", mps) is None
    with pytest.warns(UserWarning, match="MPS"):
        assert resolve_amp("fp16", mps) is None  # falls back to float32 instead of crashing
    with pytest.raises(CpscError, match="--amp"):
        resolve_amp("fp8", cpu)
    assert not Acceleration().use_channels_last(cpu) and Acceleration().use_channels_last(torch.device("cuda"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_unavailable_device_is_a_clear_error(tmp_path, capsys, digits_teacher):
    code, _, err = run_cli(capsys, "distill", "--teacher", digits_teacher, "--out", tmp_path / "o", "--device", "cuda")
    assert code == 2 and "Traceback" not in err and "no cuda gpu" in flat(err) and "--device cpu" in flat(err)
    code, _, err = run_cli(capsys, "evaluate", digits_teacher, "--device", "tpu:3")
    assert code == 2 and "not a device name" in flat(err)
    assert pick_device("cpu").type == "cpu" and pick_device("auto").type in ("cpu", "mps")


# ------------------------------------------------------------ the GPU check script
def test_gpu_check_exits_quickly_without_cuda(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the script would run for minutes")
    out = tmp_path / "gpu.json"
    proc = subprocess.run(["bash", os.path.join(REPO, "benchmarks", "gpu_check.sh"), str(out)], capture_output=True,
                          text=True, timeout=120, env=dict(os.environ, PYTHON=sys.executable))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "no CUDA" in proc.stderr and not out.exists()


def test_gpu_benchmark_code_runs_on_cpu(tmp_path):
    """The benchmark driver itself, shrunk to tiny models on CPU (its GPU numbers need a GPU)."""
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "gpu_bench.py"), "--out", str(out),
                           "--allow-cpu", "--teacher", "cnn_base", "--student", "cnn_small", "--img-size", "8",
                           "--batch-size", "8", "--g-steps", "1", "--s-steps", "1", "--warmup", "1", "--iters", "1",
                           "--ngf", "8", "--configs", "fp32"],
                          capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    (fp32,) = result["benchmark"]
    assert fp32["status"] == "ok" and fp32["iters_per_second"] > 0 and fp32["finite"], fp32
    assert fp32["speedup_vs_fp32"] == 1.0 and result["workload"]["batch_size"] == 8
    # Past the time budget, a configuration is recorded as skipped rather than started.
    import importlib.util
    spec = importlib.util.spec_from_file_location("gpu_bench", os.path.join(REPO, "benchmarks", "gpu_bench.py"))
    gpu_bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_bench)
    assert gpu_bench.main(["--out", str(out), "--allow-cpu", "--budget-s", "0", "--configs", "bf16+compile"]) == 0
    (skipped,) = json.loads(out.read_text())["benchmark"]
    assert skipped["name"] == "bf16+compile" and skipped["status"].startswith("skipped"), skipped


# ------------------------------------------------------------------ CUDA only
@cuda
@cuda_marker
def test_cuda_defaults_bf16_channels_last_fused(digits_teacher):
    teacher, meta = load_classifier(digits_teacher)
    d = Distiller(teacher, meta, make_config("cpsc", device="cuda", **TINY))
    assert d.amp_dtype == (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    assert d.channels_last and d.opt_s.defaults.get("fused") and d.opt_g.defaults.get("fused")
    assert torch.backends.cudnn.benchmark
    z, y = d.generator.sample_inputs(8, d.device)
    assert d._generate(z, y).is_contiguous(memory_format=torch.channels_last)
    for _ in range(2):
        terms = d.iterate()
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in terms.values()), terms
    d.close()


@cuda
@cuda_marker
def test_cuda_fp16_scales_both_optimisers(digits_teacher):
    teacher, meta = load_classifier(digits_teacher)
    d = Distiller(teacher, meta, make_config("cpsc", device="cuda", **TINY), accel=Acceleration(amp="fp16"))
    assert d.scaler_g is not None and d.scaler_s is not None and d.scaler_g is not d.scaler_s
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
        return [str(w.message).splitlines()[0] for w in caught if "synchroniz" in str(w.message)]

    assert syncs(d.student_step) == []
    found = syncs(d.generator_step)
    if found:
        warnings.warn(f"generator step: {len(found)} host sync(s): {found[:3]}")
    d.close()


@cuda
@cuda_marker
def test_cuda_compile_and_device_flag(digits_teacher):
    teacher, meta = load_classifier(digits_teacher)
    d = Distiller(teacher, meta, make_config("cpsc", device="cuda", **TINY),
                  accel=Acceleration(compile="default", compile_backend="aot_eager"))
    terms = d.iterate()
    assert all(torch.isfinite(v) for v in terms.values())
    d.close()
    teacher, meta = load_classifier(digits_teacher)
    on_cpu = Distiller(teacher, meta, make_config("cpsc", device="cpu", **TINY))
    assert on_cpu.device.type == "cpu" and on_cpu.amp_dtype is None  # --device cpu is respected
    assert next(on_cpu.student.parameters()).device.type == "cpu"
    on_cpu.close()


@cuda
@cuda_marker
def test_cuda_teacher_training_with_amp(tmp_path):
    npz = make_colour_npz(tmp_path / "shapes.npz", num_classes=4, size=16, n_train=64, n_test=32)
    metrics = run_teacher(load_dataset(f"npz:{npz}"), TeacherConfig(epochs=2, batch_size=32, device="cuda"),
                          str(tmp_path / "t"), progress=False)
    assert 0 <= metrics["test_acc"] <= 1 and all(h["loss"] == h["loss"] for h in metrics["history"])


def test_presets_are_packaged_with_the_wheel():
    """pyproject installs configs/ as cpsc_lite/presets (where presets_dir looks after a plain pip install)."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        tool = tomllib.load(f)["tool"]["setuptools"]
    assert "cpsc_lite.presets" in tool["packages"] and tool["package-dir"]["cpsc_lite.presets"] == "configs"
    assert tool["package-data"]["cpsc_lite.presets"] == ["*.yaml"]
