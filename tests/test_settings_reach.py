"""Every constructor argument of every stage reaches its backend: changing it changes the results
(with the cache shared, so an argument missing from a cache key shows as unchanged results), unless it
is declared not to affect them (then it must change neither the results nor the cache key).

A new argument without an entry below fails ``test_every_argument_is_covered``.
"""
from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import pytest
from test_contract import _tiny

from cascade import Batch, Candidates, Fusion
from cascade.stages.biencoder import BiEncoder
from cascade.stages.bm25 import BM25
from cascade.stages.colbert import ColBERT
from cascade.stages.cross_encoder import CrossEncoder

# where files go, how progress shows, names, batching for speed: declared not to change results or keys
NO_EFFECT = {"cache_dir", "progress", "name", "device", "batch_size", "chunk_size", "block_rows",
             "retrieval_chunk"}
ST = lambda: _tiny("sentence_transformer")  # noqa: E731
COMPRESSED = {"nbits": 2, "num_centroids": 8}

def _common_term_dataset():
    """A query term in most documents: Okapi's idf turns negative and epsilon's floor applies."""
    from cascade import Corpus, Dataset

    return Dataset(Corpus(["a", "b", "c", "d"], ["cat sits", "cat runs", "cat eats fish", "dog barks"]),
                   ["q"], ["cat dog"])


def _larger_dataset():
    """120 random documents: enough for PLAID's knobs to change which documents are found."""
    from cascade import Corpus, Dataset

    rng = np.random.default_rng(0)
    words = "cat dog fish bird river lake mountain tree flower sun moon star rain snow wind fire stone".split()
    texts = [" ".join(rng.choice(words, size=int(rng.integers(1, 3)))) for _ in range(120)]  # short: narrow lists
    return Dataset(Corpus([f"d{i}" for i in range(120)], texts), ["q1", "q2", "q3"],
                   ["cat near the river", "gold stone fire", "snow and wind on the mountain"])


DATASETS = {(BM25, "epsilon"): _common_term_dataset, (ColBERT, "ncells"): _larger_dataset,
            (ColBERT, "centroid_score_threshold"): _larger_dataset, (ColBERT, "ndocs"): _larger_dataset,
            (ColBERT, "search"): _larger_dataset}

# stage class -> argument -> (base keyword arguments, another value)
CASES: dict[type, dict[str, tuple[dict[str, Any], Any]]] = {
    BM25: {"k": ({}, 2), "backend": ({}, "rank_bm25"), "k1": ({}, 0.3), "b": ({}, 0.1),
           "method": ({}, "robertson"), "variant": ({"backend": "rank_bm25"}, "bm25plus"),
           "delta": ({"method": "bm25+"}, 2.0), "epsilon": ({"backend": "rank_bm25", "k1": 3.0}, 5.0),
           "stemmer": ({}, None), "stopwords": ({}, None), "fusion": ({}, Fusion("zscore", 0.9, 0.1))},
    BiEncoder: {"k": ({}, 2), "model": ({}, "st_other"), "query_max_length": ({}, 3), "doc_max_length": ({}, 3),
                "query_prefix": ({}, "query: "), "doc_prefix": ({}, "passage: "),
                "similarity": ({"model": "st_unnormalized"}, "dot"),
                "precision": ({"precision": "fp32"}, "bf16"),
                "fusion": ({}, Fusion("zscore", 0.9, 0.1))},
    ColBERT: {"k": ({}, 2), "model": ({}, "pylate"), "format": ({"model": "pylate"}, "plain"),
              "query_max_length": ({}, 3), "doc_max_length": ({}, 3), "nbits": ({}, 1),
              "search": ({**COMPRESSED, "k": 10, "ndocs": 12}, "exhaustive"),
              "ncells": ({**COMPRESSED, "k": 80, "centroid_score_threshold": -1.0, "ndocs": 200}, 8),
              "centroid_score_threshold": ({**COMPRESSED, "k": 10, "ncells": 8, "ndocs": 12}, 0.99),
              "ndocs": ({**COMPRESSED, "k": 10, "ncells": 8, "centroid_score_threshold": -1.0}, 11),
              "prune_to": (COMPRESSED, 2), "num_centroids": ({"nbits": 2}, 4),
              "kmeans_niter": (COMPRESSED, 1), "points_per_centroid": (COMPRESSED, 2),
              "assignment": (COMPRESSED, "coarse"),
              "compute_dtype": ({"compute_dtype": "float32"}, "bfloat16"), "precision": ({"precision": "fp32"}, "bf16"),
              "fusion": ({}, Fusion("zscore", 0.9, 0.1))},
    CrossEncoder: {"k": ({}, 2), "model": ({}, "cross_encoder_other"), "max_length": ({}, 6),
                   "fusion": ({}, Fusion("zscore", 0.9, 0.1))},
}
# stages whose arguments need a trained model rather than a backend: their own test checks each argument
ELSEWHERE = {"LearnedFusion": "tests/test_ltr.py::test_every_learned_fusion_argument_has_its_effect"}
_OTHER: dict[str, str] = {}


def _other(kind: str) -> str:
    """More tiny models: other weights, or no final normalization."""
    if kind not in _OTHER:
        import tempfile
        from pathlib import Path

        from cascade.testing import tiny_cross_encoder, tiny_sentence_transformer

        root = Path(tempfile.mkdtemp(prefix="cascade-models-"))
        _OTHER[kind] = str({"ce": lambda: tiny_cross_encoder(root / "ce", seed=1),
                            "st": lambda: tiny_sentence_transformer(root / "st", seed=1),
                            "raw": lambda: tiny_sentence_transformer(root / "raw", normalize=False)}[kind]())
    return _OTHER[kind]


