#!/usr/bin/env bash
# Reproduce this study: the cutoffs sweep on SciFact from a cold cache, then the same command again
# (every job reused), then copy the sweep's table and plot here. Run from the repository root.
set -euo pipefail
export CASCADE_CACHE_DIR=${CASCADE_CACHE_DIR:-/tmp/cc_study}
time cascade run -m +experiment=cutoffs          # first job encodes the corpus (~3 min on 2 cores)
time cascade run -m +experiment=cutoffs          # resumes: 18 of 18 jobs reuse their saved results
python experiments/sweep_cutoffs/colbert_on_off.py multirun/cutoffs
cp conf/experiment/cutoffs.yaml experiments/sweep_cutoffs/experiment.yaml
cp multirun/cutoffs/{multirun.yaml,results.md,results.csv,quality_vs_latency.png} experiments/sweep_cutoffs/
