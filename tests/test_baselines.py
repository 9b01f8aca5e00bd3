"""The baselines' own settings: DAFL's and DFAD's presets, their CIFAR settings through a config file's
`methods:` section, the step order, the learning-rate schedules, DAFL's log10 entropy, and the
time-to-accuracy evaluations."""

import math
import warnings

import pytest
import torch

from cpsc_lite import CpscError
from cpsc_lite.config import DistillConfig, load_preset
from cpsc_lite.methods import BASELINE_SETTINGS, make_config
from cpsc_lite.distill import Distiller, lr_factor
from cpsc_lite.teacher import load_teacher

from conftest import TINY

T = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0], [0.0, 0.0, 3.0]])
FT = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))


def test_dafl_entropy_uses_log10_as_published():
    from cpsc_lite.methods.adversarial import dafl_terms

    p = T.softmax(1).mean(0)
    expected_ln = float((p * p.log()).sum())
    assert make_config("dafl").dafl.log10  # as published
    on = dafl_terms(T, FT, log10=True)["info_entropy"]
    off = dafl_terms(T, FT, log10=False)["info_entropy"]
    assert off.item() == pytest.approx(expected_ln, rel=1e-5)
    assert on.item() == pytest.approx(expected_ln / math.log(10), rel=1e-5)


def test_lr_schedules():
    cos = make_config("cpsc", iters=100, warmup_frac=0.1)
    assert lr_factor(cos, 0, 10) == pytest.approx(0.1) and lr_factor(
        cos, 9, 10
    ) == pytest.approx(1.0)
    assert lr_factor(cos, 55, 10) == pytest.approx(0.5, abs=1e-6)
    step = make_config("cpsc", iters=100, lr_schedule="step", lr_steps=[0.2, 0.4])
    assert [lr_factor(step, i, 0) for i in (0, 19, 20, 39, 40, 99)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01, 0.01]
    )
    const = make_config("cpsc", iters=100, lr_schedule="constant")
    assert {lr_factor(const, i, 0) for i in range(100)} == {1.0}
    with pytest.raises(CpscError, match="lr_steps must be two fractions"):
        make_config("cpsc", lr_steps=[0.8, 0.4])
    with pytest.raises(CpscError, match="lr_schedule must be one of"):
        make_config("cpsc", lr_schedule="linear")


def test_quick_presets_carry_the_published_generator_settings():
    dafl, dfad, cpsc = make_config("dafl"), make_config("dfad"), make_config("cpsc")
    assert (
        dafl.dafl.onehot,
        dafl.dafl.entropy,
        dafl.dafl.activation,
        dafl.dafl.log10,
    ) == (1.0, 5.0, 0.1, True)
    assert (
        dafl.optim.generator_betas == (0.9, 0.999)
        and not dafl.optim.generator_cosine
        and dafl.generator.nz == 100
    )
    assert (
        dfad.budget.student_first
        and dfad.optim.lr_generator == 1e-3
        and dfad.generator.nz == 100
    )
    # the student learns as in every other method of the quick benchmark
    for m in (
        dafl,
        dfad,
    ):
        o = m.optim
        assert (o.student_optimizer, o.lr_student, o.lr_schedule, m.budget.s_steps) == (
            cpsc.optim.student_optimizer,
            cpsc.optim.lr_student,
            cpsc.optim.lr_schedule,
            cpsc.budget.s_steps,
        )


@pytest.mark.parametrize(
    "preset,onehot,entropy",
    [("c10_resnet34_resnet18", 0.05, 5.0), ("c100_wrn40_2_wrn16_2_fast", 0.5, 20.0)],
)
def test_a_preset_gives_each_baseline_its_own_cifar_settings(preset, onehot, entropy):
    base, _ = load_preset(preset)
    cpsc = make_config("cpsc", base)
    assert (cpsc.budget.g_steps, cpsc.budget.s_steps, cpsc.optim.lr_generator) == (
        6,
        5,
        1e-3,
    )
    dafl = make_config("dafl", base)
    assert (
        dafl.budget.g_steps,
        dafl.optim.lr_generator,
        dafl.dafl.onehot,
        dafl.dafl.entropy,
    ) == (
        1,
        0.02,
        onehot,
        entropy,
    )
    assert (
        dafl.optim.student_optimizer == "sgd"
        and dafl.optim.lr_schedule == "step"
        and dafl.optim.lr_steps == (0.4, 0.8)
    )
    # the budget stays the file's
    assert (
        dafl.budget.batch_size == cpsc.budget.batch_size
        and dafl.budget.iters == cpsc.budget.iters
    )
    dfad = make_config("dfad", base)
    assert dfad.budget.student_first and (
        dfad.budget.g_steps,
        dfad.optim.lr_steps,
        dfad.generator.nz,
    ) == (
        1,
        (0.2, 0.4),
        256,
    )
    deepinv = make_config("deepinv", base)
    assert (
        deepinv.inversion.steps,
        deepinv.objective.beta,
        deepinv.objective.bn_reduce,
        deepinv.inversion.adi,
    ) == (1000, 10.0, "sum", 1.0)
    cmi = make_config("cmi", base)
    assert (cmi.inversion.steps, cmi.cmi.bank, cmi.cmi.head_dim) == (200, 40960, 256)
    # command-line overrides still win over the section
    assert make_config("dafl", base, lr_generator=0.05).optim.lr_generator == 0.05


