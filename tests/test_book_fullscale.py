"""Chapter 8's full-profile path on a CPU: cost counting and the end-to-end preset run.

The run reads a stand-in CIFAR-10 written in the real on-disk format (see
test_vision_datasets.py) with the network switched off, so the same code a Colab reader runs
(download if missing, teacher, timing, distillation, resume) is exercised here in seconds.
"""

import json

import pytest
import torch

pytest.importorskip("torchvision")
import torchvision.datasets as tvd  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from cpsc_lite import CpscError, costs  # noqa: E402
from cpsc_lite import bookcache as bc  # noqa: E402
from cpsc_lite.models import create_model  # noqa: E402

from test_vision_datasets import no_network, patch_cifar_md5, write_cifar10  # noqa: E402,F401

PRESET = """dataset: cifar10
teacher_model: wrn16_1
student: wrn16_1
iters: 2
batch_size: {batch}
g_steps: {g}
s_steps: 1
nz: 16
ngf: 8
eval_every: 2
log_every: 1
ckpt_every: 2
"""


def _preset(path, batch=8, g=1):
    path.write_text(PRESET.format(batch=batch, g=g))
    return str(path)


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CPSC_BOOK_CACHE", str(tmp_path / "cache"))
    threads = torch.get_num_threads()
    bc.setup("test", quiet=True)
    yield tmp_path / "cache"
    bc.setup("quick", quiet=True)
    torch.set_num_threads(threads)


def test_preset_cost_scales_with_batch_steps_and_epochs(tmp_path, monkeypatch):
    monkeypatch.setattr(costs, "_FLOPS_PER_SAMPLE", {})
    a = costs.preset_cost(_preset(tmp_path / "a.yaml"), teacher_epochs=2, tflops=(4.0,))
    b = costs.preset_cost(
        _preset(tmp_path / "b.yaml", batch=16), teacher_epochs=4, tflops=(4.0,)
    )
    c = costs.preset_cost(
        _preset(tmp_path / "c.yaml", g=2), teacher_epochs=2, tflops=(4.0,)
    )
    assert b["tflop_per_iter"] == pytest.approx(2 * a["tflop_per_iter"])
    # a generator step is more work than a student step
    assert c["tflop_per_iter"] > 1.3 * a["tflop_per_iter"]
    with FlopCounterMode(display=False) as counter:
        create_model("wrn16_1", 10, 3, 32).eval()(torch.zeros(1, 3, 32, 32))
    assert a["teacher_pflop"] == pytest.approx(
        3 * counter.get_total_flops() * 50000 * 2 / 1e15
    )
    assert b["teacher_pflop"] == pytest.approx(2 * a["teacher_pflop"])
    assert a["hours"][4.0]["distill"] == pytest.approx(
        a["distill_pflop"] * 1e15 / 4e12 / 3600
    )
    assert a["distill_pflop"] == pytest.approx(a["tflop_per_iter"] * 2 / 1000)


def test_preset_file_names_the_known_presets():
    assert (
        costs.preset_file("c10_wrn40_2_wrn16_2_fast").name
        == "c10_wrn40_2_wrn16_2_fast.yaml"
    )
    with pytest.raises(
        CpscError, match="not the name of a shipped preset.*c10_resnet34_resnet18"
    ):
        costs.preset_file("c10_nope")
    with pytest.raises(CpscError, match="does not exist"):
        costs.preset_file("/nowhere/x.yaml")


def test_preset_run_end_to_end_then_resumes_without_retraining(
    tmp_path, monkeypatch, cache, capsys
):
    write_cifar10(tmp_path / "data", n=16)
    patch_cifar_md5(monkeypatch, tvd.CIFAR10, tmp_path / "data" / "cifar-10-batches-py")
    preset, out = _preset(tmp_path / "p.yaml"), tmp_path / "run"
    result = bc.preset_run(
        preset,
        teacher_epochs=1,
        data_root=str(tmp_path / "data"),
        out=str(out),
        progress=False,
        timing_iters=1,
    )
    printed = capsys.readouterr().out
    assert (
        "training the teacher: wrn16_1, 1 epochs" in printed and "measured" in printed
    )
    assert (
        result["complete"]
        and result["iters"] == 2
        and result["folder"] == str(out / "student")
    )
    for name in (
        "teacher/teacher.pt",
        "student/student.pt",
        "student/samples.png",
        "student/log.jsonl",
    ):
        assert (out / name).is_file(), name
    teacher_mtime = (out / "teacher" / "teacher.pt").stat().st_mtime_ns
    again = bc.preset_run(
        preset,
        teacher_epochs=1,
        data_root=str(tmp_path / "data"),
        out=str(out),
        progress=False,
        timing_iters=1,
    )
    printed = capsys.readouterr().out
    assert "training the teacher" not in printed and "measured" not in printed
    assert (out / "teacher" / "teacher.pt").stat().st_mtime_ns == teacher_mtime
    assert again["student_acc"] == result["student_acc"]
    sessions = json.loads((out / "student" / "metrics.json").read_text())["sessions"]
    assert [(s["from_iter"], s["to_iter"]) for s in sessions] == [(0, 2), (2, 2)]
    assert all("bc.preset_run(" in s["command"] for s in sessions)


def test_preset_cost_table_adds_the_teacher_to_the_hours(tmp_path):
    pytest.importorskip("pandas")  # the book's extra
    rate = 1e-6  # TFLOP/s: slow enough that the tiny preset's hours are large numbers
    rows, table = costs.preset_cost_table(
        [(_preset(tmp_path / "a.yaml"), 3)], tflops=(rate,)
    )
    [c] = rows
    teacher, distill = c["hours"][rate]["teacher"], c["hours"][rate]["distill"]
    assert teacher > 1 and distill > 1
    html = table.to_html()
    assert "hours at 1e-06 TFLOP/s" in html and f"{teacher + distill:.1f}" in html


def test_demo_with_a_preset_runs_end_to_end_and_a_second_call_continues(
    tmp_path, monkeypatch, capsys
):
    """`cpsc-lite demo --preset` (what a Colab user types): teacher, timing, distillation into
    --out/teacher and --out/student; the same command again trains nothing more."""
    from cpsc_lite.cli import main

    write_cifar10(tmp_path / "data", n=16)
    patch_cifar_md5(monkeypatch, tvd.CIFAR10, tmp_path / "data" / "cifar-10-batches-py")
    preset = _preset(tmp_path / "p.yaml").replace(".yaml", ".yaml")
    with open(preset, "a") as f:
        f.write("teacher_epochs: 1\n")
    argv = ["demo", "--preset", preset, "--out", str(tmp_path / "run")]
    argv += ["--data-root", str(tmp_path / "data"), "--no-progress", "--device", "cpu"]
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert "training the teacher: wrn16_1, 1 epochs" in first and "measured" in first
    metrics = json.loads((tmp_path / "run" / "student" / "metrics.json").read_text())
    assert metrics["complete"] and metrics["iters"] == 2
    teacher = tmp_path / "run" / "teacher" / "teacher.pt"
    stamp = teacher.stat().st_mtime_ns
    assert main(argv) == 0
    again = capsys.readouterr().out
    assert "training the teacher" not in again and teacher.stat().st_mtime_ns == stamp
