"""Command line: ``cpsc-lite demo | teacher | distill | sample | evaluate | bench | record | presets | models |
datasets``.

Every user-facing problem is a :class:`~cpsc_lite.CpscError`: printed as one
paragraph naming the problem and the fix, exit status 2, no traceback.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import textwrap
import time

from . import CpscError, __version__


#: ``cpsc-lite demo``'s distillation iterations: 1000 met the rule in
#: data/bench/tuning/demo_iters/RULE.md (validation accuracy 98.72 % against 98.52 % at 600 on seeds
#: 100-103; the demo in 101 s on two cores). ``distill`` and ``bench`` keep the config's 600.
DEMO_ITERS = 1000


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


def _run_parent() -> argparse.ArgumentParser:
    """Where it runs and how it reports: --device, --no-progress."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "--device", default=None, help="auto (default), cpu, cuda, cuda:1, mps"
    )
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
        help="mixed precision: auto (default) = bf16 on CUDA GPUs that support it, else fp16 with "
        "gradient scaling; off on CPU and MPS. Losses are computed in float32 either way",
    )
    p.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="NHWC memory layout for the networks and generated images (default: on, except on "
        "Apple's MPS; --no-channels-last for the plain layout)",
    )
    return p


#: DistillConfig fields that have a flag of their own (``--batch-size`` for ``batch_size``); their types
#: come from the dataclass. Every other field is set with ``--set KEY=VALUE``.
CONFIG_FLAGS = {
    "student": "student model name (default: cnn_small, or the --config file's student)",
    "iters": "training iterations (default from the config)",
    "batch_size": None,
    "g_steps": "generator updates per iteration",
    "s_steps": "student updates per iteration",
    "lr_student": None,
    "lr_generator": None,
}


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


def _acceleration(args):
    from .engine import Acceleration

    return Acceleration(
        amp=args.amp,
        compile=getattr(args, "compile", None),
        channels_last=args.channels_last,
        sync_bn=getattr(args, "sync_bn", False),
    )


