"""cpsc_lite.engine: the one optimiser update, the scheduler step, compile wrapping, seeding."""

import random
import warnings

import numpy as np
import torch
from torch import nn

from cpsc_lite import engine

import pytest

from cpsc_lite import CpscError
from cpsc_lite.methods import make_config
from cpsc_lite.distill import Distiller
from cpsc_lite.losses import Float32BNStatsLoss
from cpsc_lite.engine import Acceleration, pick_device, resolve_amp, seed_everything
from cpsc_lite.teacher import load_classifier

from conftest import TINY, flat, run_cli


def _problem():
    torch.manual_seed(0)
    net = nn.Linear(3, 1)
    x, y = torch.randn(8, 3), torch.randn(8, 1)
    return net, x, y


def test_update_equals_the_hand_written_step():
    net, x, y = _problem()
    twin = nn.Linear(3, 1)
    twin.load_state_dict(net.state_dict())
    opt, opt_twin = (
        torch.optim.SGD(net.parameters(), lr=0.1),
        torch.optim.SGD(twin.parameters(), lr=0.1),
    )
    engine.update((opt,), ((net(x) - y) ** 2).mean())
    opt_twin.zero_grad()
    ((twin(x) - y) ** 2).mean().backward()
    opt_twin.step()
    for a, b in zip(net.parameters(), twin.parameters()):
        assert torch.equal(a, b)


def test_update_clears_old_gradients_and_steps_every_optimizer():
    net, x, y = _problem()
    head = nn.Linear(1, 1)
    opts = (
        torch.optim.SGD(net.parameters(), lr=0.1),
        torch.optim.SGD(head.parameters(), lr=0.1),
    )
    for p in net.parameters():
        p.grad = torch.full_like(p, 1e6)  # stale: must not leak into the step
    before = [p.detach().clone() for p in (*net.parameters(), *head.parameters())]
    engine.update(opts, head(net(x)).pow(2).mean())
    after = list((*net.parameters(), *head.parameters()))
    assert all(not torch.equal(a, b) for a, b in zip(before, after))
    assert all(p.abs().max() < 1e3 for p in after)


def test_before_step_runs_between_backward_and_step():
    net, x, y = _problem()
    opt = torch.optim.SGD(net.parameters(), lr=1.0)
    seen = {}

    def halve():  # e.g. averaging gradients over two processes
        seen["grad"] = net.weight.grad.clone()
        for p in net.parameters():
            p.grad /= 2

    w0 = net.weight.detach().clone()
    engine.update((opt,), ((net(x) - y) ** 2).mean(), before_step=halve)
    torch.testing.assert_close(net.weight.detach(), w0 - seen["grad"] / 2)


