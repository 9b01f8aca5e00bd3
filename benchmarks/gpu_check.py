"""The GPU check's driver: eight questions about cpsc_lite on one NVIDIA GPU, one JSON.

Run by ``benchmarks/gpu_check.sh OUT_DIR`` (its header says what each part measures); also
runnable alone::

    python benchmarks/gpu_check.py --out-dir OUT [--budget-s 450] [--only paper_preset,cli]
    python benchmarks/gpu_check.py --out-dir OUT --dry-run     # every part on the CPU, tiny

Every measured configuration (a *unit*) runs in its own process under a time limit, started
only if the remaining budget allows it; its process group is killed at the limit. A unit writes
its results to a file as they come in, so a unit that times out or crashes still reports what
it measured. ``OUT/gpu_check.json`` is rewritten after every unit, and ``OUT/gpu_check.log``
holds everything printed (the units' output included).

``--dry-run`` runs the same code on the CPU (CUDA hidden from the units) with tiny models
(cnn_base -> cnn_small at 8x8, batch 4), a few dozen images and one or two iterations: the
whole path, without any GPU number. ``tests/test_gpu.py`` runs it.

gpu_check.json: ``script, command, dry_run, started, budget_s, elapsed_s, finished, summary``
(the headline numbers) and ``parts``, in order: ``environment, cuda_tests, paper_preset,
batch_sweep, fp16_safety, small_presets, cli, compile``: each ``{part, question, status,
wall_s, ...}`` with ``reason`` (skipped, timeout) or ``error`` (failed). A part of one
unit holds that unit's measurements directly; ``paper_preset`` holds one entry per
precision (``bf16``, ``fp16``, ``fp32``) and ``small_presets`` one per preset (``colab``,
``fast``), each with its own status and wall_s.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
PAPER = "c10_resnet34_resnet18"
FAST = "c10_wrn40_2_wrn16_2_fast"
COLAB = "c10_colab"


# ------------------------------------------------------------------ the plan
class Unit:
    """One measured configuration: its own process, its time limit (GPU / dry run) and the least
    time it needs to be worth starting."""

    def __init__(self, name, func, limit_s, dry_limit_s=60, min_s=15):
        self.name, self.func = name, func
        self.limit_s, self.dry_limit_s, self.min_s = limit_s, dry_limit_s, min_s


class Part:
    def __init__(self, number, name, question, units):
        self.number, self.name, self.question, self.units = (
            number,
            name,
            question,
            units,
        )


def plan() -> list:
    return [
        Part(
            1,
            "environment",
            "GPU, capability, memory, driver, torch/CUDA/cuDNN/NCCL, native bf16, Triton",
            [Unit("environment", unit_environment, 75, min_s=10)],
        ),
        Part(
            2,
            "cuda_tests",
            "pytest -m cuda tests/test_gpu.py: exit status and output",
            [Unit("cuda_tests", unit_cuda_tests, 130, min_s=30)],
        ),
        Part(
            3,
            "paper_preset",
            f"{PAPER} eager per precision: s per G/S step, peak memory, projected hours",
            [
                Unit(p, lambda ctx, rec, p=p: unit_paper_precision(ctx, rec, p), 80)
                for p in ("bf16", "fp16", "fp32")
            ],
        ),
        Part(
            4,
            "batch_sweep",
            f"{PAPER} bf16 at 64/128/256 per GPU: s/iteration, samples/s, host enqueue",
            [Unit("batch_sweep", unit_batch_sweep, 90)],
        ),
        Part(
            5,
            "fp16_safety",
            "fp16: a forced overflow in the first step is skipped, every weight stays finite",
            [Unit("fp16_safety", unit_fp16_safety, 60, min_s=10)],
        ),
        Part(
            6,
            "small_presets",
            f"{COLAB} and {FAST} in the default precision, and one teacher epoch each",
            [
                Unit("colab", lambda ctx, rec: unit_small_preset(ctx, rec, COLAB), 90),
                Unit("fast", lambda ctx, rec: unit_small_preset(ctx, rec, FAST), 100),
            ],
        ),
        Part(
            7,
            "cli",
            "cpsc-lite teacher, distill --stop-after and --resume end to end",
            [Unit("cli", unit_cli, 150, dry_limit_s=120, min_s=30)],
        ),
        Part(
            8,
            "compile",
            f"{FAST} in bf16 with torch.compile: compile time, iterations/s, recompiles",
            [Unit("compile", unit_compile, 200, dry_limit_s=90, min_s=45)],
        ),
    ]


# ------------------------------------------------------------ the orchestrator
class Report:
    """gpu_check.json and gpu_check.log in ``out_dir``."""

    def __init__(self, out_dir: str, header: dict):
        os.makedirs(out_dir, exist_ok=True)
        self.json_path = os.path.join(out_dir, "gpu_check.json")
        self.log_path = os.path.join(out_dir, "gpu_check.log")
        self.log = open(self.log_path, "a", buffering=1)
        self.data = dict(header, parts={})

    def say(self, text: str) -> None:
        print(text, flush=True)
        self.log.write(text + "\n")

    def write(self) -> None:
        tmp = self.json_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.data, f, indent=2, default=str)
            f.write("\n")
        os.replace(tmp, self.json_path)


def run_child(cmd, limit_s, env=None, echo=print, cwd=REPO, own_group=True) -> tuple:
    """Run ``cmd``, echoing its output line by line; ``(rc, output, timed_out)``.

    With ``own_group`` (a unit, from the orchestrator) it gets its own process group, and at
    ``limit_s`` the whole group (the unit and anything it started) is killed; without (a command
    a unit runs) it stays in the unit's group, so that killing the unit kills it too."""
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        start_new_session=own_group,
    )
    lines: list = []

    def pump():
        for line in proc.stdout:
            lines.append(line)
            echo(line.rstrip("\n"))

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    timed_out = False
    try:
        proc.wait(timeout=max(limit_s, 0.01))
    except subprocess.TimeoutExpired:
        timed_out = True
    finally:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL) if own_group else proc.kill()
            except ProcessLookupError:
                pass
            proc.wait()
    reader.join(timeout=10)
    return proc.returncode, "".join(lines), timed_out


