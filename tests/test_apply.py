"""Function stages (cascade.apply / Stage.from_function): per query or per batch, with k, >>, % and +."""
import numpy as np
import pytest

import cascade
from cascade import Batch, Candidates, ConfigError, FunctionStage, NeedsCandidatesError, Pipeline, Stage
from cascade.stages.bm25 import BM25


def _rows(cands: Candidates) -> list[list[int]]:
    return [[int(d) for d in row if d >= 0] for row in cands.doc_idx]


def shortest(query, doc_ids, texts, scores):
    return [-len(t) for t in texts]


def test_per_query_function_sees_each_querys_candidates_and_keeps_k(tiny_dataset):
    corpus, queries = tiny_dataset.corpus, tiny_dataset.query_texts
    seen = []

    def record(query, doc_ids, texts, scores):
        seen.append((query, list(doc_ids), list(texts), np.asarray(scores).tolist()))
        return shortest(query, doc_ids, texts, scores)

    first = BM25(k=4)
    pipe = first >> cascade.apply(record, per_query=True) % 2
    run = pipe(tiny_dataset)
    before = first.rerank(Batch(queries, corpus)).candidates
    for q, (query, ids, texts, scores) in enumerate(seen):
        rows = _rows(before)[q]
        assert query == queries[q] and ids == [corpus.ids[d] for d in rows]
        assert texts == [corpus.texts[d] for d in rows]
        assert scores == pytest.approx(before.scores[q][: len(rows)].tolist())
        want = sorted(rows, key=lambda d: (len(corpus.texts[d]), d))[:2]
        assert _rows(run.candidates)[q] == want
        assert run.candidates.scores[q][: len(want)].tolist() == [-len(corpus.texts[d]) for d in want]
    assert [t.name for t in run.stages] == ["bm25", "record"]


def test_batch_function_returning_scores_candidates_or_a_batch(tiny_dataset):
    corpus, queries = tiny_dataset.corpus, tiny_dataset.query_texts
    before = BM25(k=4).rerank(Batch(queries, corpus)).candidates
    flip = Stage.from_function(lambda batch: -batch.candidates.scores, k=3)
    out = flip.rerank(Batch(queries, corpus, before)).candidates
    assert _rows(out) == [sorted(r, key=lambda d: (dict(zip(before.doc_idx[q], before.scores[q]))[d], d))[:3]
                          for q, r in enumerate(_rows(before))]

    def everything(batch):  # a retriever: every document, scored by its row
        n = len(batch.corpus)
        rows = (batch.num_queries, 1)
        return Candidates(np.tile(np.arange(n), rows), np.tile(np.arange(n, 0, -1.0), rows))

    first = cascade.apply(everything, retrieves=True) % 2
    assert first.can_retrieve() and not cascade.apply(everything).can_retrieve()
    assert _rows(first(tiny_dataset).candidates) == [[0, 1]] * len(queries)
    as_batch = cascade.apply(lambda b: b.with_candidates(everything(b)), k=1, retrieves=True)
    assert _rows(as_batch(tiny_dataset).candidates) == [[0]] * len(queries)


def test_decorator_and_from_function_make_the_same_stage(tiny_dataset):
    @cascade.apply(per_query=True, k=1)
    def short(query, doc_ids, texts, scores):
        return shortest(query, doc_ids, texts, scores)

    other = Stage.from_function(shortest, per_query=True, k=1)
    assert isinstance(short, FunctionStage) and short.name == "short" and other.name == "shortest"
    assert _rows((BM25(k=5) >> short)(tiny_dataset).candidates) == _rows((BM25(k=5) >> other)(tiny_dataset).candidates)


def test_function_stages_fuse_with_plus_and_rerank_plain_texts():
    docs = ["a very long document about cats", "cats", "a cat and a dog"]
    by_length = cascade.apply(shortest, per_query=True)
    assert by_length.rerank("cats", docs).indices == [1, 2, 0]
    assert by_length.rerank("cats", docs).doc_ids == ["1", "2", "0"]
    assert by_length.rerank("cats", {"x": docs[0], "y": docs[1]}).doc_ids == ["y", "x"]
    union = by_length % 1 + cascade.apply(lambda q, ids, texts, s: [t.count("a") for t in texts], per_query=True) % 1
    assert union.rerank("cats", docs).indices == [1, 2]  # each side's best (shortest; most a's), tied: list order
    pipe = BM25(k=2) >> by_length
    assert pipe.rerank("cats dog", docs).indices == [1, 2]


def test_bad_functions_are_reported(tiny_dataset):
    with pytest.raises(ConfigError, match="needs a function"):
        cascade.apply("not callable")
    wrong_len = BM25(k=3) >> cascade.apply(lambda q, ids, texts, s: [1.0], per_query=True)
    with pytest.raises(ValueError, match="returned 1 scores for 3 documents"):
        wrong_len(tiny_dataset)
    nan = BM25(k=3) >> cascade.apply(lambda q, ids, texts, s: [np.nan] * len(texts), per_query=True)
    with pytest.raises(ValueError, match="NaN"):
        nan(tiny_dataset)
    shape = BM25(k=3) >> cascade.apply(lambda batch: np.zeros((1, 1)))
    with pytest.raises(ValueError, match=r"shape \(1, 1\)"):
        shape(tiny_dataset)
    with pytest.raises(NeedsCandidatesError, match="put a retriever before it"):
        Pipeline([cascade.apply(shortest, per_query=True)])(tiny_dataset)
    with pytest.raises(NeedsCandidatesError, match="put a retriever before it"):
        cascade.apply(lambda batch: -batch.candidates.scores)(tiny_dataset)
    with pytest.raises(NeedsCandidatesError, match="must return a Batch or Candidates"):
        cascade.apply(lambda batch: np.zeros((4, 0)), retrieves=True)(tiny_dataset)
    with pytest.raises(ConfigError, match="only a batch function"):
        cascade.apply(shortest, per_query=True, retrieves=True)
