"""Union fusion (``a + b``): the union of two stages' candidates fused by RRF, z-score, min-max or linear,
checked against a hand computation and a naive per-document reference (ties, missing sides, padding)."""
import math

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from cascade import Batch, Candidates, ConfigError, NeedsCandidatesError, Pipeline, Stage, UnionFusion
from cascade.core.union import fuse_union
from cascade.stages.bm25 import BM25

from conftest import REPO


def _naive(sides: list[Candidates], method: str, weights=None, rrf_k: float = 60.0) -> list[list[tuple[int, float]]]:
    """Per query, [(doc, fused score)] best first (ties by doc), computed document by document in Python."""
    weights = weights or [1.0] * len(sides)
    out = []
    for q in range(sides[0].num_queries):
        per_side = []
        for side in sides:
            row = {int(d): float(s) for d, s in zip(side.doc_idx[q], side.scores[q]) if d >= 0}
            if method == "rrf":  # rank 1 + the number of strictly better documents: ties share a rank
                contrib = {d: 1.0 / (rrf_k + 1 + sum(v > row[d] for v in row.values())) for d in row}
            elif method == "linear":
                contrib = dict(row)
            elif method == "zscore":
                mean = sum(row.values()) / len(row) if row else 0.0
                std = math.sqrt(sum((v - mean) ** 2 for v in row.values()) / len(row)) if row else 0.0
                contrib = {d: (v - mean) / (std or 1.0) for d, v in row.items()}
            else:
                lo, hi = (min(row.values()), max(row.values())) if row else (0.0, 0.0)
                contrib = {d: (v - lo) / ((hi - lo) or 1.0) for d, v in row.items()}
            floor = 0.0 if method == "rrf" or not contrib else min(contrib.values())
            per_side.append((contrib, floor))
        docs = sorted({d for contrib, _ in per_side for d in contrib})
        fused = {d: sum(w * c.get(d, floor) for w, (c, floor) in zip(weights, per_side)) for d in docs}
        out.append([(d, fused[d]) for d in sorted(docs, key=lambda d: (-np.float32(fused[d]), d))])
    return out


def _as_lists(cands: Candidates) -> list[list[tuple[int, float]]]:
    return [[(int(d), float(s)) for d, s in zip(idx, sc) if d >= 0] for idx, sc in zip(cands.doc_idx, cands.scores)]


def _check(got: Candidates, expected: list[list[tuple[int, float]]]) -> None:
    for got_row, want_row in zip(_as_lists(got), expected, strict=True):
        assert [d for d, _ in got_row] == [d for d, _ in want_row]
        np.testing.assert_allclose([s for _, s in got_row], [s for _, s in want_row], rtol=1e-6, atol=1e-7)


def test_rrf_by_hand_with_a_missing_side_and_a_tie():
    # side a ranks 5 > 3 > 9; side b ranks 3 > 7. Query 2: a is empty, b has one document.
    a = Candidates.from_lists([[5, 3, 9], []], [[3.0, 2.0, 1.0], []])
    b = Candidates.from_lists([[3, 7], [4]], [[0.9, 0.1], [0.5]])
    out = fuse_union([a, b], "rrf", rrf_k=60)
    # 3: 1/62 + 1/61; 5: 1/61 (missing from b: no contribution); 7: 1/62; 9: 1/63
    assert _as_lists(out)[0] == [(3, pytest.approx(1 / 62 + 1 / 61)), (5, pytest.approx(1 / 61)),
                                 (7, pytest.approx(1 / 62)), (9, pytest.approx(1 / 63))]
    assert _as_lists(out)[1] == [(4, pytest.approx(1 / 61))]
    # two documents first in one side each tie exactly: the lower document index comes first
    tie = fuse_union([Candidates.from_lists([[8]], [[1.0]]), Candidates.from_lists([[2]], [[7.0]])], "rrf")
    assert _as_lists(tie)[0] == [(2, pytest.approx(1 / 61)), (8, pytest.approx(1 / 61))]


def test_zscore_floor_is_the_sides_lowest_score():
    a = Candidates.from_lists([[1, 2, 3]], [[3.0, 2.0, 1.0]])  # z: 1.2247, 0, -1.2247
    b = Candidates.from_lists([[4, 1]], [[10.0, 0.0]])  # z: 1, -1
    z = 1.5 ** 0.5
    got = dict(_as_lists(fuse_union([a, b], "zscore"))[0])
    assert got == pytest.approx({1: z - 1, 2: 0 - 1, 3: -z - 1, 4: 1 - z})
    linear = dict(_as_lists(fuse_union([a, b], "linear", weights=[2.0, 1.0]))[0])
    assert linear == pytest.approx({1: 6.0, 2: 4.0, 3: 2.0, 4: 2.0 + 10.0})


@pytest.mark.parametrize("method", ["rrf", "zscore", "minmax", "linear"])
@pytest.mark.parametrize("seed", range(6))
def test_fusion_matches_the_naive_reference(method, seed):
    """Random sides with shared and missing documents, tied scores, empty rows and padding."""
    rng = np.random.default_rng(seed)
    num_q, num_docs = 5, 12
    sides = []
    for _ in range(rng.integers(2, 4)):
        rows = [rng.choice(num_docs, size=rng.integers(0, 7), replace=False) for _ in range(num_q)]
        scores = [list(rng.integers(0, 3, size=len(r)).astype(float)) for r in rows]  # many ties
        sides.append(Candidates.from_lists([list(r) for r in rows], scores).topk(None))
    weights = list(rng.uniform(0.5, 2.0, size=len(sides))) if seed % 2 else None
    _check(fuse_union(sides, method, weights), _naive(sides, method, weights))


