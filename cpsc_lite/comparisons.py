"""Comparing methods (book chapter 7): readable names, the paired differences a reading rests on,
one compact table per benchmark, accuracy against compute with its frontier, and a forest plot of
the ablations with one panel per data set.

Everything reads ``results.json`` dicts written by ``cpsc-lite bench`` (see
:mod:`cpsc_lite.reports` for loading them); intervals are those :mod:`cpsc_lite.stats` stored there.
"""

from __future__ import annotations

from typing import Optional

from .methods import method_variant

#: What chapter 7 calls each method and ablation (row labels of its tables and figures).
READABLE = {
    "cpsc": "CPSC-DFKD",
    "cpsc_no_cond": "without conditioning",
    "cpsc_no_ce": "without pseudo-supervised CE",
    "cpsc_no_scl": "without teacher/student contrast",
    "cpsc_no_bn": "without BN prior",
    "cpsc_no_ikd": "without inverse-KD term",
    "cpsc_paper": "CPSC-DFKD, the paper's settings",
    "reference_compat": "CPSC-DFKD, the authors' code",
    "bn_ce": "BN prior + CE only",
    "dfad": "DFAD",
    "dafl": "DAFL",
    "deepinv": "DeepInversion",
    "cmi": "CMI",
    "noise": "Gaussian noise (lower bound)",
    "data": "real images (upper bound)",
}

#: The rows of each kind, in the order the book lists them.
ABLATIONS = ("cpsc_no_cond", "cpsc_no_ce", "cpsc_no_scl", "cpsc_no_bn", "cpsc_no_ikd")
PAPER_VARIANTS = ("cpsc_paper", "reference_compat")
EARLIER = ("bn_ce", "dfad", "dafl", "deepinv", "cmi")
BOUNDS = ("noise", "data")


def readable(spec: str) -> str:
    """The book's name of a method or of a variant ``NAME:KEY=VALUE...``."""
    name, settings = method_variant(spec)
    text = READABLE.get(name, name)
    if settings:
        text += " (" + ", ".join(f"{k} = {v}" for k, v in settings.items()) + ")"
    return text


def colour(spec: str) -> str:
    """The matplotlib colour of a row's kind (CPSC-DFKD, ablation, earlier method, bound, ...)."""
    from .reports import _GROUP_COLOURS, method_group

    return _GROUP_COLOURS[method_group(spec)]


def accuracy(results: dict, name: str) -> tuple[float, float]:
    """``(mean, half-width of the 95 % CI)`` of a row's student accuracy, in %."""
    st = results["methods"][name]["stats"]["student_acc"]
    half = st["ci95_half"]
    return 100 * st["mean"], (0.0 if half != half else 100 * half)


def paired(results: dict, name: str, measure: str = "student_acc") -> Optional[dict]:
    """The paired difference ``name - cpsc`` over the same seeds in ``measure``, in percentage
    points for shares (``mean``, ``lo``, ``hi`` of its 95 % CI, and ``real``: the interval excludes
    0); None where the table has no such difference."""
    d = results["methods"].get(name, {}).get("diff_vs_cpsc", {}).get(measure)
    if d is None:
        return None
    scale = 1.0 if measure in ("separation", "diversity") else 100.0
    return dict(
        mean=scale * d["mean"],
        lo=scale * d["ci95"][0],
        hi=scale * d["ci95"][1],
        real=bool(d["real"]),
    )


def best_free(results: dict, names=None) -> str:
    """The data-free row with the highest mean student accuracy (bounds excluded)."""
    names = names or [n for n in results["methods"] if n not in BOUNDS]
    return max(names, key=lambda n: results["methods"][n]["student_acc_mean"])