def test_methods_section_forms_and_errors():
    assert (
        make_config(
            "dafl", {"methods": {"dafl": {"lr_generator": 0.03}}}
        ).optim.lr_generator
        == 0.03
    )
    published = BASELINE_SETTINGS["cifar10"]["dafl"]["dafl.onehot"]
    assert make_config("dafl", {"methods": "cifar10"}).dafl.onehot == published
    with pytest.raises(CpscError, match="names no known set"):
        make_config("dafl", {"methods": "imagenet"})
    with pytest.raises(CpscError, match="unknown method"):
        make_config("dafl", {"methods": {"dafll": {}}})
    with pytest.raises(CpscError, match="must map method names"):
        make_config("dafl", {"methods": {"dafl": 3}})
    with pytest.raises(CpscError, match="Unknown config keys"):
        make_config("dafl", {"methods": {"dafl": {"lr_gen": 1}}})
    with pytest.warns(UserWarning, match="no `methods: {dafl"):
        make_config("dafl", {"iters": 10})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # CPSC's schedule is the file's own: no warning
        make_config("cpsc", {"iters": 10})
        make_config("dafl")  # no file: the quick preset, no warning


def _order(cfg, digits_teacher):
    teacher, meta = load_teacher(digits_teacher)
    d = Distiller(teacher, meta, cfg)
    calls = []
    d.method.generator_step = lambda: calls.append("G") or {}
    d.student_step = lambda: calls.append("S") or {}
    d.iterate()
    d.close()
    return "".join(calls)


@pytest.mark.filterwarnings("ignore:Detected call of")
def test_step_order(digits_teacher):
    small = dict(batch_size=8, ngf=8, nz=16)
    assert (
        _order(make_config("cpsc", g_steps=2, s_steps=3, **small), digits_teacher)
        == "GGSSS"
    )
    assert _order(make_config("dfad", s_steps=5, **small), digits_teacher) == "SSSSSG"


def test_student_optimizer_choice(digits_teacher):
    teacher, meta = load_teacher(digits_teacher)
    cfg = make_config(
        "dafl", batch_size=8, ngf=8, student_optimizer="adam", lr_student=2e-3
    )
    d = Distiller(teacher, meta, cfg)
    assert isinstance(d.opt_s, torch.optim.Adam) and d.opt_s.param_groups[0][
        "initial_lr"
    ] == pytest.approx(2e-3)
    d.close()


def test_saved_runs_from_before_the_settings_resume_as_they_trained():
    import json
    import os

    from conftest import REPO

    path = os.path.join(REPO, "tests", "data", "configs_0.11.0.json")
    old = dict(json.load(open(path))["configs"]["cpsc"])
    for key in (
        "lr_schedule",
        "lr_steps",
        "student_optimizer",
        "student_first",
        "dafl_log10",
    ):
        old.pop(key)
    cfg = DistillConfig.from_saved(old)
    assert (
        cfg.optim.lr_schedule,
        cfg.optim.student_optimizer,
        cfg.budget.student_first,
        cfg.dafl.log10,
    ) == ("cosine", "sgd", False, False)


def test_data_baseline_draws_indices_where_its_images_are(digits_teacher):
    """The ``data`` baseline keeps the training images on the run's device and draws its batch
    indices there (no CPU gather and copy per student step on a GPU)."""
    from cpsc_lite.data import load_dataset

    teacher, meta = load_teacher(digits_teacher)
    bundle = load_dataset("digits")
    d = Distiller(teacher, meta, make_config("data", **TINY), train_set=bundle.train)
    d.train_set = d.train_set.to("meta")  # stands in for a GPU

    class Drawn(Exception):
        pass

    def batch(index):
        raise Drawn(index.device)

    d.train_set.batch = batch
    with pytest.raises(Drawn) as drawn:
        d.student_inputs(8)
    assert drawn.value.args[0].type == "meta"
    d.close()