def _unit_entry(unit, limit, rc, output, timed_out, path, wall) -> dict:
    entry = {}
    if os.path.exists(path):
        try:
            with open(path) as f:
                entry = json.load(f)
        except ValueError:
            entry = {}
    status = entry.get("status")
    if timed_out:
        entry.update(status="timeout", reason=f"killed at its limit of {limit:.0f} s")
    elif status in (None, "running"):
        tail = output.strip().splitlines()[-30:]
        entry.update(
            status="failed",
            error=f"the unit's process ended with exit status {rc} before reporting: "
            + "\n".join(tail),
        )
    if entry["status"] in ("failed", "timeout"):
        entry["output_tail"] = output.strip().splitlines()[-40:]
    entry["wall_s"] = round(wall, 2)
    entry["limit_s"] = round(limit, 1)
    return entry


def _part_status(units: dict) -> dict:
    states = [u["status"] for u in units.values()]
    if any(s == "failed" for s in states):
        bad = [
            f"{n}: {u.get('error', '')}"
            for n, u in units.items()
            if u["status"] == "failed"
        ]
        return dict(status="failed", error=" | ".join(b[:2000] for b in bad))
    if any(s == "timeout" for s in states):
        bad = [n for n, u in units.items() if u["status"] == "timeout"]
        return dict(status="timeout", reason="timed out: " + ", ".join(bad))
    if states and all(s == "skipped" for s in states):
        reasons = [u.get("reason", "") for u in units.values()]
        return dict(status="skipped", reason="; ".join(dict.fromkeys(reasons)))
    return dict(status="ok")


def summarise(parts: dict) -> dict:
    """The headline numbers of the parts so far (each part's entry has the details)."""
    out: dict = {}
    env = parts.get("environment", {})
    if env.get("status") == "ok":
        out["gpu"] = env.get("gpu")
        out["native_bf16"] = env.get("native_bf16")
        out["triton_compile"] = env.get("triton_compile", {}).get("status")
    tests = parts.get("cuda_tests", {})
    if "returncode" in tests:
        out["cuda_tests"] = f"{tests['status']}: {tests.get('summary', '')}"
    paper = parts.get("paper_preset", {})
    for p in ("bf16", "fp16", "fp32"):
        u = paper.get(p, {})
        if u.get("status") == "ok":
            out[f"paper_{p}"] = dict(
                s_per_iter=u.get("s_per_iter"),
                peak_memory_gib=u.get("peak_memory_gib"),
                hours=u.get("projected_hours"),
            )
    sweep = parts.get("batch_sweep", {})
    if sweep.get("status") == "ok":
        out["bf16_sweep"] = {
            str(b["batch_per_gpu"]): dict(
                s_per_iter=b["s_per_iter"],
                samples_per_s=b["samples_per_s"],
                enqueue_fraction=b["enqueue_fraction"],
            )
            for b in sweep.get("batches", [])
        }
    safety = parts.get("fp16_safety", {})
    if "all_finite" in safety:
        out["fp16_overflow_safe"] = safety["all_finite"] and safety.get("skipped_first")
    small = parts.get("small_presets", {})
    for name in ("colab", "fast"):
        u = small.get(name, {})
        if u.get("status") == "ok":
            out[name] = dict(
                s_per_iter=u.get("s_per_iter"),
                minutes=u.get("projected_minutes"),
                teacher_epoch_s=u.get("teacher_epoch_s"),
            )
    cli = parts.get("cli", {})
    if "status" in cli:
        out["cli"] = cli["status"]
    comp = parts.get("compile", {})
    if comp.get("status") == "ok":
        fast = small.get("fast", {})
        eager = fast.get("s_per_iter")
        same = fast.get("runtime", {}).get("amp") == "bfloat16"  # auto gave bf16 there
        out["compile"] = dict(
            compile_s=comp.get("compile_s"),
            iters_per_s=comp.get("iters_per_s"),
            recompiles=comp.get("recompiles"),
            speedup_vs_eager_bf16=round(eager / comp["s_per_iter"], 3)
            if eager and same and comp.get("s_per_iter")
            else None,
        )
    return out