MODELS = {"pylate": lambda: _tiny("pylate"), "cross_encoder": lambda: _tiny("cross_encoder"),
          "cross_encoder_other": lambda: _other("ce"), "st_other": lambda: _other("st"),
          "st_unnormalized": lambda: _other("raw")}


def _build(cls, kwargs, cache):
    kwargs = {k: (MODELS[v]() if k == "model" and v in MODELS else v) for k, v in kwargs.items()}
    if cls is not BM25:
        kwargs.setdefault("model", _tiny("cross_encoder") if cls is CrossEncoder else ST())
        if cls is not CrossEncoder:
            kwargs.setdefault("progress", False)
    if cls is not CrossEncoder:
        kwargs.setdefault("cache_dir", cache)
    return cls(**{"k": 4, **kwargs})


def _observe(stage, dataset):
    """(results of reranking and retrieving, the cache keys used)."""
    corpus, queries = dataset.corpus, dataset.query_texts
    n = len(corpus)
    cands = Candidates(np.tile(np.arange(n), (len(queries), 1)), np.tile(np.linspace(1, 0, n, dtype=np.float32),
                                                                        (len(queries), 1)))
    out = [stage.rerank(Batch(queries, corpus, cands)).candidates]
    if stage.can_retrieve():
        out.append(stage.rerank(Batch(queries, corpus)).candidates)
    keys = sorted(str(a.path) for a in stage.artifacts(corpus)) + [str(getattr(stage, "_path", ""))]
    return out, keys


def _same(a, b, tol=0.0, rtol=1e-5):
    return len(a) == len(b) and all(x.doc_idx.shape == y.doc_idx.shape and (x.doc_idx == y.doc_idx).all()
                                    and np.allclose(x.scores, y.scores, atol=tol, rtol=rtol) for x, y in zip(a, b))


PARAMS = [(cls, name) for cls, cases in CASES.items() for name in cases]


@pytest.mark.parametrize("cls, name", PARAMS, ids=[f"{c.__name__}.{n}" for c, n in PARAMS])
def test_changing_an_argument_changes_results_or_cache_key(cls, name, tiny_dataset, tmp_path, monkeypatch):
    base, other = CASES[cls][name]
    if name == "precision":  # bf16 runs (emulated) on any CPU; the tiny models need no speed
        monkeypatch.setattr("cascade.kernels.precision.cpu_bf16_supported", lambda: True)
    rtol = 0.0 if name == "precision" else 1e-5  # bf16 moves the tiny models' scores by ~1e-5 only
    default = inspect.signature(cls).parameters[name].default
    if name in base:
        default = base[name]
    assert other != default, f"{cls.__name__}.{name}: the test's other value equals the default"
    dataset = DATASETS[(cls, name)]() if (cls, name) in DATASETS else tiny_dataset
    results_a, keys_a = _observe(_build(cls, base, tmp_path), dataset)
    results_b, keys_b = _observe(_build(cls, {**base, name: other}, tmp_path), dataset)
    # the second stage shares the first's cache: an argument left out of a cache key reuses a stale index
    # and gives the same results, so both "ignored by the backend" and "missing from the key" fail here
    assert not _same(results_a, results_b, rtol=rtol), f"{cls.__name__}({name}={other!r}) did not change the results"


NO_EFFECT_CASES = [(BM25, "name", "other"), (BiEncoder, "batch_size", 2), (BiEncoder, "chunk_size", 2),
                   (BiEncoder, "retrieval_chunk", 2), (ColBERT, "batch_size", 2), (ColBERT, "block_rows", 7),
                   (ColBERT, "chunk_size", 2), (CrossEncoder, "batch_size", 2)]


@pytest.mark.parametrize("cls, name, other", NO_EFFECT_CASES, ids=[f"{c.__name__}.{n}" for c, n, _ in NO_EFFECT_CASES])
def test_declared_no_effect_arguments_change_nothing(cls, name, other, tiny_dataset, tmp_path):
    results_a, keys_a = _observe(_build(cls, {}, tmp_path / "a"), tiny_dataset)
    results_b, keys_b = _observe(_build(cls, {name: other}, tmp_path / "a"), tiny_dataset)
    assert _same(results_a, results_b, tol=1e-5) and keys_a == keys_b


def test_every_stage_class_is_covered():
    """A stage class added under cascade.stages needs its CASES entry (its arguments then follow)."""
    import importlib
    import pkgutil

    import cascade.stages
    from cascade.core.stage import Stage

    found = set()
    for info in pkgutil.iter_modules(cascade.stages.__path__):
        module = importlib.import_module(f"cascade.stages.{info.name}")
        found |= {obj for obj in vars(module).values() if isinstance(obj, type) and issubclass(obj, Stage)
                  and obj is not Stage and obj.__module__ == module.__name__}
    assert found >= {BM25, BiEncoder, ColBERT, CrossEncoder}
    missing = {c for c in found - set(CASES) if c.__name__ not in ELSEWHERE}
    assert not missing, f"add CASES entries for {sorted(c.__name__ for c in missing)}"
    for where in ELSEWHERE.values():  # the test named in ELSEWHERE exists (a rename cannot leave a class unchecked)
        module, name = where.removeprefix("tests/").split("::")
        assert callable(getattr(importlib.import_module(module.removesuffix(".py")), name, None)), where


def test_every_argument_is_covered():
    for cls, cases in CASES.items():
        params = set(inspect.signature(cls).parameters) - {"self"}
        missing = params - set(cases) - NO_EFFECT
        assert not missing, f"{cls.__name__}: add a case for {sorted(missing)} to CASES (or declare it in NO_EFFECT)"
