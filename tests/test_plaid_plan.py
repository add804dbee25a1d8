"""PLAID's corpus-aware defaults (plaid_plan): the table, the approximate tail, the exhaustive switch."""
import logging
import math

import numpy as np
import pytest
from test_kernels_plaid import make_corpus, make_queries, naive_approx

from cascade import Batch, Corpus, Pipeline
from cascade.kernels import plaid
from cascade.kernels.maxsim import maxsim_naive
from cascade.kernels.plaid import build_ivf, centroid_scores, default_search_params, plaid_search, residual_exact_fn
from cascade.kernels.plaid_plan import CANDIDATE_FRACTION, EXACT_FRACTION, EXHAUSTIVE_FRACTION, append_tail, plan_search
from cascade.kernels.residual import num_centroids_for, train_codec
from cascade.stages.colbert import ColBERT
from cascade.testing import tiny_sentence_transformer

# (k, corpus size) -> (exhaustive, ncells, threshold, ndocs, rerank_docs), from the module docstring's table
TABLE = [
    ((10, 1_000_000), (False, 1, 0.5, 256, 64)),  # large corpora: colbert-ai's values
    ((100, 1_000_000), (False, 2, 0.45, 1024, 256)),
    ((1000, 1_000_000), (False, 4, 0.4, 4096, 1024)),
    ((1000, 100_000), (False, 4, 0.4, 4096, 1024)),
    ((10, 5183), (False, 1, 0.5, 256, 64)),
    ((100, 5183), (False, 2, 0.45, 1024, 256)),
    ((1000, 5183), (False, 4, 0.4, 1295, 324)),  # SciFact at pipeline=colbert's k: a quarter, 1/16 exact
    ((10, 1400), (False, 1, 0.5, 256, 64)),
    ((100, 1400), (False, 2, 0.45, 350, 88)),
    ((699, 1400), (False, 4, 0.4, 699, 174)),
    ((700, 1400), (True, 4, 0.4, 700, 175)),  # half the corpus: exhaustive
    ((1000, 1400), (True, 4, 0.4, 1000, 250)),
    ((5, 120), (False, 1, 0.5, 30, 8)),
    ((60, 120), (True, 2, 0.45, 60, 15)),
    ((1, 1), (True, 1, 0.5, 1, 1)),
]


