"""bf16 autocast vs float32 on the CPU: paired accuracy parity for `cpsc` (seeds 100-104).

Reads digits_fp32.json, digits_bf16.json, shapes_fp32.json and shapes_bf16.json (written by
`cpsc-lite bench`, copied here) and prints, per dataset and measure: the float32 and bf16 means,
float32's 95 % CI half-width, the paired difference bf16 - float32 with its 95 % t-interval over
the seeds, and the verdict. Parity holds for a measure when the bf16 mean lies inside float32's
95 % CI. Standard library + numpy + scipy only:

    python data/bench/precision/parity.py
"""

import json
import math
from pathlib import Path

import numpy as np
from scipy import stats

HERE = Path(__file__).resolve().parent
DATASETS = ("digits", "shapes")
MEASURES = ("student_acc", "val_acc", "teacher_agreement", "pixel_recognition")
METHOD = "cpsc"


def load(name):
    d = json.loads((HERE / f"{name}.json").read_text())
    return d


def t_interval(x):
    """Mean and 95 % t-interval of x (a zero-width interval when x has no spread)."""
    x = np.asarray(x, dtype=float)
    m = float(x.mean())
    sd = float(x.std(ddof=1))
    if sd == 0.0:
        return m, (m, m)
    lo, hi = stats.t.interval(0.95, len(x) - 1, loc=m, scale=sd / math.sqrt(len(x)))
    return m, (float(lo), float(hi))


def main():
    print("bf16 autocast vs float32 on the CPU, method cpsc, paired seeds")
    print()
    header = (
        f"{'dataset':7} {'measure':18} {'fp32 mean':>9} {'±CI95':>7} {'bf16 mean':>9} "
        f"{'bf16-fp32':>9} {'paired 95% CI':>19} {'p (ttest_rel)':>13} "
        f"{'in fp32 CI':>10} {'CI has 0':>8}"
    )
    print(header)
    print("-" * len(header))
    for ds in DATASETS:
        f32, b16 = load(f"{ds}_fp32"), load(f"{ds}_bf16")
        assert f32["runtime"]["amp"] == "off", (ds, f32["runtime"])
        assert b16["runtime"]["amp"] in ("bf16", "bfloat16"), (ds, b16["runtime"])
        assert f32["seeds"] == b16["seeds"], (f32["seeds"], b16["seeds"])
        for key in ("iters", "batch_size", "teacher", "student"):
            assert f32[key] == b16[key], (ds, key, f32[key], b16[key])
        a = f32["methods"][METHOD]["per_seed"]
        b = b16["methods"][METHOD]["per_seed"]
        for m in MEASURES:
            x, y = np.asarray(a[m], float), np.asarray(b[m], float)
            if not (np.isfinite(x).all() and np.isfinite(y).all()):
                print(f"{ds:7} {m:18} non-finite values: fp32 {x}, bf16 {y}")
                continue
            mx, (lo_x, hi_x) = t_interval(x)
            my = float(y.mean())
            md, (lo_d, hi_d) = t_interval(y - x)
            p = float(stats.ttest_rel(y, x).pvalue) if np.any(y != x) else 1.0
            inside = lo_x <= my <= hi_x
            zero = lo_d <= 0.0 <= hi_d
            print(
                f"{ds:7} {m:18} {mx:9.4f} {(hi_x - lo_x) / 2:7.4f} {my:9.4f} {md:+9.4f} "
                f"[{lo_d:+8.4f}, {hi_d:+8.4f}] {p:13.3f} {'yes' if inside else 'NO':>10} "
                f"{'yes' if zero else 'NO':>8}"
            )
        print()
    for ds in DATASETS:
        f32, b16 = load(f"{ds}_fp32"), load(f"{ds}_bf16")
        print(
            f"{ds}: seeds {f32['seeds']}, {f32['iters']} iterations x batch {f32['batch_size']}; "
            f"seconds per run fp32 {f32['methods'][METHOD]['seconds_mean']:.0f}, "
            f"bf16 {b16['methods'][METHOD]['seconds_mean']:.0f} (emulated bf16, not a speed measure)"
        )


if __name__ == "__main__":
    main()