def orchestrate(args) -> int:
    parts = plan()
    if args.only:
        wanted = set(args.only.split(","))
        unknown = wanted - {p.name for p in parts}
        if unknown:
            print(
                f"gpu_check: unknown part(s): {', '.join(sorted(unknown))}",
                file=sys.stderr,
            )
            return 3
        parts = [p for p in parts if p.name in wanted]
    limits = dict(kv.split("=", 1) for kv in args.limit)
    if not args.dry_run:  # asked in a subprocess: this process never touches the GPU
        probe = "import torch; print(torch.cuda.is_available())"
        seen = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True
        )
        if seen.stdout.strip() != "True":
            print(
                "gpu_check: no CUDA device visible to PyTorch; nothing to measure (--dry-run "
                "runs the code path on the CPU). " + seen.stderr.strip()[-500:],
                file=sys.stderr,
            )
            return 2
    started = time.time()
    deadline = started + args.budget_s
    report = Report(
        args.out_dir,
        dict(
            script="benchmarks/gpu_check.sh",
            command=" ".join([os.path.basename(sys.executable), *sys.argv]),
            dry_run=args.dry_run,
            started=datetime.datetime.now().isoformat(timespec="seconds"),
            budget_s=args.budget_s,
            finished=False,
            elapsed_s=0.0,
        ),
    )
    for part in parts:  # every part listed from the start
        report.data["parts"][part.name] = dict(
            part=part.number, question=part.question, status="pending"
        )
    report.write()
    mode = "DRY RUN on the CPU (tiny sizes; no GPU numbers)" if args.dry_run else "GPU"
    report.say(
        f"gpu_check: {mode}, budget {args.budget_s:.0f} s, writing {report.json_path}"
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    if args.dry_run:
        env["CUDA_VISIBLE_DEVICES"] = ""  # the same CPU path on any machine
        env.setdefault("OMP_NUM_THREADS", "1")
    work = tempfile.mkdtemp(prefix="gpu_check_")
    interrupted = False

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        for part in parts:
            entry = report.data["parts"][part.name]
            t_part = time.time()
            units: dict = {}
            for unit in part.units:
                left = deadline - time.time()
                limit = float(
                    limits.get(
                        unit.name, unit.dry_limit_s if args.dry_run else unit.limit_s
                    )
                )
                if interrupted:
                    units[unit.name] = dict(
                        status="skipped", reason="the check was interrupted", wall_s=0.0
                    )
                    continue
                if left < min(unit.min_s, limit):
                    units[unit.name] = dict(
                        status="skipped",
                        reason=f"time budget: {max(left, 0):.0f} s left of {args.budget_s:.0f} s, "
                        f"this needs at least {unit.min_s} s",
                        wall_s=0.0,
                    )
                    report.say(
                        f"gpu_check: part {part.number} {unit.name}: skipped (budget)"
                    )
                    continue
                limit = min(limit, left)
                report.say(
                    f"gpu_check: part {part.number} ({part.name}) {unit.name}, limit {limit:.0f} s"
                )
                path = os.path.join(work, unit.name + ".json")
                cmd = [
                    sys.executable,
                    os.path.abspath(__file__),
                    "--unit",
                    unit.name,
                    "--work",
                    work,
                ]
                cmd += ["--unit-limit", f"{limit:.1f}"] + (
                    ["--dry-run"] if args.dry_run else []
                )
                t0 = time.time()
                try:
                    rc, output, timed_out = run_child(
                        cmd,
                        limit,
                        env,
                        lambda line, n=unit.name: report.say(f"  [{n}] {line}"),
                    )
                except KeyboardInterrupt:
                    interrupted, rc, output, timed_out = True, -1, "interrupted", False
                units[unit.name] = _unit_entry(
                    unit, limit, rc, output, timed_out, path, time.time() - t0
                )
                if interrupted:
                    units[unit.name].update(
                        status="failed",
                        error="the check was interrupted (SIGTERM/SIGINT)",
                    )
                u = units[unit.name]
                why = u.get("reason") or u.get("error") or ""
                report.say(
                    f"gpu_check: {unit.name}: {u['status']} in {u['wall_s']} s {why[:300]}".rstrip()
                )
                if len(part.units) > 1:  # rewrite after every unit
                    entry.update(status="running", **units)
                    report.data["elapsed_s"] = round(time.time() - started, 1)
                    report.write()
            if len(part.units) == 1:
                (only,) = units.values()
                entry.update(only)
            else:
                entry.update(units)
                entry.update(_part_status(units))
            entry["wall_s"] = round(time.time() - t_part, 2)
            report.data["summary"] = summarise(report.data["parts"])
            report.data["elapsed_s"] = round(time.time() - started, 1)
            report.write()
    except KeyboardInterrupt:
        interrupted = True
    finally:
        for entry in report.data["parts"].values():
            if entry["status"] in ("pending", "running"):
                entry.update(status="skipped", reason="the check was interrupted")
        report.data.update(
            finished=not interrupted,
            elapsed_s=round(time.time() - started, 1),
            summary=summarise(report.data["parts"]),
        )
        report.write()
        shutil.rmtree(work, ignore_errors=True)  # checkpoints, the CLI's runs
    states = {n: e["status"] for n, e in report.data["parts"].items()}
    report.say(
        "gpu_check: "
        + ", ".join(f"{n} {s}" for n, s in states.items())
        + f"; {report.data['elapsed_s']} s; wrote {report.json_path} and {report.log_path}"
    )
    if interrupted:
        return 130
    return 0 if all(s in ("ok", "skipped") for s in states.values()) else 1


# ------------------------------------------------------------------ one unit
class Skip(Exception):
    """The unit does not apply here (the reason is recorded as status skipped)."""


class Failed(Exception):
    """The unit ran and its check failed (the message is recorded as status failed)."""


class TimedOut(Exception):
    """A command the unit ran hit its time limit (recorded as status timeout)."""


class Record(dict):
    """The unit's results, written to its file at every :meth:`set` (the orchestrator reads it
    even if the unit is killed later)."""

    def __init__(self, path: str):
        super().__init__(status="running")
        self.path = path
        self.flush()

    def set(self, **values) -> None:
        self.update(values)
        self.flush()

    def flush(self) -> None:
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self, f, indent=2, default=str)
        os.replace(tmp, self.path)


class Context:
    """What a unit needs to know: dry run or not, the device, the sizes to use."""

    def __init__(self, dry: bool, work: str, limit_s: float = 600.0):
        import torch

        self.dry, self.work = dry, work
        self.deadline = time.time() + limit_s  # the orchestrator kills the unit then
        self.device = torch.device(
            "cuda" if torch.cuda.is_available() and not dry else "cpu"
        )
        self.cuda = self.device.type == "cuda"
        if dry:
            torch.set_num_threads(1)
        s = dict(
            eval_images=10000,
            teacher_train=50000,
            teacher_test=10000,
            teacher_batch=None,  # the recipe's (128)
            step_repeats=3,
            iter_repeats=2,
            sweep_batches=(64, 128, 256),
            sweep_repeats=3,
            small_iters=3,
            compile_iters=10,
            fp16_batch=64,
            cli_train=2000,
            cli_test=400,
            cli_size=32,
            cli_model="wrn16_1",
            triton_timeout=60,
            tests_timeout=120,
        )
        if dry:
            s.update(
                eval_images=40,
                teacher_train=48,
                teacher_test=16,
                teacher_batch=16,
                step_repeats=1,
                iter_repeats=1,
                sweep_batches=(2, 4),
                sweep_repeats=1,
                small_iters=1,
                compile_iters=1,
                fp16_batch=4,
                cli_train=48,
                cli_test=16,
                cli_size=16,
                cli_model="cnn_small",
                tests_timeout=50,
            )
        self.sizes = s

    def left(self, margin: float = 5.0) -> float:
        """Seconds until this unit is killed, less ``margin``: the limit for a command it runs."""
        return max(self.deadline - time.time() - margin, 1.0)

    def sync(self) -> None:
        import torch

        if self.cuda:
            torch.cuda.synchronize(self.device)

    def clock(self, fn) -> tuple:
        """``(seconds, result)`` of one call, the GPU's queue drained before and after."""
        self.sync()
        t = time.perf_counter()
        out = fn()
        self.sync()
        return time.perf_counter() - t, out

    def reset_memory(self) -> None:
        import torch

        if self.cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)

    def memory(self) -> dict:
        import torch

        if not self.cuda:
            return dict(peak_memory_gib=None, peak_reserved_gib=None)
        return dict(
            peak_memory_gib=round(
                torch.cuda.max_memory_allocated(self.device) / 2**30, 3
            ),
            peak_reserved_gib=round(
                torch.cuda.max_memory_reserved(self.device) / 2**30, 3
            ),
        )