def formula(k, n):
    """The docstring's formulas, written out independently."""
    ai = default_search_params(k)
    ndocs = min(ai["ndocs"], max(k, int(n * CANDIDATE_FRACTION)))
    exact = min(max(k, ai["ndocs"] // 4), max(ndocs // 4, math.ceil(n * EXACT_FRACTION)))
    exhaustive = ndocs >= n * EXHAUSTIVE_FRACTION
    return exhaustive, ai["ncells"], ai["centroid_score_threshold"], ndocs, exact if exhaustive else min(exact, ndocs)


@pytest.mark.parametrize("args, expected", TABLE)
def test_plan_follows_its_table(args, expected):
    p = plan_search(*args)
    assert (p.exhaustive, p.ncells, p.centroid_score_threshold, p.ndocs, p.rerank_docs) == expected
    assert formula(*args) == expected
    assert bool(p.reason) == p.exhaustive


def test_plan_matches_the_formulas_everywhere():
    for k in (1, 7, 10, 11, 64, 100, 101, 300, 1000, 2000, 5000):
        for n in (1, 50, 333, 1400, 2000, 5183, 20_000, 10 ** 6):
            p = plan_search(k, n)
            assert (p.exhaustive, p.ncells, p.centroid_score_threshold, p.ndocs, p.rerank_docs) == formula(k, n)
            assert p.ndocs >= k and 1 <= p.rerank_docs <= p.ndocs


def test_explicit_knobs_win():
    p = plan_search(1000, 1400, ndocs=1200)  # budget past half the corpus, but asked for: PLAID
    assert not p.exhaustive and p.ndocs == 1200 and p.rerank_docs == 1000  # colbert-ai's max(k, ndocs // 4)
    assert plan_search(100, 10 ** 6, ndocs=8000).rerank_docs == 2000
    p = plan_search(1000, 1400, ncells=8)
    assert not p.exhaustive and p.ncells == 8 and p.centroid_score_threshold == 0.4 and p.ndocs == 1000
    p = plan_search(1000, 1400, centroid_score_threshold=0.0)
    assert not p.exhaustive and p.centroid_score_threshold == 0.0 and p.ncells == 4
    with pytest.raises(ValueError):
        plan_search(0, 10)


def test_append_tail_ranks_the_tail_below_the_exact_head():
    idx = np.array([[4, 2, -1], [7, -1, -1], [-1, -1, -1]])
    sc = np.array([[3.0, 1.5, -np.inf], [2.0, -np.inf, -np.inf], [-np.inf] * 3], np.float32)
    tails = [(np.array([9, 1]), np.array([1.0, 0.5])),  # already below: kept as is
             (np.array([3, 5, 6]), np.array([2.5, 2.0, 1.0])),  # above the head's last: shifted down, gaps kept
             (np.zeros(0, np.int64), np.zeros(0))]
    out_idx, out_sc = append_tail(idx, sc, tails)
    assert out_idx.shape == (3, 6)
    assert out_idx[0].tolist() == [4, 2, 9, 1, -1, -1] and out_sc[0, :4].tolist() == [3.0, 1.5, 1.0, 0.5]
    assert out_idx[1].tolist() == [7, 3, 5, 6, -1, -1]
    assert out_sc[1, 1] < 2.0 and out_sc[1, 1] == np.nextafter(np.float32(2.0), np.float32(-np.inf))
    np.testing.assert_allclose(np.diff(out_sc[1, 1:4]), [-0.5, -1.0], rtol=1e-6)
    assert (out_idx[2] == -1).all() and np.isneginf(out_sc[2]).all()


@pytest.fixture(scope="module")
def clustered():
    tokens, offsets = make_corpus(400, 32, 60, seed=11, min_len=8, max_len=40)
    codec = train_codec(tokens, num_centroids_for(len(tokens)), 2, seed=0)
    codes, residuals = codec.compress(tokens)
    ivf = build_ivf(codes, offsets, codec.num_centroids)
    queries, mask = make_queries(tokens, offsets, 6, 12, seed=12)
    exact_fn = residual_exact_fn(codec.decompress, codes, residuals, offsets, maxsim_naive)
    return dict(codec=codec, codes=codes, offsets=offsets, ivf=ivf, queries=queries, mask=mask, exact_fn=exact_fn)


def test_approx_tail_follows_exact_head_then_stage_three(clustered):
    c = clustered
    args = (c["queries"], c["mask"], c["codec"].centroids, c["codes"], c["offsets"], *c["ivf"])
    kw = dict(ncells=3, centroid_score_threshold=0.3, ndocs=120, exact_fn=c["exact_fn"])
    head_idx, head_sc = plaid_search(*args, k=20, rerank_docs=20, **kw)
    idx, sc = plaid_search(*args, k=80, rerank_docs=20, approx_tail=True, **kw)
    no_tail, _ = plaid_search(*args, k=80, rerank_docs=20, **kw)
    assert (no_tail[:, 20:] == -1).all()  # without the tail: only the exactly scored
    np.testing.assert_array_equal(idx[:, :20], head_idx)  # the head is exactly what the exact stage ranks
    np.testing.assert_array_equal(sc[:, :20], head_sc)
    for q in range(len(idx)):
        valid = c["queries"][q][c["mask"][q]]
        s = centroid_scores(valid, c["codec"].centroids)
        cands = plaid.plaid_candidates(valid, c["codec"].centroids, c["codes"], c["offsets"], *c["ivf"], 3, 0.3,
                                       120, 80)
        approx = naive_approx(s, c["codes"], c["offsets"], cands)
        assert idx[q, 20:].tolist() == cands[20:].tolist()  # the tail: stage 3's next 60, in its order
        gaps = np.diff(sc[q, 20:])
        np.testing.assert_allclose(gaps, np.diff(approx[20:]), atol=1e-4)  # approximate scores, maybe shifted
        assert sc[q, 20] < sc[q, 19] and (np.diff(sc[q]) <= 0).all()
    same, _ = plaid_search(*args, k=20, rerank_docs=20, approx_tail=True, **kw)  # rerank >= k: no tail at all
    np.testing.assert_array_equal(same, head_idx)


WORDS = "cat dog fish bird river lake mountain tree flower sun moon star rain snow wind fire stone gold".split()
_rng = np.random.default_rng(0)
CORPUS = Corpus([f"d{i}" for i in range(120)],
                [" ".join(_rng.choice(WORDS, size=int(_rng.integers(3, 25)))) for _ in range(120)])
QUERIES = ("cat near the river", "gold stone fire", "snow and wind on the mountain", "")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_sentence_transformer(tmp_path_factory.mktemp("m") / "st", max_seq_length=32)


def stage(model, cache, **kw):
    return ColBERT(model=model, cache_dir=cache, progress=False, **{"k": 10, "nbits": 2, "num_centroids": 16, **kw})


def test_a_budget_of_half_the_corpus_searches_exhaustively_and_says_so_once(model, tmp_path, caplog, monkeypatch):
    calls = []
    monkeypatch.setattr(plaid, "plaid_search", lambda *a, **kw: calls.append(kw) or pytest.fail("PLAID ran"))
    auto, exhaustive = stage(model, tmp_path, k=60), stage(model, tmp_path, k=60, search="exhaustive")
    assert auto.search_mode == "plaid" and plan_search(60, len(CORPUS)).exhaustive
    with caplog.at_level(logging.INFO, logger="cascade.stages.colbert"):
        a = Pipeline([auto]).run(Batch(QUERIES, CORPUS)).candidates
        again = Pipeline([auto]).run(Batch(QUERIES[:2], CORPUS)).candidates  # a second batch: no second message
    b = Pipeline([exhaustive]).run(Batch(QUERIES, CORPUS)).candidates
    np.testing.assert_array_equal(a.doc_idx, b.doc_idx)
    np.testing.assert_array_equal(a.scores, b.scores)
    np.testing.assert_array_equal(again.doc_idx, b.doc_idx[:2])
    assert caplog.text.count("searching exhaustively") == 1, caplog.text
    assert "candidate budget (60 documents for k=60)" in caplog.text and not calls


def test_explicit_settings_keep_plaid_and_reach_it(model, tmp_path, caplog, monkeypatch):
    seen = []
    real = plaid.plaid_search
    monkeypatch.setattr(plaid, "plaid_search", lambda *a, **kw: seen.append(kw) or real(*a, **kw))
    for knob in ({"ndocs": 90}, {"ncells": 3}, {"centroid_score_threshold": 0.1}):
        seen.clear()
        with caplog.at_level(logging.INFO, logger="cascade.stages.colbert"):
            out = Pipeline([stage(model, tmp_path, k=60, **knob)]).run(Batch(QUERIES, CORPUS)).candidates
        assert len(seen) == 1 and "searching exhaustively" not in caplog.text
        (name, value), = knob.items()
        assert seen[0][name] == value
        default = plan_search(60, len(CORPUS), **knob)
        assert {key: seen[0][key] for key in ("ncells", "centroid_score_threshold", "ndocs", "rerank_docs")} == {
            key: getattr(default, key) for key in ("ncells", "centroid_score_threshold", "ndocs", "rerank_docs")}
        assert out.lengths[0] > 0
    seen.clear()
    Pipeline([stage(model, tmp_path, k=5)]).run(Batch(QUERIES, CORPUS))  # small k: the plan's PLAID defaults
    assert seen and seen[0]["ndocs"] == 30 and seen[0]["rerank_docs"] == 8 and seen[0]["approx_tail"]
