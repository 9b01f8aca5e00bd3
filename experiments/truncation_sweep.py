"""Teacher agreement, pixel judge and diversity of a run's class-wise samples at several truncations.

    python experiments/truncation_sweep.py RUN_DIR [RUN_DIR ...] --teacher TEACHER.pt --dataset digits
        [--psi 1,0.9,...] [--out sweep.json]

Each RUN_DIR holds a generator.pt written by `cpsc-lite distill` (or `demo`). Prints one row per
psi with the means over the runs and writes every run's rows to --out. Used for
experiments/tuning/truncation/ (its RULE.md says how the shown psi was chosen).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics

from cpsc_lite.data import load_dataset
from cpsc_lite.diagnostics import PixelJudge, truncation_sweep
from cpsc_lite.generator import load_generator
from cpsc_lite.teacher import load_teacher


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--teacher", required=True)
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--psi", default="1,0.9,0.8,0.7,0.6,0.5,0.4,0.3")
    ap.add_argument("--per-class", type=int, default=100)
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    psis = [float(p) for p in args.psi.split(",")]
    teacher, meta = load_teacher(args.teacher)
    bundle = load_dataset(args.dataset)
    judge = PixelJudge(bundle.train)
    per_run = {}
    for run in args.runs:
        gen, _ = load_generator(os.path.join(run, "generator.pt"))
        per_run[run] = truncation_sweep(
            gen, teacher, psis, meta["mean"], meta["std"], judge, args.per_class
        )
    print("psi   teacher agreement   pixel judge   diversity   (means over runs)")
    summary = []
    for i, psi in enumerate(psis):
        row = {
            key: statistics.mean(r[i][key] for r in per_run.values())
            for key in ("teacher_agreement", "pixel_recognition", "diversity")
        }
        summary.append(dict(psi=psi, **row))
        print(
            f"{psi:<5g} {row['teacher_agreement']:>17.3f} {row['pixel_recognition']:>13.3f} "
            f"{row['diversity']:>11.4f}"
        )
    if args.out:
        with open(args.out, "w") as f:
            json.dump(
                dict(teacher=args.teacher, runs=per_run, means=summary), f, indent=1
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
