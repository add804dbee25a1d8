"""cascade.Experiment: pipelines compared in one DataFrame, with the sweep's statistics."""
from __future__ import annotations

import sys

import numpy as np
import pytest

import cascade
from cascade.app.significance import compare, holm
from cascade.app.tune import Candidate, tune
from cascade.core.data import Corpus, Dataset
from cascade.core.errors import ConfigError
from cascade.core.evaluation import per_query, stage_report
from cascade.stages.bm25 import BM25

WORDS = ["cat", "dog", "fish", "bird", "mat", "river", "song", "bark", "milk", "tree", "rain", "snow"]


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    """12 queries over 60 documents, several relevant each, so BM25 variants differ per query."""
    rng = np.random.default_rng(7)
    texts = [" ".join(rng.choice(WORDS, size=8)) for _ in range(60)]
    corpus = Corpus([f"d{i}" for i in range(60)], texts)
    queries = [f"{WORDS[i]} {WORDS[(i + 3) % 12]}" for i in range(12)]
    qrels = {f"q{i}": {f"d{j}": 1 for j in range(60) if WORDS[i] in texts[j].split()[:3]} or {"d0": 1}
             for i in range(12)}
    return Dataset(corpus, [f"q{i}" for i in range(12)], queries, qrels, "words")


PIPELINES = {"bm25@10": lambda: BM25() % 10, "bm25@2": lambda: BM25() % 2,
             "flat": lambda: BM25(k1=0.2, b=0.0) % 10, "rescored": lambda: BM25() % 20 >> BM25(k1=2.0, b=1.0) % 5}
METRICS = ["nDCG@10", "R@5"]


def test_the_top_level_import_stays_light():
    import subprocess

    code = "import sys, cascade; print('pandas' in sys.modules, 'cascade.app.experiment' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
    assert cascade.Experiment.__module__ == "cascade.app.experiment"


@pytest.mark.parametrize("test", ["ttest", "randomization"])
def test_table_columns_and_p_values_match_the_sweep_statistics(dataset, test):
    pipes = [make() for make in PIPELINES.values()]
    table = cascade.Experiment(pipes, dataset, METRICS, baseline=0, test=test, correction="holm",
                               names=list(PIPELINES))
    assert list(table["name"]) == list(PIPELINES)
    assert list(table.columns) == [
        "name", "nDCG@10", "R@5", "delta_nDCG@10", "p_nDCG@10", "p_holm_nDCG@10", "delta_R@5", "p_R@5", "p_holm_R@5",
        "ms_per_query", "k_bm25", "recall_bm25", "ms_bm25", "k_bm25#2", "recall_bm25#2", "ms_bm25#2", "index_s",
        "queries", "baseline"]
    assert list(table["baseline"]) == [True, False, False, False]
    runs = {name: make()(dataset) for name, make in PIPELINES.items()}
    scores = {name: per_query(run, dataset.qrels, METRICS) for name, run in runs.items()}
    for metric in METRICS:
        direct = {n: compare(scores["bm25@10"][metric], scores[n][metric], test) for n in list(PIPELINES)[1:]}
        assert any(0 < d.p_value < 1 for d in direct.values())  # the check below compares real p-values
        adjusted = holm([d.p_value for d in direct.values()])
        for (name, d), p_holm in zip(direct.items(), adjusted):
            row = table[table["name"] == name].iloc[0]
            assert row[metric] == pytest.approx(np.mean(list(scores[name][metric].values())))
            assert row[f"delta_{metric}"] == pytest.approx(d.delta)
            assert row[f"p_{metric}"] == pytest.approx(d.p_value)
            assert row[f"p_holm_{metric}"] == pytest.approx(p_holm)
        assert np.isnan(table.loc[0, f"p_{metric}"]) and np.isnan(table.loc[0, f"delta_{metric}"])
    for name, run in runs.items():
        row = table[table["name"] == name].iloc[0]
        stages = stage_report(run, dataset.qrels)
        assert row["k_bm25"] == stages[0]["k"] and row["recall_bm25"] == pytest.approx(stages[0]["recall"])
        if len(stages) > 1:
            assert row["recall_bm25#2"] == pytest.approx(stages[1]["recall"]) and row["k_bm25#2"] == 5
        else:
            assert np.isnan(row["recall_bm25#2"])
        assert row["ms_per_query"] == pytest.approx(
            row["ms_bm25"] + (0 if np.isnan(row["ms_bm25#2"]) else row["ms_bm25#2"])
        )
        assert row["queries"] == 12


