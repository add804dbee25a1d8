"""Budget-aware tuning (`cascade tune`, cascade.app.tune): best under a budget, chosen and scored honestly."""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from cascade.app.cli import main as cli_main
from cascade.app.significance import compare
from cascade.app.tune import Candidate, choose, make_folds, tune, tune_sweep
from cascade.core.errors import ConfigError

QUERIES = [f"q{i}" for i in range(6)]


def scores(values) -> dict[str, float]:
    return dict(zip(QUERIES, map(float, values)))


# Each of A, B, C is perfect on one pair of queries; D is mediocre everywhere; F is perfect but too slow.
# Folds hold out (q0,q1), (q2,q3), (q4,q5). Choosing on the other folds never picks the config that is
# good on the held-out pair, so the honest cross-validated value is 0; a procedure that looks at the
# held-out queries would pick A, B, C in turn and claim 1.0, and the choice on all queries (D) 0.4.
FOLDS = [["q0", "q1"], ["q2", "q3"], ["q4", "q5"]]
CONFIGS: dict[str, tuple[float, list[float]]] = {
    "A": (3.0, [1, 1, 0, 0, 0, 0]),
    "B": (3.0, [0, 0, 1, 1, 0, 0]),
    "C": (3.0, [0, 0, 0, 0, 1, 1]),
    "D": (4.0, [0.4] * 6),
    "F": (50.0, [1.0] * 6),
    "base": (20.0, [0.2] * 6),
}


def candidates() -> list[Candidate]:
    return [Candidate(name, ms, scores(values)) for name, (ms, values) in CONFIGS.items()]


def test_choice_respects_the_budget_and_prefers_quality_then_speed():
    cands = candidates()
    assert choose(cands, 10, QUERIES).name == "D"  # best mean within 10 ms (F is better but 50 ms)
    assert choose(cands, 100, QUERIES).name == "F"
    assert choose(cands, 3.5, QUERIES).name == "A"  # A, B, C tie on all queries: the first of the fastest
    assert choose(cands, 10, ["q2", "q3"]).name == "B"
    with pytest.raises(ConfigError, match="no configuration runs within 1 ms/query; the fastest, A, takes 3.00"):
        choose(cands, 1, QUERIES)


def test_cross_validation_never_scores_a_query_with_a_choice_that_saw_it():
    cands = candidates()
    base = cands[-1]
    result = tune(cands, base, 10, folds=FOLDS)
    assert result.chosen.name == "D" and result.value == pytest.approx(0.4)  # the choice on all queries
    # held out (q0,q1): B (first of B, C tied on q2..q5); (q2,q3): A; (q4,q5): A -> 0 on every held-out query
    assert [f.chosen for f in result.folds] == ["B", "A", "A"]
    assert [f.train_value for f in result.folds] == pytest.approx([0.5, 0.5, 0.5])
    assert [f.held_out_value for f in result.folds] == [0.0, 0.0, 0.0]
    assert result.cv_value == 0.0  # a leaky procedure would report 1.0 (chosen on the held-out pair) or 0.4
    assert result.cv.delta == pytest.approx(-0.2) and result.baseline_value == pytest.approx(0.2)
    assert result.cv.p_value == compare(base.scores, dict.fromkeys(QUERIES, 0.0)).p_value
    assert result.stable == 0 and result.under_budget == 4 and result.candidates == 6 and result.queries == 6


def test_numbered_folds_cover_every_query_once_and_depend_on_the_seed():
    queries = [f"q{i}" for i in range(23)]
    folds = make_folds(queries, 5, seed=0)
    assert sorted(q for f in folds for q in f) == sorted(queries)
    assert sorted(len(f) for f in folds) == [4, 4, 5, 5, 5]
    assert folds == make_folds(list(reversed(queries)), 5, seed=0)  # by content, not input order
    assert folds != make_folds(queries, 5, seed=1)
    for bad in (1, 24, 2.5, True):
        with pytest.raises(ConfigError, match="folds must be an integer from 2 to the number of queries"):
            make_folds(queries, bad)


def test_cv_with_numbered_folds_matches_choosing_by_hand():
    rng = np.random.default_rng(0)
    queries = [f"q{i}" for i in range(40)]
    cands = [Candidate(f"c{i}", float(i), dict(zip(queries, rng.random(40) + 0.01 * i))) for i in range(8)]
    result = tune(cands, cands[0], 5.5, folds=4, seed=3, test="randomization")
    held = {}
    for fold in make_folds(queries, 4, seed=3):
        train = [q for q in queries if q not in fold]
        best = max(cands[:6], key=lambda c: np.mean([c.scores[q] for q in train]))
        held.update({q: best.scores[q] for q in fold})
    assert result.cv_value == pytest.approx(np.mean(list(held.values())))
    assert result.cv.p_value == compare(cands[0].scores, held, "randomization").p_value
    assert result.chosen.name == max(cands[:6], key=lambda c: np.mean(list(c.scores.values()))).name


def test_bad_settings_are_refused():
    cands = candidates()
    for budget in (0, -1, float("nan"), "10"):
        with pytest.raises(ConfigError, match="positive number of ms per query"):
            tune(cands, cands[-1], budget, folds=FOLDS)
    with pytest.raises(ConfigError, match="every shared query exactly once"):
        tune(cands, cands[-1], 10, folds=[["q0", "q1"], ["q2", "q3"]])
    with pytest.raises(ConfigError, match="ttest, randomization"):
        tune(cands, cands[-1], 10, folds=FOLDS, test="wilcoxon")


# --- over a sweep folder --------------------------------------------------------------------------

