"""Benchmark: every method with the same budget, several seeds, one table (book chapter 7).

``cpsc-lite bench --dataset digits --methods cpsc,dfad,... --seeds 3 --iters N --out DIR``
writes ``DIR/results.json`` and ``DIR/results.md``. With ``--profile`` it instead
times one CPSC iteration against its floor (the essential passes measured alone)
and writes ``DIR/profile.json``.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from typing import Optional, Sequence

import torch

from . import CpscError, Terminated, __version__, checkpoint, folders
from .config import DistillConfig
from .methods import METHODS, family_of, make_config, method_variant
from .reports import describe_method, results_markdown
from .stats import paired_differences, summarize
from .data import DataBundle, load_dataset, with_normalization
from .distill import build_distiller, time_to_accuracy
from .engine import Acceleration, describe_machine, timed
from .pool import run_parallel, worker_threads
from .runner import final_diagnostics, train
from .teacher import STATE_FILE as TEACHER_STATE
from .teacher import check_compatible, load_classifier, run_teacher, teacher_recipe
from .utils import evaluate


def ensure_teacher(
    bundle: DataBundle,
    out_dir: str,
    teacher_path: Optional[str],
    teacher_model: str,
    epochs: int,
    progress: bool,
    say=print,
    resume: bool = True,
    overwrite: bool = False,
) -> str:
    """The given teacher, or one trained once into ``out_dir/teacher.pt`` (reused on later runs).
    An interrupted training of it (``teacher_state.pt``) continues with ``resume`` and starts over
    with ``overwrite``; without either it is refused."""
    if teacher_path:
        return teacher_path
    path = os.path.join(out_dir, "teacher.pt")
    interrupted = os.path.exists(os.path.join(out_dir, TEACHER_STATE))
    if os.path.exists(path) and not interrupted:
        say(f"reusing teacher {path}")
        return path
    if interrupted and not (resume or overwrite):
        raise CpscError(
            f"{out_dir} holds the benchmark's interrupted teacher training ({TEACHER_STATE}). Pass "
            "--resume to continue it (and the benchmark), --overwrite to train the teacher again "
            "and replace the table, or choose another --out directory."
        )
    say(f"training teacher {teacher_model} on {bundle.name} ({epochs} epochs)")
    run_teacher(
        bundle,
        teacher_recipe(bundle.name, model=teacher_model, epochs=epochs),
        out_dir,
        progress=progress,
        metrics_name="teacher_metrics.json",
        resume=interrupted and resume,
        overwrite=overwrite,
        say=say,
    )
    return path


def calibrate_iters(
    teacher_path: str,
    bundle: DataBundle,
    cfg: DistillConfig,
    seconds: float,
    repeats: int = 3,
) -> tuple[int, float]:
    """``(iterations, seconds per iteration)``: how many iterations of ``cfg``'s method fit in ``seconds``
    on this machine, from the mean time of ``repeats`` iterations after a warm-up one (at least
    ``inversion_every``, so that a method which synthesises every k-th iteration is timed over a
    whole cycle). The equal-time budget of :func:`run_bench` (book chapter 7)."""
    teacher, meta = load_classifier(teacher_path)
    d = build_distiller(teacher, meta, cfg, bundle, evaluate=False)
    per_iter = timed(d.iterate, max(repeats, cfg.inversion.every), statistic="mean")[0]
    d.close()
    return max(1, round(seconds / per_iter)), per_iter


def flops_per_iteration(
    teacher, meta: dict, cfg: DistillConfig, bundle=None, batch: int = 8
) -> float:
    """Floating-point operations of one iteration of ``cfg``'s method at its batch size: counted
    with torch's flop counter (convolutions and matrix products) over one synthesis cycle
    (``inversion.every`` iterations, so a method that optimises a batch every k-th iteration is
    counted fairly) at a batch of ``batch``, scaled linearly to the config's. The equal-compute
    budget of :func:`run_bench`."""
    import copy

    from torch.utils.flop_counter import FlopCounterMode

    small = cfg.replace(batch_size=batch, device="cpu")
    d = build_distiller(copy.deepcopy(teacher), meta, small, bundle, evaluate=False)
    cycle = max(1, small.inversion.every)
    with FlopCounterMode(display=False) as counter:
        for _ in range(cycle):
            d.iterate()
    d.close()
    return counter.get_total_flops() / cycle * cfg.budget.batch_size / batch


def equal_flops_iters(
    teacher_path: str, bundle, methods, reference: str, overrides: dict
) -> tuple[dict, dict]:
    """``reference`` is ``METHOD:ITERS``: the iterations each of ``methods`` gets for the FLOPs of
    ITERS iterations of METHOD (at least one), and each method's FLOPs per iteration."""
    name, _, count = reference.rpartition(":")
    if not name or not count.isdigit() or int(count) < 1:
        raise CpscError(
            f"--equal-flops {reference!r}: write METHOD:ITERS, e.g. cpsc:300 (every method gets "
            "the floating-point operations of 300 iterations of cpsc)."
        )
    teacher, meta = load_classifier(teacher_path)
    per_iter = {
        m: flops_per_iteration(teacher, meta, make_config(m, **overrides), bundle)
        for m in dict.fromkeys([name, *methods])
    }
    total = per_iter[name] * int(count)
    iters = {m: max(1, round(total / per_iter[m])) for m in methods}
    return iters, per_iter


