#!/usr/bin/env bash
# Regenerates the benchmark tables in data/bench/ that the book's experiments chapter reads, with the
# current package and ONE teacher per data set (trained once with the data set's recipe, seed 0, into
# $TEACHER_DIR/DATASET/; every table of a data set uses it). Slow on 2 cores: each table is written
# after every method, so a stopped run keeps what it finished. Usage:
#   bash scripts/make_bench.sh [digits|shapes|compute_digits|compute_shapes|profile|all|list]
#     digits, shapes     every method, ablation and paper preset at the same iterations, 5 seeds
#                        (digits: 300 iterations x 128, ~50 min, with the authors' code with one
#                        quirk fixed at a time; shapes: 300 x 64, ~70 min)
#     compute_DATASET    the data-free methods at three equal-compute budgets (the FLOPs of 150, 300
#                        and 600 iterations of CPSC-DFKD), 5 seeds each (with SEEDS=3: digits ~45 min,
#                        shapes ~50 min)
#     profile            one iteration against its floor, float32 and bf16 side by side
#     all                all of the above
# Settings from the environment:
#   SEEDS (default 5) seeds per method; WORKERS (default 2) processes for the method x seed jobs
#   (e.g. 6 on a GPU); METHODS replaces a table's method list; a table already there is replaced,
#   unless APPEND=1 (add rows to it) or RESUME=1 (finish a stopped one, keeping its finished rows);
#   BENCH_OUT (default data/bench) the folder the tables go under; TEACHER_DIR (default
#   data/bench/teachers) where each data set's teacher is;
#   BENCH_ARGS more bench arguments (e.g. "--set device=cuda"); CPSC_LITE the command (default
#   cpsc-lite; "python -m cpsc_lite" where the package is not installed).
# The `scenes` table (data/bench/scenes) was made on a GPU in an earlier version; making it again
# takes hours on two cores (`table scenes scenes ... --iters 300 --batch-size 64` as below).
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}
seeds=${SEEDS:-5}
workers=${WORKERS:-2}
out=${BENCH_OUT:-data/bench}
teachers=${TEACHER_DIR:-data/bench/teachers}
read -r -a cli <<<"${CPSC_LITE:-cpsc-lite}"
read -r -a more <<<"${BENCH_ARGS:-}"
ablations=cpsc,cpsc_no_cond,cpsc_no_ce,cpsc_no_scl,cpsc_no_bn,cpsc_no_ikd
# every method and every ablation, cheapest first after CPSC-DFKD and its ablations, so that a run
# stopped early keeps the most rows (DeepInversion costs about five CPSC runs, CMI about three)
every=$ablations,cpsc_paper,reference_compat,bn_ce,dafl,dfad,noise,data,cmi,deepinv
# the authors' published code with one of its quirks fixed at a time (the digits table only)
quirks=reference_compat:ce_on_softmax=false,reference_compat:generator_adam_reset=false
quirks+=,reference_compat:ikd_authors_form=false
# the data-free methods whose accuracy is compared at equal compute
free=cpsc,bn_ce,dafl,dfad,cmi,deepinv
if [[ $what == list ]]; then
  echo "$every"
  exit 0
fi
teacher() {  # teacher DATASET: the data set's one teacher, trained once
  local dataset=$1
  if [[ ! -f $teachers/$dataset/teacher.pt ]]; then
    # --resume: a teacher training stopped earlier continues (a new one starts if there is none)
    "${cli[@]}" teacher --dataset "$dataset" --out "$teachers/$dataset" --no-progress --resume >&2
  fi
  echo "$teachers/$dataset/teacher.pt"
}
table() {  # table DATASET FOLDER DEFAULT_METHODS [bench arguments...]
  local dataset=$1 folder=$2 methods=${METHODS:-$3}
  shift 3
  local extra=()
  # a regenerated table replaces the one there (--overwrite; the teacher is reused); APPEND=1 adds
  # rows to it, RESUME=1 finishes a stopped table (its finished rows are kept)
  if [[ -n ${APPEND:-} ]]; then
    extra+=(--append)
  elif [[ -n ${RESUME:-} ]]; then
    extra+=(--resume)
  else
    extra+=(--overwrite)
  fi
  "${cli[@]}" bench --dataset "$dataset" --methods "$methods" --seeds "$seeds" --workers "$workers" \
    --amp off --teacher "$(teacher "$dataset")" --out "$out/$folder" --no-progress "$@" \
    "${extra[@]}" "${more[@]}"
  cp "$teachers/$dataset/metrics.json" "$out/$folder/teacher_metrics.json"
}
batch() {  # the benchmark's batch size per data set
  case $1 in digits) echo 128 ;; *) echo 64 ;; esac
}
for dataset in digits shapes; do
  if [[ $what == "$dataset" || $what == all ]]; then
    rows=$every
    [[ $dataset == digits ]] && rows+=,$quirks
    table "$dataset" "$dataset" "$rows" --iters 300 --batch-size "$(batch "$dataset")"
  fi
  if [[ $what == "compute_$dataset" || $what == all ]]; then
    for budget in 150 300 600; do
      table "$dataset" "${dataset}_compute/cpsc$budget" "$free" --equal-flops "cpsc:$budget" \
        --batch-size "$(batch "$dataset")"
    done
  fi
done
if [[ $what == profile || $what == all ]]; then
  "${cli[@]}" bench --profile --teacher "$(teacher digits)" --out "$out/profile/digits" --overwrite
  "${cli[@]}" bench --profile --teacher-model wrn40_2 --student wrn16_2 --img-size 32 --batch-size 64 \
    --out "$out/profile/wrn40_2_wrn16_2" --overwrite
fi
