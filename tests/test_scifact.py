"""Real BM25 runs on BEIR SciFact (seconds)."""
import pytest

from cascade import evaluate, load_beir, stage_report
from cascade.stages.bm25 import BM25


@pytest.fixture(scope="module")
def scifact(scifact_path):
    return load_beir(scifact_path)


def test_scifact_shape(scifact):
    assert len(scifact.corpus) == 5183 and len(scifact.query_ids) == 300


def test_bm25s_reaches_published_quality(scifact):
    run = (BM25(backend="bm25s") % 1000)(scifact)
    metrics = evaluate(run, scifact.qrels, ["nDCG@10", "R@1000"])
    assert metrics["nDCG@10"] >= 0.68  # Pyserini's flat BM25: 0.679
    assert metrics["R@1000"] >= 0.95
    (row,) = stage_report(run, scifact.qrels)
    assert row["recall_metric"] == "R@1000" and row["recall"] == pytest.approx(metrics["R@1000"])


def test_rank_bm25_backend_runs_the_same_pipeline(scifact):
    run = (BM25(backend="rank_bm25") % 100)(scifact)
    assert evaluate(run, scifact.qrels, ["nDCG@10"])["nDCG@10"] >= 0.66
