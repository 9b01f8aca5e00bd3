"""Config: presets, YAML parsing, and one typed validation of every setting (no traceback, no silent accept)."""

import pytest

from cpsc_lite import CpscError
from cpsc_lite.cli import main
from cpsc_lite.config import DistillConfig, TeacherConfig, make_config, parse_value


def test_yaml_style_numbers_are_numbers():
    """YAML 1.1 reads 1e-4 as a string; the validator turns every float spelling into a float."""
    cfg = make_config("cpsc", lr_generator=parse_value("1e-4"), gamma=parse_value("5e-4"), iters=parse_value("1e3"))
    assert cfg.lr_generator == 1e-4 and cfg.gamma == 5e-4 and cfg.iters == 1000
    assert isinstance(cfg.iters, int)
    assert DistillConfig.from_dict(dict(DistillConfig().to_dict(), lr_student="0.05")).lr_student == 0.05


@pytest.mark.parametrize("key,value,needle", [
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
    ("lr_generator", 0, "lr_generator must be in (0"),
    ("lr_generator", float("nan"), "finite"),
    ("temperature", 0, "temperature must be in (0"),
    ("adv_warmup", 1.0, "adv_warmup must be in [0, 1)"),
    ("bn_reduce", "median", "bn_reduce must be one of sum, mean"),
    ("kd_loss", "l2", "kd_loss must be one of kl, l1"),
    ("input_source", "web", "input_source must be one of"),
    ("generator_betas", [0.5], "generator_betas must be a pair"),
    ("generator_betas", [0.5, 1.5], "generator_betas must be two numbers in [0, 1)"),
    ("student", 3, "student must be text"),
])
def test_bad_values_are_refused_with_the_rule(key, value, needle):
    with pytest.raises(CpscError) as err:
        make_config("cpsc", **{key: value})
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


@pytest.mark.parametrize("argv", [
    ["distill", "--set", "gamma=[1"],
    ["distill", "--set", "lr_generator=abc"],
    ["distill", "--batch-size", "0"],
    ["distill", "--iters", "0"],
    ["distill", "--set", "ckpt_every=0"],
    ["distill", "--seed", "-1"],
    ["teacher", "--epochs", "0"],
    ["teacher", "--batch-size", "0"],
    ["bench", "--iters", "0", "--methods", "cpsc"],
])
def test_cli_refuses_bad_settings_before_any_work(tmp_path, capsys, argv, digits_teacher):
    if argv[0] == "distill":
        argv = argv + ["--teacher", digits_teacher]
    code = main(argv + ["--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and err.startswith("error: "), err
    assert not (tmp_path / "out" / "teacher.pt").exists() and not (tmp_path / "out" / "state.pt").exists()


def test_binary_config_file_is_refused(tmp_path, capsys):
    bad = tmp_path / "c.yaml"
    bad.write_bytes(b"\xff\xfe\x00\x81garbage")
    code = main(["distill", "--teacher", "x.pt", "--config", str(bad), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and "not valid" in err


def test_lr_as_yaml_string_works_end_to_end(tmp_path, digits_teacher):
    assert main(["distill", "--teacher", digits_teacher, "--out", str(tmp_path / "o"), "--iters", "2",
                 "--set", "lr_generator=1e-4", "--set", "eval_every=2", "--no-progress"]) == 0
