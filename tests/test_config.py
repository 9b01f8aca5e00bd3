"""Config: presets, YAML parsing, and one typed validation of every setting (no traceback, no silent accept)."""

import pytest

from cpsc_lite import CpscError
from cpsc_lite.cli import main
from cpsc_lite.config import DistillConfig, TeacherConfig, parse_value
from cpsc_lite.methods import make_config
import glob
import json
import os


from cpsc_lite.config import load_preset
from cpsc_lite.data import available_datasets
from cpsc_lite.models import available_models

from conftest import REPO, flat, run_cli


def test_yaml_style_numbers_are_numbers():
    """YAML 1.1 reads 1e-4 as a string; the validator turns every float spelling into a float."""
    cfg = make_config(
        "cpsc",
        lr_generator=parse_value("1e-4"),
        gamma=parse_value("5e-4"),
        iters=parse_value("1e3"),
    )
    assert (
        cfg.optim.lr_generator == 1e-4
        and cfg.objective.gamma == 5e-4
        and cfg.budget.iters == 1000
    )
    assert isinstance(cfg.budget.iters, int)
    assert (
        DistillConfig.from_dict(
            dict(DistillConfig().to_dict(), lr_student="0.05")
        ).optim.lr_student
        == 0.05
    )


@pytest.mark.parametrize(
    "key,value,needle",
    [
        ("beta", "abc", "beta must be a number"),
        ("batch_size", 0, "batch_size must be in [1"),
        ("batch_size", -3, "batch_size must be in [1"),
        ("ckpt_every", 0, "ckpt_every must be in [1"),
        ("seed", -1, "seed must be in [0"),
        ("iters", 0, "iters must be in [1"),
        ("iters", -5, "iters must be in [1"),
        ("iters", 2.5, "iters must be a whole number"),
        ("g_steps", 0, "g_steps must be in [1"),
        ("s_steps", -1, "s_steps must be in [1"),
        ("nz", 0, "nz must be in [1"),
        ("use_scl", "maybe", "use_scl must be true or false"),
        ("use_scl", 1, "use_scl must be true or false"),
        ("ikd_log", "maybe", "ikd_log must be true or false"),
        ("cmi.temperature", 0, "cmi.temperature must be in (0"),
        ("lr_generator", 0, "lr_generator must be in (0"),
        ("lr_generator", float("nan"), "finite"),
        ("temperature", 0, "temperature must be in (0"),
        ("adv_warmup", 1.0, "adv_warmup must be in [0, 1)"),
        ("bn_reduce", "median", "bn_reduce must be one of sum, mean"),
        ("lr_schedule", "linear", "lr_schedule must be one of cosine"),
        ("objective.bn_reduce", "x", "bn_reduce must be one of"),
        ("generator_betas", [0.5], "generator_betas must be a pair"),
        (
            "generator_betas",
            [0.5, 1.5],
            "generator_betas must be two numbers in [0, 1)",
        ),
        ("student", 3, "student must be text"),
    ],
)
def test_bad_values_are_refused_with_the_rule(key, value, needle):
    with pytest.raises(CpscError) as err:
        make_config("cmi" if key.startswith("cmi") else "cpsc", **{key: value})
    assert needle in str(err.value)
    assert "--set" in str(err.value)


def test_every_problem_is_listed_at_once():
    with pytest.raises(CpscError) as err:
        make_config("cpsc", iters=0, beta="x")
    assert "iters" in str(err.value) and "beta" in str(err.value)


def test_teacher_config_is_validated():
    with pytest.raises(CpscError, match="epochs must be in"):
        TeacherConfig(epochs=0)
    with pytest.raises(CpscError, match="batch_size must be in"):
        TeacherConfig(batch_size=0)
    assert TeacherConfig(lr="1e-2").lr == 0.01