def build_parser() -> argparse.ArgumentParser:
    from .methods import METHOD_HELP

    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="cpsc-lite",
        formatter_class=fmt,
        description="CPSC-DFKD: data-free knowledge distillation with a conditional generator, "
        "pseudo-supervision and teacher/student contrast.",
        epilog=_models_epilog() + "\n\n" + _datasets_epilog(),
    )
    parser.add_argument(
        "--version", action="version", version=f"cpsc-lite {__version__}"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "demo",
        formatter_class=fmt,
        help="teacher on digits + data-free student + figures, in one go",
        parents=[_folder_parent("demo"), _run_parent()],
        description="Train a teacher on the built-in digits, distil a student data-free with "
        "CPSC-DFKD, and write teacher.pt, student.pt, generator.pt, metrics.json, "
        "log.jsonl, samples.png and curves.png into --out.",
    )
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--iters",
        type=int,
        default=DEMO_ITERS,
        help="distillation iterations (the demo's own default, above the config's 600: chosen on "
        "validation seeds, data/bench/tuning/demo_iters/)",
    )
    p.add_argument("--teacher-epochs", type=int, default=30)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "teacher",
        formatter_class=fmt,
        help="train a teacher (the only step that reads training data)",
        parents=[
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
    p.add_argument("--out", required=True)
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
    p.add_argument("--seed", type=int, default=0)
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
    p.set_defaults(func=cmd_teacher)

    p = sub.add_parser(
        "distill",
        formatter_class=fmt,
        help="data-free distillation from a teacher checkpoint",
        parents=[
            _data_parent(None, "the --config file's dataset, else digits"),
            _config_parent(),
            _distill_parent(),
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
    p.add_argument(
        "--teacher-model",
        default=None,
        metavar="NAME",
        help="architecture of a community teacher file (e.g. resnet34, wrn40_2), built for --dataset",
    )
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=None)
    p.set_defaults(func=cmd_distill)

    p = sub.add_parser(
        "sample",
        help="class-wise synthetic images from a generator: a grid (.png) or a "
        "transfer set (.npz)",
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
        "--out",
        required=True,
        help="output file: samples.png (grid) or samples.npz (arrays)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--truncation",
        type=float,
        default=1.0,
        metavar="PSI",
        help="scale the noise by PSI in [0, 1] (the truncation trick): 1 draws what the student "
        "was trained on; smaller values give more typical, less varied samples of each class",
    )
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser(
        "evaluate",
        help="test accuracy of a teacher.pt or student.pt (or a community teacher)",
        parents=[_data_parent(None, "the checkpoint's own dataset")],
    )
    p.add_argument("checkpoint")
    p.add_argument(
        "--teacher-model",
        default=None,
        metavar="NAME",
        help="architecture of a community teacher .pth (needs --dataset)",
    )
    p.add_argument(
        "--device", default=None, help="auto (default), cpu, cuda, cuda:1, mps"
    )
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "bench",
        formatter_class=fmt,
        help="run several methods x seeds with one budget, or --profile",
        parents=[
            _data_parent(),
            _config_parent(("student", "iters", "batch_size")),
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
    p.add_argument("--out", required=True)
    p.add_argument(
        "--teacher",
        default=None,
        help="teacher.pt (default: train one into --out, or reuse it)",
    )
    p.add_argument(
        "--teacher-model",
        default=None,
        help="teacher model to train, or to profile untrained",
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
        help="with --merge: replace a table already in --out",
    )
    p.add_argument(
        "--append",
        action="store_true",
        help="add these methods to --out's existing results.json (same budget) instead of replacing it",
    )
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser(
        "record",
        formatter_class=fmt,
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
    p.set_defaults(func=cmd_record)

    sub.add_parser(
        "presets", help="list the shipped presets (for distill --config NAME)"
    ).set_defaults(func=lambda args: _print(_presets_text()))
    sub.add_parser("models", help="list the registered models").set_defaults(
        func=lambda args: _print(_models_epilog())
    )
    sub.add_parser("datasets", help="list the registered datasets").set_defaults(
        func=lambda args: _print(_datasets_epilog())
    )
    return parser


def _print(text: str) -> int:
    print(text)
    return 0


def _overrides(args) -> dict:
    """DistillConfig settings from the command line: --set KEY=VALUE, then the fields' own flags."""
    from .config import parse_value

    out = {}
    for item in args.set:
        if "=" not in item or not item.split("=", 1)[0].strip():
            raise CpscError(
                f"--set needs KEY=VALUE, got {item!r} (for example --set use_scl=false)."
            )
        key, value = item.split("=", 1)
        out[key.strip().replace("-", "_")] = parse_value(value)
    for name in (*CONFIG_FLAGS, "seed", "device"):
        value = getattr(args, name, None)
        if value is not None:
            out[name] = value
    return out


def _summary(metrics: dict, out: str) -> str:
    samples = ""
    if metrics.get("teacher_agreement") is not None:
        samples = (
            f" | class-wise samples: teacher agrees {metrics['teacher_agreement']:.0%}"
        )
        if metrics.get("pixel_recognition") is not None:
            samples += f", pixel judge {metrics['pixel_recognition']:.0%}"
    return (
        f"teacher test accuracy {metrics['teacher_acc']:.4f} | student test accuracy "
        f"{metrics['student_acc']:.4f} (best {metrics.get('best_student_acc') or metrics['student_acc']:.4f})"
        f"{samples} | {metrics['iters']} iterations in {metrics['seconds']:.0f} s | results in {out}"
    )


def _command(args) -> str:
    """The command as typed (recorded in metrics.json and benchmark results)."""
    return "cpsc-lite " + shlex.join(args.argv)


def cmd_teacher(args) -> int:
    from .data import load_dataset
    from .teacher import run_teacher, teacher_recipe

    path = os.path.join(args.out, "teacher.pt")
    for flag, value in (
        ("--eval-every", args.eval_every),
        ("--ckpt-every", args.ckpt_every),
    ):
        if value < 1:
            raise CpscError(f"{flag} must be at least 1 (epochs), not {value}.")
    bundle = load_dataset(args.dataset, args.data_root, args.download)
    cfg = teacher_recipe(
        bundle.name,
        model=args.model,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        device=args.device or "auto",
        shifts=args.shifts,
    )
    print(bundle.describe())
    print(
        f"recipe: {cfg.model}, {cfg.epochs} epochs, batch {cfg.batch_size}, SGD lr {cfg.lr} momentum "
        f"{cfg.momentum} weight decay {cfg.weight_decay}, cosine schedule, "
        + ("random shifts" if cfg.shifts and bundle.augment_pad else "no random shifts")
        + (", horizontal flips" if bundle.augment_flip else "")
    )
    metrics = run_teacher(
        bundle,
        cfg,
        args.out,
        progress=not args.no_progress,
        resume=args.resume,
        overwrite=args.overwrite,
        eval_every=args.eval_every,
        ckpt_every=args.ckpt_every,
        accel=_acceleration(args),
    )
    print(
        f"teacher {cfg.model}: test accuracy {metrics['test_acc']:.4f} ({metrics['seconds']:.0f} s); "
        f"wrote {path}"
    )
    return 0


def cmd_distill(args) -> int:
    from .config import load_preset
    from .data import load_dataset
    from .methods import make_config
    from .runner import run_distill
    from .distributed import init_distributed

    base, run = load_preset(args.config) if args.config else ({}, {})
    cfg = make_config(args.method, base, **_overrides(args))
    # command line, then the preset, then digits
    dataset = args.dataset or run.get("dataset") or "digits"
    teacher_model = args.teacher_model or run.get("teacher_model")
    accel = _acceleration(args)
    ctx = init_distributed(cfg.device, required=args.distributed)
    try:
        if not ctx.is_main:
            ctx.barrier()  # rank 0 reads (and with --download fetches) the dataset first
        bundle = load_dataset(dataset, args.data_root, args.download)
        if ctx.is_main:
            ctx.barrier()
        metrics = run_distill(
            args.teacher,
            bundle,
            cfg,
            args.out,
            resume=args.resume,
            overwrite=args.overwrite,
            stop_after=args.stop_after,
            progress=not args.no_progress,
            teacher_model=teacher_model,
            accel=accel,
            dist=ctx,
            command=_command(args),
        )
    finally:
        ctx.close()
    if ctx.is_main:
        print(_summary(metrics, args.out))
        if not metrics["complete"]:
            print(
                f"stopped at iteration {metrics['iters']} of {cfg.budget.iters}; continue with the same command plus "
                "--resume"
            )
    return 0


def cmd_demo(args) -> int:
    from .data import load_dataset
    from .methods import make_config
    from .teacher import run_teacher, teacher_recipe
    from .runner import run_distill
    from . import checkpoint

    start = time.time()
    # The demo's teacher.pt marks the folder as a demo: --resume reuses it, --overwrite redoes everything.
    checkpoint.prepare_output_dir(
        args.out,
        state_file="teacher.pt",
        owner="distillation",
        what="a demo",
        resume=args.resume,
        overwrite=args.overwrite,
        say=lambda *_: None,
    )
    bundle = load_dataset("digits")
    teacher_path = os.path.join(args.out, "teacher.pt")
    print(f"[1/2] teacher: {bundle.describe()}")
    if args.resume and os.path.exists(teacher_path):
        print(f"      reusing {teacher_path}")
    else:
        tcfg = teacher_recipe(
            "digits",
            epochs=args.teacher_epochs,
            seed=args.seed,
            device=args.device or "auto",
        )
        tm = run_teacher(
            bundle,
            tcfg,
            args.out,
            progress=not args.no_progress,
            metrics_name="teacher_metrics.json",
            overwrite=args.overwrite,
        )
        print(
            f"      {tcfg.model} test accuracy {tm['test_acc']:.4f} in {tm['seconds']:.0f} s"
        )
    overrides = dict(seed=args.seed, iters=args.iters, device=args.device)
    cfg = make_config("cpsc", **overrides)
    print(
        f"[2/2] data-free distillation ({cfg.method}, {cfg.budget.iters} iterations); the digits are used only to test"
    )
    metrics = run_distill(
        teacher_path,
        bundle,
        cfg,
        args.out,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        command=_command(args),
    )
    print(_summary(metrics, args.out))
    print(
        f"total {time.time() - start:.0f} s; figures: {os.path.join(args.out, 'samples.png')}, "
        f"{os.path.join(args.out, 'curves.png')}"
    )
    return 0


def cmd_bench(args) -> int:
    from .bench import run_bench, run_profile
    from .methods import METHODS, make_config
    from .engine import Acceleration

    overrides = _overrides(args)
    overrides.pop("seed", None)
    command = _command(args)
    if args.merge:
        from .bench import merge_results, results_markdown

        print(
            results_markdown(
                merge_results(args.merge, args.out, command, args.overwrite)
            )
        )
        return 0
    if args.profile:
        run_profile(
            args.out,
            dataset=args.dataset,
            teacher_path=args.teacher,
            teacher_model=args.teacher_model,
            student=args.student,
            img_size=args.img_size,
            num_classes=args.num_classes,
            channels=3 if args.teacher_model and not args.teacher else 1,
            overrides=overrides,
            command=command,
        )
        return 0
    methods = (
        list(METHODS)
        if args.methods == "all"
        else [m.strip() for m in args.methods.split(",") if m.strip()]
    )
    if not methods:
        raise CpscError(
            f"--methods {args.methods!r} names no method. Give a comma-separated list such as "
            "cpsc,deepinv, or all."
        )
    iters = overrides.pop("iters", None)
    if args.seconds is not None and iters is not None:
        raise CpscError(
            "Give either --iters (the same iterations for every method) or --seconds (the same wall "
            "time), not both."
        )
    if args.seconds is None:
        iters = make_default_iters() if iters is None else iters
    if args.seeds < 1:
        raise CpscError(f"--seeds must be at least 1, not {args.seeds}.")
    if args.workers < 1:
        raise CpscError(f"--workers must be at least 1, not {args.workers}.")
    if args.first_seed < 0:
        raise CpscError(f"--first-seed must be 0 or more, not {args.first_seed}.")
    for method in methods:  # every setting is checked before the first run starts
        make_config(method, iters=1 if iters is None else iters, **overrides)
    results = run_bench(
        args.dataset,
        methods,
        args.seeds,
        iters,
        args.out,
        teacher_path=args.teacher,
        teacher_model=args.teacher_model or "cnn_base",
        teacher_epochs=args.teacher_epochs,
        overrides=overrides,
        data_root=args.data_root,
        download=args.download,
        progress=not args.no_progress,
        command=command,
        append=args.append,
        seconds=args.seconds,
        first_seed=args.first_seed,
        workers=args.workers,
        accel=Acceleration(amp=args.amp, channels_last=args.channels_last),
    )
    from .bench import results_markdown

    print(results_markdown(results))
    return 0


def make_default_iters() -> int:
    from .config import DistillConfig

    return DistillConfig().budget.iters


def cmd_sample(args) -> int:
    import torch
    from . import checkpoint
    from .generator import generate_per_class, load_generator
    from .viz import plot_samples

    if args.per_class < 1:
        raise CpscError("--per-class must be at least 1.")
    if not 0.0 <= args.truncation <= 1.0:
        raise CpscError(
            f"--truncation {args.truncation:g} is outside [0, 1]: 1 draws the noise the generator "
            "was trained on, smaller values scale it towards its mean (0: one image per class)."
        )
    ext = os.path.splitext(args.out)[1].lower()
    if not os.path.basename(args.out) or ext not in (
        ".png",
        ".npz",
        ".svg",
        ".pdf",
        ".jpg",
    ):
        raise CpscError(
            f"--out {args.out!r} must be a file name ending in .png (a grid of images) or .npz (the "
            "images and their labels as arrays)."
        )
    if os.path.isdir(args.out):
        raise CpscError(
            f"--out {args.out} is a folder; give a file name such as "
            f"{os.path.join(args.out, 'samples.png')}."
        )
    checkpoint.check_output_dir(
        os.path.dirname(os.path.abspath(args.out)), flag="the folder of --out"
    )
    gen, meta = load_generator(args.generator)
    if not all(k in meta for k in ("mean", "std", "class_names")):
        raise CpscError(
            f"{args.generator} does not record the normalisation and class names of its data, so its "
            "images cannot be shown. Use the generator.pt a `cpsc-lite distill` run wrote."
        )
    images, labels = generate_per_class(
        gen,
        args.per_class,
        torch.device("cpu"),
        seed=args.seed,
        truncation=args.truncation,
    )
    if ext == ".npz":
        from .data import save_transfer_set

        save_transfer_set(
            args.out, images, labels, meta["mean"], meta["std"], meta["class_names"]
        )
        print(
            f"wrote {args.out}: x_test {args.per_class * gen.num_classes} images, y_test their conditioning "
            f"labels (read it with --dataset npz:{args.out})"
        )
        return 0
    plot_samples(
        images,
        labels,
        meta["class_names"],
        meta["mean"],
        meta["std"],
        title=f"{meta.get('method', '')} generator, iteration {meta.get('iteration', '?')}"
        + (
            f", noise truncated to psi={args.truncation:g}"
            if args.truncation < 1
            else ""
        ),
        path=args.out,
    )
    print(f"wrote {args.out} ({args.per_class} samples x {gen.num_classes} classes)")
    return 0


def cmd_evaluate(args) -> int:
    from . import checkpoint
    from .data import load_dataset, with_normalization
    from .teacher import check_compatible, load_classifier, load_teacher
    from .engine import pick_device
    from .utils import evaluate

    device = pick_device(args.device or "auto")
    if args.teacher_model:
        obj = checkpoint.read_weights_file(args.checkpoint)
        # a community teacher
        if not (isinstance(obj, dict) and obj.get("format") == checkpoint.FORMAT):
            if not args.dataset:
                raise CpscError(
                    f"Evaluating the community teacher {args.checkpoint} needs --dataset (e.g. "
                    "--dataset cifar10): its classes, image size and normalisation come from it."
                )
            bundle = load_dataset(args.dataset, args.data_root, args.download)
            model, meta = load_teacher(
                args.checkpoint, bundle, args.teacher_model, device
            )
            acc = evaluate(model, bundle.test, device)
            print(
                f"teacher {meta['model']} (community file) on {bundle.name} test split ({len(bundle.test)} "
                f"images): accuracy {acc:.4f}"
            )
            return 0
    kind = checkpoint.load(args.checkpoint, what="checkpoint").get("kind")
    if kind not in ("teacher", "student"):
        raise CpscError(
            f"{args.checkpoint} is a {kind!r} checkpoint; evaluate takes a teacher.pt or student.pt."
        )
    model, meta = load_classifier(args.checkpoint, kind, device)
    bundle = load_dataset(
        args.dataset or meta.get("dataset") or "digits", args.data_root, args.download
    )
    check_compatible(meta, bundle, args.checkpoint)
    acc = evaluate(
        model, with_normalization(bundle.test, meta["mean"], meta["std"]), device
    )
    print(
        f"{kind} {meta['model']} on {bundle.name} test split ({len(bundle.test)} images): accuracy {acc:.4f}"
    )
    return 0


def cmd_record(args) -> int:
    import json
    from .results import record_run, run_markdown

    dest = record_run(
        args.run_dir,
        args.name,
        into=args.into,
        overwrite=args.overwrite,
        partial=args.partial,
    )
    print(run_markdown(json.loads((dest / "run.json").read_text())))
    print(f"wrote {dest}")
    return 0


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that Python's final flush into a closed pipe stays quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass  # not a real file (e.g. captured in tests): nothing to flush into a pipe


def main(argv=None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv  # the exact command, recorded in benchmark results
    if args.command is None:
        parser.print_help()
        return 0
    from . import Terminated
    from .checkpoint import stop_on_sigterm

    try:
        with stop_on_sigterm():
            return args.func(args)
    except Terminated as exc:
        print(
            "stopped: "
            + textwrap.fill(
                str(exc),
                width=100,
                subsequent_indent="         ",
                break_on_hyphens=False,
                break_long_words=False,
            ),
            file=sys.stderr,
        )
        return 143
    except CpscError as exc:
        print(
            "error: "
            + textwrap.fill(
                str(exc),
                width=100,
                subsequent_indent="       ",
                break_on_hyphens=False,
                break_long_words=False,
            ),
            file=sys.stderr,
        )
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
            "\ninterrupted. The last checkpoint is kept; rerun the same command with --resume to continue.",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
