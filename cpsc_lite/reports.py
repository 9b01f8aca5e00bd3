"""Reading benchmark results (book chapter 7): the table every results.json becomes (results.md, the
command line, the book), the book's figures and ablation readings, and the repository's result
files the book shows (benchmark tables, speed profiles, recorded full-scale runs, published
numbers). Intervals are :mod:`cpsc_lite.stats`'s, everywhere."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

from .compat import RENAMED_METHODS
from .methods import METHOD_HELP, method_variant


def _ci(r: dict, key: str, scale: float = 100.0, digits: int = 2) -> str:
    """``mean ± half-width of its 95 % CI`` of a measure of a row (``–`` where it was not measured)."""
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
    if results.get("budget_flops") is not None:
        b = results["budget_flops"]
        return (
            f"equal compute: {b['tflop_per_run']:.1f} TFLOP per run, the cost of "
            f"{b['like'].replace(':', ' x ')} iterations (iterations per method below)"
        )
    if results.get("budget_seconds") is not None:
        return f"equal time: about {results['budget_seconds']:g} s of training per run (iterations per method below)"
    return f"{results['iters']} iterations"


def table_rows(results: dict) -> list[dict]:
    """One row per method of a results.json: the cells both the command line's Markdown table and
    the book's table show (accuracies in %, mean ± half-width of the 95 % CI over seeds)."""
    rows = []
    for name, r in results["methods"].items():
        d = r.get("diagnostics", {})
        diff = r.get("diff_vs_cpsc", {}).get("student_acc")
        delta = (
            "–"
            if diff is None
            else f"{100 * diff['mean']:+.2f} [{100 * diff['ci95'][0]:+.2f}, "
            f"{100 * diff['ci95'][1]:+.2f}]" + (" **real**" if diff["real"] else "")
        )
        acc = (
            _ci(r, "student_acc")
            if "stats" in r
            else f"{100 * r['student_acc_mean']:.2f} ± {100 * r['student_acc_std']:.2f} (std)"
        )
        rows.append(
            {
                "method": name,
                "student acc": acc,
                "Δ vs cpsc": delta,
                "best acc": _ci(r, "best_student_acc"),
                "acc at 25 % / 50 %": " / ".join(
                    _mean(r, k) for k in ("acc_at_25", "acc_at_50")
                ),
                "teacher agreement": _ci(r, "teacher_agreement", 1, 3),
                "pixel judge": _ci(r, "pixel_recognition", 1, 3),
                "separation": _ci(r, "separation", 1, 3),
                "diversity": f"{d['diversity']:.3f}" if "diversity" in d else "–",
                "class balance": f"{d['class_balance']:.3f}"
                if "class_balance" in d
                else "–",
                "FID (teacher feats)": f"{d['fid']:.2f}" if "fid" in d else "–",
                "iterations": r.get("iters") or results["iters"],
                "s / run": f"{r['seconds_mean']:.0f}",
            }
        )
    return rows


def markdown_table(rows: list[dict]) -> str:
    """A list of same-keyed dicts as a Markdown table. (pandas' ``to_markdown`` does this too, but
    needs pandas and tabulate, which the command line does not otherwise need.)"""
    if not rows:
        return ""
    head = list(rows[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(row[k]) for k in head) + " |" for row in rows]
    return "\n".join(lines)


#: What the table's columns mean (under the Markdown table and the book's).
TABLE_NOTE = (
    "Accuracies in %, on the test split: mean ± half-width of the 95 % confidence interval "
    "(Student's t over the seeds). Δ vs cpsc: the paired difference over the same seeds with its "
    "95 % CI; **real** only when the interval excludes 0. Acc at 25 % / 50 %: mean test accuracy "
    "after that share of the iterations (time to accuracy; the learning rate has not decayed yet "
    "there). Teacher agreement: share of class-wise samples the teacher assigns to their "
    "conditioning class; pixel judge: the same share for a 5-nearest-neighbour classifier on raw "
    "pixels fitted to the real training split (it never trains anything); both need images made "
    "for a class. Separation: mean cosine distance between class centroids of the teacher's "
    "features of synthetic images; diversity: mean within-class cosine distance; class balance: "
    "normalised entropy of the teacher's predictions on them; FID: Fréchet distance to real test "
    "images in the teacher's feature space."
)