def summary_table(results: dict, names=None):
    """One row per method: kind, student accuracy (95 % CI), the paired difference to CPSC-DFKD,
    teacher agreement of the samples and seconds per run; a pandas Styler without index."""
    import pandas as pd

    from .reports import method_group

    names = names or list(results["methods"])
    rows = []
    for name in names:
        r = results["methods"][name]
        mean, half = accuracy(results, name)
        d = paired(results, name)
        agree = r["stats"].get("teacher_agreement")
        rows.append(
            {
                "method": readable(name),
                "kind": method_group(name),
                "student accuracy %": f"{mean:.1f} ± {half:.1f}",
                "minus CPSC-DFKD (points)": "–"
                if d is None
                else f"{d['mean']:+.1f} [{d['lo']:+.1f}, {d['hi']:+.1f}]",
                "teacher agreement": "–" if agree is None else f"{agree['mean']:.2f}",
                "iterations": r.get("iters") or results["iters"],
                "s / run": f"{r['seconds_mean']:.0f}",
            }
        )
    return pd.DataFrame(rows).style.hide(axis="index")


# ------------------------------------------------------------------ equal compute
def compute_curves(tables: dict) -> dict:
    """Accuracy against compute from benchmark tables made with ``--equal-flops`` at several
    budgets (``tables``: label -> results.json): per method a list of ``(TFLOP per run, seconds
    per run, mean accuracy %, half-width of its 95 % CI)``, sorted by compute."""
    curves: dict = {}
    for results in tables.values():
        tflop = results["budget_flops"]["tflop_per_run"]
        for name in results["methods"]:
            mean, half = accuracy(results, name)
            seconds = results["methods"][name]["seconds_mean"]
            curves.setdefault(name, []).append((tflop, seconds, mean, half))
    return {name: sorted(points) for name, points in curves.items()}


def frontier(curves: dict) -> list[dict]:
    """At each budget, the method with the highest mean accuracy and those whose mean lies inside
    its 95 % interval (not distinguishable from it with these seeds)."""
    budgets = sorted({p[0] for points in curves.values() for p in points})
    out = []
    for tflop in budgets:
        at = {n: p for n, points in curves.items() for p in points if p[0] == tflop}
        best = max(at, key=lambda n: at[n][2])
        low = at[best][2] - at[best][3]
        level = sorted(n for n in at if n != best and at[n][2] >= low)
        out.append(dict(tflop=tflop, best=best, acc=at[best][2], level_with=level))
    return out


def plot_compute(
    curves: dict,
    title: str,
    teacher_acc: Optional[float] = None,
    ax=None,
    x: str = "tflop",
    floor: Optional[float] = None,
):
    """Student accuracy against the compute of a run (``x``: ``"tflop"``, the floating-point
    operations, or ``"seconds"``, the measured wall time), one line per method with its 95 % CI
    over seeds, the best method at each budget circled; the accuracy axis starts just below the
    lowest interval, so that differences of a point stay visible.

    ``floor`` (an accuracy in %): a mean below it is not drawn to scale but as a triangle on the
    bottom edge labelled with its value, so that one far-behind method does not flatten the
    differences among the others."""
    import matplotlib.pyplot as plt

    if x not in ("tflop", "seconds"):
        raise ValueError(f"x must be 'tflop' or 'seconds', not {x!r}")
    col = 0 if x == "tflop" else 1
    if ax is None:
        _, ax = plt.subplots(figsize=(7.5, 4.2))
    below = floor if floor is not None else -1.0
    best_at = {f["tflop"]: f["best"] for f in frontier(curves)}
    # means below the floor at one budget are stacked above each other on the bottom edge
    stacked: dict = {}
    for i, name in enumerate(sorted(curves)):
        points = curves[name]
        shown = [p for p in points if p[2] >= below]
        colour = f"C{i}"
        ax.errorbar(
            [p[col] for p in shown],
            [p[2] for p in shown],
            yerr=[p[3] for p in shown],
            marker="o",
            capsize=3,
            label=readable(name),
            color=colour,
        )
        for p in points:
            if p[2] >= below:
                continue
            key = round(p[0], 6)  # one budget: the same operations, up to rounding
            level = stacked[key] = stacked.get(key, -1) + 1
            ax.plot([p[col]], [below], marker="v", ms=9, color=colour, clip_on=False)
            ax.annotate(
                f"{p[2]:.0f} %",
                (p[col], below),
                xytext=(0, 7 + 9 * level),
                textcoords="offset points",
                ha="center",
                fontsize=7,
                color=colour,
            )
        for p in points:
            if best_at.get(p[0]) == name:
                ax.scatter(
                    [p[col]], [p[2]], s=170, facecolors="none", edgecolors="k", zorder=3
                )
    if teacher_acc is not None:
        ax.axhline(100 * teacher_acc, color="k", ls="--", lw=1, label="teacher")
    visible = [
        (y, e) for points in curves.values() for *_, y, e in points if y >= below
    ]
    low = min(y - e for y, e in visible)
    high = max(y + e for y, e in visible)
    if teacher_acc is not None:
        high = max(high, 100 * teacher_acc)
    bottom = max(0.0, low - 2)
    if len(visible) < sum(len(points) for points in curves.values()):
        bottom = floor  # the triangles sit on the bottom edge
    ax.set(
        xscale="log",
        xlabel="TFLOP per run (log scale)"
        if x == "tflop"
        else "seconds per run (log scale)",
        ylabel="student test accuracy (%)",
        ylim=(bottom, min(100.0, high + 1)),
        title=title,
    )
    from matplotlib.ticker import FuncFormatter

    # the ticks matplotlib labels, written 2, 3, 40 instead of 2 x 10^0, 3 x 10^0, 4 x 10^1
    for getter, setter in (
        (ax.xaxis.get_major_formatter, ax.xaxis.set_major_formatter),
        (ax.xaxis.get_minor_formatter, ax.xaxis.set_minor_formatter),
    ):
        default = getter()
        setter(FuncFormatter(lambda v, pos, f=default: f"{v:g}" if f(v, pos) else ""))
    return ax


