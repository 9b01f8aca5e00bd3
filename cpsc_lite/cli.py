"""Command line: ``cpsc-lite demo | teacher | distill | sample | evaluate | bench | record | presets | models |
datasets``.

Every user-facing problem is a :class:`~cpsc_lite.CpscError`: printed as one
paragraph naming the problem and the fix, exit status 2, no traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap

from . import CpscError, __version__, commands
from .commands import CONFIG_FLAGS, DEMO_ITERS


def _models_epilog() -> str:
    from .models import available_models

    lines = ["models (--model / --student):"]
    lines += [f"  {name:<12} {desc}" for name, desc in available_models().items()]
    return "\n".join(lines)


def _datasets_epilog() -> str:
    from .data import available_datasets

    lines = ["datasets (--dataset):"]
    lines += [f"  {name:<14} {desc}" for name, desc in available_datasets().items()]
    return "\n".join(lines)


def _presets_text() -> str:
    from .config import available_presets, presets_dir

    presets = available_presets()
    if not presets:
        return "no presets found in this installation (they ship in cpsc_lite/presets, or configs/ in a checkout)"
    lines = [
        f"presets in {presets_dir()} (use: cpsc-lite distill --config NAME --teacher FILE --out DIR):"
    ]
    width = max(map(len, presets)) + 2
    for name, path in presets.items():
        first = path.read_text().splitlines()[0].lstrip("# ").strip()
        lines.append(f"  {name:<{width}}{first}")
    return "\n".join(lines)


# ------------------------------------------------------------------ parent parsers
# Each is built fresh per subcommand (argparse shares a parent's actions, so one object reused with
# different defaults would leak one command's default into another).
def _data_parent(
    default: str | None = "digits", default_help: str | None = None
) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "--dataset",
        default=default,
        help="registered name, npz:PATH or folder:PATH (default: "
        + (default_help or "%(default)s")
        + ")",
    )
    p.add_argument(
        "--data-root",
        default=None,
        help="where downloadable datasets live "
        "(default: $CPSC_LITE_DATA or ~/.cache/cpsc_lite/data)",
    )
    p.add_argument(
        "--download",
        action="store_true",
        help="allow downloading a torchvision dataset",
    )
    return p


def _device_parent() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "--device", default=None, help="auto (default), cpu, cuda, cuda:1, mps"
    )
    return p


def _run_parent() -> argparse.ArgumentParser:
    """Where it runs and how it reports: --device, --no-progress."""
    p = argparse.ArgumentParser(add_help=False, parents=[_device_parent()])
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


def _folder_parent(what: str) -> argparse.ArgumentParser:
    """The output-folder policy every writing command shares: nothing is replaced without --overwrite."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "--resume",
        action="store_true",
        help=f"continue the interrupted {what} in --out",
    )
    p.add_argument(
        "--overwrite", action="store_true", help=f"replace a previous {what} in --out"
    )
    return p


def _speed_parent() -> argparse.ArgumentParser:
    from .engine import AMP_CHOICES

    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "--amp",
        default="auto",
        choices=AMP_CHOICES,
        help="mixed precision: auto (default) = bf16 where the device computes it natively (a GPU "
        "of compute capability 8.0+, a CPU with AVX512-BF16 or AMX), fp16 with gradient scaling "
        "on older GPUs, float32 on other CPUs and MPS; off = float32 everywhere. Losses are "
        "computed in float32 either way",
    )
    p.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="NHWC memory layout for the networks and generated images (default: on, except on "
        "Apple's MPS; --no-channels-last for the plain layout)",
    )
    return p


