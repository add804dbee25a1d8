"""Tests of maxsim (against maxsim_naive) and topk_dot (ties, k > N).

    /work/main/.venv/bin/python -m pytest -q test_maxsim.py
"""
from __future__ import annotations

import importlib.util
import pathlib

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from cascade.kernels import maxsim as kernels  # noqa: E402
from cascade.kernels.dense import topk_dot  # noqa: E402
from cascade.kernels.maxsim import maxsim, maxsim_naive  # noqa: E402

SETTINGS = settings(max_examples=150, deadline=None)


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-6)


def make_case(seed: int, num_docs: int, max_len: int, dim: int, num_q: int, num_k: int, lq: int,
              p_pad: float = 0.2, p_mask: float = 0.3, dtype=np.float16) -> dict:
    """Random corpus (some documents empty), queries with masked positions, padded candidates."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, max_len + 1, num_docs)
    offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)
    tokens = unit(rng.standard_normal((int(offsets[-1]), dim))).astype(dtype)
    queries = unit(rng.standard_normal((num_q, lq, dim))).astype(np.float32)
    mask = rng.random((num_q, lq)) >= p_mask
    doc_idx = rng.integers(0, max(num_docs, 1), (num_q, num_k)) if num_docs else np.full((num_q, num_k), -1)
    doc_idx = np.where(rng.random((num_q, num_k)) < p_pad, -1, doc_idx).astype(np.int64)
    return dict(queries=queries, query_mask=mask, tokens=tokens, offsets=offsets, doc_idx=doc_idx)


def assert_scores(got: np.ndarray, ref: np.ndarray, atol: float = 1e-4) -> None:
    assert got.dtype == np.float32 and got.shape == ref.shape
    assert np.array_equal(np.isneginf(got), np.isneginf(ref)), "-inf positions differ"
    assert not np.isnan(got).any()
    fin = np.isfinite(ref)
    np.testing.assert_allclose(got[fin], ref[fin], atol=atol, rtol=1e-5)


cases = st.builds(make_case, seed=st.integers(0, 2**32 - 1), num_docs=st.integers(0, 12),
                  max_len=st.integers(0, 40), dim=st.integers(1, 24), num_q=st.integers(0, 5),
                  num_k=st.integers(0, 7), lq=st.integers(1, 6))


@SETTINGS
@given(case=cases, block_rows=st.integers(1, 200), tile_rows=st.integers(1, 64))
def test_matches_naive(case: dict, block_rows: int, tile_rows: int) -> None:
    dim = case["tokens"].shape[1]
    ref = maxsim_naive(**case)
    assert_scores(maxsim(**case), ref)
    assert_scores(maxsim(**case, block_rows=block_rows, tile_elements=tile_rows * dim), ref)


@pytest.mark.parametrize("tile_rows,block_rows", [(1, 1), (3, 10), (7, 1), (16, 50), (1000, 40), (5, 1 << 20)])
def test_many_tiles_and_blocks(tile_rows: int, block_rows: int) -> None:
    """Long documents, tiny tiles: every document spans several tiles, every query several blocks."""
    case = make_case(7, num_docs=30, max_len=60, dim=8, num_q=6, num_k=9, lq=4)
    assert_scores(maxsim(**case, block_rows=block_rows, tile_elements=tile_rows * 8), maxsim_naive(**case))


def test_best_token_in_last_tile() -> None:
    """The winning document token sits in the last tile of its document: only-first-tile bugs fail."""
    dim, n = 4, 50
    tokens = np.zeros((2 * n, dim), np.float32)
    tokens[:, 1] = 1.0
    tokens[n - 1] = tokens[2 * n - 1] = [1.0, 0.0, 0.0, 0.0]  # each doc's last row matches the query
    q = np.array([[[1.0, 0, 0, 0]]], np.float32)
    args = (q, np.ones((1, 1), bool), tokens, np.array([0, n, 2 * n]), np.array([[0, 1, -1]]))
    for tile_rows in (1, 3, n, 2 * n):
        np.testing.assert_array_equal(maxsim(*args, tile_elements=tile_rows * dim), [[1.0, 1.0, -np.inf]])
        np.testing.assert_array_equal(maxsim(*args, block_rows=1, tile_elements=tile_rows * dim), [[1.0, 1.0, -np.inf]])


def load_mutant(old: str, new: str):
    """The kernel module with one source fragment replaced (a planted bug)."""
    src = pathlib.Path(kernels.__file__).read_text()
    assert old in src, f"mutation target {old!r} vanished from maxsim.py: update this test"
    spec = importlib.util.spec_from_loader("maxsim_mutant", loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    exec(compile(src.replace(old, new), "maxsim_mutant", "exec"), module.__dict__)
    return module


@pytest.mark.parametrize("old,new", [
    ("for s in range(int(first[c0]), int(ends[c1 - 1]), tile_rows):",  # first tile only
     "for s in range(int(first[c0]), int(ends[c1 - 1]), tile_rows)[:1]:"),
    ("        a = b\n", "        break\n"),  # first block only
])
def test_planted_bugs_are_caught(old: str, new: str) -> None:
    mutant = load_mutant(old, new)
    case = make_case(7, num_docs=30, max_len=60, dim=8, num_q=6, num_k=9, lq=4)
    got = mutant.maxsim(**case, block_rows=40, tile_elements=5 * 8)
    with pytest.raises(AssertionError):
        assert_scores(got, maxsim_naive(**case))


def test_edge_shapes() -> None:
    case = make_case(1, num_docs=5, max_len=6, dim=3, num_q=2, num_k=4, lq=3)
    for doc_idx in (np.zeros((0, 4), np.int64), np.zeros((2, 0), np.int64), np.full((2, 4), -1)):
        got = maxsim(**{**case, "doc_idx": doc_idx})
        assert got.shape == doc_idx.shape and got.dtype == np.float32 and np.all(np.isneginf(got))


def test_empty_documents_and_masked_queries() -> None:
    tokens = np.eye(3, dtype=np.float16)
    offsets = np.array([0, 0, 2, 2, 3])  # docs 0 and 2 have no tokens
    queries = np.ones((3, 2, 3), np.float32)
    mask = np.array([[True, True], [False, False], [True, False]])
    doc_idx = np.array([[0, 1, 2, 3, -1], [1, 0, 3, -1, -1], [-1, -1, -1, -1, -1]])
    got = maxsim(queries, mask, tokens, offsets, doc_idx)
    inf = -np.inf
    np.testing.assert_array_equal(got, [[inf, 2, inf, 2, inf], [0, inf, 0, inf, inf], [inf] * 5])
    assert_scores(got, maxsim_naive(queries, mask, tokens, offsets, doc_idx))


@SETTINGS
@given(case=cases, extra=st.integers(1, 5), extra_lq=st.integers(1, 3), seed=st.integers(0, 1000))
def test_independent_of_padding_width(case: dict, extra: int, extra_lq: int, seed: int) -> None:
    """More -1 columns, or more masked query positions holding garbage, change nothing."""
    base = maxsim(**case)
    rng = np.random.default_rng(seed)
    num_q, num_k = case["doc_idx"].shape
    wide = np.full((num_q, num_k + extra), -1, np.int64)
    cols = np.sort(rng.permutation(num_k + extra)[:num_k])  # padding interleaved, order kept
    wide[:, cols] = case["doc_idx"]
    np.testing.assert_array_equal(maxsim(**{**case, "doc_idx": wide})[:, cols], base)
    assert np.all(np.isneginf(np.delete(maxsim(**{**case, "doc_idx": wide}), cols, axis=1)))
    q, m = case["queries"], case["query_mask"]
    junk = rng.standard_normal((q.shape[0], extra_lq, q.shape[2])).astype(np.float32) * 100
    longer = {**case, "queries": np.concatenate([q, junk], 1),
              "query_mask": np.concatenate([m, np.zeros((q.shape[0], extra_lq), bool)], 1)}
    np.testing.assert_array_equal(maxsim(**longer), base)


@SETTINGS
@given(case=cases, tile_rows=st.integers(1, 64))
def test_bfloat16_close(case: dict, tile_rows: int) -> None:
    """Unit vectors: every similarity is off by < ~0.006 in bf16, so a score by < 0.01 per query token."""
    ref = maxsim_naive(**case)
    got = maxsim(**case, compute_dtype="bfloat16", tile_elements=tile_rows * case["tokens"].shape[1])
    lv = case["query_mask"].sum(axis=1, keepdims=True)
    assert np.array_equal(np.isneginf(got), np.isneginf(ref)) and got.dtype == np.float32
    fin = np.isfinite(ref)
    assert np.all(np.abs(got[fin] - ref[fin]) <= 0.01 * np.broadcast_to(lv, ref.shape)[fin] + 1e-6)


@SETTINGS
@given(case=cases, tile_rows=st.integers(1, 64), as_fp32=st.booleans())
def test_gather_equals_direct(case: dict, tile_rows: int, as_fp32: bool) -> None:
    tokens, dim = case["tokens"], case["tokens"].shape[1]
    calls: list[np.ndarray] = []

    def gather(rows: np.ndarray) -> torch.Tensor:
        assert rows.dtype == np.int64 and rows.ndim == 1 and 0 < len(rows) <= tile_rows
        calls.append(rows.copy())
        return torch.from_numpy(tokens[rows].astype(np.float32) if as_fp32 else tokens[rows])

    direct = maxsim(**case, tile_elements=tile_rows * dim)
    via = maxsim(**{**case, "tokens": None}, gather=gather, tile_elements=tile_rows * dim)
    np.testing.assert_allclose(via, direct, rtol=1e-6, atol=1e-6)
    # every live (query, candidate) token row is requested exactly once per query token run
    lengths = kernels.candidate_lengths(case["offsets"], case["doc_idx"])
    live = lengths[case["query_mask"].any(axis=1)].sum()
    assert sum(len(c) for c in calls) == live


def test_memmap_and_dtypes(tmp_path: pathlib.Path) -> None:
    case = make_case(3, num_docs=20, max_len=30, dim=16, num_q=4, num_k=8, lq=5)
    np.save(tmp_path / "t.npy", case["tokens"])
    mm = np.load(tmp_path / "t.npy", mmap_mode="r")  # read-only memmap
    ref = maxsim_naive(**case)
    assert_scores(maxsim(**{**case, "tokens": mm}), ref)
    assert_scores(maxsim(**{**case, "tokens": case["tokens"].astype(np.float32)}), ref)
    assert_scores(maxsim(**{**case, "tokens": mm}, device="cpu"), ref)


def test_bad_arguments() -> None:
    case = make_case(3, num_docs=4, max_len=3, dim=2, num_q=1, num_k=2, lq=2)
    with pytest.raises(ValueError):
        maxsim(**case, compute_dtype="float16")
    with pytest.raises(ValueError):
        maxsim(**{**case, "tokens": None})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_cuda_matches_cpu(dtype: str) -> None:
    case = make_case(5, num_docs=40, max_len=50, dim=32, num_q=6, num_k=12, lq=8)
    got = maxsim(**case, device="cuda", compute_dtype=dtype, tile_elements=17 * 32)
    assert_scores(got, maxsim_naive(**case), atol=1e-4 if dtype == "float32" else 0.08)


# ---- topk_dot ----
def test_topk_ties_example() -> None:
    scores = np.array([0, 0, 2, 1, 1, 1, 2, 1], np.float32)[:, None]
    for chunk in (1, 3, 4, 8, 100):
        idx, sc = topk_dot(np.ones((1, 1), np.float32), scores, 3, chunk_size=chunk)
        np.testing.assert_array_equal(idx, [[2, 6, 3]])
        np.testing.assert_array_equal(sc, [[2, 2, 1]])


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), num_docs=st.integers(0, 40), num_q=st.integers(0, 4),
       dim=st.integers(1, 3), k=st.integers(0, 50), chunk=st.integers(1, 17), qblock=st.integers(1, 5),
       levels=st.integers(1, 4))
def test_topk_matches_sorted_reference(seed, num_docs, num_q, dim, k, chunk, qblock, levels) -> None:
    """Small-integer vectors: exact scores with many ties, including k > N and negative scores."""
    rng = np.random.default_rng(seed)
    docs = rng.integers(-levels, levels + 1, (num_docs, dim)).astype(np.float32)
    queries = rng.integers(-2, 3, (num_q, dim)).astype(np.float32)
    idx, sc = topk_dot(queries, docs, k, chunk_size=chunk, query_block=qblock)
    full = queries @ docs.T
    kk = min(k, num_docs)
    assert idx.shape == sc.shape == (num_q, kk) and idx.dtype == np.int64 and sc.dtype == np.float32
    for qi in range(num_q):
        want = sorted(range(num_docs), key=lambda d: (-full[qi, d], d))[:kk]
        np.testing.assert_array_equal(idx[qi], want)
        np.testing.assert_array_equal(sc[qi], full[qi, want])


def test_topk_negative_zero_ties_zero() -> None:
    docs = np.array([[0.0], [-0.0], [1.0], [0.0]], np.float32)
    idx, _ = topk_dot(np.array([[-1.0]], np.float32), docs, 3)  # scores -0, 0, -1, -0
    np.testing.assert_array_equal(idx, [[0, 1, 3]])
