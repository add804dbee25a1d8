import numpy as np
import pytest

from cascade import Batch, Candidates, ConfigError, NeedsCandidatesError, Pipeline, Stage
from cascade.core.timing import timed
from cascade.stages.bm25 import BM25


class Reverse(Stage):
    """Scores candidates by negated incoming score: a reranker that needs candidates."""

    def score(self, batch):
        with timed("score"):
            return -batch.candidates.scores


def test_rshift_flattens_and_mod_copies():
    a, b, c = BM25(k=10), Reverse(k=5), Reverse(k=2)
    pipe = (a >> b) >> c
    assert isinstance(pipe, Pipeline) and [s.k for s in pipe.stages] == [10, 5, 2]
    nested = a >> (b >> c)
    assert len(nested.stages) == 3
    d = a % 3
    assert d.k == 3 and a.k == 10 and d is not a


@pytest.mark.parametrize("bad", [0, -1, 2.5, "10", True])
def test_bad_k_rejected(bad):
    with pytest.raises(ConfigError, match="k must be a positive integer"):
        BM25(k=bad)
    with pytest.raises(ConfigError):
        BM25() % bad


def test_chaining_a_non_stage_is_an_error():
    with pytest.raises(TypeError, match="can only chain stages"):
        BM25() >> 5
    with pytest.raises(TypeError, match="can only chain stages"):
        "bm25" >> BM25()
    with pytest.raises(TypeError, match="Stage objects"):
        Pipeline([BM25(), "colbert"])


def test_reranker_first_says_it_needs_candidates(tiny_dataset):
    with pytest.raises(NeedsCandidatesError, match="put a retriever before it"):
        Reverse(k=2)(tiny_dataset)


def test_pipeline_trace_records_each_stage(tiny_dataset):
    run = (BM25(k=5) >> Reverse(k=2))(tiny_dataset)
    assert [t.name for t in run.stages] == ["bm25", "reverse"]
    first, second = run.stages
    assert first.candidates.doc_idx.shape[1] <= 5 and second.candidates.doc_idx.shape[1] <= 2
    assert "score" in second.phases and second.seconds >= second.phases["score"]
    # Reverse keeps the lowest BM25 scores of what BM25 kept
    for q in range(run.candidates.num_queries):
        kept = first.candidates.doc_idx[q][first.candidates.mask[q]]
        worst = kept[::-1][:2]
        assert list(run.candidates.doc_idx[q][run.candidates.mask[q]]) == list(worst)
    assert run.query_ids == tiny_dataset.query_ids


def test_pipeline_k_cuts_final_output(tiny_dataset):
    run = ((BM25(k=5) >> Reverse(k=4)) % 1)(tiny_dataset)
    assert run.candidates.doc_idx.shape[1] == 1


def test_rerank_on_batch_without_ids(tiny_dataset):
    batch = Batch(["cat"], tiny_dataset.corpus)
    out = BM25(k=2).rerank(batch)
    assert out.candidates.lengths[0] == 2 and out.query_texts == ("cat",)


def test_empty_candidates_pass_through(tiny_dataset):
    batch = Batch(["cat"], tiny_dataset.corpus, Candidates.empty(1))
    assert Reverse(k=2).rerank(batch).candidates.doc_idx.shape == (1, 0)


def test_fusion_combines_incoming_and_own_scores(tiny_dataset):
    cands = Candidates(np.array([[0, 1, 2]]), np.array([[3.0, 2.0, 1.0]]))
    batch = Batch(["q"], tiny_dataset.corpus, cands)
    only_in = Reverse(k=3, fusion={"method": "zscore", "weight_in": 1.0, "weight_own": 0.0}).rerank(batch)
    only_own = Reverse(k=3, fusion={"method": "zscore", "weight_in": 0.0, "weight_own": 1.0}).rerank(batch)
    assert only_in.candidates.doc_idx.tolist() == [[0, 1, 2]]
    assert only_own.candidates.doc_idx.tolist() == [[2, 1, 0]]
