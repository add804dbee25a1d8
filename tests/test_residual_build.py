"""Tests for residual_build.py: the streamed assembly of the compressed index equals the in-memory one."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from cascade.index.residual_build import PhaseClock, concat_npy, write_ivf, write_offsets
from cascade.kernels.plaid import build_ivf


def chunks(rng, num_chunks, num_centroids):
    out = []
    for _ in range(num_chunks):
        lengths = rng.integers(0, 7, rng.integers(1, 6))
        out.append((rng.integers(0, num_centroids, lengths.sum()).astype(np.uint16), lengths.astype(np.int64)))
    return out


@given(data=st.data())
@settings(max_examples=30, deadline=None)
def test_streamed_files_equal_the_in_memory_build(data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("asm")
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 32 - 1)))
    num_c = data.draw(st.integers(1, 12))
    parts = chunks(rng, data.draw(st.integers(1, 6)), num_c)
    paths = []
    for i, (codes, _) in enumerate(parts):
        np.save(tmp / f"{i}.codes.npy", codes)
        np.save(tmp / f"{i}.res.npy", np.repeat(codes[:, None], 3, 1).astype(np.uint8))
        paths.append(i)
    all_codes = np.concatenate([c for c, _ in parts])
    lengths = np.concatenate([n for _, n in parts])
    num_docs = len(lengths)
    assert concat_npy(tmp / "codes.npy", [tmp / f"{i}.codes.npy" for i in paths], np.uint16) == (len(all_codes),)
    assert concat_npy(tmp / "res.npy", [tmp / f"{i}.res.npy" for i in paths], np.uint8) == (len(all_codes), 3)
    np.testing.assert_array_equal(np.load(tmp / "codes.npy"), all_codes)
    np.testing.assert_array_equal(np.load(tmp / "res.npy"), np.repeat(all_codes[:, None], 3, 1))
    total = write_offsets(tmp / "offsets.npy", (n for _, n in parts), num_docs)
    offsets = np.load(tmp / "offsets.npy")
    np.testing.assert_array_equal(offsets, np.concatenate([[0], np.cumsum(lengths)]))
    assert total == len(all_codes) and offsets.dtype == np.int64
    budget = 8 * data.draw(st.integers(1, 40))  # a few keys per range: many ranges, many passes
    pairs = write_ivf(tmp, iter(parts), num_docs, num_c, tmp / "scratch.bin", budget=budget)
    docs, offs = build_ivf(all_codes, offsets, num_c)
    np.testing.assert_array_equal(np.load(tmp / "ivf_docs.npy"), docs)
    np.testing.assert_array_equal(np.load(tmp / "ivf_offsets.npy"), offs)
    assert pairs == len(docs) and np.load(tmp / "ivf_docs.npy").dtype == np.int32
    assert not (tmp / "scratch.bin").exists()


def test_concat_refuses_mismatched_parts(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((2, 3), np.uint8))
    np.save(tmp_path / "b.npy", np.zeros((2, 4), np.uint8))
    with pytest.raises(ValueError, match="does not match"):
        concat_npy(tmp_path / "out.npy", [tmp_path / "a.npy", tmp_path / "b.npy"], np.uint8)


def test_phase_clock_accumulates():
    clock = PhaseClock()
    for _ in range(2):
        with clock("work"):
            sum(range(20000))
    report = clock.report()
    assert set(report["work"]) == {"wall_s", "cpu_s", "peak_rss_mib"} and report["work"]["peak_rss_mib"] > 0
