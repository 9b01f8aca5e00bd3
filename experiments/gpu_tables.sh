#!/usr/bin/env bash
# The GPU tables (experiments/tuning/README.md): the digits and shapes tables (every method and
# ablation, seeds 0-4, float32) and the scenes rows of the tuned methods, side by side on one GPU, each
# through scripts/make_bench.sh, until DEADLINE seconds (default 540); a second call on the same
# machine runs only the rows the first left (the tables stay in /tmp/b between calls). Teachers:
# .device/digits.pt, .device/shapes.pt and .device/scenes.pt (trained on a CPU, seed 0).
# Usage, on the GPU machine: OUT=folder bash experiments/gpu_tables.sh [DEADLINE]; it writes OUT/bench.tgz.
set -u
DEADLINE=${1:-540}
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 CPSC_LITE="python3 -m cpsc_lite"
export TEACHER_DIR=$PWD/.device BENCH_OUT=/tmp/b BENCH_ARGS=${SMOKE_ARGS:-"--set device=cuda"}
mkdir -p /tmp/b
python3 -c "import cpsc_lite, sklearn, scipy, tqdm, yaml, matplotlib, torch; print(cpsc_lite.__version__, torch.__version__, torch.cuda.is_available() and torch.cuda.get_device_name())" || exit 1
every=$(bash scripts/make_bench.sh every)  # every method and ablation, in make_bench.sh's order
missing() {  # missing FOLDER METHODS: the methods without a row in FOLDER/results.json
  python3 - "$1" "$2" <<'PY'
import json, os, sys
f = os.path.join(sys.argv[1], "results.json")
have = json.load(open(f))["methods"] if os.path.exists(f) else {}
print(",".join(m for m in sys.argv[2].split(",") if m not in have))
PY
}
go() {  # go TARGET FOLDER METHODS WORKERS
  local left; left=$(missing /tmp/b/$2 "$3")
  [[ -z $left ]] && { echo "$1: nothing left"; return; }
  local append=""; [[ -e /tmp/b/$2/results.json ]] && append=1
  echo "$1: $left (workers $4, append '${append}')"
  METHODS=$left APPEND=$append WORKERS=$4 timeout -s INT "$DEADLINE" bash scripts/make_bench.sh "$1" >>/tmp/b/$1.log 2>&1 &
}
nvidia-smi --query-gpu=name,memory.used,utilization.gpu --format=csv
go shapes shapes "$every" ${W_SHAPES:-6}
go digits digits "$every" ${W_DIGITS:-5}
go scenes_tuned scenes_tuned "$(bash scripts/make_bench.sh list_scenes_tuned)" ${W_SCENES:-5}
( for i in $(seq 1 40); do sleep 30; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader; done ) > /tmp/b/gpu.log 2>&1 &
mon=$!
wait $(jobs -p | grep -v "^$mon$") 2>/dev/null
kill $mon 2>/dev/null
for f in /tmp/b/*.log; do echo "== $f"; tail -n 25 "$f"; done
tar czf "$OUT/bench.tgz" -C /tmp/b --exclude='*.pt' .
ls -la "$OUT"
