"""Several independent judges of a run's class-wise samples, all fitted to the real training split.

    python experiments/judges.py RUN_DIR [RUN_DIR ...] --dataset digits [--out judges.json]

For each RUN_DIR (a generator.pt written by `cpsc-lite distill` or `demo`), the share of its
class-wise samples (50 per class, noise seed 4321, as the runs' own final diagnostics draw them)
that each judge assigns to the conditioning class:

* knn5: 5 nearest neighbours on raw pixels, the runs' "pixel judge" (cpsc_lite.diagnostics);
* logreg, mlp: logistic regression and a one-hidden-layer perceptron (64 units) on raw pixels;
* cnn: a `cnn_small` network (not the teacher's `cnn_base`) trained on the real training split
  with the teacher recipe and seed 7.

The real test split is scored too, as every judge's ceiling. Nothing here changes a run; the
numbers are in experiments/tuning/judges/.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics

import torch


def main(argv=None) -> int:
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    from cpsc_lite.data import denormalize, load_dataset
    from cpsc_lite.diagnostics import PixelJudge, unit_pixels
    from cpsc_lite.generator import generate_per_class, load_generator
    from cpsc_lite.teacher import teacher_recipe, train_teacher

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--out")
    args = ap.parse_args(argv)

    bundle = load_dataset(args.dataset)

    x_train = unit_pixels(bundle.train.images).flatten(1).numpy()
    y_train = bundle.train.labels.numpy()
    flat = {
        # the runs' own pixel judge, fitted as they fit it
        "knn5": PixelJudge(bundle.train).knn,
        "logreg": LogisticRegression(max_iter=2000).fit(x_train, y_train),
        "mlp": MLPClassifier((64,), max_iter=1000, random_state=0).fit(
            x_train, y_train
        ),
    }
    cnn, cnn_test, _ = train_teacher(
        bundle,
        teacher_recipe(args.dataset, model="cnn_small", seed=7, device="cpu"),
        progress=False,
        say=lambda _: None,
    )
    cnn.eval()
    # the normalisation the cnn judge was trained with (that of the training split)
    m = bundle.train.mean.view(1, -1, 1, 1)
    s = bundle.train.std.view(1, -1, 1, 1)

    def judge_all(images01: torch.Tensor, labels: torch.Tensor) -> dict:
        """Each judge's share of ``images01`` (pixels in [0, 1]) assigned to ``labels``."""
        y = labels.numpy()
        out = {
            name: float((j.predict(images01.flatten(1).numpy()) == y).mean())
            for name, j in flat.items()
        }
        with torch.no_grad():
            pred = cnn((images01 - m) / s).argmax(1)
        out["cnn"] = float((pred == labels).float().mean())
        return out

    test = bundle.test
    rows = {"real test split": judge_all(unit_pixels(test.images), test.labels)}
    print(f"(cnn judge: cnn_small, test accuracy {cnn_test:.3f})")
    for run in args.runs:
        gen, meta = load_generator(os.path.join(run, "generator.pt"))
        x, y = generate_per_class(gen, 50, seed=4321)
        rows[run] = judge_all(denormalize(x, meta["mean"], meta["std"]).clamp(0, 1), y)
    names = ["knn5", "logreg", "mlp", "cnn"]
    print(f"{'':<28}" + "".join(f"{n:>8}" for n in names))
    for run, r in rows.items():
        print(f"{run[-28:]:<28}" + "".join(f"{r[n]:>8.3f}" for n in names))
    runs = [r for k, r in rows.items() if k != "real test split"]
    mean_row = {n: statistics.mean(r[n] for r in runs) for n in names}
    print(f"{'mean over runs':<28}" + "".join(f"{mean_row[n]:>8.3f}" for n in names))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(
                dict(rows=rows, mean=mean_row, cnn_test_acc=cnn_test), f, indent=1
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