def run_unit(args) -> int:
    import torch

    ctx = Context(args.dry_run, args.work, args.unit_limit)
    units = {u.name: u for p in plan() for u in p.units}
    rec = Record(os.path.join(args.work, args.unit + ".json"))
    rec.set(device=str(ctx.device))
    try:
        units[args.unit].func(ctx, rec)
        rec.set(status="ok")
    except Skip as exc:
        rec.set(status="skipped", reason=str(exc))
    except Failed as exc:
        rec.set(status="failed", error=str(exc))
    except TimedOut as exc:
        rec.set(status="timeout", reason=str(exc))
    except Exception as exc:
        text = traceback.format_exc()
        print(text, file=sys.stderr, flush=True)
        rec.set(
            status="failed",
            error=f"{type(exc).__name__}: {exc}",
            traceback=text.splitlines()[-12:],
        )
    print(f"unit {args.unit}: {rec['status']} (torch {torch.__version__})", flush=True)
    return 0


def r(x, digits=5):
    return None if x is None else round(float(x), digits)


def median(values):
    import statistics

    return statistics.median(values)


# --------------------------------------------------------------- shared setups
def random_bundle(n_train: int, n_test: int, classes: int, size: int, seed: int = 0):
    """A CIFAR-like DataBundle of random uint8 images (speed does not depend on the pixels)."""
    import torch

    from cpsc_lite.bundle import ArrayDataset, DataBundle

    g = torch.Generator().manual_seed(seed)
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)

    def split(n):
        x = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
        return ArrayDataset(x, torch.randint(0, classes, (n,), generator=g), mean, std)

    return DataBundle(
        name="random",
        train=split(n_train) if n_train else None,
        test=split(n_test),
        num_classes=classes,
        channels=3,
        img_size=size,
        mean=mean,
        std=std,
        augment_pad=4,
        augment_flip=True,
    )


def colab_fallback():
    from cpsc_lite.methods import make_config

    cfg = make_config(
        "cpsc",
        student="wrn16_1",
        batch_size=256,
        g_steps=2,
        s_steps=5,
        ngf=64,
        iters=2000,
    )
    return cfg, dict(dataset="cifar10", teacher_model="wrn16_2", student="wrn16_1")


def preset_setup(ctx, name: str, rec, batch_size=None) -> tuple:
    """``(cfg, teacher, meta, run settings)`` for a preset, with a freshly initialised teacher
    (speed does not depend on its weights); in a dry run, tiny networks at 8x8."""
    from cpsc_lite import CpscError
    from cpsc_lite.checkpoint import untrained_meta
    from cpsc_lite.costs import PRESET_DATA, preset_config
    from cpsc_lite.models import create_model

    try:
        cfg, run = preset_config(name)
    except CpscError as exc:
        if name != COLAB:
            raise
        cfg, run = colab_fallback()
        rec.set(
            fallback=True,
            fallback_reason=f"preset_config({name!r}) raised: {exc}"[:400],
            fallback_config="make_config('cpsc', student='wrn16_1', batch_size=256, "
            "g_steps=2, s_steps=5, ngf=64, iters=2000), teacher wrn16_2",
        )
    classes, channels, size, _ = PRESET_DATA[run["dataset"]]
    teacher_name = run["teacher_model"]

    def settings(cfg, teacher_name, size):
        b = cfg.budget
        return dict(
            teacher=teacher_name,
            student=cfg.student,
            img_size=size,
            batch_size=b.batch_size,
            g_steps=b.g_steps,
            s_steps=b.s_steps,
            ngf=cfg.generator.ngf,
            nz=cfg.generator.nz,
        )

    preset = dict(
        settings(cfg, teacher_name, size),
        iters=cfg.budget.iters,
        eval_every=cfg.log.eval_every,
        ckpt_every=cfg.log.ckpt_every,
        diagnostics=cfg.log.diagnostics,
    )
    if ctx.dry:
        cfg = cfg.replace(student="cnn_small", batch_size=4, ngf=8, nz=16)
        teacher_name, size = "cnn_base", 8
    if batch_size is not None:
        cfg = cfg.replace(batch_size=batch_size)
    cfg = cfg.replace(device=ctx.device.type)
    # what is measured: the preset's settings, or in a dry run tiny networks at 8x8
    rec.set(
        preset=name, preset_settings=preset, measured=settings(cfg, teacher_name, size)
    )
    teacher = create_model(teacher_name, classes, channels, size)
    meta = untrained_meta(teacher_name, classes, channels, size)
    return cfg, teacher, meta, run


def check_amp(ctx, amp: str) -> None:
    """Skip a precision this device cannot run (bf16 on a GPU without native bf16)."""
    from cpsc_lite import CpscError
    from cpsc_lite.engine import resolve_amp

    try:
        resolve_amp(amp, ctx.device)
    except CpscError as exc:
        raise Skip(str(exc)) from None


def finite_terms(terms: dict) -> bool:
    import math

    return all(math.isfinite(float(v)) for v in terms.values())


def overhead(ctx, d, rec) -> dict:
    """Seconds of one evaluation as a run does it (test accuracy on the test set, then the
    diagnostics of the synthetic images when ``log.diagnostics``) and of one checkpoint."""
    from cpsc_lite import runner
    from cpsc_lite.utils import evaluate

    first, _ = ctx.clock(lambda: evaluate(d.student, d.test_set, d.device))
    eval_s, acc = ctx.clock(lambda: evaluate(d.student, d.test_set, d.device))
    out = dict(eval_images=len(d.test_set), eval_first_s=r(first), eval_s=r(eval_s))
    diag_s = 0.0
    if d.cfg.log.diagnostics:
        diag_first, _ = ctx.clock(
            d.diagnostics
        )  # + the real images' features, once a run
        diag_s, _ = ctx.clock(d.diagnostics)
        out.update(diagnostics_first_s=r(diag_first), diagnostics_s=r(diag_s))
    out["evaluation_s"] = r(eval_s + diag_s)
    with tempfile.TemporaryDirectory(dir=ctx.work) as tmp:
        save_s, _ = ctx.clock(lambda: runner.save(d, tmp))
        size = sum(os.path.getsize(os.path.join(tmp, f)) for f in os.listdir(tmp))
    out.update(checkpoint_s=r(save_s), checkpoint_mib=round(size / 2**20, 2))
    rec.set(**out)
    return out