def write_sweep(root: Path, baseline: list[str] | tuple[str, ...] | str | None = ("x=base",)) -> Path:
    """A finished sweep: one job per config of CONFIGS, with per-query nDCG@10 and measured ms/query."""
    root.mkdir(parents=True)
    sweep = {
        "metric": "nDCG@10",
        "test": "ttest",
        "baseline": list(baseline) if isinstance(baseline, tuple) else baseline,
    }
    (root / "multirun.yaml").write_text(yaml.safe_dump({"sweep": sweep}))
    for num, (name, (ms, values)) in enumerate(CONFIGS.items()):
        job = root / f"x={name}"
        (job / ".hydra").mkdir(parents=True)
        overrides = ["+experiment=toy", f"x={name}", "dataset.path=/data/my set", "sweep.baseline=[x:base]"]
        (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
        (job / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"job": {"num": num}}}))
        per_query = {"nDCG@10": scores(values), "R@100": scores([1] * 6)}
        (job / "per_query.json").write_text(json.dumps(per_query))
        (job / "summary.json").write_text(json.dumps({"queries": 6, "ms_per_query": ms, "index_s": 0.1}))
        (job / "metrics.json").write_text(json.dumps({"nDCG@10": float(np.mean(values))}))
    return root


def test_tune_command_prints_the_choice_and_its_command_line(tmp_path, capsys):
    root = write_sweep(tmp_path / "sweep")
    assert (
        cli_main(["tune", str(root), "--budget-ms", "10,100", "--folds", "3", "--json", str(tmp_path / "t.json")]) == 0
    )
    out = capsys.readouterr().out
    assert "budget 10 ms/query: cascade run +experiment=toy x=D 'dataset.path=/data/my set'\n" in out
    assert "budget 100 ms/query: cascade run +experiment=toy x=F 'dataset.path=/data/my set'\n" in out
    rows = [
        [cell.strip() for cell in line.strip("|").split("|")] for line in out.splitlines() if line.startswith("| 1")
    ]
    assert [r[:4] for r in rows] == [["10", "4 of 6", "x=D", "4.00"], ["100", "6 of 6", "x=F", "50.00"]]
    assert rows[0][5:9] == [
        "0.0000",
        "0.2000",
        "-0.2000",
        format(compare(scores([0.2] * 6), scores([0] * 6)).p_value, ".3g"),
    ]
    assert "Baseline: x=base (20.00 ms/query)" in out
    saved = json.loads((tmp_path / "t.json").read_text())
    direct = tune_sweep(root, [10], folds=3)[0]
    assert saved["results"][0]["cv_value"] == direct.cv_value and saved["results"][0]["chosen"]["name"] == "x=D"
    assert saved["results"][0]["cv"]["p_value"] == direct.cv.p_value
    # the printed command is valid shell: its words are the job's overrides, sweep.* settings aside
    assert shlex.split(direct.chosen.command) == [
        "cascade",
        "run",
        "+experiment=toy",
        "x=D",
        "dataset.path=/data/my set",
    ]


def test_tune_command_errors(tmp_path, capsys):
    root = write_sweep(tmp_path / "sweep", baseline=None)
    assert cli_main(["tune", str(root), "--budget-ms", "10"]) == 2
    assert "no baseline to test against" in capsys.readouterr().err
    assert cli_main(["tune", str(root), "--budget-ms", "10", "--baseline", "x:base", "--metric", "MAP"]) == 2
    assert "metric 'MAP' is not in" in capsys.readouterr().err
    assert cli_main(["tune", str(root), "--budget-ms", "1", "--baseline", "x=base"]) == 2
    assert "no configuration runs within 1 ms/query" in capsys.readouterr().err
    assert cli_main(["tune", str(root), "--budget-ms", "ten", "--baseline", "x:base"]) == 2
    assert "--budget-ms takes numbers" in capsys.readouterr().err
    assert cli_main(["tune", str(root), "--budget-ms", "10", "--baseline", "x:nope"]) == 2
    assert "no finished job" in capsys.readouterr().err
    assert cli_main(["tune", str(tmp_path / "nowhere"), "--budget-ms", "10"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_tune_on_a_real_sweep_prints_a_command_that_reproduces_the_job(tiny_beir, tmp_path):
    env = {**os.environ, "CASCADE_CACHE_DIR": str(tmp_path / "cache")}

    def cascade(*args):
        return subprocess.run([sys.executable, "-m", "cascade.app.cli", *args], cwd=tiny_beir.parent, env=env,
                              capture_output=True, text=True, timeout=300)

    sweep = cascade("run", "-m", "pipeline=bm25,bm25_rescore", "dataset.path=tiny", "stage.bm25.k=1,3",
                    "sweep.baseline=pipeline:bm25+stage.bm25.k:3")
    assert sweep.returncode == 0, sweep.stderr
    root = tiny_beir.parent / "multirun" / "pipeline=bm25,bm25_rescore,dataset.path=tiny,stage.bm25.k=1,3"
    tuned = cascade("tune", str(root), "--budget-ms", "1000", "--folds", "2")
    assert tuned.returncode == 0, tuned.stderr
    command = next(line for line in tuned.stdout.splitlines() if line.startswith("budget 1000 ms/query: "))
    words = shlex.split(command.split(": ", 1)[1])
    assert words[:2] == ["cascade", "run"] and "dataset.path=tiny" in words
    chosen = next(p for p in root.iterdir() if p.is_dir() and set(p.name.split(",")) <= set(words))
    rerun = cascade(*words[1:], f"hydra.run.dir={tmp_path / 'rerun'}")
    assert rerun.returncode == 0, rerun.stderr
    assert json.loads((tmp_path / "rerun" / "metrics.json").read_text()) == json.loads(
        (chosen / "metrics.json").read_text()
    )