def run_one(
    bundle: DataBundle,
    teacher_path: str,
    cfg: DistillConfig,
    progress: bool = False,
    accel: Optional[Acceleration] = None,
) -> tuple[dict, float]:
    """One method x seed of the benchmark: ``(the run's record, the teacher's test accuracy)``.

    The record holds the final and best test accuracy, the accuracy at 25 % and 50 % of the budget,
    the wall seconds, the diagnostics of the synthetic images, teacher agreement and pixel judge,
    and ``val_acc``: the student's accuracy on the training split, which no data-free method reads
    (None without one, and for ``data``, which trains on it), and ``runtime`` (precision, layout,
    device). Settings are chosen on ``val_acc`` with seeds that are not reported
    (``experiments/tune.py``), never on the test accuracy."""
    teacher, meta = load_classifier(teacher_path)
    reads_data = family_of(cfg.method).reads_training_data
    if reads_data and bundle.train is None:
        raise CpscError(
            f"Method 'data' needs a training split, and {bundle.name} has none."
        )
    d = build_distiller(teacher, meta, cfg, bundle, accel=accel)
    start = time.time()
    train(d, progress=progress)
    took = time.time() - start
    acc = evaluate(d.student, d.test_set, d.device)
    val_acc = None
    if bundle.train is not None and not reads_data:
        val_acc = evaluate(
            d.student,
            with_normalization(bundle.train, meta["mean"], meta["std"]),
            d.device,
        )
    diag = d.diagnostics(per_class=64)
    final = final_diagnostics(d, bundle)
    teacher_acc = evaluate(d.teacher, d.test_set, d.device)
    d.close()
    at = time_to_accuracy(d)
    run = dict(
        seed=cfg.seed,
        student_acc=acc,
        best_student_acc=max(acc, d.best_student_acc or 0.0),
        val_acc=val_acc,
        acc_at_25=at["0.25"],
        acc_at_50=at["0.5"],
        seconds=took,
        diagnostics=diag,
        runtime=d.runtime(),
        **final,
    )
    return run, teacher_acc


#: Per worker process: data sets loaded once (a process runs many jobs).
_BUNDLES: dict = {}


def _run_job(job: tuple) -> tuple[dict, float]:
    """:func:`run_one` in a worker process: ``job`` = (dataset, data_root, teacher path, config dict,
    threads, acceleration dict)."""
    dataset, data_root, teacher_path, cfg_dict, threads, accel = job
    torch.set_num_threads(threads)
    if (dataset, data_root) not in _BUNDLES:
        _BUNDLES[(dataset, data_root)] = load_dataset(dataset, data_root, False)
    return run_one(
        _BUNDLES[(dataset, data_root)],
        teacher_path,
        DistillConfig.from_dict(cfg_dict),
        accel=Acceleration(**accel),
    )


def run_jobs(
    dataset: str,
    data_root: Optional[str],
    teacher_path: str,
    configs: Sequence[DistillConfig],
    workers: int,
    accel: Optional[Acceleration] = None,
):
    """Run one benchmark job per config in ``workers`` processes (threads per process:
    :func:`cpsc_lite.pool.worker_threads`; on a GPU they share the device). Yields
    ``(index, run, teacher_acc)`` as jobs finish; SIGTERM ends the workers within a second."""
    threads = worker_threads(workers, configs[0].device if configs else "cpu")
    accel_dict = (accel or Acceleration()).to_dict()
    jobs = [
        (dataset, data_root, teacher_path, cfg.to_dict(), threads, accel_dict)
        for cfg in configs
    ]
    for i, (run, teacher_acc) in run_parallel(_run_job, jobs, workers):
        yield i, run, teacher_acc


