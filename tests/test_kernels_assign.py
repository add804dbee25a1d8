"""Tests for assign.py and kmeans.py: exact and coarse-to-fine assignment, the two-level k-means."""
import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from test_kernels_residual import clustered

from cascade.kernels.assign import CoarseAssigner, assign_exact, coarse_cells_for, resolve_assignment
from cascade.kernels.kmeans import split_counts, train_centroids


def unit(rng, n, dim):
    x = rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def nearest_naive(x, centroids):
    """Row by row, centroid by centroid, in float64: the first (lowest id) of the best inner products."""
    out = []
    for row in np.asarray(x, np.float64):
        best, best_id = -np.inf, -1
        for j, c in enumerate(np.asarray(centroids, np.float64)):
            score = float(row @ c)
            if score > best:
                best, best_id = score, j
        out.append(best_id)
    return np.array(out)


@given(data=st.data())
@settings(max_examples=25, deadline=None)
def test_exact_equals_a_naive_loop(data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 32 - 1)))
    n, num_c, dim = data.draw(st.integers(0, 40)), data.draw(st.integers(1, 30)), data.draw(st.sampled_from([8, 16]))
    x, centroids = unit(rng, n, dim), unit(rng, num_c, dim)
    if data.draw(st.booleans()):
        x = x.astype(np.float16)  # e.g. rows of the fp16 token index
    got = assign_exact(x, centroids, chunk=data.draw(st.integers(1, 7)))
    assert got.dtype == np.int32 and got.shape == (n,)
    np.testing.assert_array_equal(got, nearest_naive(x, centroids))


def test_ties_go_to_the_lowest_id_in_both_modes():
    rng = np.random.default_rng(3)
    base = unit(rng, 6, 16)
    centroids = np.concatenate([base, base[::-1]])  # every centroid twice: ids j and 11 - j
    x = base[rng.integers(0, 6, 50)]
    want = nearest_naive(x, centroids)
    assert want.max() < 6  # the naive loop keeps the first of equal scores
    np.testing.assert_array_equal(assign_exact(x, centroids), want)
    assigner = CoarseAssigner.build(centroids, num_cells=3, nprobe=3, rescore=12)
    np.testing.assert_array_equal(assigner.assign(x), want)