def _config_parent(names=tuple(CONFIG_FLAGS)) -> argparse.ArgumentParser:
    import dataclasses
    from .config import ALIASES, PATHS, SECTIONS, DistillConfig

    def field_type(name):
        section, field = PATHS[ALIASES.get(name, name)]
        kind = SECTIONS[section] if section else DistillConfig
        return {f.name: f.type for f in dataclasses.fields(kind)}[field]

    parse = {"int": int, "float": float, "str": str}
    p = argparse.ArgumentParser(add_help=False)
    for name in names:
        kind = field_type(name)
        kind = kind if isinstance(kind, str) else kind.__name__
        p.add_argument(
            "--" + name.replace("_", "-"),
            type=parse[kind],
            default=None,
            help=CONFIG_FLAGS[name],
        )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config setting, e.g. --set gamma=0 --set cmi.weight=0.5 "
        "(cpsc_lite/config.py lists them)",
    )
    return p


def _distill_parent() -> argparse.ArgumentParser:
    """What only `distill` has: method, preset file, stop-after, and the multi-GPU switches."""
    from .methods import METHODS

    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "--method",
        default="cpsc",
        choices=sorted(METHODS),
        help="distillation method (default: cpsc)",
    )
    p.add_argument(
        "--config",
        default=None,
        metavar="FILE|PRESET",
        help="YAML file of DistillConfig settings, or a shipped preset's name (`cpsc-lite presets`)",
    )
    p.add_argument(
        "--stop-after",
        type=int,
        default=None,
        metavar="N",
        help="run at most N iterations now, checkpoint, and exit (continue later with --resume)",
    )
    p.add_argument(
        "--compile",
        nargs="?",
        const="default",
        default=None,
        metavar="MODE",
        help="torch.compile the teacher, student and generator forward passes (MODE: default, "
        "reduce-overhead, max-autotune; compiling takes a few minutes at first)",
    )
    p.add_argument(
        "--sync-bn",
        action="store_true",
        help="with several CUDA processes: SyncBatchNorm in generator and student (global batch stats)",
    )
    p.add_argument(
        "--distributed",
        action="store_true",
        help="data-parallel over processes started by torchrun or srun (torchrun turns it on by "
        "itself); --batch-size stays the global batch",
    )
    return p