def results_markdown(results: dict) -> str:
    """The benchmark table as Markdown (results.md, and what ``cpsc-lite bench`` prints)."""
    teacher = results["teacher"]
    return "\n".join(
        [
            f"# Benchmark on {results['dataset']}",
            "",
            f"Teacher {teacher['model']} "
            f"(test accuracy {teacher.get('test_acc', float('nan')):.4f}), "
            f"student {results.get('student')}, {budget_text(results)} x batch "
            f"{results.get('batch_size')}, seeds {results['seeds']}. Machine: "
            f"{results.get('machine')}. cpsc-lite {results['package_version']}.",
            "",
            f"Command: `{results['command']}`",
            "",
            markdown_table(table_rows(results)),
            "",
            TABLE_NOTE,
            "",
        ]
    )


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
    """Chapter 7: :func:`table_rows` as a pandas table, with each method's kind."""
    import pandas as pd

    rows = [dict(row, kind=method_group(row["method"])) for row in table_rows(results)]
    order = ["method", "kind"] + [k for k in rows[0] if k not in ("method", "kind")]
    return pd.DataFrame(rows)[order].style.hide(axis="index")


def plot_bench(results: dict):
    """Chapter 7: mean student accuracy per method with its 95 % CI over seeds; the axis starts
    just below the lowest interval, so that differences of a point stay visible."""
    import matplotlib.pyplot as plt

    names = list(results["methods"])
    rows = [results["methods"][n] for n in names]
    means = [100 * r["student_acc_mean"] for r in rows]
    halves = [
        100 * r["stats"]["student_acc"]["ci95_half"] if "stats" in r else 0.0
        for r in rows
    ]
    halves = [0.0 if h != h else h for h in halves]  # one seed: no interval
    fig, ax = plt.subplots(figsize=(10, 4.2))
    where = range(len(names))
    colours = [_GROUP_COLOURS[method_group(n)] for n in names]
    ax.bar(where, means, yerr=halves, capsize=4, color=colours)
    teacher = 100 * results["teacher"]["test_acc"]
    ax.axhline(teacher, color="k", ls="--", lw=1, label="teacher")
    for label, colour in _GROUP_COLOURS.items():
        if any(method_group(n) == label for n in names):
            ax.bar([0], [0], color=colour, label=label)  # legend entries only
    low = min(m - h for m, h in zip(means, halves))
    ax.set(
        title=f"{results['dataset']}: {results['teacher']['model']} -> {results['student']}, "
        f"{budget_text(results)}, {len(results['seeds'])} seeds (error bars: 95 % CI)",
        xlabel="method",
        ylabel="student test accuracy (%)",
        ylim=(max(0.0, low - 5), min(100.0, max(teacher, max(means)) + 2)),
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


# ------------------------------------------------------------- the book's reports
# ------------------------------------------------------------- chapter 7
#: Where a reader without a source checkout (e.g. Colab) finds the repository's data files.
RAW_URL = "https://raw.githubusercontent.com/cpsc-dfkd/cpsc-dfkd/main/"


def repo_root() -> Optional[Path]:
    """The source checkout this package runs from, or None when it was installed from an archive."""
    root = Path(__file__).resolve().parent.parent
    return (
        root
        if (root / "pyproject.toml").exists() and (root / "cpsc_lite").is_dir()
        else None
    )


def _repo_file(relative: str) -> tuple[Optional[Path], Optional[str]]:
    """A data file of the repository: ``(local path, None)`` in a checkout, else ``(None, URL)``."""
    root = repo_root()
    if root is not None:
        return root / relative, None
    return None, RAW_URL + relative


def bench_path(dataset: str) -> str:
    """``data/bench/<dataset>/results.json`` (or under ``$CPSC_BENCH_DIR``), written by ``cpsc-lite bench``."""
    base = os.environ.get("CPSC_BENCH_DIR")
    if base:
        return str(Path(base) / dataset / "results.json")
    # the validation runs behind the defaults are research logs, kept under experiments/
    where = "experiments" if dataset.startswith("tuning/") else "data/bench"
    local, url = _repo_file(f"{where}/{dataset}/results.json")
    return str(local) if local is not None else url


def _bench_text(where: str) -> Optional[str]:
    """The text of a file under ``data/bench``: a local path, or outside a checkout a URL; None
    when it is not there (or cannot be fetched)."""
    if where.startswith("https://"):
        import urllib.request

        try:
            with urllib.request.urlopen(where, timeout=10) as r:
                return r.read().decode()
        except Exception:
            return None
    return Path(where).read_text() if os.path.exists(where) else None


def bench_jobs(folder: str) -> Optional[list]:
    """Chapter 7: the validation jobs a tuning call logged (``data/bench/<folder>/jobs.jsonl``, one
    JSON object per line, written by ``experiments/tune.py``; or under ``$CPSC_BENCH_DIR``), or None
    when the file is not there (or, outside a checkout, cannot be fetched)."""
    text = _bench_text(bench_path(folder)[: -len("results.json")] + "jobs.jsonl")
    if text is None:
        return None
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def bench_results(dataset: str) -> Optional[dict]:
    """Chapter 7: the benchmark results for ``dataset``, or None when nobody has produced them yet."""

    where = bench_path(dataset)
    text = _bench_text(where)
    if text is None:
        return None
    try:
        results = json.loads(text)
    except ValueError:
        if where.startswith("https://"):
            return None  # a broken download counts as no file, as before
        raise
    return with_current_names(results)


def bench_report(dataset: str, how_to_make: str) -> Optional[dict]:
    """Chapter 7: show where a benchmark file came from, its table and chart; or say plainly that it is missing."""
    import matplotlib.pyplot as plt
    from IPython.display import Markdown, display
    import textwrap

    results = bench_results(dataset)
    if results is None:
        where, root = bench_path(dataset), repo_root()
        if root is not None and where.startswith(str(root)):
            where = os.path.relpath(where, root)
        command = " \\\n        ".join(
            textwrap.wrap(how_to_make, 64, break_on_hyphens=False)
        )
        display(
            Markdown(
                f"```{{important}}\nNo benchmark results for **{dataset}** yet: `{where}` does not "
                f"exist, so this section shows no numbers. To produce them, run\n\n    {command}\n\n"
                "and build the book again.\n```"
            )
        )
        return None
    teacher = results["teacher"]
    display(
        Markdown(
            f"Produced by `{results['command']}` with cpsc-lite {results['package_version']}: teacher "
            f"{teacher['model']} (test accuracy {teacher['test_acc']:.2%}), student {results['student']}, "
            f"{budget_text(results)} x batch {results['batch_size']}, seeds {results['seeds']}"
            + (f", on {results['machine']}" if results.get("machine") else "")
            + "."
            + "".join(
                f" The row `{new}` was called `{old}` when this table was written; today `{old}` is "
                "DeepInversion proper (pixels optimised into a pool), which this table does not contain."
                for old, new in results.get("renamed", {}).items()
            )
        )
    )
    display(bench_table(results))
    plot_bench(results)
    plt.show()
    return results


def profile_report(names=("digits", "wrn40_2_wrn16_2")):
    """Chapter 7: the speed profiles in ``data/bench/profile/<name>/profile.json`` as a table (one
    row per precision measured), with their commands."""
    import pandas as pd

    rows, commands = [], []
    for name in names:
        local, url = _repo_file(f"data/bench/profile/{name}/profile.json")
        if local is None or not local.exists():
            continue
        p = json.loads(local.read_text())
        paths = p.get("paths") or {"off": dict(p, amp="float32", speedup=1.0)}
        for path in paths.values():
            rows.append(
                {
                    "teacher → student": f"{p['teacher']} → {p['student']}",
                    "image": f"{p['img_size']}x{p['img_size']}",
                    "batch": p["batch_size"],
                    "G : S steps": f"{p['g_steps']} : {p['s_steps']}",
                    "precision": path["amp"],
                    "CPU": p.get("cpu_capability", "–"),
                    "s / iteration": path["seconds_per_iter"],
                    "floor (s)": path["floor_seconds"],
                    "ratio": path["floor_ratio"],
                    "speed vs float32": path.get("speedup") or float("nan"),
                }
            )
        commands.append(p.get("command", "(command not recorded)"))
    if not rows:
        return None, []
    table = (
        pd.DataFrame(rows)
        .style.hide(axis="index")
        .format(
            {
                "s / iteration": "{:.3f}",
                "floor (s)": "{:.3f}",
                "ratio": "{:.2f}",
                "speed vs float32": "{:.2f}x",
            }
        )
    )
    return table, commands


def results_dir() -> Optional[Path]:
    """``data/results/`` of the checkout (or ``$CPSC_RESULTS_DIR``): full-scale runs saved by ``cpsc-lite record``."""
    base = os.environ.get("CPSC_RESULTS_DIR")
    if base:
        return Path(base)
    root = repo_root()
    return root / "data" / "results" if root is not None else None


def recorded_runs_report() -> list:
    """Chapter 7: every run in :func:`results_dir` as a table, then each one's commands, samples and curves.

    Every value comes from the run's own ``run.json`` (written by ``cpsc-lite record`` from its
    metrics.json); with no recorded run it says so and how to add one.
    """
    import pandas as pd
    from IPython.display import Image, Markdown, display
    from .results import duration, load_recorded

    where = results_dir()
    runs = load_recorded(where) if where is not None else []
    if not runs:
        shown = (
            "data/results/"
            if where is None or repo_root() is None
            else os.path.relpath(where, repo_root())
        )
        display(
            Markdown(
                f"```{{important}}\nNo full-scale run has been recorded yet: `{shown}` holds no `run.json`, so this "
                "section shows no numbers of ours at CIFAR scale. After a run, record it with\n\n"
                "    cpsc-lite record runs/NAME --name NAME\n\nand build the book again.\n```"
            )
        )
        return []
    rows = [
        {
            "run": r["name"] + ("" if r["complete"] else " (partial)"),
            "data set": r["dataset"],
            "teacher → student": f"{r['teacher']} → {r['student']}",
            "method": r["method"],
            "iterations": f"{r['iters']} of {r['planned_iters']}",
            "teacher acc. (%)": 100 * r["teacher_acc"],
            "student acc. (%)": 100 * r["student_acc"],
            "hardware": ", ".join(r["device_names"]),
            "processes": ", ".join(map(str, r["world_sizes"])),
            "wall time": duration(r["wall_seconds"]),
            "cpsc-lite": ", ".join(r["cpsc_lite_versions"]),
        }
        for r in runs
    ]
    display(
        Markdown(
            "**Measured by us** with this package; every value below is read from the run's files."
        )
    )
    display(
        pd.DataFrame(rows)
        .style.hide(axis="index")
        .format({"teacher acc. (%)": "{:.2f}", "student acc. (%)": "{:.2f}"})
    )
    for r in runs:
        commands = "\n".join(f"    {c}" for c in r["commands"])
        display(Markdown(f"**{r['name']}**: commands, in order\n\n{commands}"))
        for figure, width in (("samples.png", 480), ("curves.png", 720)):
            path = Path(r["folder"]) / figure
            if path.exists():
                display(Image(filename=str(path), width=width))
    return runs


def published_results():
    """Chapter 7: ``data/published_results.csv`` (numbers from the literature, not ours) as a DataFrame."""
    import pandas as pd

    local, url = _repo_file("data/published_results.csv")
    return pd.read_csv(local if local is not None else url)
