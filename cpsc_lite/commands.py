"""What each ``cpsc-lite`` command does (:mod:`cpsc_lite.cli` reads the command line and calls
these). Each returns the exit status; a user's problem is a :class:`~cpsc_lite.CpscError`."""

from __future__ import annotations

import os
import shlex
import time

from . import CpscError

#: ``cpsc-lite demo``'s distillation iterations on the digits (``distill`` and ``bench`` keep the
#: config's 600): chosen on validation seeds (the book's appendix).
DEMO_ITERS = 1000

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


#: Seeds every command accepts (numpy's generator takes at most 32 bits).
MAX_SEED = 2**32 - 1


def check_common(args) -> None:
    """What every command checks before any work: ``~`` in paths (a quoted ``--out '~/x'``), the
    device name, seed ranges, and that ``--resume`` and ``--overwrite`` are not both given."""
    from .config import device_problem

    for name in (
        "out",
        "into",
        "run_dir",
        "teacher",
        "generator",
        "checkpoint",
        "data_root",
    ):
        value = getattr(args, name, None)
        if isinstance(value, str):
            setattr(args, name, os.path.expanduser(value))
    if getattr(args, "merge", None):
        args.merge = [os.path.expanduser(d) for d in args.merge]
    device = getattr(args, "device", None)
    if device is not None and device_problem(device):
        raise CpscError(f"--device {device}: {device_problem(device)}.")
    for flag in ("seed", "first_seed"):
        value = getattr(args, flag, None)
        if value is not None and not 0 <= value <= MAX_SEED:
            raise CpscError(
                f"--{flag.replace('_', '-')} {value} is outside 0..{MAX_SEED} (32 bits), the "
                "seeds numpy and PyTorch both accept. Choose a seed in that range."
            )
    if getattr(args, "resume", False) and getattr(args, "overwrite", False):
        raise CpscError(
            "--resume continues the run in --out and --overwrite replaces it: pass one of them."
        )


def _acceleration(args):
    from .engine import Acceleration

    return Acceleration(
        amp=args.amp,
        compile=getattr(args, "compile", None),
        channels_last=args.channels_last,
        sync_bn=getattr(args, "sync_bn", False),
    )


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

    if args.stop_after is not None and args.stop_after < 1:
        raise CpscError(
            f"--stop-after {args.stop_after} would train nothing: give the number of iterations "
            "to run now (at least 1), or leave it out to run to the end."
        )
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
    from .pipelines import teacher_then_distil
    from .teacher import teacher_recipe

    start = time.time()
    if args.preset:
        return _demo_preset(args, start)
    bundle = load_dataset("digits")
    epochs = 30 if args.teacher_epochs is None else args.teacher_epochs
    tcfg = teacher_recipe(
        "digits", epochs=epochs, seed=args.seed, device=args.device or "auto"
    )
    iters = DEMO_ITERS if args.iters is None else args.iters
    cfg = make_config("cpsc", seed=args.seed, iters=iters, device=args.device)
    print(f"[1/2] teacher: {bundle.describe()}")
    metrics = teacher_then_distil(
        bundle,
        tcfg,
        cfg,
        args.out,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        command=_command(args),
        announce=f"[2/2] data-free distillation ({cfg.method}, {cfg.budget.iters} iterations); "
        "the digits are used only to test",
    )
    print(_summary(metrics, args.out))
    print(
        f"total {time.time() - start:.0f} s; figures: {os.path.join(args.out, 'samples.png')}, "
        f"{os.path.join(args.out, 'curves.png')}"
    )
    return 0


def _demo_preset(args, start: float) -> int:
    from .engine import pick_device
    from .pipelines import run_preset

    metrics = run_preset(
        args.preset,
        args.out,
        teacher_epochs=args.teacher_epochs,
        iters=args.iters,
        data_root=args.data_root,
        download=args.download,
        device=str(pick_device(args.device or "auto")),
        progress=not args.no_progress,
        command=_command(args),
    )
    print(_summary(metrics, metrics["folder"]))
    print(f"total {time.time() - start:.0f} s")
    return 0