def test_fp16_scaler_path_and_scheduler_step_without_warnings():
    net, x, y = _problem()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda it: 0.5**it)
    scaler = torch.amp.GradScaler("cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        engine.update((opt,), ((net(x) - y) ** 2).mean(), scaler)
        engine.step_scheduler(sched, scaler)
    assert opt.param_groups[0]["lr"] == 0.05


def test_compiler_is_the_identity_when_off():
    net = nn.Linear(2, 2)
    assert engine.compiler(engine.Acceleration())(net) is net
    assert engine.compiler(engine.Acceleration(compile="off"))(net) is net


def test_seed_everything_and_rng_state_round_trip():
    engine.seed_everything(7)
    state = engine.rng_state()
    a = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    engine.set_rng_state(state)
    b = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    assert a == b
    engine.seed_everything(7)
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == a


# --------------------------------------------------- precision, layout, compile
def test_defaults_on_cpu_keep_plain_optimisers_and_bf16_only_where_native(
    digits_teacher,
):
    from cpsc_lite.engine import native_bf16

    teacher, meta = load_classifier(digits_teacher)
    d = Distiller(teacher, meta, make_config("cpsc", device="cpu", **TINY))
    native = native_bf16(torch.device("cpu"))  # AVX512-BF16 or AMX
    assert (
        d.amp_dtype == (torch.bfloat16 if native else None)
        and d.scaler_g is None
        and d.scaler_s is None
        and d.channels_last  # the one speed-up on by default on CPU (0.7.0)
    )
    assert type(d.bn_loss).__name__ == "BNStatsLoss"
    assert not d.opt_s.defaults.get("fused") and not d.opt_g.defaults.get("fused")
    # no wrappers at all
    assert d._student_train is d.student and d._generator_train is d.generator
    assert d.runtime()["amp"] == ("bfloat16" if native else "off")
    d.close()


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_explicit_mixed_precision_on_cpu_keeps_losses_in_float32(amp, digits_teacher):
    teacher, meta = load_classifier(digits_teacher)
    d = Distiller(
        teacher,
        meta,
        make_config("cpsc", device="cpu", **TINY),
        accel=Acceleration(amp=amp),
    )
    assert isinstance(d.bn_loss, Float32BNStatsLoss)
    assert (d.scaler_g is not None) == (amp == "fp16") and (d.scaler_s is not None) == (
        amp == "fp16"
    )
    with warnings.catch_warnings():
        # e.g. no scheduler-order warning when fp16 skips a step
        warnings.simplefilter("error")
        terms = d.iterate()
        terms = d.iterate()
    assert all(
        v.dtype == torch.float32 and torch.isfinite(v) for v in terms.values()
    ), terms
    state = d.state_dict()
    assert ("scaler_g" in state) == (amp == "fp16")
    teacher, meta = load_classifier(digits_teacher)
    again = Distiller(
        teacher,
        meta,
        make_config("cpsc", device="cpu", **TINY),
        accel=Acceleration(amp=amp),
    )
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
    fast = Distiller(
        teacher,
        meta,
        cfg,
        accel=Acceleration(
            channels_last=True, compile="default", compile_backend="aot_eager"
        ),
    )
    z, y = fast.generator.sample_inputs(4)
    assert fast.generate(z, y).is_contiguous(memory_format=torch.channels_last)
    fast.close()
    # a fresh one: the same random stream as the eager run
    teacher, meta = load_classifier(digits_teacher)
    seed_everything(cfg.seed)
    fast = Distiller(
        teacher,
        meta,
        cfg,
        accel=Acceleration(
            channels_last=True, compile="default", compile_backend="aot_eager"
        ),
    )
    fast_terms = fast.iterate()
    assert fast.runtime()["compile"] == "default" and fast.runtime()["channels_last"]
    for k, v in eager_terms.items():
        torch.testing.assert_close(fast_terms[k], v, rtol=1e-4, atol=1e-5)
    # The checkpoint holds the plain modules' weights (no '_orig_mod.' or 'module.' prefixes).
    assert set(fast.state_dict()["student"]) == set(eager.student.state_dict())
    eager.close()
    fast.close()


@pytest.mark.parametrize("native", [False, True])
def test_auto_picks_bf16_on_a_cpu_that_computes_it_natively(monkeypatch, native):
    """AVX512-BF16 or AMX: bf16 autocast; an AVX2 CPU (emulated bf16, much slower): float32."""
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    cpu = torch.device("cpu")
    assert resolve_amp("auto", cpu) == (torch.bfloat16 if native else None)
    assert resolve_amp("off", cpu) is None  # --amp off turns it off everywhere


def test_amp_resolution_per_device():
    cpu, mps = torch.device("cpu"), torch.device("mps")
    assert resolve_amp("off", cpu) is None
    assert (
        resolve_amp("bf16", cpu) == torch.bfloat16
        and resolve_amp("fp16", cpu) == torch.float16
    )
    assert resolve_amp("auto", mps) is None
    with pytest.warns(UserWarning, match="MPS"):
        # falls back to float32 instead of crashing
        assert resolve_amp("fp16", mps) is None
    with pytest.raises(CpscError, match="--amp"):
        resolve_amp("fp8", cpu)
    assert Acceleration().use_channels_last(cpu) and Acceleration().use_channels_last(
        torch.device("cuda")
    )
    assert not Acceleration().use_channels_last(mps)
    assert not Acceleration(channels_last=False).use_channels_last(cpu)


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="checks the message on a machine without CUDA"
)
def test_unavailable_device_is_a_clear_error(tmp_path, capsys, digits_teacher):
    code, _, err = run_cli(
        capsys,
        "distill",
        "--teacher",
        digits_teacher,
        "--out",
        tmp_path / "o",
        "--device",
        "cuda",
    )
    assert (
        code == 2
        and "Traceback" not in err
        and "no cuda gpu" in flat(err)
        and "--device cpu" in flat(err)
    )
    code, _, err = run_cli(capsys, "evaluate", digits_teacher, "--device", "tpu:3")
    assert (
        code == 2
        and "not one cpsc-lite runs on" in flat(err)
        and "--device" in flat(err)
    )
    assert pick_device("cpu").type == "cpu" and pick_device("auto").type in (
        "cpu",
        "mps",
    )


# --------------------------------------------- GPUs described to torch's query functions
@pytest.fixture
def fake_gpu(monkeypatch):
    """Describe a CUDA GPU of a given compute capability to torch's query functions (no GPU needed)."""

    def describe(capability, name="NVIDIA Test GPU", emulated_bf16=True):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: capability)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: name)
        # current torch counts emulation: True on a T4 too
        monkeypatch.setattr(
            torch.cuda, "is_bf16_supported", lambda *a, **k: emulated_bf16
        )

    return describe


def test_t4_gets_fp16_with_scaling_and_bf16_is_refused(fake_gpu):
    fake_gpu((7, 5), "Tesla T4")
    gpu = torch.device("cuda")
    assert not engine.native_bf16(gpu)
    assert resolve_amp("auto", gpu) == torch.float16
    assert resolve_amp("fp16", gpu) == torch.float16
    with pytest.raises(CpscError, match="(?s)Tesla T4.*--amp fp16"):
        resolve_amp("bf16", gpu)


