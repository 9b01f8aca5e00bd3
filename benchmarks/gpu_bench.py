"""Speed and memory of CPSC-DFKD iterations on one GPU, per precision and compile setting.

Used by ``benchmarks/gpu_check.sh``; also runnable alone::

    python benchmarks/gpu_bench.py --out gpu_bench.json                       # C10 ResNet-34 -> ResNet-18, batch 512
    python benchmarks/gpu_bench.py --configs fp32,bf16 --iters 20 --out b.json

One *iteration* is what the presets count: ``g_steps`` (6) generator updates then ``s_steps``
(5) student updates, each on a fresh batch. The teacher is randomly initialised (speed does
not depend on its weights) and nothing is evaluated. Each configuration runs in its own
process (clean peak-memory counters and compile caches) under a time limit, and the
remaining budget is checked before each one, so a slow compile is recorded as a timeout
instead of stalling the whole check. The JSON is rewritten after every configuration.

Configurations: ``fp32`` (TF32 convolutions/matmuls, as PyTorch does on CUDA by default with
``configure_backends``), ``bf16``, ``fp16`` (autocast; fp16 with GradScalers), and any of them
with ``+compile`` (``torch.compile``, inductor, default mode).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
DEFAULT_CONFIGS = "fp32,bf16,fp16,fp32+compile,bf16+compile"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="gpu_bench.json")
    p.add_argument(
        "--configs",
        default=DEFAULT_CONFIGS,
        help="comma-separated (default: %(default)s)",
    )
    p.add_argument("--teacher", default="resnet34")
    p.add_argument("--student", default="resnet18")
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--img-size", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--g-steps", type=int, default=6)
    p.add_argument("--s-steps", type=int, default=5)
    p.add_argument("--ngf", type=int, default=64)
    p.add_argument(
        "--warmup",
        type=int,
        default=3,
        help="untimed iterations (compilation happens here)",
    )
    p.add_argument("--iters", type=int, default=10, help="timed iterations")
    p.add_argument(
        "--budget-s",
        type=float,
        default=330,
        help="stop starting configurations after this long",
    )
    p.add_argument(
        "--timeout-s", type=float, default=200, help="limit for one configuration"
    )
    p.add_argument(
        "--allow-cpu",
        action="store_true",
        help="run on CPU (a smoke test of this script)",
    )
    p.add_argument(
        "--tests-log", default=None, help="pytest output to embed (gpu_check.sh)"
    )
    p.add_argument("--tests-rc", type=int, default=None)
    p.add_argument("--tests-seconds", type=float, default=None)
    # internal: run one configuration
    p.add_argument("--single", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def machine() -> dict:
    sys.path.insert(0, REPO)
    from cpsc_lite.engine import machine_info

    return machine_info()


def run_single(args) -> dict:
    """Time one configuration in this process; returns a JSON-able dict."""
    import torch

    sys.path.insert(0, REPO)
    from cpsc_lite.checkpoint import untrained_meta
    from cpsc_lite.distill import build_distiller
    from cpsc_lite.methods import make_config
    from cpsc_lite.models import create_model
    from cpsc_lite.engine import Acceleration, timed

    name = args.single
    precision, _, compiled = name.partition("+")
    amp = {"fp32": "off", "bf16": "bf16", "fp16": "fp16"}[precision]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and not args.allow_cpu:
        raise SystemExit("no CUDA device")
    torch.manual_seed(0)
    k, size = args.num_classes, args.img_size
    teacher = create_model(args.teacher, k, 3, size)
    meta = untrained_meta(args.teacher, k, 3, size)
    cfg = make_config(
        "cpsc",
        student=args.student,
        batch_size=args.batch_size,
        g_steps=args.g_steps,
        s_steps=args.s_steps,
        ngf=args.ngf,
        nz=256,
        iters=30000,
        device=device,
    )
    accel = Acceleration(amp=amp, compile="default" if compiled == "compile" else None)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    start = time.perf_counter()
    d = build_distiller(teacher, meta, cfg, accel=accel)
    for _ in range(args.warmup):
        terms = d.iterate()
    sync()
    warm = time.perf_counter() - start
    per_iter, terms = timed(d.iterate, args.iters, warmup=0, statistic="mean")
    seconds = per_iter * args.iters
    finite = all(math.isfinite(float(v)) for v in terms.values())
    out = dict(
        name=name,
        status="ok",
        amp=d.runtime()["amp"],
        compile=compiled == "compile",
        channels_last=d.channels_last,
        device=str(d.device),
        batch_size=cfg.budget.batch_size,
        g_steps=cfg.budget.g_steps,
        s_steps=cfg.budget.s_steps,
        timed_iters=args.iters,
        seconds_per_iter=seconds / args.iters,
        iters_per_second=args.iters / seconds,
        images_per_second=args.iters
        * cfg.budget.batch_size
        * (cfg.budget.g_steps + cfg.budget.s_steps)
        / seconds,
        warmup_seconds=round(warm, 2),
        finite=finite,
        losses={k: round(float(v), 5) for k, v in terms.items()},
    )
    if device == "cuda":
        out.update(
            peak_memory_gib=round(torch.cuda.max_memory_allocated() / 2**30, 3),
            peak_reserved_gib=round(torch.cuda.max_memory_reserved() / 2**30, 3),
        )
    d.close()
    return out


def write(result: dict, path: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.single:
        print("RESULT " + json.dumps(run_single(args)), flush=True)
        return 0
    import torch

    if not torch.cuda.is_available() and not args.allow_cpu:
        print(
            "gpu_bench: no CUDA device visible to PyTorch; nothing to measure.",
            file=sys.stderr,
        )
        return 2
    started = time.time()
    result = dict(
        script="benchmarks/gpu_bench.py",
        command=" ".join([os.path.basename(sys.executable)] + sys.argv),
        machine=machine(),
        workload=dict(
            teacher=args.teacher,
            student=args.student,
            num_classes=args.num_classes,
            img_size=args.img_size,
            batch_size=args.batch_size,
            g_steps=args.g_steps,
            s_steps=args.s_steps,
            ngf=args.ngf,
            nz=256,
            warmup_iters=args.warmup,
            timed_iters=args.iters,
            teacher_weights="random",
        ),
        benchmark=[],
    )
    if args.tests_log is not None:
        log = open(args.tests_log).read() if os.path.exists(args.tests_log) else ""
        lines = [line for line in log.splitlines() if line.strip()]
        result["tests"] = dict(
            returncode=args.tests_rc,
            seconds=args.tests_seconds,
            summary=lines[-1] if lines else "",
            tail=lines[-40:],
        )
    write(result, args.out)
    forwarded = [a for a in (argv if argv is not None else sys.argv[1:])]
    for name in [c.strip() for c in args.configs.split(",") if c.strip()]:
        left = args.budget_s - (time.time() - started)
        if left < 30:
            result["benchmark"].append(
                dict(name=name, status="skipped: time budget used up")
            )
            write(result, args.out)
            continue
        limit = min(args.timeout_s, left)
        print(f"gpu_bench: {name} (limit {limit:.0f} s)", flush=True)
        t0 = time.time()
        try:
            proc = subprocess.run(
                [
                    sys.executable,
                    os.path.abspath(__file__),
                    *forwarded,
                    "--single",
                    name,
                ],
                capture_output=True,
                text=True,
                timeout=limit,
            )
            lines = [
                line for line in proc.stdout.splitlines() if line.startswith("RESULT ")
            ]
            if proc.returncode == 0 and lines:
                entry = json.loads(lines[-1][len("RESULT ") :])
            else:
                entry = dict(
                    name=name,
                    status=f"failed (exit {proc.returncode})",
                    error=proc.stderr[-3000:],
                )
        except subprocess.TimeoutExpired:
            entry = dict(name=name, status=f"timeout after {limit:.0f} s")
        entry["wall_seconds"] = round(time.time() - t0, 1)
        result["benchmark"].append(entry)
        print(
            "gpu_bench:",
            json.dumps(
                {
                    k: entry.get(k)
                    for k in (
                        "name",
                        "status",
                        "iters_per_second",
                        "peak_memory_gib",
                        "warmup_seconds",
                    )
                }
            ),
            flush=True,
        )
        write(result, args.out)
    base = next(
        (
            r
            for r in result["benchmark"]
            if r.get("name") == "fp32" and r.get("status") == "ok"
        ),
        None,
    )
    if base:
        for r in result["benchmark"]:
            if r.get("status") == "ok":
                r["speedup_vs_fp32"] = round(
                    r["iters_per_second"] / base["iters_per_second"], 3
                )
    result["total_seconds"] = round(time.time() - started, 1)
    write(result, args.out)
    print(f"gpu_bench: wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