def projection(cfg, iters: int, s_per_iter: float, cost: dict) -> dict:
    """Hours of ``iters`` iterations with evaluations (every ``eval_every`` and at the budget
    marks) and checkpoints (every ``ckpt_every`` and at the end), as :mod:`cpsc_lite.runner` does."""
    from cpsc_lite.distill import budget_marks

    c = cfg.replace(iters=iters)
    marks = set(budget_marks(c).values())
    evals = sum(
        1 for it in range(1, iters + 1) if it % c.log.eval_every == 0 or it in marks
    )
    ckpts = sum(
        1 for it in range(1, iters + 1) if it % c.log.ckpt_every == 0 or it == iters
    )
    train = iters * s_per_iter
    evaluation = evals * cost["evaluation_s"] + (cost.get("diagnostics_first_s") or 0.0)
    saving = ckpts * cost["checkpoint_s"]
    total = train + evaluation + saving
    return dict(
        iters=iters,
        evaluations=evals,
        checkpoints=ckpts,
        train_hours=r(train / 3600, 4),
        eval_hours=r(evaluation / 3600, 4),
        checkpoint_hours=r(saving / 3600, 4),
        hours=r(total / 3600, 4),
    )


def release(ctx, d) -> None:
    import gc

    import torch

    d.close()
    del d
    gc.collect()
    if ctx.cuda:
        torch.cuda.empty_cache()


# ------------------------------------------------------------------ part 1
TRITON_PROBE = """
import time, torch
t = time.perf_counter()
f = torch.compile(lambda x: torch.sin(x) * 2 + 1)
x = torch.randn(1024, device="cuda")
assert torch.allclose(f(x), torch.sin(x) * 2 + 1, atol=1e-5)
torch.cuda.synchronize()
print(f"TRITON_OK {time.perf_counter() - t:.2f}")
"""


def unit_environment(ctx, rec) -> None:
    import importlib.metadata
    import platform

    import torch

    import cpsc_lite
    from cpsc_lite.engine import machine_info, native_bf16

    def version(pkg):
        try:
            return importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            return None

    nccl = None
    try:
        v = torch.cuda.nccl.version()
        nccl = ".".join(map(str, v)) if isinstance(v, tuple) else str(v)
    except Exception as exc:  # not built with NCCL
        nccl = f"unavailable: {type(exc).__name__}: {exc}"[:200]
    rec.set(
        python=platform.python_version(),
        torch=torch.__version__,
        torch_cuda=torch.version.cuda,
        cudnn=torch.backends.cudnn.version()
        if torch.backends.cudnn.is_available()
        else None,
        nccl=nccl,
        triton_version=version("triton") or version("pytorch-triton"),
        cpsc_lite=cpsc_lite.__version__,
        machine=machine_info(),
    )
    try:
        smi = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version,name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        rec.set(
            driver=smi.stdout.strip().splitlines()[0].split(",")[0].strip()
            if smi.returncode == 0
            else None
        )
        if smi.returncode != 0:
            rec.set(driver_error=(smi.stderr or smi.stdout).strip()[:300])
    except (OSError, subprocess.TimeoutExpired, IndexError) as exc:
        rec.set(
            driver=None, driver_error=f"nvidia-smi: {type(exc).__name__}: {exc}"[:300]
        )
    if not ctx.cuda:
        why = "dry run: CUDA hidden" if ctx.dry else "no CUDA device visible to PyTorch"
        rec.set(
            gpu=None,
            native_bf16=None,
            triton_compile=dict(status="skipped", reason=why),
        )
        return
    props = torch.cuda.get_device_properties(ctx.device)
    rec.set(
        gpu=props.name,
        gpu_count=torch.cuda.device_count(),
        capability=f"{props.major}.{props.minor}",
        memory_gib=round(props.total_memory / 2**30, 2),
        multiprocessors=props.multi_processor_count,
        native_bf16=native_bf16(torch.device("cuda")),
        torch_says_bf16_supported=torch.cuda.is_bf16_supported(),
    )
    t, limit = time.perf_counter(), min(ctx.sizes["triton_timeout"], ctx.left())
    try:
        p = subprocess.run(
            [sys.executable, "-c", TRITON_PROBE],
            capture_output=True,
            text=True,
            timeout=limit,
        )
        ok = p.returncode == 0 and "TRITON_OK" in p.stdout
        probe = dict(
            status="ok" if ok else "failed", seconds=r(time.perf_counter() - t, 2)
        )
        if not ok:
            probe["error"] = (p.stderr or p.stdout).strip()[-2000:]
    except subprocess.TimeoutExpired:
        probe = dict(status="timeout", seconds=r(limit, 1))
    rec.set(triton_compile=probe)


# ------------------------------------------------------------------ part 2
def unit_cuda_tests(ctx, rec) -> None:
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-m",
        "cuda",
        "-o",
        "markers=cuda: needs a CUDA GPU",
        "-p",
        "no:cacheprovider",
        "tests/test_gpu.py",
    ]
    limit = min(ctx.sizes["tests_timeout"], ctx.left(10))
    rec.set(command=" ".join(["python", *cmd[1:]]), limit_s=r(limit, 1))
    t = time.perf_counter()
    rc, out, timed_out = run_child(cmd, limit, own_group=False)
    lines = [line for line in out.splitlines() if line.strip()]
    rec.set(
        returncode=rc,
        seconds=r(time.perf_counter() - t, 2),
        summary=lines[-1] if lines else "",
        output_tail=lines[-60:],
    )
    if timed_out:
        raise TimedOut(f"pytest did not finish within {limit:.0f} s")
    if rc == 5:  # no test selected
        raise Skip(
            "pytest selected no test: the tests are marked cuda only where PyTorch sees a GPU"
            + (" (dry run: CUDA hidden)" if ctx.dry else "")
        )
    if rc != 0:
        raise Failed(f"pytest exit status {rc}: {rec['summary']}")


