"""Learned fusion: feature columns through ``>>``, LearnedFusion fit/save/load, the refusals, honest CV reporting."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from test_contract import _tiny

import cascade
from cascade import Batch, Candidates, Fusion
from cascade.core.data import Dataset
from cascade.core.errors import ConfigError, DataError
from cascade.core.features import record_features
from cascade.stages.bm25 import BM25
from cascade.stages.colbert import ColBERT
from cascade.stages.ltr import LearnedFusion, collect, cross_validate, learned_pipeline
from cascade.stages.ltr_models import LinearRanker

LGB = {"n_estimators": 20, "min_child_samples": 1, "num_leaves": 4}


def base():
    return BM25() % 6 >> BM25(name="again", k1=0.9, fusion=Fusion("zscore", 0.5, 0.5)) % 5


def test_candidates_carry_features_through_topk_and_restrict():
    feats = np.arange(2 * 3 * 2, dtype=np.float32).reshape(2, 3, 2)
    c = Candidates(np.array([[5, 6, 7], [8, -1, -1]]), np.array([[1.0, 3.0, 2.0], [1.0, -np.inf, -np.inf]]),
                   feats, ("a", "b"))
    top = c.topk(2)
    assert top.doc_idx.tolist() == [[6, 7], [8, -1]]
    assert top.feature("a")[0].tolist() == [2.0, 4.0] and np.isnan(top.feature("b")[1, 1])
    allowed = np.ones(10, bool)
    allowed[6] = False
    kept = c.restrict(allowed)
    assert kept.doc_idx[0].tolist() == [5, 7] and kept.feature("b")[0].tolist() == [1.0, 5.0]
    with pytest.raises(ValueError, match="shape"):
        Candidates(c.doc_idx, c.scores, feats[:, :, :1], ("a", "b"))


def test_features_flow_through_the_pipeline_recorded_once(tiny_dataset, monkeypatch):
    calls = []
    real = BM25.extra_features
    monkeypatch.setattr(BM25, "extra_features", lambda self, b, c: calls.append(self.name) or real(self, b, c))
    first = BM25() % 6
    alone = first(tiny_dataset).candidates
    assert alone.features is None and not calls  # nothing recorded outside a learned pipeline
    run = collect(base(), tiny_dataset)
    cands = run.candidates
    assert calls == ["bm25", "again"]
    assert {"doc.length", "bm25.score", "bm25.rank", "bm25.terms_matched", "again.score", "again.fused",
            "again.z"} <= set(cands.feature_names)
    # the first stage's columns, carried (not recomputed) to the narrowed final candidates
    for q in range(cands.num_queries):
        for k, doc in enumerate(cands.doc_idx[q]):
            if doc >= 0:
                pos = list(alone.doc_idx[q]).index(doc)
                assert cands.feature("bm25.score")[q, k] == pytest.approx(alone.scores[q, pos])
                assert cands.feature("bm25.rank")[q, k] == pos
    assert np.isnan(cands.features[~cands.mask]).all()


def test_bm25_query_term_statistics(tiny_dataset):
    with record_features():
        cands = (BM25() % 6)(tiny_dataset).candidates
    q = tiny_dataset.query_ids.index("q1")  # "cat on a mat": terms cat, mat
    row = {tiny_dataset.corpus.ids[d]: k for k, d in enumerate(cands.doc_idx[q]) if d >= 0}
    assert cands.feature("bm25.terms_matched")[q, row["d1"]] == 2  # "The cat sat on the mat"
    assert cands.feature("bm25.terms_frac")[q, row["d3"]] == 0.5  # only "cat"
    assert cands.feature("bm25.term_max")[q, row["d1"]] < cands.feature("bm25.score")[q, row["d1"]]


def test_colbert_token_maxima_summarize_maxsim(tiny_dataset):
    col = ColBERT(k=None, model=_tiny("sentence_transformer"), compute_dtype="float32", progress=False)
    with record_features():
        cands = (BM25() % 6 >> col)(tiny_dataset).candidates
    queries, mask = col._encode_queries(tiny_dataset.query_texts)
    n_tok = mask.sum(1)[:, None]
    m = cands.mask
    assert np.allclose(cands.feature("colbert.tok_mean")[m], (cands.feature("colbert.score") / n_tok)[m], atol=1e-4)
    assert (cands.feature("colbert.tok_max")[m] >= cands.feature("colbert.tok_mean")[m] - 1e-6).all()
    assert (cands.feature("colbert.tok_min")[m] <= cands.feature("colbert.tok_mean")[m] + 1e-6).all()
    assert (cands.feature("colbert.tok_max")[m] > cands.feature("colbert.tok_min")[m]).any()


@pytest.mark.parametrize("kind", ["linear", "lambdamart"])
def test_fit_save_load_scores_alike_and_files_are_text(kind, tiny_dataset, tmp_path):
    model = LearnedFusion(k=3, kind=kind, params=LGB if kind == "lambdamart" else {}).fit(base(), tiny_dataset)
    path = model.save_model(tmp_path / "m.json")
    meta = json.loads(path.read_text())
    assert meta["kind"] == kind and meta["features"] == model.features and len(meta["trained_on"]) == 4
    if kind == "lambdamart":
        assert (tmp_path / meta["booster"]).read_text().startswith("tree")
    loaded = LearnedFusion(k=3, model=str(path), in_sample=True)
    batch = Batch(tiny_dataset.query_texts, tiny_dataset.corpus, collect(base(), tiny_dataset).candidates)
    assert np.array_equal(model.score(batch), loaded.score(batch))
    assert set(loaded.importances()) == set(model.features)


def test_linear_ranker_learns_the_pairwise_order():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 3))
    groups = np.repeat(np.arange(40), 10)
    y = (x[:, 1] - 0.5 * x[:, 2] > 0.3).astype(float)
    ranker = LinearRanker.train(x, y, groups, ["a", "b", "c"], [], {})
    w = ranker.weights / ranker.std
    assert w[1] > 0 > w[2] and abs(w[0]) < 0.2 * w[1]


def test_fit_refuses_a_dataset_without_qrels_before_any_work(tiny_dataset, monkeypatch):
    monkeypatch.setattr(BM25, "retrieve", lambda *a: pytest.fail("ran the pipeline"))
    bare = Dataset(tiny_dataset.corpus, tiny_dataset.query_ids, tiny_dataset.query_texts, {}, "bare")
    with pytest.raises(DataError, match="no qrels"):
        LearnedFusion(kind="linear").fit(base(), bare)


def test_a_model_whose_features_do_not_match_the_pipeline_is_refused(tiny_dataset, tmp_path, monkeypatch):
    path = LearnedFusion(k=3, kind="linear").fit(base(), tiny_dataset).save_model(tmp_path / "m.json")
    other = [BM25(name="first") % 6, BM25(name="again", fusion="zscore") % 5]
    ltr = LearnedFusion(k=3, model=str(path), in_sample=True)
    monkeypatch.setattr(BM25, "retrieve", lambda *a: pytest.fail("ran the pipeline"))
    with pytest.raises(ConfigError, match=r"does not match the pipeline.*bm25\.score"):
        learned_pipeline([*other, ltr])
    monkeypatch.undo()
    learned_pipeline([*base().stages, ltr])  # the pipeline it was trained on passes
    with pytest.raises(ConfigError, match=r"bm25\.score"):  # built with >>: refused at the learned stage
        (other[0] >> other[1] >> ltr)(tiny_dataset)


def test_nan_features_of_real_candidates_are_refused_padding_is_not(tiny_dataset):
    ltr = LearnedFusion(k=3, kind="linear").fit(base(), tiny_dataset)
    cands = collect(base(), tiny_dataset).candidates
    batch = Batch(tiny_dataset.query_texts, tiny_dataset.corpus, cands)
    assert np.isnan(cands.features[~cands.mask]).all() and np.isfinite(ltr.score(batch)[cands.mask]).all()
    feats = cands.features.copy()
    feats[0, 0, cands.feature_names.index("again.z")] = np.nan
    bad = Batch(tiny_dataset.query_texts, tiny_dataset.corpus,
                Candidates(cands.doc_idx, cands.scores, feats, cands.feature_names))
    with pytest.raises(DataError, match=r"NaN.*again\.z"):
        ltr.score(bad)


def test_scoring_training_queries_is_refused_unless_in_sample(tiny_dataset, tmp_path):
    path = LearnedFusion(k=3, kind="linear").fit(base(), tiny_dataset).save_model(tmp_path / "m.json")
    with pytest.raises(ConfigError, match="in-sample"):
        cascade.Experiment([base(), base() >> LearnedFusion(k=3, model=str(path))], tiny_dataset, ["nDCG@10"])
    other = Dataset(tiny_dataset.corpus, ("x1",), ("cat",), {"x1": {"d1": 1}}, "other")
    (base() >> LearnedFusion(k=3, model=str(path)))(other)  # queries it never saw: fine
    table = cascade.Experiment([base(), base() >> LearnedFusion(k=3, model=str(path), in_sample=True)],
                               tiny_dataset, ["nDCG@10"])
    assert table["evaluated"].tolist() == ["", "in-sample"]


def test_experiment_reports_an_untrained_learned_stage_by_query_fold_cv(tiny_dataset):
    more = {"q5": ("cats and kittens", {"d3": 1}), "q6": ("dogs and pets", {"d6": 1})}
    tiny_dataset = Dataset(tiny_dataset.corpus, (*tiny_dataset.query_ids, *more),
                           (*tiny_dataset.query_texts, *(t for t, _ in more.values())),
                           {**tiny_dataset.qrels, **{q: r for q, (_, r) in more.items()}}, "six")
    pipe = base() >> LearnedFusion(k=3, kind="linear")
    table = cascade.Experiment([base() % 3, pipe], tiny_dataset, ["nDCG@10"], folds=2, seed=1)
    assert table["evaluated"].tolist() == ["", "2-fold CV"]
    cv = cross_validate(pipe, tiny_dataset, 2, 1)
    for held, model in zip(cv.folds, cv.models):  # each fold scored by a model that never saw it
        seen = {key.split(":", 1)[1] for key in model.ranker.trained_on}
        assert seen and not seen & set(held) and seen | set(held) == set(tiny_dataset.query_ids)
    per = table.experiment.per_query[table["name"][1]]["nDCG@10"]
    assert per == cascade.per_query(cv.run, tiny_dataset.qrels, ["nDCG@10"])["nDCG@10"]


def test_lambdamart_without_lightgbm_says_how_to_install(tiny_dataset, monkeypatch):
    monkeypatch.setitem(sys.modules, "lightgbm", None)
    with pytest.raises(ConfigError, match=r"cascade-rerank\[ltr\]"):
        LearnedFusion(kind="lambdamart").fit(base(), tiny_dataset)


def test_tune_refuses_an_in_sample_learned_job_unless_asked(tmp_path):
    from cascade.app.tune import learned_in_sample

    job = tmp_path / "job"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "config.yaml").write_text(
        "pipeline:\n  stages:\n  - {_target_: cascade.stages.bm25.BM25}\n"
        "  - {_target_: cascade.stages.ltr.LearnedFusion, in_sample: true}\n")
    assert learned_in_sample(job)
    (job / ".hydra" / "config.yaml").write_text("pipeline:\n  stages:\n  - {_target_: cascade.stages.ltr."
                                                "LearnedFusion, in_sample: false}\n")
    assert not learned_in_sample(job)


def test_every_learned_fusion_argument_has_its_effect(tiny_dataset, tmp_path):
    """test_settings_reach's rule for the learned stage: each constructor argument changes what it does."""
    import inspect

    assert set(inspect.signature(LearnedFusion).parameters) == {"k", "model", "kind", "params", "in_sample", "name"}
    batch = Batch(tiny_dataset.query_texts, tiny_dataset.corpus, collect(base(), tiny_dataset).candidates)

    def scores(**kw):
        return LearnedFusion(k=3, **kw).fit(base(), tiny_dataset).score(batch)

    linear = scores(kind="linear")
    assert not np.allclose(linear, scores(kind="lambdamart", params=LGB), equal_nan=True)  # kind
    assert not np.allclose(linear, scores(kind="linear", params={"l2": 100.0}), equal_nan=True)  # params
    assert not np.allclose(scores(kind="lambdamart", params=LGB),
                           scores(kind="lambdamart", params={**LGB, "n_estimators": 2}), equal_nan=True)
    path = LearnedFusion(k=3, kind="linear").fit(base(), tiny_dataset).save_model(tmp_path / "m.json")
    other = LearnedFusion(k=3, kind="linear", params={"l2": 100.0}).fit(base(), tiny_dataset)
    other_path = other.save_model(tmp_path / "other.json")
    loaded = LearnedFusion(k=3, model=str(path), in_sample=True)
    assert np.allclose(loaded.score(batch), linear, equal_nan=True)  # model: the saved one, as trained
    assert not np.allclose(loaded.score(batch), LearnedFusion(model=str(other_path), in_sample=True).score(batch),
                           equal_nan=True)
    for k in (2, 3):  # k: how many it keeps
        run = (base() >> LearnedFusion(k=k, model=str(path), in_sample=True, name="fused"))(tiny_dataset)
        assert run.candidates.doc_idx.shape[1] == k
    with pytest.raises(ConfigError, match="in-sample"):  # in_sample: training queries refused unless set
        cascade.Experiment([base() >> LearnedFusion(k=3, model=str(path))], tiny_dataset, ["nDCG@10"])
    named = LearnedFusion(model=str(path), name="fused", in_sample=True)  # name: no effect on the scores
    assert named.name == "fused" and np.array_equal(named.score(batch), loaded.score(batch), equal_nan=True)
