#!/usr/bin/env bash
# Reproduce this study: the stages sweep on SciFact (12 jobs, 10 distinct pipelines), then copy the
# sweep's table and plot here. Run from the repository root. The recorded results were made by
# experiment_recorded.yaml (the `<name>_nofusion` pipeline copies of that time); this script runs
# today's conf/experiment/stages.yaml, which computes the same pipelines with pipeline.fusion=false.
set -euo pipefail
export CASCADE_CACHE_DIR=${CASCADE_CACHE_DIR:-/tmp/cc_study}
time cascade run -m +experiment=stages           # the first job encodes the corpus once for both neural stages
cp conf/experiment/stages.yaml experiments/sweep_stages/experiment.yaml
cp multirun/stages/{multirun.yaml,results.md,results.csv,quality_vs_latency.png} experiments/sweep_stages/