def _out_parent(help_text: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--out", required=True, metavar="PATH", help=help_text)
    return p


def _seed_parent(default: int | None = 0) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    shown = "the config's, 0" if default is None else default
    p.add_argument(
        "--seed", type=int, default=default, help=f"random seed (default: {shown})"
    )
    return p


def _teacher_model_parent(help_text: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--teacher-model", default=None, metavar="NAME", help=help_text)
    return p


COMMUNITY_TEACHER = (
    "architecture of a community teacher .pth (a bare state dict), built for --dataset"
)
FMT = argparse.RawDescriptionHelpFormatter


def add_demo(sub) -> None:
    p = sub.add_parser(
        "demo",
        formatter_class=FMT,
        help="teacher on digits + data-free student + figures, in one go",
        parents=[
            _out_parent("the run's folder"),
            _seed_parent(),
            _folder_parent("demo"),
            _run_parent(),
        ],
        description="Train a teacher on the built-in digits, distil a student data-free with "
        "CPSC-DFKD, and write teacher.pt, student.pt, generator.pt, metrics.json, "
        "log.jsonl, samples.png and curves.png into --out. With --preset, the same for a "
        "shipped preset (e.g. c10_colab: CIFAR-10 on one Colab GPU in about 20 minutes) into "
        "--out/teacher and --out/student; rerunning it continues from the last checkpoints.",
    )
    p.add_argument(
        "--preset",
        default=None,
        metavar="NAME",
        help="a shipped preset (`cpsc-lite presets`) or a YAML file, instead of the digits",
    )
    p.add_argument(
        "--iters",
        type=int,
        default=None,
        help=f"distillation iterations (digits: {DEMO_ITERS}, the demo's own default, chosen "
        "on validation seeds as the book's appendix says; a preset: its own)",
    )
    p.add_argument(
        "--teacher-epochs",
        type=int,
        default=None,
        help="teacher epochs (digits: 30; a preset: its own)",
    )
    p.add_argument(
        "--data-root",
        default=None,
        help="with --preset: where its data set lives (default: $CPSC_LITE_DATA or "
        "~/.cache/cpsc_lite/data)",
    )
    p.add_argument(
        "--download", action="store_true", help="with --preset: allow downloading it"
    )
    p.set_defaults(func=commands.cmd_demo)


def add_teacher(sub) -> None:
    p = sub.add_parser(
        "teacher",
        formatter_class=FMT,
        help="train a teacher (the only step that reads training data)",
        parents=[
            _out_parent("folder for teacher.pt and metrics.json"),
            _seed_parent(),
            _data_parent(),
            _folder_parent("teacher training"),
            _run_parent(),
            _speed_parent(),
        ],
        epilog=_models_epilog(),
    )
    p.add_argument(
        "--model",
        default=None,
        help="teacher model name (default: the dataset's recipe: resnet34 for "
        "CIFAR/SVHN, resnet34_64 for Tiny-ImageNet, else cnn_base)",
    )
    p.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="default: the dataset's recipe (200 for CIFAR and Tiny-ImageNet, 50 for SVHN, else 30)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="default: 128 for CIFAR/SVHN/Tiny-ImageNet, else 64",
    )
    p.add_argument(
        "--lr",
        type=float,
        default=None,
        help="default: 0.1 for CIFAR/SVHN/Tiny-ImageNet, else 0.05",
    )
    p.add_argument(
        "--shifts",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="random shifts of the training images (default: the dataset's recipe: off for the "
        "digits and shapes, on elsewhere)",
    )
    p.add_argument(
        "--eval-every",
        type=int,
        default=5,
        metavar="N",
        help="test accuracy every N epochs",
    )
    p.add_argument(
        "--ckpt-every",
        type=int,
        default=5,
        metavar="N",
        help="write teacher_state.pt (for --resume) every N epochs",
    )
    p.set_defaults(func=commands.cmd_teacher)


def add_distill(sub) -> None:
    p = sub.add_parser(
        "distill",
        formatter_class=FMT,
        help="data-free distillation from a teacher checkpoint",
        parents=[
            _out_parent("the run's folder"),
            _seed_parent(None),
            _data_parent(None, "the --config file's dataset, else digits"),
            _config_parent(),
            _distill_parent(),
            _teacher_model_parent(COMMUNITY_TEACHER + " (e.g. resnet34, wrn40_2)"),
            _folder_parent("run"),
            _run_parent(),
            _speed_parent(),
        ],
        description="Distil a teacher into a student without training data. The dataset is read "
        "only to evaluate (its test split).",
        epilog=_models_epilog(),
    )
    p.add_argument(
        "--teacher",
        required=True,
        help="teacher.pt written by `cpsc-lite teacher`, or a community "
        ".pth state dict with --teacher-model",
    )
    p.set_defaults(func=commands.cmd_distill)


def add_sample(sub) -> None:
    p = sub.add_parser(
        "sample",
        help="class-wise synthetic images from a generator: a grid (.png) or a "
        "transfer set (.npz)",
        parents=[
            _out_parent("output file: samples.png (grid) or samples.npz (arrays)"),
            _seed_parent(),
        ],
        description="Draw --per-class images of every class from a generator. FILE.png writes a "
        "grid, one row per class; FILE.npz writes the images as x_test (uint8, in the "
        "pixel range of the teacher's data) with their conditioning labels as y_test, "
        "readable as --dataset npz:FILE (e.g. `cpsc-lite evaluate teacher.pt --dataset "
        "npz:FILE` gives the teacher's agreement with the labels).",
    )
    p.add_argument(
        "--generator", required=True, help="generator.pt written by `cpsc-lite distill`"
    )
    p.add_argument("--per-class", type=int, default=8)
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace --out if it exists (only a file sample could have written: never a run's "
        "own files or a data set with a training split)",
    )
    p.add_argument(
        "--truncation",
        type=float,
        default=1.0,
        metavar="PSI",
        help="scale the noise by PSI in [0, 1] (the truncation trick): 1 draws what the student "
        "was trained on; smaller values give more typical, less varied samples of each class",
    )
    p.set_defaults(func=commands.cmd_sample)


def add_evaluate(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="test accuracy of a teacher.pt or student.pt (or a community teacher)",
        parents=[
            _data_parent(None, "the checkpoint's own dataset"),
            _teacher_model_parent(COMMUNITY_TEACHER + " (needs --dataset)"),
            _device_parent(),
        ],
    )
    p.add_argument("checkpoint")
    p.set_defaults(func=commands.cmd_evaluate)


def add_bench(sub) -> None:
    from .methods import METHOD_HELP

    p = sub.add_parser(
        "bench",
        formatter_class=FMT,
        help="run several methods x seeds with one budget, or --profile",
        parents=[
            _out_parent("folder for results.json and results.md (or profile.json)"),
            _data_parent(),
            _config_parent(("student", "iters", "batch_size")),
            _teacher_model_parent("teacher model to train, or to profile untrained"),
            _run_parent(),
            _speed_parent(),
        ],
        description="Benchmark: every method with the same budget (iterations, generator and "
        "student steps, batch size) over several seeds; writes results.json and "
        "results.md. With --profile: time one CPSC iteration against its floor and "
        "write profile.json.",
        epilog="methods:\n"
        + "\n".join(f"  {k:<13} {v}" for k, v in METHOD_HELP.items()),
    )
    p.add_argument(
        "--methods",
        default="cpsc,dfad,dafl,deepinv,cmi,bn_ce,noise,data",
        help="comma-separated (default: %(default)s); 'all' adds the ablations",
    )
    p.add_argument(
        "--seeds",
        type=int,
        default=5,
        help="N seeds per method, from --first-seed (default 5: a 95 %% CI needs several)",
    )
    p.add_argument(
        "--first-seed",
        type=int,
        default=0,
        metavar="S",
        help="the first seed (default 0); tuning runs use seeds that no table reports, e.g. 100",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="run the method x seed jobs in N processes (a GPU, or many cores); default 1",
    )
    p.add_argument(
        "--seconds",
        type=float,
        default=None,
        metavar="S",
        help="equal-time budget instead of --iters: each method gets the iterations that take about S "
        "seconds on this machine (timed before its runs; recorded per method)",
    )
    p.add_argument(
        "--equal-flops",
        default=None,
        metavar="METHOD:ITERS",
        help="equal-compute budget instead of --iters: each method gets the iterations whose "
        "floating-point operations equal ITERS iterations of METHOD (e.g. cpsc:300)",
    )
    p.add_argument(
        "--teacher",
        default=None,
        help="teacher.pt (default: train one into --out, or reuse it)",
    )
    p.add_argument("--teacher-epochs", type=int, default=30)
    p.add_argument(
        "--profile", action="store_true", help="time one iteration vs its floor instead"
    )
    p.add_argument(
        "--img-size",
        type=int,
        default=None,
        help="--profile with --teacher-model: image size",
    )
    p.add_argument(
        "--num-classes",
        type=int,
        default=10,
        help="--profile with --teacher-model: classes",
    )
    p.add_argument(
        "--merge",
        nargs="+",
        metavar="DIR",
        default=None,
        help="instead of running: join the tables in these benchmark folders (same budget) into "
        "one in --out (e.g. a benchmark split over several machines)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the table (results.json, results.md; with --profile: profile.json) already "
        "in --out, and an interrupted teacher training there; the teacher.pt there is reused",
    )
    p.add_argument(
        "--append",
        action="store_true",
        help="add these methods to --out's existing results.json (same budget)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="finish an interrupted benchmark in --out: its teacher training continues, and the "
        "methods results.json already holds are kept and not run again",
    )
    p.set_defaults(func=commands.cmd_bench)


def add_record(sub) -> None:
    p = sub.add_parser(
        "record",
        formatter_class=FMT,
        help="copy a finished run into data/results/NAME with its provenance",
        description="Copy a distillation run's metrics.json, log.jsonl, samples.png and curves.png "
        "into INTO/NAME/ and write run.json and RUN.md from them: the exact commands, "
        "GPU model, processes, wall time and package versions of every session. The "
        "book's experiments chapter shows what is in data/results/.",
    )
    p.add_argument("run_dir", help="the --out folder of `cpsc-lite distill`")
    p.add_argument(
        "--name",
        required=True,
        help="folder name under INTO, e.g. c10_resnet34_resnet18_fast",
    )
    p.add_argument(
        "--into",
        default="data/results",
        help="default: %(default)s (run from the repository root)",
    )
    p.add_argument(
        "--partial",
        action="store_true",
        help="record an unfinished run, labelled as partial",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace INTO/NAME if it exists"
    )
    p.set_defaults(func=commands.cmd_record)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cpsc-lite",
        formatter_class=FMT,
        description="CPSC-DFKD: data-free knowledge distillation with a conditional generator, "
        "pseudo-supervision and teacher/student contrast.",
        epilog=_models_epilog() + "\n\n" + _datasets_epilog(),
    )
    parser.add_argument(
        "--version", action="version", version=f"cpsc-lite {__version__}"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in (
        add_demo,
        add_teacher,
        add_distill,
        add_sample,
        add_evaluate,
        add_bench,
        add_record,
    ):
        add(sub)
    listings = (
        (
            "presets",
            "list the shipped presets (for distill --config NAME)",
            _presets_text,
        ),
        ("models", "list the registered models", _models_epilog),
        ("datasets", "list the registered datasets", _datasets_epilog),
    )
    for name, help_text, text in listings:
        sub.add_parser(name, help=help_text).set_defaults(
            func=lambda args, text=text: _print(text())
        )
    return parser


def _print(text: str) -> int:
    print(text)
    return 0


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that Python's final flush into a closed pipe stays quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass  # not a real file (e.g. captured in tests): nothing to flush into a pipe


def _tolerant_console() -> None:
    """Characters the console's encoding lacks (PYTHONIOENCODING=ascii, a C locale) are printed
    escaped instead of stopping the command: console output never costs a run its results."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="backslashreplace")
        except (AttributeError, ValueError, OSError):
            pass  # not a text file we may change (e.g. captured in tests)


def _paragraph(head: str, text: str) -> str:
    return head + textwrap.fill(
        text,
        width=100,
        subsequent_indent=" " * len(head),
        break_on_hyphens=False,
        break_long_words=False,
    )


def main(argv=None) -> int:
    _tolerant_console()
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv  # the exact command, recorded in benchmark results
    if args.command is None:
        parser.print_help()
        return 0
    from . import Terminated
    from .checkpoint import StopNow, stop_on_sigterm

    try:
        with stop_on_sigterm(immediate=True):
            commands.check_common(args)
            return args.func(args)
    except (
        StopNow
    ) as exc:  # SIGTERM outside a loop that saves first: say what is on disk
        text = f"{exc} {commands.interruption_advice(args)}"
        print(_paragraph("stopped: ", text), file=sys.stderr)
        return 143
    except Terminated as exc:
        print(_paragraph("stopped: ", str(exc)), file=sys.stderr)
        return 143
    except CpscError as exc:
        print(_paragraph("error: ", str(exc)), file=sys.stderr)
        return 2
    except BrokenPipeError:
        # whatever read our output went away (e.g. `cpsc-lite models | head`): no traceback
        _silence_stdout()
        print(
            "stopped: the program reading this command's output closed it; files already "
            "written are kept (a distillation resumes with --resume).",
            file=sys.stderr,
        )
        return 141
    except KeyboardInterrupt:
        print(
            "\n" + _paragraph("interrupted. ", commands.interruption_advice(args)),
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