def run_bench(
    dataset: str,
    methods: Sequence[str],
    seeds: int,
    iters: Optional[int],
    out_dir: str,
    teacher_path: Optional[str] = None,
    teacher_model: str = "cnn_base",
    teacher_epochs: int = 30,
    overrides: Optional[dict] = None,
    data_root: Optional[str] = None,
    download: bool = False,
    progress: bool = True,
    command: str = "",
    append: bool = False,
    say=print,
    seconds: Optional[float] = None,
    first_seed: int = 0,
    workers: int = 1,
    accel: Optional[Acceleration] = None,
    resume: bool = False,
    overwrite: bool = False,
    equal_flops: Optional[str] = None,
) -> dict:
    """Run each method for each seed with the same budget; write results.json and results.md.

    The budget is ``iters`` iterations for every method, or with ``seconds`` the same wall time: each
    method gets the iteration count that fits ``seconds`` on this machine (:func:`calibrate_iters`,
    measured once per method before its seeds run, recorded per method), and a complete schedule
    over those iterations; with ``equal_flops`` (``METHOD:ITERS``), the same floating-point
    operations: each method gets the iterations that cost what ITERS iterations of METHOD cost
    (:func:`equal_flops_iters`; a budget that does not depend on the machine or its load).
    With ``append``, methods are added to (or replace their rows in) an existing
    ``results.json`` of the same budget, and its command becomes both commands; with ``resume``
    (an interrupted benchmark) the methods whose rows it already holds are kept and skipped, and
    an interrupted teacher training continues. A table already in ``out_dir`` is replaced only
    with ``overwrite``. The seeds are ``first_seed`` .. ``first_seed + seeds - 1``; ``workers`` > 1
    runs the method x seed jobs in that many processes (a GPU, or a machine with many cores), with
    the same results per seed as a serial run (:func:`worker_threads`). The folder is locked while
    the benchmark writes it; a stop (SIGTERM) says which methods results.json holds.
    """
    if sum(b is not None for b in (iters, seconds, equal_flops)) != 1:
        raise CpscError(
            "Give the benchmark one budget: a number of iterations, a number of seconds per run, "
            "or the FLOPs of a number of iterations of one method (--equal-flops cpsc:300)."
        )
    if seconds is not None and not seconds > 0:
        raise CpscError(
            f"--seconds must be a positive number of seconds per run, not {seconds}."
        )
    if seconds is not None and workers > 1:
        raise CpscError(
            "--seconds measures each method's speed alone, so it runs with one worker; drop --workers."
        )
    unknown = [m for m in methods if method_variant(m)[0] not in METHODS]
    if unknown:
        raise CpscError(
            f"Unknown method(s) {', '.join(unknown)}. Choose from: {', '.join(METHODS)}."
        )
    twice = sorted({m for m in methods if list(methods).count(m) > 1})
    if twice:
        raise CpscError(
            f"--methods names {', '.join(twice)} more than once; a table has one row per method, "
            "so give each once (more seeds: --seeds)."
        )
    with folders.hold(out_dir, "a benchmark"):
        table = folders.present(out_dir, ("results.json", "results.md"))
        if table and not (append or resume or overwrite):
            raise CpscError(
                f"{out_dir} already holds a benchmark table ({', '.join(table)}). Pass --append to "
                "add these methods to it, --resume to finish an interrupted benchmark, --overwrite "
                "to replace it, or choose another --out directory."
            )
        bundle = load_dataset(dataset, data_root, download)
        teacher_path = _bench_teacher(
            bundle, out_dir, teacher_path, teacher_model, teacher_epochs, progress,
            say, resume or append, overwrite,
        )  # fmt: skip
        _, meta = load_classifier(teacher_path)
        check_compatible(meta, bundle, teacher_path)
        overrides = dict(overrides or {})
        results = dict(
            command=command,
            dataset=bundle.name,
            teacher=dict(model=meta["model"]),
            iters=iters,
            seeds=list(range(first_seed, first_seed + seeds)),
            package_version=__version__,
            machine=describe_machine(),
            methods={},
        )
        if workers > 1:
            results["workers"] = workers
        if seconds is not None:
            results["budget_seconds"] = seconds
        iters_of = {m: iters for m in methods}
        if equal_flops is not None:
            iters_of = _flops_budget(
                results, teacher_path, bundle, methods, equal_flops, overrides, say
            )
        if (append or resume) and not overwrite:
            first = make_config(
                methods[0], iters=1 if iters is None else iters, **overrides
            )
            results = _previous_results(out_dir, results, first, say)
        elif overwrite:
            folders.clear_run(out_dir, ("results.json", "results.md"), ())
        if resume and not overwrite:
            kept = [m for m in methods if m in results["methods"]]
            if kept:
                say(f"keeping the finished rows of {', '.join(kept)} (--resume)")
            methods = [m for m in methods if m not in kept]
        run = dict(
            bundle=bundle, teacher_path=teacher_path, overrides=overrides, iters=iters,
            seconds=seconds, workers=workers, accel=accel, progress=progress,
            data_root=data_root, dataset=dataset, iters_of=iters_of,
        )  # fmt: skip
        try:
            _run_methods(results, methods, out_dir, run, say)
        except Terminated as exc:
            raise Terminated(stopped_message(out_dir, results, str(exc))) from None
        return results