@given(data=st.data())
@settings(max_examples=20, deadline=None)
def test_coarse_probing_every_cell_equals_exact(data):
    """With every cell probed and every cell's centroids rescored, coarse-to-fine is exact assignment."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 32 - 1)))
    n, num_c, dim = data.draw(st.integers(1, 60)), data.draw(st.integers(1, 40)), data.draw(st.sampled_from([8, 32]))
    x, centroids = unit(rng, n, dim), unit(rng, num_c, dim)
    cells = data.draw(st.integers(1, num_c))
    assigner = CoarseAssigner.build(centroids, num_cells=cells, nprobe=cells, rescore=num_c)
    assert len(assigner.cells) == cells and sorted(assigner.members.tolist()) == list(range(num_c))
    got = assigner.assign(x, chunk=data.draw(st.integers(1, 9)))
    np.testing.assert_array_equal(got, nearest_naive(x, centroids))


def test_coarse_agrees_with_exact_on_clustered_data():
    """Tokens around 64 topics, 1,024 centroids (the codec's k-means): the default coarse settings
    give the exact nearest centroid for most tokens and lose almost nothing in similarity."""
    x = clustered(30_000, 64, 64, 0.6, seed=5)
    centroids = train_centroids(x[:20_000], 1024, niter=8, two_level=True)
    test = x[20_000:]
    exact = assign_exact(test, centroids)
    assigner = CoarseAssigner.build(centroids)
    got = assigner.assign(test, chunk=3000)
    agree = float((got == exact).mean())
    sims = np.einsum("ij,ij->i", test, centroids[got]), np.einsum("ij,ij->i", test, centroids[exact])
    assert agree > 0.9, agree
    assert sims[0].mean() > sims[1].mean() - 2e-3 and np.all(sims[0] <= sims[1] + 1e-6)
    one = CoarseAssigner.build(centroids, nprobe=1, rescore=1).assign(test)
    assert (one == exact).mean() < agree  # probing more cells and rescoring more candidates helps


def test_coarse_buffers_reused_across_calls_and_rescore_blocks(monkeypatch):
    """Scratch buffers live across calls (grown, then reused as smaller views) and the float32 rescoring
    runs in blocks: neither may leak rows of one call or block into another's answers."""
    import cascade.kernels.assign as assign_mod

    monkeypatch.setattr(assign_mod, "RESCORE_ROWS", 7)  # many blocks, a ragged last one
    rng = np.random.default_rng(11)
    centroids = unit(rng, 50, 16)
    assigner = CoarseAssigner.build(centroids, num_cells=5, nprobe=5, rescore=50)  # exact by construction
    for n, chunk in ((200, 64), (13, 5), (90, 90), (1, 1), (150, 33)):
        x = unit(rng, n, 16)
        np.testing.assert_array_equal(assigner.assign(x, chunk=chunk), nearest_naive(x, centroids))
    # one cell probed, one candidate: the bfloat16 stage decides, so stale scratch rows would show
    reused = CoarseAssigner.build(centroids, num_cells=5, nprobe=1, rescore=1)
    for n, chunk in ((200, 64), (13, 5), (90, 90), (1, 1), (150, 33)):
        x = unit(rng, n, 16)
        fresh = dataclasses.replace(reused)  # new instance: no buffers yet
        np.testing.assert_array_equal(reused.assign(x, chunk=chunk), fresh.assign(x, chunk=chunk))


def test_coarse_assignment_streams_any_float_rows():
    rng = np.random.default_rng(1)
    centroids = unit(rng, 300, 32)
    x = unit(rng, 1000, 32)
    assigner = CoarseAssigner.build(centroids)
    seen = []
    a = assigner.assign(x, chunk=128, progress=seen.append)
    b = assigner.assign(x.astype(np.float16).astype(np.float32))
    c = assigner.assign(x.astype(np.float16))
    assert sum(seen) == 1000 and len(seen) == 8
    np.testing.assert_array_equal(b, c)
    assert (a == b).mean() > 0.95


def test_resolve_assignment_and_cells():
    assert resolve_assignment("auto", 16384) == "exact" and resolve_assignment("auto", 16385) == "coarse"
    assert resolve_assignment("exact", 1 << 17) == "exact" and resolve_assignment("coarse", 8) == "coarse"
    with pytest.raises(ValueError, match="auto, exact, coarse"):
        resolve_assignment("fast", 10)
    assert coarse_cells_for(131072) == 512 and coarse_cells_for(16384) == 256 and coarse_cells_for(1) == 1
    assert coarse_cells_for(3) <= 3


@given(sizes=st.lists(st.integers(0, 60), min_size=1, max_size=40), total=st.integers(0, 400))
@settings(max_examples=200, deadline=None)
def test_split_counts(sizes, total):
    sizes = np.array(sizes)
    counts = split_counts(sizes, total)
    assert counts.sum() == min(total, sizes.sum()) and np.all(counts <= sizes) and np.all(counts >= 0)
    if total >= np.count_nonzero(sizes):
        np.testing.assert_array_equal(counts > 0, sizes > 0)
    share = sizes * min(total, sizes.sum()) / max(sizes.sum(), 1)
    if np.all(share[sizes > 0] >= 1):  # no one-per-cell floor binds: largest remainders, within 1
        assert np.all(np.abs(counts - share) < 1)


@pytest.mark.parametrize("two_level", [False, True])
def test_kmeans_centroids_are_unit_deterministic_and_fit_the_data(two_level):
    x = clustered(8000, 32, 40, 0.5, seed=2)
    a = train_centroids(x, 200, seed=0, niter=6, two_level=two_level)
    b = train_centroids(x.astype(np.float16), 200, seed=0, niter=6, two_level=two_level, rows=np.arange(len(x)))
    assert a.shape == (200, 32) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1, atol=1e-5)
    fit = np.einsum("ij,ij->i", x, a[assign_exact(x, a)]).mean()
    assert abs(np.einsum("ij,ij->i", x, b[assign_exact(x, b)]).mean() - fit) < 3e-3  # float16 input: as good
    rng = np.random.default_rng(0)
    random = x[rng.choice(len(x), 200, replace=False)]
    assert fit > np.einsum("ij,ij->i", x, random[assign_exact(x, random)]).mean() + 0.01, fit
    np.testing.assert_array_equal(a, train_centroids(x, 200, seed=0, niter=6, two_level=two_level))


def test_kmeans_on_selected_rows_only():
    x = clustered(6000, 16, 10, 0.5, seed=4)
    rows = np.arange(0, 6000, 2)
    np.testing.assert_array_equal(train_centroids(x, 50, niter=4, two_level=True, rows=rows),
                                  train_centroids(x[rows], 50, niter=4, two_level=True))
