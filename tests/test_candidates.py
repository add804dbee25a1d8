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
        c.doc_idx = np.zeros((2, 0))  # frozen


def test_batch_checks_rows_and_corpus_range():
    corpus = Corpus(["a", "b"], ["x", "y"])
    with pytest.raises(ValueError, match="rows"):
        Batch(["q1", "q2"], corpus, Candidates.from_lists([[0]], [[1.0]]))
    with pytest.raises(Exception, match="outside the corpus"):
        Batch(["q1"], corpus, Candidates.from_lists([[5]], [[1.0]]))


def test_padding_between_valid_entries_rejected_in_any_column():
    with pytest.raises(ValueError, match="padding"):
        Candidates(np.array([[5, -1, 7]]), np.array([[1.0, 0.0, 0.5]]))


def test_inputs_normalized_to_int64_and_float32():
    c = Candidates(np.array([[3, 1]], np.int32), np.array([[1, 2]], np.float64))
    assert c.doc_idx.dtype == np.int64 and c.scores.dtype == np.float32
    assert Candidates.from_lists([], []).doc_idx.shape == (0, 0)


def test_topk_of_empty_rows_has_width_zero_and_ranks_minus_inf_docs_before_padding():
    assert Candidates(np.full((2, 3), -1), np.zeros((2, 3))).topk(5).doc_idx.shape == (2, 0)
    c = Candidates.from_lists([[9, 4, 7], [2, 8]], [[-np.inf, 1.0, -np.inf], [0.5, -np.inf]])
    top = c.topk(None)
    assert top.doc_idx.tolist() == [[4, 7, 9], [2, 8, -1]]
    assert top.topk(2).doc_idx.tolist() == [[4, 7], [2, 8]]


def test_batch_rejects_the_first_index_past_the_corpus_and_names_it():
    corpus = Corpus(["a", "b"], ["x", "y"])
    Batch(["q1"], corpus, Candidates.from_lists([[1, 0]], [[1.0, 0.5]]))  # the last document is fine
    with pytest.raises(Exception, match="candidate doc index 2 is outside the corpus"):
        Batch(["q1"], corpus, Candidates.from_lists([[2]], [[1.0]]))


def test_batch_keeps_queries_as_tuples():
    batch = Batch(["q1", "q2"], Corpus(["a"], ["x"]), query_ids=["i1", "i2"])
    assert batch.query_texts == ("q1", "q2") and batch.query_ids == ("i1", "i2")
    with pytest.raises(ValueError, match="differ in length"):
        Batch(["q1"], Corpus(["a"], ["x"]), query_ids=["i1", "i2"])
