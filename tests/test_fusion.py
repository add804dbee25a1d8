"""Score fusion: per-query normalization, weights, padding, and fusion configured on a stage."""
import numpy as np
import pytest

from cascade import Batch, Candidates, ConfigError, Fusion
from cascade.core.fusion import normalize
from cascade.stages.bm25 import BM25

MASK = np.array([[True, True, True, False], [True, True, False, False]])
SCORES = np.array([[3.0, 1.0, 2.0, -np.inf], [10.0, 10.0, -np.inf, -np.inf]])


def test_zscore_minmax_rrf_per_query_over_valid_entries():
    z = normalize(SCORES, MASK, "zscore")
    assert z[0, :3] == pytest.approx([1.2247, -1.2247, 0.0], abs=1e-4)
    assert (z[1, :2] == 0).all()  # a constant row: no division by zero
    m = normalize(SCORES, MASK, "minmax")
    assert list(m[0, :3]) == [1.0, 0.0, 0.5]
    r = normalize(SCORES, MASK, "rrf", rrf_k=60)
    assert r[0, :3] == pytest.approx([1 / 61, 1 / 63, 1 / 62])
    for out in (z, m, r):
        assert (out[~MASK] == 0).all()


def test_fused_is_the_weighted_sum_and_padding_stays_minus_inf():
    own = np.array([[0.0, 4.0, 2.0, 0.0], [1.0, 2.0, 0.0, 0.0]])
    fused = Fusion("minmax", 0.3, 0.7)(SCORES, own, MASK)
    assert fused[0, :3] == pytest.approx([0.3 * 1 + 0.7 * 0, 0.3 * 0 + 0.7 * 1, 0.3 * 0.5 + 0.7 * 0.5])
    assert np.isneginf(fused[~MASK]).all()


def test_weights_choose_between_incoming_and_own_order():
    incoming = np.array([[3.0, 2.0, 1.0]])
    own = np.array([[1.0, 2.0, 3.0]])
    mask = np.ones((1, 3), bool)
    assert np.argmax(Fusion("zscore", 0.9, 0.1)(incoming, own, mask)) == 0
    assert np.argmax(Fusion("zscore", 0.1, 0.9)(incoming, own, mask)) == 2


@pytest.mark.parametrize("bad", [{"method": "sum"}, {"weight_in": -1.0}, {"weight_in": 0.0, "weight_own": 0.0}])
def test_bad_fusion_settings_are_clear_errors(bad):
    with pytest.raises(ConfigError):
        Fusion(**bad)


@pytest.mark.parametrize("spec", ["rrf", {"method": "rrf"}, Fusion("rrf")])
def test_a_stage_accepts_a_method_name_a_mapping_or_a_fusion(spec, tiny_dataset):
    stage = BM25(k=2, fusion=spec)
    assert stage.fusion.method == "rrf"
    cands = Candidates.from_lists([[0, 1, 2]], [[0.3, 0.2, 0.1]])
    out = stage.rerank(Batch(["cat mat"], tiny_dataset.corpus, cands)).candidates
    assert out.lengths[0] == 2 and np.isfinite(out.scores).all()


def test_documented_defaults_and_edge_weights():
    assert Fusion() == Fusion("zscore", 0.3, 0.7, 60.0)
    scores = np.array([[3.0, 1.0, 2.0]])
    assert normalize(scores, np.ones((1, 3), bool), "rrf").tolist() == [[1 / 61, 1 / 63, 1 / 62]]  # rrf_k = 60
    for w_in, w_own in [(0.0, 1.0), (1.0, 0.0), (0.5, 0.5), (2.0, 3.0)]:
        Fusion("zscore", w_in, w_own)  # valid: non-negative, not both zero
    with pytest.raises(AttributeError):
        Fusion().method = "rrf"  # frozen: a stage's fusion cannot change behind its cache keys


def test_a_single_candidate_normalizes_to_zero():
    mask = np.array([[True, False, False]])
    for method in ("zscore", "minmax"):
        assert normalize(np.array([[5.0, 0.0, 0.0]]), mask, method).tolist() == [[0.0, 0.0, 0.0]]


def test_error_messages_say_what_is_allowed():
    with pytest.raises(ConfigError, match=r"^fusion method 'sum' is unknown; use one of zscore, minmax, rrf$"):
        Fusion("sum")
    with pytest.raises(ConfigError, match=r"^fusion weights must be non-negative and not both zero$"):
        Fusion("zscore", -1.0, 1.0)