# ------------------------------------------------------------------ part 3
def unit_paper_precision(ctx, rec, precision: str) -> None:
    from cpsc_lite.distill import build_distiller
    from cpsc_lite.engine import Acceleration

    import torch

    amp = {"bf16": "bf16", "fp16": "fp16", "fp32": "off"}[precision]
    rec.set(precision=precision, amp=amp)
    if (
        precision == "fp32" and ctx.cuda
    ):  # what "fp32" means on a GPU (configure_backends)
        rec.set(
            cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
            matmul_precision_in_run="high (TF32), set by engine.configure_backends",
        )
    check_amp(ctx, amp)
    n = ctx.sizes
    cfg, teacher, meta, run = preset_setup(ctx, PAPER, rec)
    classes, size = meta["num_classes"], meta["img_size"]
    bundle = random_bundle(0, n["eval_images"], classes, size)
    ctx.reset_memory()
    d = build_distiller(teacher, meta, cfg, bundle=bundle, accel=Acceleration(amp=amp))
    rec.set(
        runtime=d.runtime(),
        fused=d.opt_s.defaults.get("fused"),
        foreach=d.opt_s.defaults.get("foreach"),
    )
    warm, terms = ctx.clock(d.iterate)  # cuDNN autotuning, optimiser state, allocations
    rec.set(warmup_iter_s=r(warm))
    g = [ctx.clock(d.method.generator_step)[0] for _ in range(n["step_repeats"])]
    s = [ctx.clock(d.student_step)[0] for _ in range(n["step_repeats"])]
    g_s, s_s = median(g), median(s)
    b = cfg.budget
    rec.set(
        g_step_s=r(g_s),
        s_step_s=r(s_s),
        g_step_all_s=[r(x) for x in g],
        s_step_all_s=[r(x) for x in s],
        s_per_iter_from_steps=r(b.g_steps * g_s + b.s_steps * s_s),
    )
    its = []
    for _ in range(n["iter_repeats"]):
        t, terms = ctx.clock(d.iterate)
        its.append(t)
    s_iter = median(its)
    rec.set(
        s_per_iter=r(s_iter),
        iter_all_s=[r(x) for x in its],
        iters_per_s=r(1 / s_iter, 3),
        samples_per_s=r(b.batch_size * (b.g_steps + b.s_steps) / s_iter, 1),
        losses_finite=finite_terms(terms),
        **ctx.memory(),
    )
    if d.scaler_g is not None:
        rec.set(
            grad_scale_g=d.scaler_g.get_scale(), grad_scale_s=d.scaler_s.get_scale()
        )
    cost = overhead(ctx, d, rec)
    rec.set(
        projected_hours={
            str(it): projection(cfg, it, s_iter, cost) for it in (30000, 3000)
        },
        projection_note="measured s/iteration x iterations + evaluations (test accuracy and "
        "diagnostics) + checkpoints, at the preset's eval_every/ckpt_every",
        **ctx.memory(),
    )
    if not rec["losses_finite"]:
        raise Failed(f"non-finite loss terms in {precision}")
    release(ctx, d)


# ------------------------------------------------------------------ part 4
def unit_batch_sweep(ctx, rec) -> None:
    from cpsc_lite.distill import build_distiller
    from cpsc_lite.engine import Acceleration

    check_amp(ctx, "bf16")
    rec.set(
        note="s_per_iter: synchronised; enqueue_s: d.iterate() returned, before synchronising "
        "(includes any host sync inside the iteration: the generator step's contrastive loss "
        "selects anchors with a boolean mask). enqueue_fraction near 1 = the GPU waits for the "
        "CPU (more GPUs will not scale); student_step_enqueue_s: a step without host syncs."
    )
    results = []
    for batch in ctx.sizes["sweep_batches"]:
        cfg, teacher, meta, _ = preset_setup(ctx, PAPER, rec, batch_size=batch)
        ctx.reset_memory()
        d = build_distiller(teacher, meta, cfg, accel=Acceleration(amp="bf16"))
        ctx.clock(d.iterate)  # warm-up
        total, enqueue, s_total, s_enqueue = [], [], [], []
        for _ in range(ctx.sizes["sweep_repeats"]):
            ctx.sync()
            t0 = time.perf_counter()
            d.iterate()
            t1 = time.perf_counter()
            ctx.sync()
            t2 = time.perf_counter()
            total.append(t2 - t0)
            enqueue.append(t1 - t0)
            t0 = time.perf_counter()
            d.student_step()
            t1 = time.perf_counter()
            ctx.sync()
            s_total.append(time.perf_counter() - t0)
            s_enqueue.append(t1 - t0)
        s_iter, enq = median(total), median(enqueue)
        b = cfg.budget
        results.append(
            dict(
                batch_per_gpu=b.batch_size,
                s_per_iter=r(s_iter),
                iters_per_s=r(1 / s_iter, 3),
                samples_per_s=r(b.batch_size * (b.g_steps + b.s_steps) / s_iter, 1),
                enqueue_s=r(enq),
                enqueue_fraction=r(enq / s_iter, 3),
                student_step_s=r(median(s_total)),
                student_step_enqueue_s=r(median(s_enqueue)),
                **ctx.memory(),
            )
        )
        rec.set(batches=results)
        release(ctx, d)


