"""The one interval every benchmark table and figure shows: the 95 % confidence interval of a mean
over seeds (Student's t, ``scipy.stats``), for one method's values and for the paired difference of
two methods over the same seeds (book chapter 7)."""

from __future__ import annotations

import statistics
from typing import Optional, Sequence

from scipy import stats

#: The confidence level of every interval the package reports.
LEVEL = 0.95


def summarize(values: Sequence[float]) -> dict:
    """Mean, sample standard deviation and the 95 % confidence interval of the mean of per-seed
    values (``ci95``; its half-width ``ci95_half``, NaN for a single value)."""
    n = len(values)
    mean = statistics.mean(values)
    std = statistics.stdev(values) if n > 1 else 0.0
    if n > 1 and std > 0:
        low, high = stats.t.interval(LEVEL, n - 1, loc=mean, scale=std / n**0.5)
    else:  # one value: no interval; identical values: a point
        low = high = mean if n > 1 else float("nan")
    half = (high - low) / 2 if n > 1 else float("nan")
    ci = [float(low), float(high)] if n > 1 else [float("nan"), float("nan")]
    return dict(n=n, mean=mean, std=std, ci95=ci, ci95_half=float(half))


def paired_difference(
    results: dict, method: str, reference: str, key: str = "student_acc"
) -> Optional[dict]:
    """``method`` minus ``reference`` over the same seeds for one measure: :func:`summarize` of the
    per-seed differences plus ``real`` (its 95 % CI excludes 0); None without per-seed values for
    both."""
    a = results["methods"].get(method, {}).get("per_seed", {}).get(key)
    b = results["methods"].get(reference, {}).get("per_seed", {}).get(key)
    if a is None or b is None or len(a) != len(b) or len(a) < 2:
        return None
    d = summarize([x - y for x, y in zip(a, b)])
    d["real"] = bool(d["ci95"][0] > 0 or d["ci95"][1] < 0)
    return d


def paired_differences(results: dict, reference: str = "cpsc") -> None:
    """Per method and measure, method minus ``reference`` over the same seeds, with its 95 % CI
    (``diff_vs_cpsc`` in each row); a difference is called real only when that interval excludes 0."""
    if "per_seed" not in results["methods"].get(reference, {}):
        return
    for name, r in results["methods"].items():
        if name == reference or "per_seed" not in r:
            continue
        out = {k: paired_difference(results, name, reference, k) for k in r["per_seed"]}
        r["diff_vs_" + reference] = {k: d for k, d in out.items() if d is not None}