def _flops_budget(results, teacher_path, bundle, methods, equal_flops, overrides, say):
    """``--equal-flops METHOD:ITERS``: each method's iterations (recorded in ``results``)."""
    iters_of, flops = equal_flops_iters(
        teacher_path, bundle, methods, equal_flops, overrides
    )
    reference, _, count = equal_flops.rpartition(":")
    results["budget_flops"] = dict(
        like=equal_flops,
        tflop_per_run=flops[reference] * int(count) / 1e12,
        tflop_per_iter={m: flops[m] / 1e12 for m in methods},
    )
    say("equal FLOPs: " + ", ".join(f"{m} {i} iterations" for m, i in iters_of.items()))
    return iters_of


def _bench_teacher(
    bundle, out_dir, teacher_path, model, epochs, progress, say, resume, overwrite
):
    """The benchmark's teacher; a stop while it trains says how to continue the benchmark."""
    try:
        return ensure_teacher(
            bundle,
            out_dir,
            teacher_path,
            model,
            epochs,
            progress,
            say,
            resume,
            overwrite,
        )
    except Terminated as exc:
        raise Terminated(
            f"{str(exc).split(';')[0]} of the benchmark's teacher training; its checkpoint is "
            f"{os.path.join(out_dir, TEACHER_STATE)}. Rerun the same command with --resume to "
            "continue it, then the benchmark."
        ) from None


def stopped_message(out_dir: str, results: dict, why: str = "") -> str:
    """What a stopped benchmark saved: the methods whose rows results.json holds, and how to go on."""
    done = list(results.get("methods") or {})
    path = os.path.join(out_dir, "results.json")
    head = "Stopped by SIGTERM" if "SIGTERM" in why else "Stopped"
    if done and os.path.exists(path):
        return (
            f"{head} during the benchmark: {path} holds the finished methods ({', '.join(done)}); "
            "the method that was running starts again from its first seed. Rerun the same "
            "command with --resume to run the rest."
        )
    return (
        f"{head} during the benchmark: no method had finished, so no table was written. Rerun "
        "the same command to start again (the teacher in --out, if one was trained, is reused)."
    )


