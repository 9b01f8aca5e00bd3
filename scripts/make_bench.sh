#!/usr/bin/env bash
# Regenerates the benchmark tables in data/bench/ with the current defaults. Slow on 2 cores
# (about a minute per method x seed on digits, two to three on shapes); each table is written
# after every method, so a stopped run keeps what it finished. Usage:
#   bash scripts/make_bench.sh [digits|shapes|methods_digits|equal_time_digits|reference_digits|scenes|
#                               scenes_tuned|lr_check_digits|ablations|ablations_digits|ablations_shapes|
#                               profile|all|every|list_scenes_tuned]
#   (default: all; "ablations" = both ablation tables)
# Settings from the environment:
#   SEEDS (default 5) seeds per method; WORKERS (default 2) processes for the method x seed jobs
#   (e.g. 6 on a GPU); METHODS replaces a table's method list (e.g. the rows a stopped run left);
#   APPEND=1 adds rows to the table already there; BENCH_OUT (default data/bench) the folder the
#   tables go under; TEACHER_DIR a folder of teachers named DATASET.pt (default: each table trains
#   or reuses its own); BENCH_ARGS more bench arguments (e.g. "--set device=cuda"); CPSC_LITE the
#   command (default cpsc-lite; "python -m cpsc_lite" where the package is not installed).
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}
seeds=${SEEDS:-5}
workers=${WORKERS:-2}
out=${BENCH_OUT:-data/bench}
read -r -a cli <<<"${CPSC_LITE:-cpsc-lite}"
read -r -a more <<<"${BENCH_ARGS:-}"
ablations=cpsc,cpsc_no_cond,cpsc_no_ce,cpsc_no_scl,cpsc_no_bn,cpsc_no_ikd
# every method and every ablation, cheapest first after CPSC-DFKD and its ablations, so that a run
# stopped early keeps the most rows (DeepInversion costs about five CPSC runs, CMI about three)
every=$ablations,bn_ce,dafl,dfad,noise,data,cmi,deepinv
# scenes: CPSC-DFKD's defaults, the three methods tuned on seeds 100-101 (tuning/README.md, fourth call)
# and CMI, whose preset was its best there
scenes_tuned=cpsc,cpsc:bn_first_weight=10.0:diversity=1.0:lr_generator=0.001:replay=0.8
scenes_tuned=$scenes_tuned,dafl:lr_generator=0.0003,bn_ce:bn_first_weight=10.0:lr_generator=0.001,cmi
if [[ $what == every ]]; then  # print that list (experiments/gpu_tables.sh resumes from it)
  echo "$every"
  exit 0
fi
if [[ $what == list_scenes_tuned ]]; then  # print the scenes_tuned table's list
  echo "$scenes_tuned"
  exit 0
fi
table() {  # table DATASET FOLDER DEFAULT_METHODS [bench arguments...]
  local dataset=$1 folder=$2 methods=${METHODS:-$3}
  shift 3
  local extra=()
  [[ -n ${TEACHER_DIR:-} ]] && extra+=(--teacher "$TEACHER_DIR/$dataset.pt")
  # a regenerated table replaces the one there (--overwrite; its teacher.pt is reused)
  if [[ -n ${APPEND:-} ]]; then extra+=(--append); else extra+=(--overwrite); fi
  "${cli[@]}" bench --dataset "$dataset" --methods "$methods" --seeds "$seeds" --workers "$workers" \
    --amp off --out "$out/$folder" --no-progress "$@" "${extra[@]}" "${more[@]}"
}
if [[ $what == digits || $what == all ]]; then  # every method and ablation (0.9.0; made on a GPU: experiments/gpu_tables.sh)
  table digits digits "$every" --iters 300 --batch-size 128
fi
if [[ $what == lr_check_digits ]]; then  # the defaults against lr_generator=0.02, validation seeds 100-103
  SEEDS=${SEEDS:-4} && seeds=$SEEDS
  table digits tuning/call3/digits_lr cpsc,cpsc:lr_generator=0.02 --iters 600 --batch-size 128 --first-seed 100
fi
if [[ $what == methods_digits ]]; then  # the baselines with their own settings (0.4.0); about 1.5 hours on 2 cores
  cpsc-lite bench --dataset digits --methods cpsc,dfad,dafl,bn_ce,noise,data,cmi,deepinv --seeds "$seeds" --iters 300 \
    --out data/bench/digits_methods --no-progress --overwrite
fi
if [[ $what == equal_time_digits ]]; then  # the same wall time per run (0.5.0); about 25 minutes on 2 idle cores
  cpsc-lite bench --dataset digits --methods cpsc,deepinv,cmi --seeds "$seeds" --seconds 90 \
    --out data/bench/digits_equal_time --no-progress --overwrite
fi
if [[ $what == reference_digits ]]; then  # the authors' published code, quirk by quirk (0.5.0); about 35 minutes
  fixes=reference_compat:ce_on_softmax=false,reference_compat:generator_adam_reset=false
  fixes=$fixes,reference_compat:ikd_authors_form=false
  cpsc-lite bench --dataset digits --methods cpsc_paper,reference_compat,cpsc,$fixes --seeds "$seeds" --iters 300 \
    --out data/bench/digits_reference --no-progress --overwrite
fi
if [[ $what == scenes ]]; then  # every method on scenes and the tuned rows, 5 seeds (0.9.0)
  # Made on a GPU in two parts (experiments/gpu_tables.sh ran scenes_tuned, a second call the rest; merged
  # with `cpsc-lite bench --merge`, experiments/tuning/README.md); one command, with WORKERS processes
  # (e.g. 12 on a GPU; hours with 2 on two cores):
  table scenes scenes "$scenes_tuned,noise,data,dfad,dafl,bn_ce,deepinv" --iters 300 --batch-size 64
fi
if [[ $what == scenes_tuned ]]; then  # the list above; about 40 minutes per row on two cores, so made on a GPU
  table scenes scenes_tuned "$scenes_tuned" --iters 300 --batch-size 64
fi
if [[ $what == shapes || $what == all ]]; then
  table shapes shapes "$every" --iters 300 --batch-size 64
fi
if [[ $what == ablations || $what == ablations_digits ]]; then  # only CPSC and its five ablations
  cpsc-lite bench --dataset digits --methods "$ablations" --seeds "$seeds" --iters 300 \
    --out data/bench/digits_ablations --no-progress --overwrite
fi
if [[ $what == ablations || $what == ablations_shapes ]]; then
  cpsc-lite bench --dataset shapes --methods "$ablations" --seeds "$seeds" --iters 300 --batch-size 64 \
    --out data/bench/shapes_ablations --no-progress --overwrite
fi
if [[ $what == profile || $what == all ]]; then
  cpsc-lite bench --profile --teacher data/bench/digits/teacher.pt --out data/bench/profile/digits --overwrite
  cpsc-lite bench --profile --teacher-model wrn40_2 --student wrn16_2 --img-size 32 --batch-size 64 \
    --out data/bench/profile/wrn40_2_wrn16_2 --overwrite
fi
