"""Chapter 7's comparisons: paired differences, the equal-compute frontier and the forest plot."""

import math

import pytest

from cpsc_lite import comparisons as cmp
from cpsc_lite.stats import paired_differences, summarize


def _table(accs: dict, tflop=None, seconds=None) -> dict:
    """A results.json as ``cpsc-lite bench`` writes it, from per-seed student accuracies."""
    methods = {}
    for name, per_seed in accs.items():
        methods[name] = {
            "per_seed": {"student_acc": per_seed},
            "student_acc_mean": sum(per_seed) / len(per_seed),
            "stats": {"student_acc": summarize(per_seed)},
            "seconds_mean": (seconds or {}).get(name, 10.0),
            "iters": 100,
        }
    results = {"methods": methods, "iters": 100}
    if tflop is not None:
        results["budget_flops"] = {"tflop_per_run": tflop, "like": "cpsc:100"}
    paired_differences(results)
    return results


def test_readable_names_and_variants():
    assert cmp.readable("cpsc_no_ce") == "without pseudo-supervised CE"
    assert cmp.readable("cmi:lr_generator=0.01") == "CMI (lr_generator = 0.01)"
    assert cmp.readable("something_new") == "something_new"


def test_paired_difference_in_points_with_its_interval():
    t = _table(
        {
            "cpsc": [0.90, 0.91, 0.92],
            "cpsc_no_ce": [0.50, 0.52, 0.51],
            "cpsc_no_scl": [0.91, 0.90, 0.92],
        }
    )
    worse = cmp.paired(t, "cpsc_no_ce")
    assert worse["mean"] == pytest.approx(-40.0) and worse["real"]
    assert worse["lo"] < worse["mean"] < worse["hi"] < 0
    same = cmp.paired(t, "cpsc_no_scl")
    assert not same["real"] and same["lo"] < 0 < same["hi"]
    assert cmp.paired(t, "cpsc") is None and cmp.paired(t, "absent") is None
    mean, half = cmp.accuracy(t, "cpsc")
    assert mean == pytest.approx(91.0) and half > 0


def test_best_free_ignores_the_bounds():
    t = _table(
        {
            "cpsc": [0.8, 0.82],
            "data": [0.99, 0.98],
            "noise": [0.9, 0.91],
            "cmi": [0.7, 0.72],
        }
    )
    assert cmp.best_free(t) == "cpsc"


def test_frontier_names_the_best_and_who_is_level_with_it():
    low = _table(
        {
            "cpsc": [0.80, 0.82, 0.81],
            "cmi": [0.60, 0.62, 0.61],
            "dafl": [0.805, 0.815, 0.80],
        },
        1.0,
    )
    high = _table(
        {
            "cpsc": [0.85, 0.86, 0.84],
            "cmi": [0.90, 0.91, 0.92],
            "dafl": [0.70, 0.71, 0.72],
        },
        4.0,
    )
    curves = cmp.compute_curves({"small": low, "large": high})
    assert [p[0] for p in curves["cmi"]] == [1.0, 4.0]
    front = cmp.frontier(curves)
    assert [f["best"] for f in front] == ["cpsc", "cmi"]
    assert front[0]["level_with"] == ["dafl"] and front[1]["level_with"] == []
    assert math.isclose(front[1]["acc"], 91.0)


def test_compute_plot_zooms_and_circles_the_best():
    import matplotlib

    matplotlib.use("Agg")
    low = _table(
        {"cpsc": [0.80, 0.82, 0.81], "cmi": [0.60, 0.62, 0.61]},
        1.0,
        {"cpsc": 5, "cmi": 9},
    )
    high = _table(
        {"cpsc": [0.85, 0.86, 0.84], "cmi": [0.90, 0.91, 0.92]},
        4.0,
        {"cpsc": 20, "cmi": 35},
    )
    curves = cmp.compute_curves({"a": low, "b": high})
    ax = cmp.plot_compute(curves, "toy", teacher_acc=0.95)
    bottom, top = ax.get_ylim()
    assert 50 < bottom < 60 and 95 <= top <= 100  # zoomed: not a 0-100 axis
    assert len(ax.collections) >= 2  # error bars and the circled best points
    ax = cmp.plot_compute(curves, "toy", x="seconds")
    xs = sorted(x for line in ax.get_lines() for x in line.get_xdata())
    assert min(xs) == 5 and max(xs) == 35
    with pytest.raises(ValueError, match="tflop"):
        cmp.plot_compute(curves, "toy", x="minutes")
    # a floor above CMI's 61 % at the small budget: that point becomes a labelled triangle on
    # the bottom edge and the axis starts at the floor
    ax = cmp.plot_compute(curves, "toy", floor=70)
    assert ax.get_ylim()[0] == 70
    assert [t.get_text() for t in ax.texts] == ["61 %"]
    assert [line.get_marker() for line in ax.get_lines()].count("v") == 1
    ys = [
        y
        for line in ax.get_lines()
        if line.get_marker() == "o"
        for y in line.get_ydata()
    ]
    assert min(ys) >= 70


def test_forest_plot_has_one_panel_per_data_set_and_readable_rows():
    import matplotlib

    matplotlib.use("Agg")
    a = _table(
        {
            "cpsc": [0.9, 0.91, 0.92],
            "cpsc_no_ce": [0.3, 0.35, 0.32],
            "cpsc_no_scl": [0.9, 0.92, 0.91],
        }
    )
    b = _table({"cpsc": [0.7, 0.71, 0.72], "cpsc_no_scl": [0.75, 0.76, 0.77]})
    fig = cmp.plot_forest(
        {"digits": a, "shapes": b}, names=("cpsc_no_ce", "cpsc_no_scl")
    )
    left, right = fig.axes
    assert [left.get_title(), right.get_title()] == ["digits", "shapes"]
    labels = [t.get_text() for t in left.get_yticklabels()]
    assert labels == [
        "without teacher/student contrast",
        "without pseudo-supervised CE",
    ]
    assert left.get_xscale() == "symlog"  # -58 points beside +0.3
    assert right.get_xscale() == "linear"
    filled = [
        line.get_markerfacecolor() for line in right.lines if line.get_marker() == "o"
    ]
    assert filled and filled[0] != "white"  # +5 points over the same seeds is real
    with pytest.raises(ValueError, match="at least one"):
        cmp.plot_forest({"none": None})


def test_summary_table_rows():
    pytest.importorskip("pandas")
    t = _table({"cpsc": [0.9, 0.91, 0.92], "cpsc_no_ce": [0.3, 0.35, 0.32]})
    for r in t["methods"].values():
        r["stats"]["teacher_agreement"] = summarize([0.9, 0.8, 0.85])
    frame = cmp.summary_table(t).data
    assert list(frame["method"]) == ["CPSC-DFKD", "without pseudo-supervised CE"]
    assert frame["minus CPSC-DFKD (points)"][0] == "–"
    assert frame["minus CPSC-DFKD (points)"][1].startswith("-58.7")
    assert frame["teacher agreement"][1] == "0.85"


def test_each_kind_has_its_colour():
    assert cmp.colour("cpsc") != cmp.colour("cpsc_no_ce") != cmp.colour("noise")
    assert cmp.colour("cmi:lr_generator=0.01") == cmp.colour("cmi")
