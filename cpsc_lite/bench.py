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
from pathlib import Path
from typing import Optional, Sequence

import torch

from . import CpscError, __version__, checkpoint
from .config import DistillConfig
from .methods import METHOD_HELP, METHODS, family_of, make_config, method_variant
from .data import DataBundle, load_dataset, with_normalization
from .distill import build_distiller
from .engine import Acceleration, describe_machine, timed
from .runner import final_diagnostics, train
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
) -> str:
    """The given teacher, or one trained once into ``out_dir/teacher.pt`` (reused on later runs)."""
    if teacher_path:
        return teacher_path
    path = os.path.join(out_dir, "teacher.pt")
    if os.path.exists(path):
        say(f"reusing teacher {path}")
        return path
    say(f"training teacher {teacher_model} on {bundle.name} ({epochs} epochs)")
    run_teacher(
        bundle,
        teacher_recipe(bundle.name, model=teacher_model, epochs=epochs),
        out_dir,
        progress=progress,
        metrics_name="teacher_metrics.json",
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
    (``scripts/tune.py``), never on the test accuracy."""
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
    at = d.time_to_accuracy()
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
    """Run one benchmark job per config in ``workers`` processes (each with its share of the CPU
    threads; on a GPU they share the device). Yields ``(index, run, teacher_acc)`` as jobs finish."""
    import concurrent.futures as cf
    import multiprocessing

    # each its share of the cores, unless OMP_NUM_THREADS says how many
    threads = int(os.environ.get("OMP_NUM_THREADS") or 0) or max(
        1, (os.cpu_count() or 1) // workers
    )
    with cf.ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("spawn")
    ) as pool:
        futures = {
            pool.submit(
                _run_job,
                (
                    dataset,
                    data_root,
                    teacher_path,
                    cfg.to_dict(),
                    threads,
                    (accel or Acceleration()).to_dict(),
                ),
            ): i
            for i, cfg in enumerate(configs)
        }
        for future in cf.as_completed(futures):
            run, teacher_acc = future.result()
            yield futures[future], run, teacher_acc


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
) -> dict:
    """Run each method for each seed with the same budget; write results.json and results.md.

    The budget is ``iters`` iterations for every method, or with ``seconds`` the same wall time: each
    method gets the iteration count that fits ``seconds`` on this machine (:func:`calibrate_iters`,
    measured once per method before its seeds run, recorded per method), and a complete schedule
    over those iterations. With ``append``, methods are added to (or replace their rows in) an
    existing ``results.json`` of the same budget, and its command becomes both commands. The seeds
    are ``first_seed`` .. ``first_seed + seeds - 1``; ``workers`` > 1 runs the method x seed jobs in
    that many processes (a GPU, or a machine with many cores), with the same results per seed.
    """
    if (iters is None) == (seconds is None):
        raise CpscError(
            "Give the benchmark one budget: a number of iterations or a number of seconds per run."
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
    bundle = load_dataset(dataset, data_root, download)
    checkpoint.check_output_dir(out_dir)
    teacher_path = ensure_teacher(
        bundle, out_dir, teacher_path, teacher_model, teacher_epochs, progress, say
    )
    _, meta = load_classifier(teacher_path)
    check_compatible(meta, bundle, teacher_path)
    overrides = dict(overrides or {})
    seed_list = list(range(first_seed, first_seed + seeds))
    results = dict(
        command=command,
        dataset=bundle.name,
        teacher=dict(model=meta["model"]),
        iters=iters,
        seeds=seed_list,
        package_version=__version__,
        machine=describe_machine(),
        methods={},
    )
    if workers > 1:
        results["workers"] = workers
    if seconds is not None:
        results["budget_seconds"] = seconds
    if append:
        first = make_config(
            methods[0], iters=1 if iters is None else iters, **overrides
        )
        results = _previous_results(out_dir, results, first, say)

    def report(method: str, run: dict) -> None:
        extra = (
            ""
            if run["teacher_agreement"] is None
            else f", agreement {run['teacher_agreement']:.3f}, pixel judge {run['pixel_recognition'] or 0:.3f}"
        )
        diag = run["diagnostics"]
        say(
            f"{method:<14} seed {run['seed']}: student {run['student_acc']:.4f}  ({run['seconds']:.0f} s, diversity "
            f"{diag.get('diversity', float('nan')):.3f}, fid {diag.get('fid', float('nan')):.2f}{extra})"
        )

    def finish(method: str, runs: list, cfg, method_iters, per_iter, teacher_acc):
        results["teacher"]["test_acc"] = teacher_acc
        results["runtime"] = runs[-1]["runtime"]
        results["student"] = cfg.student
        results["batch_size"] = cfg.budget.batch_size
        results["g_steps"], results["s_steps"] = cfg.budget.g_steps, cfg.budget.s_steps
        results["methods"][method] = method_row(method, runs, method_iters, per_iter)
        _paired_differences(results)
        # Both files after every method, so a run stopped early keeps everything it finished.
        checkpoint.write_json(results, os.path.join(out_dir, "results.json"))
        write_markdown(results, out_dir)

    if workers > 1:
        configs = [
            make_config(method, iters=iters, seed=seed, **overrides)
            for method in methods
            for seed in seed_list
        ]
        runs: dict = {}
        left = {method: len(seed_list) for method in methods}
        for i, run, teacher_acc in run_jobs(
            dataset, data_root, teacher_path, configs, workers, accel
        ):
            method = methods[i // len(seed_list)]
            runs[i] = run
            report(method, run)
            left[method] -= 1
            if not left[method]:
                first = methods.index(method) * len(seed_list)
                done = [runs[first + k] for k in range(len(seed_list))]
                finish(method, done, configs[first], iters, None, teacher_acc)
        return results
    for method in methods:
        runs = []
        method_iters, per_iter = iters, None
        if seconds is not None:
            method_iters, per_iter = calibrate_iters(
                teacher_path, bundle, make_config(method, **overrides), seconds
            )
            say(
                f"{method:<14} {per_iter:.3f} s per iteration here: {method_iters} iterations fit {seconds:g} s"
            )
        for seed in seed_list:
            cfg = make_config(method, iters=method_iters, seed=seed, **overrides)
            run, teacher_acc = run_one(bundle, teacher_path, cfg, progress, accel)
            runs.append(run)
            report(method, run)
        finish(method, runs, cfg, method_iters, per_iter, teacher_acc)
    return results


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
#: Methods renamed since a results file was written: (name then, the version that renamed it, name now).
#: cpsc-lite 0.1/0.2 called the conditional generator with BN prior + CE "deepinv"; 0.3 gave that name
#: to DeepInversion proper and the old method the name "bn_ce".
RENAMED_METHODS = (("deepinv", "0.3.0", "bn_ce"),)


def _version(text: str) -> tuple:
    return tuple(int(part) for part in str(text).split(".")[:3] if part.isdigit())


def with_current_names(results: dict) -> dict:
    """``results`` (a results.json) with its methods under today's names, so an old table's
    ``deepinv`` row (the BN + CE generator) is not mistaken for DeepInversion proper."""
    written = _version(results.get("package_version", "0"))
    methods = dict(results.get("methods", {}))
    for old, renamed_in, new in RENAMED_METHODS:
        if written < _version(renamed_in) and old in methods and new not in methods:
            methods = {(new if k == old else k): v for k, v in methods.items()}
            results = dict(results, renamed={**results.get("renamed", {}), old: new})
    return dict(results, methods=methods)


MEASURES = (
    "student_acc",
    "best_student_acc",
    "val_acc",
    "acc_at_25",
    "acc_at_50",
    "teacher_agreement",
    "pixel_recognition",
)


def summarize(values: Sequence[float]) -> dict:
    """Mean, sample std and the 95 % confidence interval of the mean (Student's t) of per-seed values."""
    from scipy import stats

    n = len(values)
    mean = statistics.mean(values)
    std = statistics.stdev(values) if n > 1 else 0.0
    half = float(stats.t.ppf(0.975, n - 1)) * std / n**0.5 if n > 1 else float("nan")
    return dict(
        n=n, mean=mean, std=std, ci95=[mean - half, mean + half], ci95_half=half
    )


def paired_difference(
    results: dict, method: str, reference: str, key: str = "student_acc"
) -> Optional[dict]:
    """``method`` minus ``reference`` over the same seeds for one measure: :func:`summarize` of the
    per-seed differences plus ``real`` (its 95 % CI excludes 0); None without per-seed values for both."""
    a = results["methods"].get(method, {}).get("per_seed", {}).get(key)
    b = results["methods"].get(reference, {}).get("per_seed", {}).get(key)
    if a is None or b is None or len(a) != len(b) or len(a) < 2:
        return None
    d = summarize([x - y for x, y in zip(a, b)])
    d["real"] = bool(d["ci95"][0] > 0 or d["ci95"][1] < 0)
    return d


def _paired_differences(results: dict, reference: str = "cpsc") -> None:
    """Per method and measure, method minus ``reference`` over the same seeds, with its 95 % CI
    (``diff_vs_cpsc``); a difference is called real only when that interval excludes 0."""
    if "per_seed" not in results["methods"].get(reference, {}):
        return
    for name, r in results["methods"].items():
        if name == reference or "per_seed" not in r:
            continue
        out = {k: paired_difference(results, name, reference, k) for k in r["per_seed"]}
        r["diff_vs_" + reference] = {k: d for k, d in out.items() if d is not None}


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
    another table unless ``overwrite``."""
    tables = []
    for d in dirs:
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
    _paired_differences(merged)
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
    )
    differ = [
        f"{k} ({old_budget.get(k)} there, {v} here)"
        for k, v in new_budget.items()
        if k in old_budget and old_budget[k] != v
    ]
    if differ:
        raise CpscError(
            f"Cannot --append to {path}: it was made with another budget: {'; '.join(differ)}. "
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


def _ci(r: dict, key: str, scale: float = 100.0, digits: int = 2) -> str:
    st = r.get("stats", {}).get(key)
    if st is None:
        return "–"
    half = st["ci95_half"]
    return f"{scale * st['mean']:.{digits}f}" + (
        "" if half != half else f" ± {scale * half:.{digits}f}"
    )


def _mean(r: dict, key: str, scale: float = 100.0) -> str:
    st = r.get("stats", {}).get(key)
    return "–" if st is None else f"{scale * st['mean']:.1f}"


def budget_text(results: dict) -> str:
    """The budget in words: iterations, or the equal wall time (iterations per method in the table)."""
    if results.get("budget_seconds") is not None:
        return f"equal time: about {results['budget_seconds']:g} s of training per run (iterations per method below)"
    return f"{results['iters']} iterations"


def results_markdown(results: dict) -> str:
    """The benchmark table as Markdown (also used by the book)."""
    n = len(results["seeds"])
    lines = [
        f"# Benchmark on {results['dataset']}",
        "",
        f"Teacher {results['teacher']['model']} "
        f"(test accuracy {results['teacher'].get('test_acc', float('nan')):.4f}), "
        f"student {results.get('student')}, {budget_text(results)} x batch {results.get('batch_size')}, "
        f"seeds {results['seeds']}. Machine: {results.get('machine')}. cpsc-lite {results['package_version']}.",
        "",
        f"Command: `{results['command']}`",
        "",
        "| method | student acc | Δ vs cpsc | best acc | acc at 25 % / 50 % | teacher agreement | pixel judge | "
        "separation | diversity | class balance | FID (teacher feats) | iterations | s / run |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results["methods"].items():
        d = r["diagnostics"]
        fmt = lambda k, p=3: f"{d[k]:.{p}f}" if k in d else "–"  # noqa: E731
        acc = (
            _ci(r, "student_acc")
            if "stats" in r
            else f"{100 * r['student_acc_mean']:.2f} ± {100 * r['student_acc_std']:.2f} (std)"
        )
        diff = r.get("diff_vs_cpsc", {}).get("student_acc")
        delta = (
            "–"
            if diff is None
            else (
                f"{100 * diff['mean']:+.2f} [{100 * diff['ci95'][0]:+.2f}, "
                f"{100 * diff['ci95'][1]:+.2f}]" + (" **real**" if diff["real"] else "")
            )
        )
        early = " / ".join(_mean(r, k) for k in ("acc_at_25", "acc_at_50"))
        lines.append(
            f"| {name} | {acc} | {delta} | {_ci(r, 'best_student_acc')} | {early} | "
            f"{_ci(r, 'teacher_agreement', 1, 3)} | {_ci(r, 'pixel_recognition', 1, 3)} | "
            f"{_ci(r, 'separation', 1, 3)} | {fmt('diversity')} | {fmt('class_balance')} | {fmt('fid', 2)} | "
            f"{r.get('iters') or results['iters']} | {r['seconds_mean']:.0f} |"
        )
    lines += [
        "",
        "Accuracies in %, on the test split: mean ± half-width of the 95 % confidence interval "
        f"(Student's t, {n} seeds). Δ vs cpsc: the paired difference over the same seeds with its 95 % CI; "
        "**real** only when the interval excludes 0. Acc at 25 % / 50 %: mean test accuracy after that "
        "share of the iterations (time to accuracy; the learning rate has not decayed yet there). "
        "Teacher agreement: share of class-wise samples the "
        "teacher assigns to their conditioning class; pixel judge: the same share for a 5-nearest-neighbour "
        "classifier on raw pixels fitted to the real training split (it never trains anything); both need a "
        "conditional generator. Separation: mean cosine distance between class centroids of the teacher's "
        "features of synthetic images; diversity: mean within-class cosine distance; class balance: "
        "normalised entropy of the teacher's predictions on them; FID: Fréchet distance to real test images "
        "in the teacher's feature space.",
        "",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------ profile
def profile_iteration(teacher, meta: dict, cfg, repeats: int = 15) -> dict:
    """Seconds per CPSC iteration vs the floor: the same forward/backward passes, measured alone.

    Floor = g_steps x (G forward, T and S forward, backward to G) + s_steps x (G and T
    forward without gradients, S forward and backward), each pass run bare, without
    any loss term, hook or optimiser step.
    """
    d = build_distiller(teacher, meta, cfg)
    for _ in range(2):
        d.iterate()
    per_iter = timed(d.iterate, repeats)[0]
    g, s, t = d.generator, d.student, d.teacher
    if d.bn_loss is not None:
        d.bn_loss.enabled = False
    b, budget = cfg.budget.batch_size, cfg.budget

    def g_pass():
        z, y = g.sample_inputs(b, d.device)
        x = g(z, y)
        s.requires_grad_(False)
        out = t(x, return_features=True)[0].sum() + s(x, return_features=True)[0].sum()
        out.backward()
        s.requires_grad_(True)

    def s_pass():
        z, y = g.sample_inputs(b, d.device)
        with torch.no_grad():
            x = g(z, y)
            t(x)
        s(x).sum().backward()

    floor = (
        budget.g_steps * timed(g_pass, repeats)[0]
        + budget.s_steps * timed(s_pass, repeats)[0]
    )
    d.close()
    return dict(
        seconds_per_iter=per_iter,
        floor_seconds=floor,
        floor_ratio=per_iter / floor,
        batch_size=b,
        g_steps=budget.g_steps,
        s_steps=budget.s_steps,
        teacher=meta["model"],
        student=cfg.student,
        img_size=meta["img_size"],
        device=str(d.device),
        machine=describe_machine(),
        threads=torch.get_num_threads(),
    )


def run_profile(
    out_dir: str,
    dataset: str = "digits",
    teacher_path: Optional[str] = None,
    teacher_model: Optional[str] = None,
    student: Optional[str] = None,
    img_size: Optional[int] = None,
    num_classes: int = 10,
    channels: int = 3,
    overrides: Optional[dict] = None,
    repeats: int = 15,
    command: str = "",
    say=print,
) -> dict:
    """Profile with a trained teacher (digits default) or a freshly initialised ``teacher_model``.

    Timing does not depend on the weights, so e.g. WRN-40-2 -> WRN-16-2 at 32x32
    can be profiled without a trained teacher or a dataset.
    """
    from .models import create_model

    overrides = dict(overrides or {})
    checkpoint.check_output_dir(out_dir)
    if teacher_model and not teacher_path:
        size = img_size or 32
        teacher = create_model(teacher_model, num_classes, channels, size)
        meta = checkpoint.untrained_meta(teacher_model, num_classes, channels, size)
    else:
        bundle = load_dataset(dataset)
        path = ensure_teacher(
            bundle, out_dir, teacher_path, teacher_model or "cnn_base", 30, False, say
        )
        teacher, meta = load_classifier(path)
    if student:
        overrides["student"] = student
    cfg = make_config("cpsc", **overrides)
    result = profile_iteration(teacher, meta, cfg, repeats)
    result.update(command=command, package_version=__version__)
    checkpoint.write_json(result, os.path.join(out_dir, "profile.json"))
    say(
        f"{result['teacher']} -> {result['student']} at {result['img_size']}x{result['img_size']}, batch "
        f"{result['batch_size']}, {result['g_steps']} G + {result['s_steps']} S steps on {result['device']} "
        f"({result['threads']} threads): {result['seconds_per_iter']:.4f} s/iter, floor "
        f"{result['floor_seconds']:.4f} s, ratio {result['floor_ratio']:.3f}"
    )
    return result


# ------------------------------------------------------------ reports (book chapter 7)
_GROUP_COLOURS = {
    "CPSC-DFKD": "C3",
    "CPSC-DFKD, paper settings": "C4",
    "CPSC-DFKD, the authors' code": "C5",
    "ablation": "C1",
    "earlier method": "C0",
    "bound": "gray",
}


def describe_method(spec: str) -> str:
    """One line on a method or a variant of one (``NAME:KEY=VALUE...``, see ``config.method_variant``)."""
    name, settings = method_variant(spec)
    text = METHOD_HELP.get(name, "")
    if settings:
        text += "; changed: " + ", ".join(f"{k}={v}" for k, v in settings.items())
    return text


def method_group(name: str) -> str:
    """Chapter 7: which kind of entry a benchmark method is (for colours and the table)."""
    name = method_variant(name)[0]
    if name == "reference_compat":
        return "CPSC-DFKD, the authors' code"
    if name == "cpsc":
        return "CPSC-DFKD"
    if name == "cpsc_paper":
        return "CPSC-DFKD, paper settings"
    if name in ("noise", "data"):
        return "bound"
    return (
        "ablation"
        if name.startswith("cpsc_no_") or name == "bn_ce"
        else "earlier method"
    )


def bench_table(results: dict):
    """Chapter 7: the benchmark results as a formatted table (a pandas Styler)."""
    import pandas as pd

    rows = []
    for name, m in results["methods"].items():
        d = m.get("diagnostics", {})
        rows.append(
            {
                "method": name,
                "kind": method_group(name),
                "student acc. (%, mean ± std)": f"{100 * m['student_acc_mean']:.2f} ± {100 * m['student_acc_std']:.2f}",
                "diversity": d.get("diversity"),
                "class balance": d.get("class_balance"),
                "teacher conf.": d.get("teacher_confidence"),
                "FID (teacher feats)": d.get("fid"),
                "seconds / run": m.get("seconds_mean"),
            }
        )
    formats = {
        "diversity": "{:.3f}",
        "class balance": "{:.3f}",
        "teacher conf.": "{:.3f}",
        "FID (teacher feats)": "{:.2f}",
        "seconds / run": "{:.0f}",
    }
    return pd.DataFrame(rows).style.hide(axis="index").format(formats, na_rep="–")


def plot_bench(results: dict):
    """Chapter 7: mean student accuracy per method with the standard deviation over seeds as error bars."""
    import matplotlib.pyplot as plt

    names = list(results["methods"])
    means = [100 * results["methods"][n]["student_acc_mean"] for n in names]
    stds = [100 * results["methods"][n]["student_acc_std"] for n in names]
    fig, ax = plt.subplots(figsize=(10, 4.2))
    where = range(len(names))
    ax.bar(
        where,
        means,
        yerr=stds,
        capsize=4,
        color=[_GROUP_COLOURS[method_group(n)] for n in names],
    )
    ax.axhline(
        100 * results["teacher"]["test_acc"], color="k", ls="--", lw=1, label="teacher"
    )
    for label, colour in _GROUP_COLOURS.items():
        if any(method_group(n) == label for n in names):
            ax.bar([0], [0], color=colour, label=label)  # legend entries only
    ax.set(
        title=f"{results['dataset']}: {results['teacher']['model']} -> {results['student']}, "
        f"{budget_text(results)}, {len(results['seeds'])} seeds (error bars: std over seeds)",
        xlabel="method",
        ylabel="student test accuracy (%)",
        ylim=(0, 105),
    )
    # A variant (NAME:KEY=VALUE...) gets one line per changed setting under its method's name;
    # several lines turned by 30 degrees run into the next label, so such rows stand upright.
    upright = any(":" in n for n in names)
    ax.set_xticks(
        list(where),
        [n.replace(":", "\n") for n in names],
        rotation=90 if upright else 30,
        ha="center" if upright else "right",
        rotation_mode="anchor" if not upright else "default",
        fontsize=7 if upright else None,
    )
    # beside the axes: inside, it hid the first bars when they were low
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def ablation_summary(results: Optional[dict]) -> str:
    """Chapter 7: one Markdown line per variant of CPSC (ablations ``cpsc_no_*`` and ``cpsc_paper``):
    change in mean accuracy vs. ``cpsc`` and whether it exceeds the seed spread."""
    if results is None:
        return "(no results)"
    base = results["methods"].get("cpsc")
    if base is None:
        return "(the file has no `cpsc` entry)"
    lines = []
    for name, m in results["methods"].items():
        if not name.startswith("cpsc_"):
            continue
        paired = m.get("diff_vs_cpsc", {}).get("student_acc")
        # files with per-seed values: the paired difference and its 95 % CI
        if paired is not None:
            lo, hi = 100 * paired["ci95"][0], 100 * paired["ci95"][1]
            verdict = (
                ("worse" if hi < 0 else "better")
                if paired["real"]
                else "not distinguishable"
            )
            lines.append(
                f"* `{name}`: {100 * paired['mean']:+.2f} points, 95 % CI [{lo:+.2f}, {hi:+.2f}] "
                f"({verdict})"
            )
            continue
        diff = 100 * (m["student_acc_mean"] - base["student_acc_mean"])
        spread = 100 * max(m["student_acc_std"], base["student_acc_std"])
        verdict = (
            "within the seed-to-seed spread"
            if abs(diff) <= spread
            else ("worse" if diff < 0 else "better")
        )
        lines.append(
            f"* `{name}`: {diff:+.2f} points ({verdict}; larger std {spread:.2f})"
        )
    return "\n".join(lines) or "(no ablations in the file)"


ABLATION_MEASURES = (
    ("student_acc", "student accuracy", 100.0),
    ("best_student_acc", "best accuracy", 100.0),
    ("teacher_agreement", "teacher agreement", 100.0),
    ("pixel_recognition", "pixel judge", 100.0),
    ("separation", "separation", 1.0),
    ("diversity", "diversity", 1.0),
)
#: The same for the other methods, with time to accuracy (agreement and pixel judge: where images have target labels).
BASELINE_MEASURES = (
    ("student_acc", "student accuracy", 100.0),
    ("best_student_acc", "best accuracy", 100.0),
    ("acc_at_25", "accuracy at 25 %", 100.0),
    ("acc_at_50", "accuracy at 50 %", 100.0),
    ("teacher_agreement", "teacher agreement", 100.0),
    ("pixel_recognition", "pixel judge", 100.0),
    ("separation", "separation", 1.0),
    ("diversity", "diversity", 1.0),
)


def ablation_effects(results: Optional[dict], baselines: bool = False):
    """Chapter 7: per ablation (``baselines``: per other method) and measure, the paired difference to
    ``cpsc`` (that row minus cpsc, percentage points for the shares, raw for separation and diversity)
    with its 95 % CI; a ``*`` marks an interval that excludes 0. Returns ``(table, statements)``; None
    for files without per-seed values."""
    import pandas as pd

    chosen = (
        (lambda n: n != "cpsc" and not n.startswith("cpsc_"))
        if baselines
        else (lambda n: n.startswith("cpsc_no_"))
    )
    if results is None or "diff_vs_cpsc" not in next(
        (m for n, m in results["methods"].items() if chosen(n)), {}
    ):
        return None, "(no per-seed results to compare with cpsc)"
    label_of_row = "method" if baselines else "ablation"
    rows, lines = [], []
    for name, m in results["methods"].items():
        if not chosen(name):
            continue
        row, real = {label_of_row: name}, []
        for key, label, scale in BASELINE_MEASURES if baselines else ABLATION_MEASURES:
            d = m["diff_vs_cpsc"].get(key)
            if d is None:
                row[label] = "–"
                continue
            digits = 2 if scale > 1 else 3
            row[label] = (
                f"{scale * d['mean']:+.{digits}f} [{scale * d['ci95'][0]:+.{digits}f}, "
                f"{scale * d['ci95'][1]:+.{digits}f}]" + (" *" if d["real"] else "")
            )
            if d["real"]:
                real.append(f"{label} {scale * d['mean']:+.{digits}f}")
        rows.append(row)
        lines.append(
            f"* `{name}`: "
            + (
                "changes " + ", ".join(real) + " (95 % CI excludes 0)"
                if real
                else "no effect beyond its 95 % CI on any measure"
            )
        )
    return pd.DataFrame(rows).set_index(label_of_row), "\n".join(lines)


# ------------------------------------------------------------ cost estimates (book chapter 8)
#: Classes, channels, image size and training-set size of the data sets the presets use (for cost estimates).
PRESET_DATA = {
    "cifar10": (10, 3, 32, 50000),
    "cifar100": (100, 3, 32, 50000),
    "svhn": (10, 3, 32, 73257),
    "tiny-imagenet": (200, 3, 64, 100000),
}


def preset_file(name: str) -> Path:
    """A shipped preset's YAML file by name (``cpsc-lite presets``), or the path of a YAML file."""
    from .config import resolve_config

    return Path(resolve_config(name))


def preset_config(name: str, iters: Optional[int] = None) -> tuple[DistillConfig, dict]:
    """A preset's DistillConfig (``iters`` overrides its length) and its run settings (dataset, teacher_model)."""
    from .config import load_preset

    base, run = load_preset(str(preset_file(name)))
    return make_config("cpsc", base, iters=iters), run


_FLOPS_PER_SAMPLE: dict = {}


def preset_cost(
    name: str, teacher_epochs: int, iters: Optional[int] = None, tflops=(5.0, 10.0)
) -> dict:
    """Chapter 8: floating-point operations of a preset's distillation and of its teacher's training,
    and the hours they take at each assumed sustained throughput in ``tflops`` (an *estimate*).

    The operations are counted (``torch.utils.flop_counter``) on one real iteration of the
    package's own loop at a small batch, scaled linearly to the preset's batch; the teacher
    epoch is counted as forward plus backward (3x a forward) over the training set. Only
    convolutions and matrix products are counted, so the figures are slight underestimates.
    """
    from torch.utils.flop_counter import FlopCounterMode
    from .models import create_model

    cfg, run = preset_config(name, iters)
    classes, channels, size, n_train = PRESET_DATA[run["dataset"]]
    small = 4
    teacher = create_model(run["teacher_model"], classes, channels, size)
    meta = checkpoint.untrained_meta(run["teacher_model"], classes, channels, size)
    key = (
        run["dataset"],
        run["teacher_model"],
        cfg.student,
        cfg.budget.g_steps,
        cfg.budget.s_steps,
        cfg.generator.nz,
        cfg.generator.ngf,
    )
    # one counted iteration per model pair and schedule
    if key not in _FLOPS_PER_SAMPLE:
        d = build_distiller(teacher, meta, cfg.replace(batch_size=small, device="cpu"))
        with FlopCounterMode(display=False) as counter:
            d.iterate()
        d.close()
        _FLOPS_PER_SAMPLE[key] = counter.get_total_flops() / small
    per_iter = _FLOPS_PER_SAMPLE[key] * cfg.budget.batch_size
    with FlopCounterMode(display=False) as counter:
        teacher.eval()(torch.zeros(1, channels, size, size))
    per_epoch = 3 * counter.get_total_flops() * n_train
    distill, teach = per_iter * cfg.budget.iters, per_epoch * teacher_epochs
    return dict(
        preset=name,
        dataset=run["dataset"],
        teacher=run["teacher_model"],
        student=cfg.student,
        iters=cfg.budget.iters,
        batch_size=cfg.budget.batch_size,
        g_steps=cfg.budget.g_steps,
        s_steps=cfg.budget.s_steps,
        teacher_epochs=teacher_epochs,
        tflop_per_iter=per_iter / 1e12,
        distill_pflop=distill / 1e15,
        teacher_pflop=teach / 1e15,
        hours={
            t: dict(
                teacher=teach / (t * 1e12) / 3600, distill=distill / (t * 1e12) / 3600
            )
            for t in tflops
        },
    )


def preset_cost_table(plan, tflops=(5.0, 10.0)):
    """Chapter 8: :func:`preset_cost` for each ``(preset, teacher_epochs)`` in ``plan``; returns the
    cost dicts and a table of them (hours include the teacher's training)."""
    import pandas as pd

    costs = [
        preset_cost(name, teacher_epochs=epochs, tflops=tflops) for name, epochs in plan
    ]
    rows = [
        {
            "preset": c["preset"],
            "iterations": c["iters"],
            "TFLOP / iteration": c["tflop_per_iter"],
            "teacher epochs": c["teacher_epochs"],
            **{f"hours at {t:g} TFLOP/s": sum(c["hours"][t].values()) for t in tflops},
        }
        for c in costs
    ]
    formats = {
        "TFLOP / iteration": "{:.1f}",
        **{f"hours at {t:g} TFLOP/s": "{:.1f}" for t in tflops},
    }
    return costs, pd.DataFrame(rows).style.hide(axis="index").format(formats)