class Reverse(Stage):
    """A reranker: scores candidates by negated incoming score."""

    def score(self, batch):
        return -batch.candidates.scores


def test_plus_runs_both_retrievers_and_fuses_their_union(tiny_dataset):
    corpus, queries = tiny_dataset.corpus, tiny_dataset.query_texts
    a, b = BM25(k=2), BM25(k=3, k1=0.5, b=0.2, stopwords=None)
    union = a + b
    assert isinstance(union, UnionFusion) and union.stages == [a, b] and union.method == "rrf"
    got = union.rerank(Batch(queries, corpus)).candidates
    sides = [s.rerank(Batch(queries, corpus)).candidates for s in (a, b)]
    _check(got, _naive(sides, "rrf"))
    assert (got.lengths > sides[0].lengths).any(), "the union holds documents only the second side found"
    assert [list(r[r >= 0]) for r in (union % 1).rerank(Batch(queries, corpus)).candidates.doc_idx] == \
        [list(r[:1]) for r in got.doc_idx]
    assert (a | b).stages == [a, b]
    assert (a + b + Reverse()).stages[2].__class__ is Reverse  # one union of three
    assert len(((a + b) % 5 + Reverse()).stages) == 2  # a union with a cutoff stays one side


def test_union_of_rerankers_reranks_the_same_candidates(tiny_dataset):
    corpus, queries = tiny_dataset.corpus, tiny_dataset.query_texts
    cands = BM25(k=5).rerank(Batch(queries, corpus)).candidates
    union = Reverse(k=2) + BM25(k=2, k1=0.9)
    got = union.rerank(Batch(queries, corpus, cands)).candidates
    sides = [s.rerank(Batch(queries, corpus, cands)).candidates for s in union.stages]
    _check(got, _naive(sides, "rrf"))
    for q in range(len(queries)):
        assert set(got.doc_idx[q][got.mask[q]]) <= set(cands.doc_idx[q][cands.mask[q]])
    pipe = BM25(k=5) >> union
    assert _as_lists(pipe.rerank(Batch(queries, corpus)).candidates) == _as_lists(got)


def test_a_union_needing_candidates_says_so_before_indexing(tiny_dataset, tmp_path):
    union = BM25(k=3, cache_dir=str(tmp_path)) + Reverse(k=3)
    assert not union.can_retrieve()
    with pytest.raises(NeedsCandidatesError, match="put a retriever before it"):
        union(tiny_dataset)
    assert not any(tmp_path.iterdir()), "nothing is indexed before the error"


@pytest.mark.parametrize("kwargs, message", [
    ({"method": "max"}, "method 'max' is unknown"),
    ({"weights": [1.0]}, "one non-negative weight per stage"),
    ({"weights": [1.0, -1.0]}, "one non-negative weight per stage"),
    ({"weights": [0, 0]}, "not all zero"),
])
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        UnionFusion([BM25(), BM25()], **kwargs)
    with pytest.raises(ConfigError, match="at least two stages"):
        UnionFusion([BM25()])
    with pytest.raises(TypeError, match="fuse stages"):
        BM25() + 3


def test_union_pipeline_config_equals_the_python_union(tiny_dataset, tmp_path):
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["pipeline=union", f"paths.cache_dir={tmp_path}", "paths.output_dir=x",
                                           "stage.union.k=3", "stage.bm25.k=3", "stage.biencoder.k=3",
                                           "stage.biencoder.progress=false"])
    pipe = instantiate(cfg.pipeline)
    union = pipe.stages[0]
    assert isinstance(union, UnionFusion) and [type(s).__name__ for s in union.stages] == ["BM25", "BiEncoder"]
    from cascade.stages.biencoder import BiEncoder

    by_hand = Pipeline([(BM25(k=3) + BiEncoder(k=3, progress=False)) % 3])
    assert _as_lists(pipe(tiny_dataset).candidates) == _as_lists(by_hand(tiny_dataset).candidates)
    whole = _as_lists((BM25(k=3) + BiEncoder(k=3, progress=False))(tiny_dataset).candidates)
    assert max(map(len, whole)) > 3, "the cutoff has something to cut"
    assert _as_lists(pipe(tiny_dataset).candidates) == [row[:3] for row in whole]


class _Named(Stage):
    """A reranker with a model name (not a folder), so only its identity is recorded."""

    def __init__(self, model: str, **kw):
        super().__init__(**kw)
        self.model = model

    def score(self, batch):
        return batch.candidates.scores


def test_fusion_false_reaches_inside_a_union():
    side = _Named("m-a", fusion="zscore")
    pipe = Pipeline([BM25(k=5), UnionFusion([side, _Named("m-b", fusion="rrf")])], fusion=False)
    union = pipe.stages[1]
    assert [s.fusion for s in union.stages] == [None, None]
    assert side.fusion is not None  # the original is untouched


def test_run_inputs_record_the_models_inside_a_union():
    from cascade import Corpus, Dataset
    from cascade.app.runner import inputs_fingerprint

    ds = Dataset(Corpus(["a", "b"], ["x y", "y z"]), ("q",), ("x",), {"q": {"a": 1}})
    pipe = Pipeline([BM25(k=2), UnionFusion([_Named("m-a", name="left"), _Named("m-b", name="right")])])
    models = inputs_fingerprint(ds, pipe)["models"]
    assert models == {"left": {"model": "m-a", "revision": "main"}, "right": {"model": "m-b", "revision": "main"}}