@pytest.mark.parametrize("capability", [(8, 0), (8, 6), (9, 0)])
def test_ampere_and_newer_get_bf16(fake_gpu, capability):
    fake_gpu(capability)
    gpu = torch.device("cuda")
    assert engine.native_bf16(gpu)
    assert resolve_amp("auto", gpu) == resolve_amp("bf16", gpu) == torch.bfloat16


def test_optimisers_are_not_fused_when_a_grad_scaler_is_active():
    gpu = torch.device("cuda")  # only its type is read
    assert engine.fused_optimizer_kwargs(gpu, torch.bfloat16) == dict(fused=True)
    assert engine.fused_optimizer_kwargs(gpu, None) == dict(fused=True)
    assert engine.fused_optimizer_kwargs(gpu, torch.float16) == dict(foreach=True)
    assert engine.fused_optimizer_kwargs(torch.device("cpu"), torch.float16) == {}


def _skipped_first_step_then_one_step(optimizer_kwargs: dict) -> torch.Tensor:
    """SGD with momentum under a GradScaler whose first step overflows (and is skipped), then one
    normal step. Uninitialised memory is made NaN (``torch.empty_like``), as a GPU's allocator may
    hand it out; a momentum buffer created but never written then reads NaN."""
    torch.manual_seed(0)
    p = nn.Parameter(torch.randn(64))
    opt = torch.optim.SGD([p], lr=0.1, momentum=0.9, **optimizer_kwargs)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    engine.update((opt,), (p * float("inf")).sum(), scaler)  # overflow: step skipped
    engine.update((opt,), (p**2).sum(), scaler)
    return p.detach()


def test_skipped_first_fp16_step_leaves_every_parameter_finite(monkeypatch):
    full_like = torch.full_like
    monkeypatch.setattr(
        torch, "empty_like", lambda t, **kw: full_like(t, float("nan"), **kw)
    )
    kwargs = engine.fused_optimizer_kwargs(torch.device("cuda"), torch.float16)
    assert torch.isfinite(_skipped_first_step_then_one_step(kwargs)).all()
    # what the fused kernel does instead (the CPU build has the same kernel): the skipped step
    # leaves an uninitialised momentum buffer behind
    p = _skipped_first_step_then_one_step(dict(fused=True))
    assert not torch.isfinite(p).all(), "the fused kernel's defect no longer reproduces"


def test_rng_state_keeps_only_the_gpu_the_run_uses(monkeypatch):
    """A run on cuda:1 of a 2-GPU machine saves one CUDA state; resuming on a machine that shows
    one GPU (cuda:0) restores it there instead of raising IndexError."""
    saved, restored = {}, []
    monkeypatch.setattr(
        torch.cuda,
        "get_rng_state",
        lambda device=None: saved.setdefault(
            str(device), torch.arange(3, dtype=torch.uint8)
        ),
    )
    monkeypatch.setattr(
        torch.cuda,
        "set_rng_state",
        lambda state, device=None: restored.append((state.clone(), str(device))),
    )
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)

    def refuse(*args, **kwargs):
        raise AssertionError("every visible GPU's state must not be used")

    monkeypatch.setattr(torch.cuda, "get_rng_state_all", refuse)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", refuse)
    state = engine.rng_state(torch.device("cuda", 1))
    assert saved == {"cuda:1": state["cuda"]}
    engine.set_rng_state(state, torch.device("cuda", 0))
    assert restored[-1][1] == "cuda:0" and restored[-1][0].tolist() == [0, 1, 2]
    # a checkpoint of the older layout: a list, one state per GPU visible then
    old = dict(
        state,
        cuda=[torch.zeros(3, dtype=torch.uint8), torch.ones(3, dtype=torch.uint8)],
    )
    engine.set_rng_state(old, torch.device("cuda", 0))
    assert restored[-1][0].tolist() == [0, 0, 0]
    engine.set_rng_state(dict(old, cuda=old["cuda"][:1]), torch.device("cuda", 3))
    assert restored[-1][0].tolist() == [0, 0, 0] and restored[-1][1] == "cuda:3"
    # a CPU run neither saves nor restores a CUDA state
    assert "cuda" not in engine.rng_state(torch.device("cpu"))
    n = len(restored)
    engine.set_rng_state(state, torch.device("cpu"))
    assert len(restored) == n


def test_cpu_capability_names_native_bf16(monkeypatch):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    monkeypatch.setattr(
        torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False
    )
    monkeypatch.setattr(
        torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False
    )
    assert engine.cpu_capability() == "AVX512 + AVX512-BF16"
    assert engine.native_bf16(torch.device("cpu"))
    monkeypatch.setattr(
        torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False
    )
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert engine.cpu_capability() == "AVX2" and not engine.native_bf16(
        torch.device("cpu")
    )
