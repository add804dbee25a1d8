"""Cross-encoder stage: scores equal the classifier's logits, truncation, and clear errors."""
import numpy as np
import pytest
import torch

from cascade import Batch, Candidates, CascadeError, NeedsCandidatesError, Pipeline
from cascade.stages.cross_encoder import CrossEncoder
from cascade.testing import tiny_cross_encoder


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return str(tiny_cross_encoder(tmp_path_factory.mktemp("models") / "ce"))


def _logits(model, query, doc, max_length):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model)
    net = AutoModelForSequenceClassification.from_pretrained(model).eval()
    with torch.no_grad():
        return float(net(**tok(query, doc, truncation=True, max_length=max_length, return_tensors="pt")).logits[0, 0])


@pytest.mark.parametrize("max_length", [512, 12])
def test_scores_are_the_models_logits_for_each_pair(model, tiny_dataset, max_length):
    corpus, queries = tiny_dataset.corpus, tiny_dataset.query_texts[:2]
    stage = CrossEncoder(k=None, model=model, max_length=max_length, batch_size=2)
    stage.prepare(corpus)
    cands = Candidates.from_lists([[0, 3, 5], [2]], [[3.0, 2.0, 1.0], [1.0]])
    scores = stage.score(Batch(queries, corpus, cands))
    for q, row in enumerate([[0, 3, 5], [2]]):
        for j, d in enumerate(row):
            assert scores[q, j] == pytest.approx(_logits(model, queries[q], corpus.texts[d], max_length), abs=1e-4)


def test_reranks_within_its_candidates_and_keeps_k(model, tiny_dataset):
    corpus, queries = tiny_dataset.corpus, tiny_dataset.query_texts
    cands = Candidates.from_lists([[0, 1, 2, 3]] * len(queries), [[4.0, 3.0, 2.0, 1.0]] * len(queries))
    out = CrossEncoder(k=2, model=model).rerank(Batch(queries, corpus, cands)).candidates
    assert out.doc_idx.shape == (len(queries), 2) and set(out.doc_idx.ravel()) <= {0, 1, 2, 3}
    assert (np.diff(out.scores, axis=1) <= 0).all()


def test_first_in_a_pipeline_needs_candidates(model, tiny_dataset):
    with pytest.raises(NeedsCandidatesError, match="retriever"):
        Pipeline([CrossEncoder(model=model)]).run(tiny_dataset)


def test_a_model_that_cannot_load_fails_at_prepare_with_the_fix(tmp_path, tiny_dataset, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    stage = CrossEncoder(model="cross-encoder/not-cached-anywhere")  # building the stage loads nothing
    with pytest.raises(CascadeError, match="model path"):
        stage.prepare(tiny_dataset.corpus)
    with pytest.raises(CascadeError, match="does not exist"):
        CrossEncoder(model=str(tmp_path / "missing"))
