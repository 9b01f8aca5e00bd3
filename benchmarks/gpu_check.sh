#!/usr/bin/env bash
# GPU check for cpsc_lite: one run on one NVIDIA GPU (written for an H100), offline, at most about
# 8 minutes, answers eight questions in one JSON file.
#
#   bash benchmarks/gpu_check.sh OUT_DIR [--only PART,PART] [--limit UNIT=SECONDS]
#   bash benchmarks/gpu_check.sh OUT_DIR --dry-run      # (or GPU_CHECK_DRY_RUN=1) all of it on CPU
#
# Output: OUT_DIR/gpu_check.json (rewritten after every measurement) and OUT_DIR/gpu_check.log
# (everything printed, the measurements' own output included). Each part's entry in the JSON has
# `status` (ok | failed + `error` | timeout + `reason` | skipped + `reason`) and `wall_s`; the
# top level has `summary` (the headline numbers), `budget_s`, `elapsed_s` and `finished`.
#
# The parts (typical H100 seconds in brackets; the limit of each is in benchmarks/gpu_check.py):
#  1 environment   GPU name, compute capability, memory, driver (nvidia-smi), torch / CUDA / cuDNN /
#                  NCCL versions, native bf16 (capability >= 8.0), and whether Triton compiles a
#                  tiny torch.compile function (in a subprocess, 60 s limit) [~20 s]
#  2 cuda_tests    pytest -m cuda tests/test_gpu.py: exit status and output (120 s limit) [~60 s]
#  3 paper_preset  c10_resnet34_resnet18 (ResNet-34 -> ResNet-18, batch 512, 6 G + 5 S steps, all
#                  losses; untrained teacher), eager, in bf16, fp16 and fp32 (TF32), each in its own
#                  process: seconds per generator step and per student step, per iteration, peak
#                  memory, one evaluation (10,000 random test images + diagnostics) and one
#                  checkpoint, and the projected hours of 30,000 and 3,000 iterations with the
#                  preset's evaluations and checkpoints. bf16 is skipped where the GPU has no
#                  native bf16 [3 x ~25 s]
#  4 batch_sweep   that preset in bf16 at batch 64/128/256 per GPU: s/iteration, samples/s, and the
#                  host enqueue time of one iteration (before synchronising) against its duration:
#                  near 1 means the GPU waits for the CPU and more GPUs will not help [~30 s]
#  5 fp16_safety   fp16 with GradScalers: the first generator and student steps are forced to
#                  overflow (loss x inf); both must be skipped, and every weight and optimiser
#                  state of student, generator and projection must stay finite after them and one
#                  normal iteration [~15 s]
#  6 small_presets c10_colab (falls back to WRN-16-2 -> WRN-16-1, batch 256, 2 G + 5 S, where the
#                  preset is missing; recorded) and c10_wrn40_2_wrn16_2_fast in the default
#                  precision (amp auto): s/iteration, projected minutes, and one teacher epoch
#                  (wrn16_2 / wrn40_2 on 50,000 random 32x32 images) [2 x ~30 s]
#  7 cli           cpsc-lite teacher, distill --stop-after 3, distill --resume on a procedural
#                  10-class 32x32 .npz: exit codes, metrics.json complete at 6 iterations, a CUDA
#                  random state in state.pt [~60 s]
#  8 compile       the fast preset in bf16 with torch.compile (inductor): compile time (first
#                  iterations), steady iterations/s, recompiles and their reasons [the rest]
#
# Every measurement runs in its own process under a time limit; the total budget
# (GPU_CHECK_BUDGET_S, default 450 s) is checked before each one, and what does not fit is
# recorded as skipped. Exit status: 0 all parts ok or skipped, 1 a part failed or timed out,
# 2 no CUDA (nothing run, nothing written; --dry-run runs anyway), 3 missing Python packages.
# PYTHON picks the interpreter (default python3).
#
# --dry-run runs all eight parts on the CPU (CUDA hidden) with tiny models (cnn_base -> cnn_small
# at 8x8, batch 4), a few dozen images and one iteration each, in about two minutes: the whole code
# path, no GPU numbers (tests/test_gpu.py runs it).
set -u
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
PY="${PYTHON:-$(command -v python3 || command -v python)}"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"   # works without `pip install -e .`

OUT=""
DRY="${GPU_CHECK_DRY_RUN:-0}"
PASS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY=1 ;;
        -h|--help) sed -n '2,/^[^#]/{/^#/p}' "${BASH_SOURCE[0]}"; exit 0 ;;
        --only|--limit) PASS+=("$1" "${2:-}"); shift ;;
        -*) echo "gpu_check: unknown option $1 (see --help)" >&2; exit 3 ;;
        *) OUT="$1" ;;
    esac
    shift
done
OUT="${OUT:-gpu_check_out}"
case "$OUT" in /*) ;; *) OUT="$PWD/$OUT" ;; esac
[ "$DRY" = "0" ] || PASS+=(--dry-run)

if ! GPU_CHECK_DRY_RUN="$DRY" "$PY" - <<'EOF'
import os, sys
try:
    import torch
except ImportError:
    print("gpu_check: no CUDA check possible: PyTorch is not installed for " + sys.executable, file=sys.stderr)
    sys.exit(1)
if os.environ.get("GPU_CHECK_DRY_RUN", "0") != "0":
    print(f"gpu_check: dry run on the CPU (torch {torch.__version__})")
    sys.exit(0)
if not torch.cuda.is_available():
    print(f"gpu_check: no CUDA device visible to PyTorch (torch {torch.__version__}, built for CUDA "
          f"{torch.version.cuda}); nothing to check. Run this on a machine with an NVIDIA GPU, or "
          "pass --dry-run to run the code path on the CPU.", file=sys.stderr)
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
    echo "gpu_check: cpsc_lite and this check need these Python packages, missing here: $missing" >&2
    exit 3
fi

cd "$REPO" || exit 3
budget="${GPU_CHECK_BUDGET_S:-450}"
guard=$(( ${budget%.*} + 120 ))   # the driver stops itself; this only catches a hang of the driver
if command -v timeout >/dev/null; then
    timeout -k 15 "$guard" "$PY" "$HERE/gpu_check.py" --out-dir "$OUT" ${PASS[@]+"${PASS[@]}"}
else
    "$PY" "$HERE/gpu_check.py" --out-dir "$OUT" ${PASS[@]+"${PASS[@]}"}
fi
rc=$?
echo "gpu_check: exit status $rc; results in $OUT/gpu_check.json, log in $OUT/gpu_check.log"
exit "$rc"