# ------------------------------------------------------------------ part 5
def unit_fp16_safety(ctx, rec) -> None:
    import torch

    from cpsc_lite.distill import build_distiller
    from cpsc_lite.engine import Acceleration

    cfg, teacher, meta, _ = preset_setup(
        ctx, PAPER, rec, batch_size=ctx.sizes["fp16_batch"]
    )
    d = build_distiller(teacher, meta, cfg, accel=Acceleration(amp="fp16"))
    rec.set(
        runtime=d.runtime(),
        opt_s=dict(
            fused=d.opt_s.defaults.get("fused"), foreach=d.opt_s.defaults.get("foreach")
        ),
        opt_g=dict(
            fused=d.opt_g.defaults.get("fused"), foreach=d.opt_g.defaults.get("foreach")
        ),
        method="the first generator step and the first student step get loss x inf (a "
        "monkeypatched Distiller.update): their gradients overflow, the GradScalers must skip "
        "both steps; then one normal iteration",
    )
    if d.scaler_g is None:
        raise Failed("amp fp16 made no GradScaler")
    nets = dict(student=d.student, generator=d.generator, projection=d.projection)

    def params():
        return {
            f"{k}.{n}": p.detach().clone()
            for k, net in nets.items()
            for n, p in net.named_parameters()
        }

    def non_finite(tensors):
        return [
            n
            for n, t in tensors.items()
            if t.is_floating_point() and not torch.isfinite(t).all()
        ]

    def optimiser_state():
        out = {}
        for name, opt in (("opt_s", d.opt_s), ("opt_g", d.opt_g)):
            for i, state in enumerate(opt.state.values()):
                for k, v in state.items():
                    if torch.is_tensor(v):
                        out[f"{name}.{i}.{k}"] = v
        return out

    update, poison = d.update, {"on": True}

    def poisoned(optimizer, scaler, loss, *a, **kw):
        if poison["on"]:
            loss = loss * float("inf")
        return update(optimizer, scaler, loss, *a, **kw)

    d.update = poisoned
    before = params()
    scales = (d.scaler_g.get_scale(), d.scaler_s.get_scale())
    d.method.generator_step()
    d.student_step()
    poison["on"] = False
    after = params()
    ctx.sync()
    unchanged = all(torch.equal(before[k], after[k]) for k in before)
    skipped = d.scaler_g.get_scale() < scales[0] and d.scaler_s.get_scale() < scales[1]
    rec.set(
        scale_before=list(scales),
        scale_after_overflow=[d.scaler_g.get_scale(), d.scaler_s.get_scale()],
        skipped_first=bool(skipped and unchanged),
        weights_unchanged_by_skipped_step=unchanged,
        non_finite_after_skipped=non_finite(after)[:10],
        optimiser_state_after_skipped=len(optimiser_state()),
    )
    terms = d.iterate()
    final = params()
    bad = non_finite(final) + non_finite(optimiser_state())
    moved = sum(not torch.equal(after[k], final[k]) for k in final)
    rec.set(
        non_finite_after_iteration=bad[:10],
        parameters=len(final),
        parameters_changed_by_iteration=moved,
        losses_finite=finite_terms(terms),
        scale_after_iteration=[d.scaler_g.get_scale(), d.scaler_s.get_scale()],
        all_finite=not bad and not non_finite(after),
    )
    release(ctx, d)
    if not skipped or not unchanged:
        raise Failed(
            "the forced overflow was not skipped (scale not reduced or weights changed)"
        )
    if bad:
        raise Failed(
            f"non-finite weights or optimiser state after the skipped step: {bad[:5]}"
        )
    if moved == 0:
        raise Failed("the normal iteration after the skipped step changed no weight")


# ------------------------------------------------------------------ part 6
def unit_small_preset(ctx, rec, name: str) -> None:
    from cpsc_lite.distill import build_distiller
    from cpsc_lite.engine import Acceleration
    from cpsc_lite.teacher import teacher_recipe, train_teacher

    n = ctx.sizes
    cfg, teacher, meta, run = preset_setup(ctx, name, rec)
    classes, size = meta["num_classes"], meta["img_size"]
    bundle = random_bundle(n["teacher_train"], n["teacher_test"], classes, size)
    eval_bundle = random_bundle(0, n["eval_images"], classes, size, seed=1)
    ctx.reset_memory()
    d = build_distiller(
        teacher, meta, cfg, bundle=eval_bundle, accel=Acceleration(amp="auto")
    )
    rec.set(runtime=d.runtime())
    warm, _ = ctx.clock(d.iterate)
    its = []
    for _ in range(n["small_iters"]):
        t, terms = ctx.clock(d.iterate)
        its.append(t)
    s_iter = median(its)
    b = cfg.budget
    rec.set(
        warmup_iter_s=r(warm),
        s_per_iter=r(s_iter),
        iter_all_s=[r(x) for x in its],
        iters_per_s=r(1 / s_iter, 3),
        samples_per_s=r(b.batch_size * (b.g_steps + b.s_steps) / s_iter, 1),
        losses_finite=finite_terms(terms),
        **ctx.memory(),
    )
    cost = overhead(ctx, d, rec)
    p = projection(cfg, b.iters, s_iter, cost)
    rec.set(
        projected_minutes=r(p["hours"] * 60, 2),
        projected_minutes_iterations_only=r(b.iters * s_iter / 60, 2),
        projection=p,
    )
    release(ctx, d)
    # one teacher epoch on a CIFAR-sized training set
    teacher_name = meta["model"]
    tcfg = teacher_recipe(
        "cifar10",
        model=teacher_name,
        epochs=1,
        device=ctx.device.type,
        batch_size=n["teacher_batch"],
    )
    ctx.reset_memory()
    t, (_, acc, history) = ctx.clock(
        lambda: train_teacher(
            bundle, tcfg, progress=False, accel=Acceleration(amp="auto")
        )
    )
    epochs = run.get("teacher_epochs") or teacher_recipe("cifar10").epochs
    rec.set(
        teacher_model=teacher_name,
        teacher_train_images=len(bundle.train),
        teacher_batch=tcfg.batch_size,
        teacher_epoch_s=r(t, 3),
        teacher_epoch_note="wall time of train_teacher(epochs=1): model set-up, the epoch "
        "and one evaluation on the test images",
        teacher_loop_s=history[-1].get("seconds") if history else None,
        teacher_epochs_planned=epochs,
        teacher_projected_minutes=r(epochs * t / 60, 2),
        teacher_peak_memory_gib=ctx.memory()["peak_memory_gib"],
    )