def cmd_bench(args) -> int:
    from .bench import run_bench
    from .methods import METHODS, make_config
    from .engine import Acceleration

    overrides = _overrides(args)
    overrides.pop("seed", None)
    command = _command(args)
    if args.merge:
        from .bench import merge_results
        from .reports import results_markdown

        print(
            results_markdown(
                merge_results(args.merge, args.out, command, args.overwrite)
            )
        )
        return 0
    if args.profile:
        _profile(args, overrides, command)
        return 0
    if args.resume and args.append:
        raise CpscError(
            "--resume finishes the interrupted benchmark in --out and already keeps its rows; "
            "drop --append."
        )
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
    budgets = [iters, args.seconds, args.equal_flops]
    if sum(b is not None for b in budgets) > 1:
        raise CpscError(
            "Give one budget: --iters (the same iterations for every method), --seconds (the "
            "same wall time) or --equal-flops (the same floating-point operations), not several."
        )
    if args.seconds is None and args.equal_flops is None:
        iters = make_default_iters() if iters is None else iters
    if args.seeds < 1:
        raise CpscError(f"--seeds must be at least 1, not {args.seeds}.")
    if args.workers < 1:
        raise CpscError(f"--workers must be at least 1, not {args.workers}.")
    if args.first_seed < 0:
        raise CpscError(f"--first-seed must be 0 or more, not {args.first_seed}.")
    if args.first_seed + args.seeds - 1 > MAX_SEED:
        raise CpscError(
            f"--first-seed {args.first_seed} with --seeds {args.seeds} reaches seeds beyond "
            f"{MAX_SEED} (32 bits). Choose a smaller --first-seed."
        )
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
        equal_flops=args.equal_flops,
        first_seed=args.first_seed,
        workers=args.workers,
        accel=Acceleration(amp=args.amp, channels_last=args.channels_last),
        resume=args.resume,
        overwrite=args.overwrite,
    )
    from .reports import results_markdown

    print(results_markdown(results))
    return 0


def _profile(args, overrides: dict, command: str) -> None:
    """``bench --profile``: profile.json in --out, which is locked meanwhile; an earlier
    profile.json is replaced only with --overwrite."""
    from . import folders
    from .costs import run_profile

    with folders.hold(args.out, "a profile"):
        if (
            os.path.exists(os.path.join(args.out, "profile.json"))
            and not args.overwrite
        ):
            raise CpscError(
                f"{os.path.join(args.out, 'profile.json')} already exists. Pass --overwrite to "
                "replace it, or choose another --out directory."
            )
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


def make_default_iters() -> int:
    from .config import DistillConfig

    return DistillConfig().budget.iters


def cmd_sample(args) -> int:
    import torch
    from . import checkpoint
    from .generator import generate_per_class, load_generator
    from .viz import plot_samples, save_figure

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
    _may_write_sample(args.out, args.overwrite)
    gen, meta = load_generator(args.generator)
    if not all(k in meta for k in ("mean", "std", "class_names")):
        raise CpscError(
            f"{args.generator} does not record the normalisation and class names of its data, so its "
            "images cannot be shown. Use the generator.pt a `cpsc-lite distill` run wrote."
        )
    many = args.per_class * gen.num_classes > 1024
    images, labels = generate_per_class(
        gen,
        args.per_class,
        torch.device("cpu"),
        seed=args.seed,
        truncation=args.truncation,
        batch_size=1024 if many else None,  # chunks: SIGTERM is heard between them
    )
    if ext == ".npz":
        from .data import save_transfer_set

        save_transfer_set(
            args.out,
            images,
            labels,
            meta["mean"],
            meta["std"],
            meta["class_names"],
            replace=args.overwrite,
        )
        print(
            f"wrote {args.out}: x_test {args.per_class * gen.num_classes} images, y_test their conditioning "
            f"labels (read it with --dataset npz:{args.out})"
        )
        return 0
    fig = plot_samples(
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
    )
    save_figure(fig, args.out, replace=args.overwrite)
    print(f"wrote {args.out} ({args.per_class} samples x {gen.num_classes} classes)")
    return 0


