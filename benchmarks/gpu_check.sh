#!/usr/bin/env bash
# GPU check for cpsc_lite, for one NVIDIA GPU (written for an H100), offline, in under 8 minutes.
#
#   bash benchmarks/gpu_check.sh [OUT.json]        (default: gpu_check.json)
#
# 1. Runs the tests that need CUDA (pytest -m cuda: mixed precision, GradScalers, channels-last,
#    fused optimisers, no host syncs in a step, torch.compile tracing, CUDA teacher training),
#    limited to 150 s.
# 2. Measures iterations/second and peak GPU memory (torch.cuda.max_memory_allocated) for CIFAR-10
#    ResNet-34 -> ResNet-18 at batch 512 (6 generator + 5 student steps per iteration; random-init
#    teacher; no evaluation) in fp32, bf16 and fp16 autocast, and fp32/bf16 with torch.compile,
#    each in its own process with a time limit (benchmarks/gpu_bench.py), within the time left.
# Everything lands in one JSON file, rewritten as results come in.
#
# Without CUDA it stops at once with "no CUDA" (exit status 2). Environment: PYTHON (interpreter,
# default python3), GPU_CHECK_BUDGET_S (total seconds, default 450).
set -u
OUT="${1:-gpu_check.json}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
PY="${PYTHON:-$(command -v python3 || command -v python)}"
BUDGET="${GPU_CHECK_BUDGET_S:-450}"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"   # works without `pip install -e .`
case "$OUT" in /*) ;; *) OUT="$PWD/$OUT" ;; esac
start=$SECONDS

if ! "$PY" - <<'EOF'
import sys
try:
    import torch
except ImportError:
    print("gpu_check: no CUDA check possible: PyTorch is not installed for " + sys.executable, file=sys.stderr)
    sys.exit(1)
if not torch.cuda.is_available():
    print(f"gpu_check: no CUDA device visible to PyTorch (torch {torch.__version__}, built for CUDA "
          f"{torch.version.cuda}); nothing to check. Run this on a machine with an NVIDIA GPU.", file=sys.stderr)
    sys.exit(1)
print(f"gpu_check: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
EOF
then
    exit 2
fi

missing="$("$PY" -c '
import importlib.util as u
need = ["numpy", "sklearn", "matplotlib", "tqdm", "yaml", "torchvision"]
print(" ".join(m for m in need if u.find_spec(m) is None))')"
if [ -n "$missing" ]; then
    echo "gpu_check: cpsc_lite needs these Python packages, missing here: $missing" >&2
    exit 3
fi

cd "$REPO" || exit 3
LOG="$(mktemp -t gpu_check_pytest.XXXXXX)"
tests_rc=127
if "$PY" -c 'import pytest' 2>/dev/null; then
    echo "gpu_check: CUDA tests (at most 150 s)"
    t0=$SECONDS
    timeout 150 "$PY" -m pytest -q -m cuda -o "markers=cuda: needs a CUDA GPU" -p no:cacheprovider \
        tests/test_gpu.py 2>&1 | tee "$LOG"
    tests_rc=${PIPESTATUS[0]}
    tests_s=$((SECONDS - t0))
else
    echo "pytest is not installed: CUDA tests not run" | tee "$LOG"
    tests_s=0
fi

left=$((BUDGET - (SECONDS - start)))
echo "gpu_check: benchmark (about ${left} s left)"
"$PY" "$HERE/gpu_bench.py" --out "$OUT" --budget-s "$left" --timeout-s 200 \
    --tests-log "$LOG" --tests-rc "$tests_rc" --tests-seconds "$tests_s"
bench_rc=$?
rm -f "$LOG"
echo "gpu_check: tests exit status $tests_rc, benchmark exit status $bench_rc, $((SECONDS - start)) s; wrote $OUT"
[ "$tests_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ]