@pytest.mark.parametrize(
    "argv",
    [
        ["distill", "--set", "gamma=[1"],
        ["distill", "--set", "lr_generator=abc"],
        ["distill", "--batch-size", "0"],
        ["distill", "--iters", "0"],
        ["distill", "--set", "ckpt_every=0"],
        ["distill", "--seed", "-1"],
        ["teacher", "--epochs", "0"],
        ["teacher", "--batch-size", "0"],
        ["bench", "--iters", "0", "--methods", "cpsc"],
    ],
)
def test_cli_refuses_bad_settings_before_any_work(
    tmp_path, capsys, argv, digits_teacher
):
    if argv[0] == "distill":
        argv = argv + ["--teacher", digits_teacher]
    code = main(argv + ["--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and err.startswith("error: "), err
    assert (
        not (tmp_path / "out" / "teacher.pt").exists()
        and not (tmp_path / "out" / "state.pt").exists()
    )


def test_binary_config_file_is_refused(tmp_path, capsys):
    bad = tmp_path / "c.yaml"
    bad.write_bytes(b"\xff\xfe\x00\x81garbage")
    code = main(
        [
            "distill",
            "--teacher",
            "x.pt",
            "--config",
            str(bad),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and "not valid" in err


def test_lr_as_yaml_string_works_end_to_end(tmp_path, digits_teacher):
    assert (
        main(
            [
                "distill",
                "--teacher",
                digits_teacher,
                "--out",
                str(tmp_path / "o"),
                "--iters",
                "2",
                "--set",
                "lr_generator=1e-4",
                "--set",
                "eval_every=2",
                "--no-progress",
            ]
        )
        == 0
    )


# ------------------------------------------------------------------ presets
PAIRS = [
    "c10_resnet34_resnet18",
    "c10_wrn40_2_wrn16_2",
    "c100_resnet34_resnet18",
    "c100_wrn40_2_wrn16_2",
    "svhn_resnet34_resnet18",
    "tiny_imagenet_resnet34_64_resnet18_64",
]


COLAB = "c10_colab"


def test_every_preset_has_the_papers_schedule():
    paths = sorted(glob.glob(os.path.join(REPO, "configs", "*.yaml")))
    names = {os.path.basename(p)[:-5] for p in paths}
    assert names == set(PAIRS) | {p + "_fast" for p in PAIRS} | {COLAB}
    paths = [p for p in paths if not p.endswith(COLAB + ".yaml")]
    datasets, models = available_datasets(), available_models()
    for path in paths:
        settings, run = load_preset(path)
        cfg = make_config("cpsc", settings)
        fast = path.endswith("_fast.yaml")
        # 50 iterations x 600 epochs (fast: a tenth)
        assert cfg.budget.iters == (3000 if fast else 30000), path
        # 10 of 600 epochs
        assert int(cfg.optim.warmup_frac * cfg.budget.iters) == (50 if fast else 500), (
            path
        )
        assert (cfg.budget.batch_size, cfg.budget.g_steps, cfg.budget.s_steps) == (
            512,
            6,
            5,
        ), path
        assert (cfg.optim.lr_student, cfg.optim.momentum, cfg.optim.weight_decay) == (
            0.1,
            0.9,
            5e-4,
        ), path
        assert (cfg.optim.lr_generator, tuple(cfg.optim.generator_betas)) == (
            1e-3,
            (0.5, 0.999),
        ), path
        assert (cfg.generator.ngf, cfg.generator.nz, cfg.generator.conditional) == (
            64,
            256,
            True,
        ), path
        assert (
            cfg.objective.alpha,
            cfg.objective.beta,
            cfg.objective.gamma,
            cfg.objective.eta,
            cfg.objective.temperature,
        ) == (
            5,
            1,
            0.7,
            0.7,
            0.07,
        ), path
        assert all(
            (
                (cfg.objective.adv > 0),
                (cfg.objective.alpha > 0),
                (cfg.objective.beta > 0),
                (cfg.objective.gamma > 0),
                (cfg.objective.eta > 0),
                (cfg.objective.eta_student > 0),
            )
        ), path
        assert cfg.objective.adv_warmup == 0.0, path
        assert (
            set(run) == {"dataset", "teacher_model"} and run["dataset"] in datasets
        ), path
        assert run["teacher_model"] in models and cfg.student in models, path
        assert (
            cfg.budget.iters % cfg.log.eval_every == 0
            and cfg.budget.iters % cfg.log.ckpt_every == 0
        ), path


def test_the_colab_preset_is_a_short_cifar_run_that_shows_its_progress():
    """About 20 minutes on a T4 by FLOP arithmetic (chapter 8 counts them): a small teacher trained
    briefly, a short distillation, and the progress a notebook user watches."""
    settings, run = load_preset(COLAB)
    cfg = make_config("cpsc", settings)
    assert run == {
        "dataset": "cifar10",
        "teacher_model": "wrn16_2",
        "teacher_epochs": 20,
    }
    assert (cfg.student, cfg.budget.iters, cfg.budget.batch_size) == (
        "wrn16_1",
        2000,
        256,
    )
    assert cfg.log.samples_every and cfg.log.tensorboard
    assert cfg.budget.iters % cfg.log.ckpt_every == 0


def test_preset_supplies_dataset_and_student_and_flags_override(
    tmp_path, capsys, digits_teacher, monkeypatch
):
    preset = os.path.join(REPO, "configs", "c10_resnet34_resnet18_fast.yaml")
    # Without --dataset the preset's (cifar10) is used: here it is not downloaded, which the error shows.
    monkeypatch.setenv("CPSC_LITE_DATA", str(tmp_path / "no_data"))
    code, _, err = run_cli(
        capsys,
        "distill",
        "--teacher",
        digits_teacher,
        "--config",
        preset,
        "--out",
        tmp_path / "a",
    )
    assert code == 2 and "cifar-10" in flat(err)
    # Flags override the preset: dataset, student, budget and any --set.
    code, _, err = run_cli(
        capsys,
        "distill",
        "--teacher",
        digits_teacher,
        "--config",
        preset,
        "--dataset",
        "digits",
        "--student",
        "cnn_small",
        "--iters",
        "2",
        "--batch-size",
        "16",
        "--g-steps",
        "1",
        "--s-steps",
        "1",
        "--set",
        "ngf=8",
        "--set",
        "nz=16",
        "--set",
        "diagnostics=false",
        "--out",
        tmp_path / "b",
        "--no-progress",
    )
    assert code == 0, err
    metrics = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert metrics["dataset"] == "digits" and metrics["student"] == "cnn_small"
    cfg = DistillConfig.from_saved(metrics["config"]).flat()
    assert (
        cfg["budget.iters"],
        cfg["budget.batch_size"],
        cfg["budget.g_steps"],
        cfg["generator.ngf"],
    ) == (
        2,
        16,
        1,
        8,
    )
    # the rest from the preset
    assert (cfg["optim.lr_student"], cfg["generator.nz"], cfg["log.eval_every"]) == (
        0.1,
        16,
        250,
    )


def test_config_takes_a_shipped_preset_by_name_from_any_folder(
    tmp_path, monkeypatch, capsys
):
    from cpsc_lite.config import available_presets, resolve_config

    shipped = os.path.join(REPO, "configs", "c10_wrn40_2_wrn16_2_fast.yaml")
    assert set(available_presets()) == set(PAIRS) | {p + "_fast" for p in PAIRS} | {
        COLAB
    }
    monkeypatch.chdir(tmp_path)  # outside the checkout, as after `pip install`
    assert os.path.samefile(resolve_config("c10_wrn40_2_wrn16_2_fast"), shipped)
    # README's spelling
    assert os.path.samefile(
        resolve_config("configs/c10_wrn40_2_wrn16_2_fast.yaml"), shipped
    )
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "c10_wrn40_2_wrn16_2_fast.yaml").write_text("iters: 7\n")
    assert (
        resolve_config("configs/c10_wrn40_2_wrn16_2_fast.yaml")
        == "configs/c10_wrn40_2_wrn16_2_fast.yaml"
    )
    # a real file wins
    assert load_preset("configs/c10_wrn40_2_wrn16_2_fast.yaml") == (
        {"iters": 7},
        {},
    )
    with pytest.raises(
        CpscError, match="not the name of a shipped preset.*c10_resnet34_resnet18_fast"
    ):
        resolve_config("c10_resnet34_resnet19")
    code, out, _ = run_cli(capsys, "presets")
    assert code == 0 and all(name in out for name in available_presets())
    assert "CIFAR-10: WRN-40-2 teacher -> WRN-16-2 student, FAST preset." in out


def test_presets_are_packaged_with_the_wheel():
    """pyproject installs configs/ as cpsc_lite/presets (where presets_dir looks after a plain pip install)."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        tool = tomllib.load(f)["tool"]["setuptools"]
    assert (
        "cpsc_lite.presets" in tool["packages"]
        and tool["package-dir"]["cpsc_lite.presets"] == "configs"
    )
    assert tool["package-data"]["cpsc_lite.presets"] == ["*.yaml"]


SAVED = json.loads(
    open(os.path.join(REPO, "tests", "data", "configs_0.11.0.json")).read()
)["configs"]


def _read(cfg) -> dict:
    """The settings ``cfg``'s method reads (the sections of other methods aside)."""
    from cpsc_lite.methods import read_sections

    sections = read_sections(cfg.method)
    return {
        k: v
        for k, v in cfg.flat().items()
        if "." not in k or k.split(".")[0] in sections
    }


@pytest.mark.parametrize("spec", sorted(SAVED))
def test_configs_saved_by_the_flat_layout_resume_with_the_same_settings(spec):
    """state.pt and metrics.json of 0.11.0 hold one flat dict with on/off switches; each loads as
    today's config of the same method, setting for setting."""
    from cpsc_lite.methods import method_variant

    name, variant = method_variant(spec)
    saved = DistillConfig.from_saved(SAVED[spec])
    assert _read(saved) == _read(make_config(name, **variant))
    assert (
        DistillConfig.from_saved(saved.to_dict()) == saved
    )  # today's layout round-trips


def test_renamed_settings_keep_working_in_files_saved_runs_and_overrides():
    from cpsc_lite.compat import RENAMED_SETTINGS

    assert RENAMED_SETTINGS["scl_for_student"] == "student_scl"
    # --set / keyword: the contrast in the student's loss, at the generator's weight
    w = make_config("cpsc", scl_for_student=True).objective
    assert w.gamma_student == w.gamma > 0
    # a YAML file
    assert make_config("cpsc", {"scl_for_student": True}).objective.gamma_student > 0
    saved = {k: v for k, v in SAVED["cpsc"].items() if k != "student_scl"}
    old = DistillConfig.from_saved(dict(saved, scl_for_student=True))  # 0.4.0's name
    assert old.objective.gamma_student == old.objective.gamma
    with pytest.raises(CpscError, match="one setting"):
        make_config("cpsc", scl_for_student=True, student_scl=False)


def test_use_ce_is_teacher_ce_and_keeps_turning_off_both_ce_terms():
    # Up to 0.5.0 `use_ce` switched the pseudo-supervision as a whole (the student's CE needed it).
    off = make_config("cpsc_paper", use_ce=False)  # --set use_ce=false
    assert off.objective.eta == 0 and off.objective.eta_student == 0
    on = make_config("cpsc_paper", use_ce=True)
    assert (
        on.objective.eta == on.objective.eta_student == 0.7
    )  # the preset's student CE stays
    assert make_config("cpsc", {"use_ce": False}).objective.eta == 0  # a YAML file
    saved = {k: v for k, v in SAVED["cpsc_paper"].items() if k != "teacher_ce"}
    old = DistillConfig.from_saved(dict(saved, use_ce=False))  # a state.pt of 0.5.0
    assert (old.objective.eta, old.objective.eta_student) == (0, 0), (
        "a resumed run keeps the CE terms it trained with"
    )
    again = DistillConfig.from_saved(dict(saved, use_ce=True))
    assert _read(again) == _read(make_config("cpsc_paper"))
    # the two weights are independent: the student's CE without the generator's
    solo = make_config("cpsc", teacher_ce=False, student_ce=True)
    assert solo.objective.eta == 0 and solo.objective.eta_student == 1.0
    with pytest.raises(CpscError, match="one setting"):
        make_config("cpsc", use_ce=True, teacher_ce=True)


def test_settings_the_method_now_decides_are_refused_with_the_method_to_use():
    for key, value, method in (
        ("kd_loss", "l1", "dfad"),
        ("input_source", "noise", "noise"),
        ("use_dafl", True, "dafl"),
    ):
        with pytest.raises(CpscError, match=f"decided by the method.*{method}"):
            make_config("cpsc", **{key: value})
    with pytest.raises(CpscError, match="cmi.weight.*cpsc does not use.*cmi"):
        make_config("cpsc", cmi_weight=1.0)
    assert make_config("cmi", cmi_weight=0.5).cmi.weight == 0.5


def test_a_method_variant_is_the_method_with_its_settings_changed():
    from cpsc_lite.methods import method_variant

    assert method_variant("cpsc") == ("cpsc", {})
    name, settings = method_variant("reference_compat: ce_on_softmax=false :eta=0.5")
    assert name == "reference_compat" and settings == {
        "ce_on_softmax": False,
        "eta": 0.5,
    }
    cfg = make_config("reference_compat:ce_on_softmax=false", iters=7)
    ref = make_config("reference_compat", iters=7)
    assert cfg.method == "reference_compat" and cfg.authors.ce_on_softmax is False
    assert {k for k, v in cfg.flat().items() if ref.flat()[k] != v} == {
        "authors.ce_on_softmax"
    }
    assert (
        make_config("cpsc:eta=2", eta=3).objective.eta == 3
    )  # an explicit override still wins
    with pytest.raises(CpscError, match="NAME:KEY=VALUE"):
        make_config("cpsc:eta")
    with pytest.raises(CpscError, match="Unknown config keys: nosuch"):
        make_config("cpsc:nosuch=1")
    with pytest.raises(CpscError, match="Unknown method 'cpsk'"):
        make_config("cpsk:eta=1")


def test_the_student_warms_up_over_a_tenth_of_a_quick_run_and_the_paper_presets_keep_theirs():
    # 0.8.0: 6 warm-up iterations of a 300-iteration run let the student diverge on `shapes`
    # (experiments/tuning/README.md); the paper's 1/60 stays in cpsc_paper and reference_compat.
    from cpsc_lite.distill import lr_factor

    cfg = make_config("cpsc", iters=300)
    warmup = int(cfg.optim.warmup_frac * cfg.budget.iters)
    assert warmup == 30
    factors = [lr_factor(cfg, it, warmup) for it in range(warmup)]
    assert factors[0] < 0.05 and all(a < b for a, b in zip(factors, factors[1:]))
    # full rate at the end of the warm-up, where the cosine starts
    assert factors[-1] == lr_factor(cfg, warmup, warmup) == 1.0
    for name in ("cpsc_paper", "reference_compat"):
        assert abs(make_config(name).optim.warmup_frac - 1 / 60) < 1e-12, name
    # a run saved before 0.8.0 resumes with the warm-up it started with
    saved = dict(make_config("cpsc").to_dict(), warmup_frac=0.02)
    assert DistillConfig.from_saved(saved).optim.warmup_frac == 0.02


def test_the_pseudo_label_weight_is_one_and_the_paper_presets_keep_theirs():
    # 0.9.0: eta=1 on validation seeds of digits, shapes and scenes (experiments/tuning/eta/)
    assert make_config("cpsc").objective.eta == 1.0
    for name in ("cpsc_paper", "reference_compat"):
        assert make_config(name).objective.eta == 0.7, name
    # bn_ce shares CPSC's generator CE weight; DeepInversion and CMI set their own
    assert make_config("bn_ce").objective.eta == make_config("cpsc").objective.eta
    # a run saved before 0.9.0 resumes with the weight it started with
    saved = dict(make_config("cpsc").to_dict(), eta=0.5)
    assert DistillConfig.from_saved(saved).objective.eta == 0.5