def _may_write_sample(path: str, overwrite: bool) -> None:
    """``sample --out FILE``: an existing FILE needs --overwrite, and even then a run's own files
    (its samples.png, transfer_set.npz, ...) and a data set with a training split are never
    replaced: ``sample`` did not write them."""
    import numpy as np

    from . import folders

    if not os.path.lexists(path):
        return
    folder, name = os.path.split(os.path.abspath(path))
    run_files = (*folders.DISTILL_FILES, "teacher.pt", "teacher_metrics.json")
    owned = [
        f
        for f in ("state.pt", "student.pt", "teacher.pt")
        if os.path.exists(os.path.join(folder, f))
    ]
    if name in run_files and owned:
        raise CpscError(
            f"{path} is one of the files of the run in {folder} (which holds {', '.join(owned)}), "
            "so sample leaves it alone, --overwrite or not. Choose another file name, e.g. "
            f"{os.path.join(folder, 'more_' + name)}."
        )
    if path.lower().endswith(".npz") and os.path.isfile(path):
        try:
            with np.load(path, allow_pickle=False) as arrays:
                dataset = "x_train" in arrays.files
        except Exception:  # noqa: BLE001 - not a readable .npz: not one of ours either
            dataset = True
        if dataset:
            raise CpscError(
                f"{path} is a data set (it has a training split, or is no .npz sample wrote), not "
                "a transfer set that sample wrote, so it is left alone, --overwrite or not. Choose "
                "another file name."
            )
    if not overwrite:
        raise CpscError(
            f"{path} already exists. Pass --overwrite to replace it, or choose another file name."
        )


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
    dataset = args.dataset or meta.get("dataset") or "digits"
    stored = str(dataset).split(":", 1)
    if not args.dataset and stored[0] in ("npz", "folder") and len(stored) == 2:
        # the checkpoint keeps only the data's name (npz:NAME), never where the file was
        raise CpscError(
            f"{args.checkpoint} was trained on {dataset}, a file of your own; the checkpoint "
            "records only its name, not where it is. Pass it with --dataset, e.g. --dataset "
            f"{stored[0]}:PATH/{stored[1]}{'.npz' if stored[0] == 'npz' else ''}."
        )
    bundle = load_dataset(dataset, args.data_root, args.download)
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


def interruption_advice(args) -> str:
    """What a command stopped by Ctrl-C or SIGTERM left on disk, and how to go on from it: read
    from its folder, so that it promises nothing that was not saved."""
    out = getattr(args, "out", None) or ""

    def has(*names) -> bool:
        return all(os.path.exists(os.path.join(out, n)) for n in names)

    command = args.command
    if command == "bench" and not (args.merge or args.profile):
        from .bench import stopped_message

        if has("teacher_state.pt") and not has("teacher.pt"):
            return (
                f"The benchmark's teacher training keeps its checkpoint {out}/teacher_state.pt: "
                "rerun the same command with --resume to continue it, then the benchmark."
            )
        results = {}
        if has("results.json"):
            import json

            try:
                with open(os.path.join(out, "results.json")) as f:
                    results = json.load(f)
            except (OSError, ValueError):
                results = {}
        return stopped_message(out, results).split(": ", 1)[1]
    if command == "demo" and args.preset:
        return "Rerun the same command: it continues from the last checkpoints."
    if command in ("distill", "demo") and has("state.pt"):
        return (
            f"The last checkpoint in {out} (state.pt) is kept: rerun the same command with "
            "--resume to continue from it."
        )
    if command in ("teacher", "demo") and has("teacher_state.pt"):
        return (
            f"The teacher training's last checkpoint in {out} (teacher_state.pt) is kept: rerun "
            "the same command with --resume to continue from it."
        )
    if command == "demo" and has("teacher.pt"):
        return (
            f"The demo's teacher is saved ({out}/teacher.pt); no distillation checkpoint had been "
            "written yet. Rerun the same command with --resume: it reuses the teacher."
        )
    if command in ("distill", "teacher", "demo"):
        return (
            "No checkpoint had been written yet, so there is nothing to resume: rerun the same "
            "command to start again."
        )
    return (
        "Nothing was left half-written (files are written whole or not at all); rerun the same "
        "command to do it."
    )
