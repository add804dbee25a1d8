#!/usr/bin/env bash
# Reproduce the budget-aware tuning study on SciFact. Run from the repository root.
# 1. one timed sweep (18 jobs: the cutoffs grid, conf/experiment/cutoffs.yaml), under the shared benchmark lock;
# 2. `cascade tune` at several budgets (5-fold CV over the 300 test queries), seeds 0-2, and the randomization test;
# 3. a slim copy of the sweep (no run.trec) into experiments/tuning/sweep/, so step 2 reruns from the repository.
set -euo pipefail
export CASCADE_CACHE_DIR=${CASCADE_CACHE_DIR:-/work/cache}       # warm: BM25, MiniLM vectors and tokens
export CASCADE_DATA_DIR=${CASCADE_DATA_DIR:-/work/shared/data}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}   # one thread: steadier on a shared machine
SWEEP=${SWEEP:-$PWD/multirun/tuning}
OUT=experiments/tuning
uptime
flock /work/scratch/bench.lock cascade run -m +experiment=cutoffs hydra.sweep.dir="$SWEEP"
uptime
rm -rf "$OUT/sweep" && mkdir -p "$OUT/sweep"
cp "$SWEEP"/{multirun.yaml,results.md,results.csv,quality_vs_latency.png} "$OUT/sweep/"
for job in "$SWEEP"/*/; do
  name=$(basename "$job"); mkdir -p "$OUT/sweep/$name/.hydra"
  cp "$job"/.hydra/{overrides.yaml,hydra.yaml,config.yaml} "$OUT/sweep/$name/.hydra/"
  cp "$job"/{metrics.json,per_query.json,summary.json,stages.json} "$OUT/sweep/$name/"
done
cascade tune "$OUT/sweep" --budget-ms 30,40,60,100 --json "$OUT/tune.json" | tee "$OUT/tune.md"
for seed in 1 2; do
  cascade tune "$OUT/sweep" --budget-ms 30,40,60,100 --seed "$seed" --json "$OUT/tune_seed$seed.json" > "$OUT/tune_seed$seed.md"
done
cascade tune "$OUT/sweep" --budget-ms 30,40,60,100 --test randomization --json "$OUT/tune_randomization.json" \
  > "$OUT/tune_randomization.md"