def _run_methods(results: dict, methods, out_dir: str, run: dict, say) -> None:
    """Every method x seed of :func:`run_bench`, serially or in worker processes; results.json and
    results.md are written after every method."""
    iters_of, seconds, overrides = run["iters_of"], run["seconds"], run["overrides"]
    seed_list = results["seeds"]

    def report(method: str, one: dict) -> None:
        extra = (
            ""
            if one["teacher_agreement"] is None
            else f", agreement {one['teacher_agreement']:.3f}, pixel judge {one['pixel_recognition'] or 0:.3f}"
        )
        diag = one["diagnostics"]
        say(
            f"{method:<14} seed {one['seed']}: student {one['student_acc']:.4f}  ({one['seconds']:.0f} s, diversity "
            f"{diag.get('diversity', float('nan')):.3f}, fid {diag.get('fid', float('nan')):.2f}{extra})"
        )

    def finish(method: str, runs: list, cfg, method_iters, per_iter, teacher_acc):
        results["teacher"]["test_acc"] = teacher_acc
        results["runtime"] = runs[-1]["runtime"]
        results["student"] = cfg.student
        results["batch_size"] = cfg.budget.batch_size
        results["g_steps"], results["s_steps"] = cfg.budget.g_steps, cfg.budget.s_steps
        results["methods"][method] = method_row(method, runs, method_iters, per_iter)
        paired_differences(results)
        # Both files after every method, so a run stopped early keeps everything it finished.
        checkpoint.write_json(results, os.path.join(out_dir, "results.json"))
        write_markdown(results, out_dir)

    if run["workers"] > 1:
        configs = [
            make_config(method, iters=iters_of[method], seed=seed, **overrides)
            for method in methods
            for seed in seed_list
        ]
        runs: dict = {}
        left = {method: len(seed_list) for method in methods}
        for i, one, teacher_acc in run_jobs(
            run["dataset"], run["data_root"], run["teacher_path"], configs,
            run["workers"], run["accel"],
        ):  # fmt: skip
            method = methods[i // len(seed_list)]
            runs[i] = one
            report(method, one)
            left[method] -= 1
            if not left[method]:
                first = methods.index(method) * len(seed_list)
                done = [runs[first + k] for k in range(len(seed_list))]
                finish(
                    method, done, configs[first], iters_of[method], None, teacher_acc
                )
        return
    bundle, teacher_path = run["bundle"], run["teacher_path"]
    for method in methods:
        runs = []
        method_iters, per_iter = iters_of[method], None
        if seconds is not None:
            method_iters, per_iter = calibrate_iters(
                teacher_path, bundle, make_config(method, **overrides), seconds
            )
            say(
                f"{method:<14} {per_iter:.3f} s per iteration here: {method_iters} iterations fit {seconds:g} s"
            )
        for seed in seed_list:
            cfg = make_config(method, iters=method_iters, seed=seed, **overrides)
            one, teacher_acc = run_one(
                bundle, teacher_path, cfg, run["progress"], run["accel"]
            )
            runs.append(one)
            report(method, one)
        finish(method, runs, cfg, method_iters, per_iter, teacher_acc)


def method_row(
    method: str, runs: list, method_iters: int, per_iter: Optional[float] = None
) -> dict:
    """One method's row of results.json from its runs (one per seed, in seed order)."""
    accs = [r["student_acc"] for r in runs]
    secs = [r["seconds"] for r in runs]
    diag_keys = (
        "diversity",
        "separation",
        "class_balance",
        "teacher_confidence",
        "fid",
    )
    per_seed = {
        k: [r[k] for r in runs]
        for k in MEASURES
        if all(r.get(k) is not None for r in runs)
    }
    per_seed.update(
        {
            k: [r["diagnostics"][k] for r in runs]
            for k in diag_keys
            if all(k in r["diagnostics"] for r in runs)
        }
    )
    return dict(
        description=describe_method(method),
        student_acc_mean=statistics.mean(accs),
        student_acc_std=statistics.stdev(accs) if len(accs) > 1 else 0.0,
        student_accs=accs,
        seconds_mean=statistics.mean(secs),
        iters=method_iters,
        iters_per_second=method_iters / statistics.mean(secs),
        **({} if per_iter is None else dict(calibrated_seconds_per_iter=per_iter)),
        diagnostics={
            k: statistics.mean(v) for k, v in per_seed.items() if k in diag_keys
        },
        per_seed=per_seed,
        stats={k: summarize(v) for k, v in per_seed.items()},
        collapsed_classes=sorted(
            {c for r in runs for c in r["diagnostics"].get("collapsed_classes", [])}
        ),
    )


#: Per-run measures every method reports (mean, std and 95 % CI over seeds in results.json).
MEASURES = (
    "student_acc",
    "best_student_acc",
    "val_acc",
    "acc_at_25",
    "acc_at_50",
    "teacher_agreement",
    "pixel_recognition",
)


def write_markdown(results: dict, out_dir: str) -> None:
    """``out_dir/results.md`` from a results dict (``cpsc-lite bench`` writes it with results.json)."""
    md = results_markdown(results)
    checkpoint.atomic_write_bytes(
        os.path.join(out_dir, "results.md"), lambda f: f.write(md.encode())
    )


#: What must be equal for two results files to be one table.
BUDGET_KEYS = (
    "dataset",
    "iters",
    "budget_seconds",
    "budget_flops",
    "seeds",
    "student",
    "batch_size",
    "g_steps",
    "s_steps",
)


def merge_results(
    dirs: Sequence[str], out_dir: str, command: str = "", overwrite: bool = False
) -> dict:
    """One table from several ``results.json`` written with the same budget (e.g. one benchmark
    split into jobs on a cluster or over several GPU calls): the rows of all of them, later files
    replacing rows of the same name; the commands, machines and teachers are kept per file in
    ``merged_from``. Refuses files whose budgets differ, and an ``out_dir`` that already holds
    another table unless ``overwrite``. ``out_dir`` is locked while it is written, and a folder
    another command is writing is not read."""
    with folders.hold(out_dir, "a merged benchmark table"):
        return _merge(dirs, out_dir, command, overwrite)


def _merge(dirs, out_dir, command, overwrite) -> dict:
    tables = []
    for d in dirs:
        folders.refuse_if_written(d, "merging its table")
        path = os.path.join(d, "results.json")
        if not os.path.exists(path):
            raise CpscError(
                f"Cannot merge {d}: it has no results.json. Give benchmark folders."
            )
        with open(path) as f:
            tables.append((d, json.load(f)))
    target = os.path.join(out_dir, "results.json")
    inputs = {os.path.abspath(os.path.join(d, "results.json")) for d in dirs}
    if (
        os.path.exists(target)
        and os.path.abspath(target) not in inputs
        and not overwrite
    ):
        raise CpscError(
            f"{target} exists and is not one of the tables being merged. Choose another --out, "
            "or add --overwrite to replace it."
        )
    first_dir, first = tables[0]

    def budget(r: dict) -> dict:
        b = {k: r.get(k) for k in BUDGET_KEYS}
        b["teacher"] = (r.get("teacher") or {}).get("model")
        return b

    for d, r in tables[1:]:
        differ = [
            f"{k} ({v} in {first_dir}, {budget(r)[k]} in {d})"
            for k, v in budget(first).items()
            if budget(r)[k] != v
        ]
        if differ:
            raise CpscError(
                f"Cannot merge {d} with {first_dir}: another budget: {'; '.join(differ)}. "
                "Only tables made with the same settings form one table."
            )
    merged = dict(
        first, command=command or " && ".join(r["command"] for _, r in tables)
    )
    merged["methods"] = {}
    merged["merged_from"] = [
        dict(
            folder=d,
            command=r["command"],
            machine=r.get("machine"),
            teacher_test_acc=(r.get("teacher") or {}).get("test_acc"),
            methods=list(r["methods"]),
            package_version=r.get("package_version"),
        )
        for d, r in tables
    ]
    machines = sorted({str(r.get("machine")) for _, r in tables})
    merged["machine"] = machines[0] if len(machines) == 1 else "; ".join(machines)
    for _, r in tables:
        for name, row in r["methods"].items():
            row = {k: v for k, v in row.items() if not k.startswith("diff_vs_")}
            merged["methods"][name] = row
    paired_differences(merged)
    checkpoint.check_output_dir(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    checkpoint.write_json(merged, os.path.join(out_dir, "results.json"))
    write_markdown(merged, out_dir)
    return merged


def _previous_results(out_dir: str, fresh: dict, cfg, say=print) -> dict:
    """The existing results.json to append to, after checking it was made with the same budget."""
    path = os.path.join(out_dir, "results.json")
    if not os.path.exists(path):
        say(f"note: {path} does not exist yet; --append starts a new table")
        return fresh
    with open(path) as f:
        old = json.load(f)
    new_budget = dict(
        dataset=fresh["dataset"],
        iters=fresh["iters"],
        budget_seconds=fresh.get("budget_seconds"),
        equal_flops=(fresh.get("budget_flops") or {}).get("like"),
        seeds=fresh["seeds"],
        teacher=fresh["teacher"]["model"],
        student=cfg.student,
        batch_size=cfg.budget.batch_size,
        g_steps=cfg.budget.g_steps,
        s_steps=cfg.budget.s_steps,
    )
    old_budget = dict(
        old,
        teacher=old.get("teacher", {}).get("model"),
        budget_seconds=old.get("budget_seconds"),
        equal_flops=(old.get("budget_flops") or {}).get("like"),
    )
    differ = [
        f"{k} ({old_budget.get(k)} there, {v} here)"
        for k, v in new_budget.items()
        if k in old_budget and old_budget[k] != v
    ]
    if differ:
        raise CpscError(
            f"Cannot add rows to {path}: it was made with another budget: {'; '.join(differ)}. "
            "Use the same settings, or write to another --out directory."
        )
    old["command"] = (
        f"{old['command']} && {fresh['command']}"
        if fresh["command"]
        else old["command"]
    )
    old["package_version"] = fresh["package_version"]
    if fresh.get("machine") and fresh["machine"] not in str(old.get("machine")):
        old["machine"] = f"{old.get('machine')}; appended on {fresh['machine']}"
    return old
