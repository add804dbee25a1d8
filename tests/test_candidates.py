import numpy as np
import pytest

from cascade import Batch, Candidates, Corpus


def test_from_lists_pads_with_minus_one_and_neg_inf():
    c = Candidates.from_lists([[3, 1], [2]], [[0.5, 0.2], [0.9]])
    assert c.doc_idx.tolist() == [[3, 1], [2, -1]]
    assert np.isneginf(c.scores[1, 1])
    assert c.lengths.tolist() == [2, 1]
    assert c.doc_idx.dtype == np.int64 and c.scores.dtype == np.float32


def test_topk_sorts_by_score_then_doc_and_cuts():
    c = Candidates.from_lists([[5, 2, 7, 1], [4]], [[0.1, 0.9, 0.9, 0.5], [1.0]])
    top = c.topk(3)
    assert top.doc_idx.tolist() == [[2, 7, 1], [4, -1, -1]]
    assert c.topk(None).doc_idx.shape == (2, 4)


def test_topk_width_shrinks_to_longest_row():
    c = Candidates.from_lists([[1], [2]], [[0.1], [0.2]])
    assert c.topk(100).doc_idx.shape == (2, 1)


@pytest.mark.parametrize(
    "doc_idx, scores, message",
    [
        ([1, 2], [0.1, 0.2], "2-D"),
        ([[1, 2]], [[0.1]], "one shape"),
        ([[1.5, 2.0]], [[0.1, 0.2]], "integers"),
        ([[-3, 1]], [[0.1, 0.2]], "negative"),
        ([[-1, 1]], [[0.0, 0.2]], "padding"),
        ([[1, 2]], [[np.nan, 0.2]], "NaN"),
    ],
)
def test_invalid_candidates_rejected(doc_idx, scores, message):
    with pytest.raises((ValueError, TypeError), match=message):
        Candidates(np.array(doc_idx), np.array(scores))


def test_padding_scores_forced_to_neg_inf():
    c = Candidates(np.array([[0, -1]]), np.array([[1.0, 0.0]]))
    assert np.isneginf(c.scores[0, 1])


def test_frozen():
    c = Candidates.empty(2)
    with pytest.raises(AttributeError):
        c.doc_idx = np.zeros((2, 0))  # type: ignore[misc]


def test_batch_checks_rows_and_corpus_range():
    corpus = Corpus(["a", "b"], ["x", "y"])
    with pytest.raises(ValueError, match="rows"):
        Batch(["q1", "q2"], corpus, Candidates.from_lists([[0]], [[1.0]]))
    with pytest.raises(Exception, match="outside the corpus"):
        Batch(["q1"], corpus, Candidates.from_lists([[5]], [[1.0]]))