# ------------------------------------------------------------------ part 7
def scenes_npz(path: str, n_train: int, n_test: int, size: int) -> dict:
    """The procedural ``scenes`` images of classes 0..9 (two shapes in five hues), as an .npz."""
    import numpy as np

    from cpsc_lite.data import make_scenes

    xs, ys, seed = [], [], 0
    while sum(len(y) for y in ys) < n_train + n_test:
        x, y = make_scenes(max(64, 3 * (n_train + n_test) // 2), size=size, seed=seed)
        keep = y < 10
        xs.append(x[keep])
        ys.append(y[keep])
        seed += 1
    x, y = np.concatenate(xs), np.concatenate(ys)
    np.savez(
        path,
        x_train=x[:n_train],
        y_train=y[:n_train],
        x_test=x[n_train : n_train + n_test],
        y_test=y[n_train : n_train + n_test],
    )
    return dict(
        path=os.path.basename(path), train=n_train, test=n_test, size=size, classes=10
    )


def unit_cli(ctx, rec) -> None:
    import torch

    n = ctx.sizes
    work = tempfile.mkdtemp(dir=ctx.work, prefix="cli_")
    npz = os.path.join(work, "scenes10.npz")
    rec.set(data=scenes_npz(npz, n["cli_train"], n["cli_test"], n["cli_size"]))
    T, R = os.path.join(work, "T"), os.path.join(work, "R")
    model = n["cli_model"]
    base = [sys.executable, "-m", "cpsc_lite"]
    teacher = base + [
        "teacher",
        "--dataset",
        f"npz:{npz}",
        "--model",
        model,
        "--epochs",
        "1",
        "--out",
        T,
    ]
    distill = base + [
        "distill",
        "--teacher",
        os.path.join(T, "teacher.pt"),
        "--dataset",
        f"npz:{npz}",
        "--student",
        model,
        "--iters",
        "6",
        "--set",
        "eval_every=3",
        "--set",
        "ckpt_every=3",
        "--stop-after",
        "3",
        "--out",
        R,
    ]
    if ctx.dry:
        teacher += ["--batch-size", "16"]
        distill += ["--batch-size", "8", "--set", "ngf=8", "--set", "nz=16"]
    commands = dict(teacher=teacher, distill=distill, resume=distill + ["--resume"])
    steps = {}
    for step, cmd in commands.items():
        t = time.perf_counter()
        shown = "cpsc-lite " + " ".join(a.replace(work + os.sep, "") for a in cmd[3:])
        print("$ " + shown, flush=True)
        rc, out, timed_out = run_child(
            cmd + ["--no-progress"], ctx.left(), cwd=work, own_group=False
        )
        out = out.strip().splitlines()
        steps[step] = dict(
            command=shown,
            returncode=rc,
            seconds=r(time.perf_counter() - t, 2),
            output_tail=out[-8:],
        )
        if timed_out:
            rec.set(steps=steps)
            raise TimedOut(f"{step} did not finish in the unit's time")
        if step != "teacher" and os.path.exists(os.path.join(R, "metrics.json")):
            with open(os.path.join(R, "metrics.json")) as f:
                m = json.load(f)
            steps[step].update(complete=m.get("complete"), iters=m.get("iters"))
        rec.set(steps=steps)
        if rc != 0:
            raise Failed(f"{step} exited with status {rc}: {' '.join(out[-3:])}")
    problems = []
    if (
        steps["distill"].get("complete") is not False
        or steps["distill"].get("iters") != 3
    ):
        problems.append(f"after --stop-after 3: {steps['distill']}")
    if steps["resume"].get("complete") is not True or steps["resume"].get("iters") != 6:
        problems.append(
            "the resumed run's metrics.json is not complete at 6 iterations"
        )
    state = torch.load(
        os.path.join(R, "state.pt"), weights_only=True, map_location="cpu"
    )
    rng = state["state"]["rng"]
    has_cuda = "cuda" in rng
    rec.set(rng_keys=sorted(rng), rng_has_cuda=has_cuda, files=sorted(os.listdir(R)))
    if ctx.cuda and not has_cuda:
        problems.append("state.pt's rng holds no 'cuda' entry")
    if not ctx.cuda:
        rec.set(rng_cuda_check="skipped: a CPU run has no CUDA random state")
    shutil.rmtree(work, ignore_errors=True)
    if problems:
        raise Failed("; ".join(problems))


# ------------------------------------------------------------------ part 8
def unit_compile(ctx, rec) -> None:
    import logging

    import torch
    import torch._dynamo
    from torch._dynamo.utils import counters

    from cpsc_lite.distill import build_distiller
    from cpsc_lite.engine import Acceleration

    check_amp(ctx, "bf16")
    backend = "eager" if ctx.dry else "inductor"
    recompiles = []

    class Catch(logging.Handler):
        def emit(self, record):
            text = record.getMessage()
            if "Recompiling function" in text:
                recompiles.append(
                    " / ".join(line.strip() for line in text.splitlines()[:3])[:300]
                )

    torch._logging.set_logs(recompiles=True)  # the reasons go to the log too
    for name in ("torch", "torch._dynamo"):  # torch._dynamo does not propagate to torch
        logging.getLogger(name).addHandler(Catch())
    cfg, teacher, meta, _ = preset_setup(ctx, FAST, rec)
    ctx.reset_memory()
    accel = Acceleration(amp="bf16", compile="default", compile_backend=backend)
    d = build_distiller(teacher, meta, cfg, accel=accel)
    rec.set(runtime=d.runtime(), backend=backend, amp="bfloat16")
    first, _ = ctx.clock(d.iterate)
    rec.set(first_iter_s=r(first, 3), recompiles_after_first=len(recompiles))
    second, _ = ctx.clock(d.iterate)
    rec.set(second_iter_s=r(second, 3), recompiles_after_second=len(recompiles))
    its = []
    for _ in range(ctx.sizes["compile_iters"]):
        t, terms = ctx.clock(d.iterate)
        its.append(t)
    s_iter = median(its)
    rec.set(
        s_per_iter=r(s_iter),
        iters_per_s=r(1 / s_iter, 3),
        compile_s=r(first + second - 2 * s_iter, 2),
        losses_finite=finite_terms(terms),
        recompiles=len(recompiles),
        recompile_reasons=recompiles[:20],
        dynamo_counters={k: dict(v) for k, v in counters.items()},
        **ctx.memory(),
    )
    release(ctx, d)


# ------------------------------------------------------------------ entry
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--out-dir",
        default="gpu_check",
        help="where gpu_check.json and gpu_check.log go",
    )
    p.add_argument(
        "--budget-s",
        type=float,
        default=None,
        help="total seconds for all parts (default: $GPU_CHECK_BUDGET_S, else 450; 300 in a dry run)",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="every part on the CPU with tiny sizes"
    )
    p.add_argument(
        "--only", default=None, help="comma-separated part names (default: all)"
    )
    p.add_argument(
        "--limit",
        action="append",
        default=[],
        metavar="UNIT=SECONDS",
        help="a unit's time limit",
    )
    p.add_argument("--unit", default=None, help=argparse.SUPPRESS)
    p.add_argument("--work", default=None, help=argparse.SUPPRESS)
    p.add_argument("--unit-limit", type=float, default=600.0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.budget_s is None:
        env = os.environ.get("GPU_CHECK_BUDGET_S")
        args.budget_s = float(env) if env else (300.0 if args.dry_run else 450.0)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.unit:
        sys.path.insert(0, REPO)
        return run_unit(args)
    return orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