def test_no_correction_and_a_named_baseline(dataset):
    pipes = [make() for make in PIPELINES.values()]
    table = cascade.Experiment(pipes, dataset, ["nDCG@10"], baseline="flat", correction=None, names=list(PIPELINES))
    assert "p_holm_nDCG@10" not in table.columns
    assert list(table["baseline"]) == [False, False, True, False]
    base = per_query(pipes[2](dataset), dataset.qrels, ["nDCG@10"])["nDCG@10"]
    other = per_query(pipes[0](dataset), dataset.qrels, ["nDCG@10"])["nDCG@10"]
    assert table.loc[0, "p_nDCG@10"] == pytest.approx(compare(base, other).p_value)
    assert table.loc[0, "delta_nDCG@10"] == pytest.approx(compare(base, other).delta)


def test_default_names_are_the_pipelines_and_unique(dataset):
    table = cascade.Experiment([BM25() % 3, BM25() % 3], dataset, ["nDCG@10"], baseline=None)
    assert list(table["name"]) == [f"{BM25() % 3!r} #0", f"{BM25() % 3!r} #1"]
    assert "p_nDCG@10" not in table.columns


def test_best_under_is_the_tuning_procedure_over_the_experiment(dataset):
    pipes = [make() for make in PIPELINES.values()]
    table = cascade.Experiment(pipes, dataset, METRICS, names=list(PIPELINES))
    budget = float(table["ms_per_query"].max()) + 1
    best = table.best_under(ms=budget, metric="R@5", folds=3, seed=1)
    data = table.experiment
    cands = [Candidate(n, data.ms_per_query[n], data.per_query[n]["R@5"]) for n in PIPELINES]
    expected = tune(cands, cands[0], budget, 3, 1, "ttest", "R@5")
    assert (
        best.chosen.name == expected.chosen.name and best.chosen.obj is pipes[list(PIPELINES).index(best.chosen.name)]
    )
    assert best.cv_value == expected.cv_value and best.cv.p_value == expected.cv.p_value
    assert best.chosen.name == max(PIPELINES, key=lambda n: table.set_index("name").loc[n, "R@5"])
    # narrowing the frame keeps its data; a budget below every pipeline is refused
    assert table[["name", "nDCG@10"]].best_under(ms=budget).metric == "nDCG@10"
    with pytest.raises(ConfigError, match="no configuration runs within"):
        table.best_under(ms=1e-9)
    with pytest.raises(ConfigError, match="was not measured"):
        table.best_under(ms=budget, metric="MAP")


def test_bad_arguments_are_refused_before_any_work(dataset, monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("a pipeline ran")

    monkeypatch.setattr(cascade.Pipeline, "run", boom)
    pipes = [BM25() % 5, BM25() % 2]
    cases = [
        (dict(test="wilcoxon"), "ttest, randomization"),
        (dict(correction="bonferroni"), "correction 'bonferroni' is unknown"),
        (dict(baseline=2), "baseline must be a pipeline's position"),
        (dict(baseline="nope"), "baseline 'nope' is not one of the names"),
        (dict(names=["a"]), "names has 1 entries for 2 pipelines"),
        (dict(names=["a", "a"]), "names must be unique"),
        (dict(metrics=["nDCG@ten"]), "not an ir-measures name"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ConfigError, match=message):
            cascade.Experiment(pipes, dataset, **{"metrics": ["nDCG@10"], **kwargs})
    with pytest.raises(ConfigError, match="every pipeline must be a cascade Stage"):
        cascade.Experiment([pipes[0], "bm25"], dataset)
    with pytest.raises(ConfigError, match="non-empty list"):
        cascade.Experiment(pipes[0], dataset)
    with pytest.raises(ConfigError, match="dataset must be a cascade Dataset"):
        cascade.Experiment(pipes, {"q1": "text"})