# ------------------------------------------------------------------ forest plot
def _symlog_if_wide(ax, results: dict, names, measure: str) -> None:
    """Differences of tens of points beside ones of a point: linear within ±5, logarithmic beyond."""
    ends = [
        v
        for n in names
        if (d := paired(results, n, measure)) is not None
        for v in (d["lo"], d["hi"])
    ]
    widest = max((abs(v) for v in ends), default=0.0)
    if widest <= 20:
        return
    from matplotlib.ticker import FixedLocator, FuncFormatter

    ax.set_xscale("symlog", linthresh=5)
    # every interval inside the axes, with a margin, however far it reaches
    ax.set_xlim(min(-2.0, 1.2 * min(ends)), max(2.0, 1.2 * max(ends)))
    marks = (-100, -50, -20, -10, -5, -2, 0, 2, 5, 10, 20, 50, 100)
    ticks = [t for t in marks if abs(t) <= 1.2 * widest]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:+g}" if v else "0"))


def plot_forest(
    tables: dict,
    names=ABLATIONS,
    measure: str = "student_acc",
    xlabel: str = "student accuracy minus CPSC-DFKD's (percentage points)",
):
    """One panel per data set (``tables``: title -> results.json), one row per name in ``names``
    with its paired difference to CPSC-DFKD and the 95 % CI; filled: the interval excludes 0.
    Rows a table lacks are left empty. Returns the figure."""
    import matplotlib.pyplot as plt

    titles = [t for t, r in tables.items() if r is not None]
    if not titles:
        raise ValueError("plot_forest needs at least one results table")
    fig, axes = plt.subplots(
        1,
        len(titles),
        figsize=(4.2 * len(titles) + 1.8, 0.45 * len(names) + 1.4),
        sharey=True,
        squeeze=False,
    )
    rows = list(reversed(names))
    for ax, title in zip(axes[0], titles):
        for i, name in enumerate(rows):
            d = paired(tables[title], name, measure)
            if d is None:
                continue
            colour = (
                "tab:grey"
                if not d["real"]
                else ("tab:red" if d["mean"] < 0 else "tab:green")
            )
            ax.plot([d["lo"], d["hi"]], [i, i], color=colour, lw=2)
            ax.plot(
                d["mean"],
                i,
                "o",
                color=colour,
                mfc=colour if d["real"] else "white",
                ms=7,
            )
        ax.axvline(0, color="k", lw=1)
        _symlog_if_wide(ax, tables[title], rows, measure)
        ax.set_title(title)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(range(len(rows)), [readable(n) for n in rows])
    fig.tight_layout()
    return fig
