#!/usr/bin/env bash
# Mutation study (issue 12): mutmut 2.5.1 over the kernels, candidates, fusion, BM25, the scoring
# paths and the sweep resume logic, each module against its own fast test files only.
#
#   experiments/mutation/run.sh [--ref GIT_REF [--tests-worktree] | --worktree] [--label NAME] [GROUP ...]
#
# The code and tests (from GIT_REF, default HEAD, or the working tree) are copied into a
# workspace ($MUTATION_WORKDIR, default /tmp/cascade-mutation) laid out as installed
# (stages/ -> cascade/stages, conf/ -> cascade/conf) and imported from there via PYTHONPATH,
# so mutants are applied to the copy, never to the checkout. mutmut's cache survives a re-sync:
# a later run with other tests re-tests only the mutants that survived (killed stays killed)
# and the mutants of changed lines. Results: experiments/mutation/results/<label>/.
# Not for CI: CPU-heavy (runs under nice -n 10). Needs: .venv/bin/pip install mutmut==2.5.1
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
PY=$REPO/.venv/bin/python
WS=${MUTATION_WORKDIR:-/tmp/cascade-mutation}
REF=HEAD
TESTS_WORKTREE=""
LABEL=""
GROUPS_WANTED=()
while (($#)); do
  case $1 in
    --ref) REF=$2; shift 2 ;;
    --worktree) REF=""; shift ;;
    --tests-worktree) TESTS_WORKTREE=1; shift ;;  # code from --ref, tests from the working tree
    --label) LABEL=$2; shift 2 ;;
    *) GROUPS_WANTED+=("$1"); shift ;;
  esac
done
LABEL=${LABEL:-${REF:-worktree}}
OUT=$REPO/experiments/mutation/results/$LABEL

# group -> "file to mutate|its relevant fast test files|extra pytest arguments"
declare -A GROUP=(
  [fusion]="cascade/core/fusion.py|tests/test_fusion.py tests/test_fusion_properties.py|"
  [candidates]="cascade/core/candidates.py|tests/test_candidates.py tests/test_ties.py tests/test_pipeline.py tests/test_fusion.py|-k 'not maxsim'"
  [dense]="cascade/kernels/dense.py|tests/test_maxsim.py tests/test_kernels_maxsim.py tests/test_ties.py|-k 'topk or top_k or dot'"
  [bm25]="cascade/stages/bm25.py|tests/test_bm25.py tests/test_ties.py tests/test_settings_reach.py|-k 'not (BiEncoder or ColBERT or CrossEncoder or maxsim)'"
  [jobs]="cascade/app/jobs.py|tests/test_sweep.py::test_resume_ignores_where_caches_live_but_not_settings tests/test_failure_paths.py::test_a_failed_rerun_of_a_changed_job_leaves_no_old_results tests/test_failure_paths.py::test_resume_skips_only_a_finished_identical_job tests/test_failure_paths.py::test_resume_ignores_logging_sweep_settings_and_progress tests/test_sweep.py::test_failed_job_is_a_row_and_the_others_stand tests/test_failure_paths.py::test_a_sweep_rerun_whose_jobs_fail_reports_them_failed|"
  [biencoder]="cascade/stages/biencoder.py|tests/test_biencoder.py tests/test_contract.py|-k 'not (bm25 or colbert or cross_encoder)'"
  [maxsim]="cascade/kernels/maxsim.py|tests/test_kernels_maxsim.py tests/test_maxsim.py tests/test_ties.py|"
  [residual]="cascade/kernels/residual.py|tests/test_kernels_residual.py|"
  [plaid]="cascade/kernels/plaid.py|tests/test_kernels_plaid.py|--deselect tests/test_kernels_plaid.py::test_default_params_recall_on_clustered_data"
)
ORDER=(fusion candidates dense bm25 jobs biencoder maxsim residual plaid)
# the big kernels: a fixed random sample of their mutants (sample.py), the others in full
declare -A SAMPLE=([maxsim]=30 [residual]=30 [plaid]=30 [biencoder]=15 [bm25]=70 [jobs]=40)
((${#GROUPS_WANTED[@]})) && ORDER=("${GROUPS_WANTED[@]}")

sync() {  # fresh copy of code + tests into $WS, keeping mutmut's cache
  local tmp; tmp=$(mktemp -d)
  if [[ -n $REF ]]; then
    git -C "$REPO" archive "$REF" cascade stages conf tests | tar -x -C "$tmp"
  else
    (cd "$REPO" && tar -c --exclude=__pycache__ cascade stages conf tests) | tar -x -C "$tmp"
  fi
  mkdir -p "$WS"
  rm -rf "$WS/cascade" "$WS/tests"
  mv "$tmp/cascade" "$tmp/tests" "$WS/"
  mv "$tmp/stages" "$WS/cascade/stages"
  mv "$tmp/conf" "$WS/cascade/conf"
  rm -rf "$tmp"
  if [[ -n $TESTS_WORKTREE ]]; then
    rm -rf "$WS/tests" && (cd "$REPO" && tar -c --exclude=__pycache__ tests) | tar -x -C "$WS"
  fi
}

sync
mkdir -p "$OUT"
cd "$WS"
for g in "${ORDER[@]}"; do
  spec=${GROUP[$g]}
  IFS='|' read -r path files extra <<<"$spec"
  existing=""
  for t in $files; do [[ -f ${t%%::*} ]] && existing+=" $t"; done  # tests added later are skipped in older refs
  runner="nice -n 10 env PYTHONPATH=$WS $REPO/experiments/mutation/runner.sh $PY -m pytest -x -q -p no:cacheprovider$existing $extra"
  echo "== $g: $path | $runner" | tee "$OUT/$g.log"
  if [[ -n ${SAMPLE[$g]:-} ]]; then
    "$PY" "$REPO/experiments/mutation/sample.py" "$WS" "$path" "${SAMPLE[$g]}" >>"$OUT/$g.log" 2>&1 &
  fi
  nice -n 10 "$REPO/.venv/bin/mutmut" run --paths-to-mutate "$path" --runner "$runner" --tests-dir tests \
    --no-progress --simple-output --test-time-base 30 >>"$OUT/$g.log" 2>&1 || true
  tail -3 "$OUT/$g.log"
done
"$PY" "$REPO/experiments/mutation/summarize.py" "$WS" "$OUT"
