import math

import numpy as np
import pytest

from cascade import Candidates, ConfigError, Run, evaluate, per_query, read_trec_run, write_trec_run

DOCS = ("d1", "d2", "d3", "d4", "d5", "d6")
QRELS = {"q1": {"d1": 1, "d3": 1}, "q2": {"d2": 1}, "q3": {"d5": 2, "d6": 1}, "q4": {"d4": 1}}


def _run():
    # q1: d3 d2 d1 | q2: d6 d2 | q3: d6 d5 | q4: nothing retrieved
    idx = [[2, 1, 0], [5, 1], [5, 4], []]
    scores = [[3.0, 2.0, 1.0], [2.0, 1.0], [2.0, 1.0], []]
    return Run(("q1", "q2", "q3", "q4"), DOCS, Candidates.from_lists(idx, scores))


def test_metrics_equal_hand_computed_values():
    log2 = math.log2
    ndcg = {
        "q1": (1 / log2(2) + 1 / log2(4)) / (1 / log2(2) + 1 / log2(3)),
        "q2": (1 / log2(3)) / 1.0,
        "q3": (1 / log2(2) + 2 / log2(3)) / (2 / log2(2) + 1 / log2(3)),  # trec_eval: linear gain
        "q4": 0.0,
    }
    rr = {"q1": 1.0, "q2": 0.5, "q3": 1.0, "q4": 0.0}
    recall2 = {"q1": 0.5, "q2": 1.0, "q3": 1.0, "q4": 0.0}
    table = per_query(_run(), QRELS, ["nDCG@10", "RR@10", "R@2"])
    for name, expected in [("nDCG@10", ndcg), ("RR@10", rr), ("R@2", recall2)]:
        assert table[name] == pytest.approx(expected)
    means = evaluate(_run(), QRELS, ["nDCG@10", "RR@10", "R@2"])
    assert means["nDCG@10"] == pytest.approx(sum(ndcg.values()) / 4)
    assert list(means) == ["nDCG@10", "RR@10", "R@2"]


def test_unknown_metric_is_a_clear_error():
    with pytest.raises(ConfigError, match="not an ir-measures name"):
        evaluate(_run(), QRELS, ["nDCG@ten"])


def test_trec_run_roundtrip(tmp_path):
    run = _run()
    path = write_trec_run(run, tmp_path / "out" / "run.trec", tag="t")
    lines = path.read_text().splitlines()
    assert lines[0] == "q1 Q0 d3 1 3.0 t"
    assert not list((tmp_path / "out").glob(".*tmp"))
    back = read_trec_run(path, DOCS, query_ids=run.query_ids)
    assert back.to_dict() == run.to_dict()
    assert evaluate(back, QRELS) == evaluate(run, QRELS)


def test_trec_run_keeps_float32_near_ties(tmp_path):
    """%.6f would write both scores as 3.788983 and lose their order; full precision keeps it."""
    run = Run(("q1",), DOCS, Candidates(np.array([[0, 1]]), np.array([[3.78898287, 3.78898263]], np.float32)))
    back = read_trec_run(write_trec_run(run, tmp_path / "r.trec"), DOCS)
    assert np.array_equal(back.candidates.scores, run.candidates.scores)
    assert back.candidates.scores[0, 0] > back.candidates.scores[0, 1]


def test_trec_run_with_unknown_doc_rejected(tmp_path):
    (tmp_path / "r.trec").write_text("q1 Q0 zzz 1 1.0 t\n")
    with pytest.raises(Exception, match="line 1: document 'zzz'"):
        read_trec_run(tmp_path / "r.trec", DOCS)
