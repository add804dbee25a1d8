"""Corpus encoding on Ray: a Ray head on 127.0.0.1 started here, `cascade index encoding=ray` against it.

The Ray build must equal a local build (arrays within float tolerance, the same rankings), and a
Ray encode killed midway must resume with only the missing chunks.
"""
from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from cascade.app.cli import main as cli_main
from cascade.app.index_cmd import compose_config, index
from cascade.app.runner import run
from cascade.core.data import load_beir
from cascade.core.errors import CascadeError
from cascade.encoders.sentence import DocPass, get_sentence_encoder
from cascade.index.encoding import build_pass
from cascade.index.ray_engine import RayEngine
from cascade.index.token_index import TokenIndexArtifact
from cascade.index.vectors import VectorsArtifact

from conftest import write_beir
from ray_head import RAY_ENV, free_port, ray_head as start_ray_head

ray = pytest.importorskip("ray", reason='Ray is not installed: pip install -e ".[ray]"')

WORDS = ("cat dog bird fish river mountain protein cell gene virus bacteria climate ocean star galaxy "
         "enzyme membrane receptor insulin neuron").split()
CHUNK = 8


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """``HOST:PORT`` of a Ray head on 127.0.0.1 (2 CPUs) that this process joins as a Ray driver."""
    saved = {k: os.environ.get(k) for k in RAY_ENV}
    os.environ.update(RAY_ENV)
    try:
        with start_ray_head(tmp_path_factory.mktemp("ray_head") / "head.log") as address:
            try:
                yield address
            finally:
                if ray.is_initialized():
                    ray.shutdown()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory) -> Path:
    """A few dozen tiny documents of varied lengths (several chunks of 8), two queries."""
    docs = {f"d{i}": (f"Doc {i}", " ".join(WORDS[(i * j + i) % len(WORDS)] for j in range(3 + (i * 7) % 23)))
            for i in range(36)}
    return write_beir(tmp_path_factory.mktemp("ray_corpus"), docs=docs,
                      queries={"q1": "cat river gene", "q2": "insulin receptor neuron"},
                      qrels={"q1": {"d1": 1}, "q2": {"d5": 1}})


def _overrides(corpus: Path, cache: Path, *extra: str) -> list[str]:
    return ["pipeline=cascade", f"dataset.path={corpus}", f"paths.cache_dir={cache}",
            f"stage.biencoder.chunk_size={CHUNK}", f"stage.colbert.chunk_size={CHUNK}",
            "stage.biencoder.progress=false", "stage.colbert.progress=false", *extra]


def _arrays(cache: Path) -> dict[str, np.ndarray]:
    """Every array of every artifact, by ``kind/key/file`` (keys are content hashes: equal across caches)."""
    return {str(p.relative_to(cache)): np.load(p) for p in sorted(cache.glob("*/*/*.npy"))}


def test_cascade_index_on_ray_equals_a_local_build(ray_head, corpus_dir, tmp_path, capsys):
    local, remote = tmp_path / "local", tmp_path / "ray"
    index(compose_config(_overrides(corpus_dir, local)))
    code = cli_main(["index", *_overrides(corpus_dir, remote, "encoding=ray", f"encoding.address={ray_head}")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.count("| built ") == 3 and "0 reused" in out
    assert not ray.is_initialized()  # the engine left the cluster it joined

    mine, theirs = _arrays(remote), _arrays(local)
    assert sorted(mine) == sorted(theirs) and len(mine) >= 4  # same artifacts (same keys), same files
    for name, array in theirs.items():
        assert mine[name].dtype == array.dtype and mine[name].shape == array.shape, name
        np.testing.assert_allclose(mine[name].astype(np.float64), array.astype(np.float64), atol=2e-3, rtol=0,
                                   err_msg=name)
    for meta in remote.glob("*/*/meta.json"):
        data = json.loads(meta.read_text())
        if data.get("kind") in ("vectors", "tokens"):
            assert data["engine"] == "ray" and data["workers"] == 2 and data["worker_device"] == "cpu"

    # identical rankings and metrics from either cache
    runs = {}
    for name, cache in (("local", local), ("ray", remote)):
        cfg = compose_config(_overrides(corpus_dir, cache, f"paths.output_dir={tmp_path / ('out_' + name)}"))
        result = run(cfg)
        runs[name] = (result.metrics, (Path(result.output_dir) / "run.trec").read_text().splitlines())
    assert runs["ray"][0] == runs["local"][0]
    assert [line.split()[:3] for line in runs["ray"][1]] == [line.split()[:3] for line in runs["local"][1]]


def failing_recipe(recipe, fail_at: str, device: str):
    """A pass rebuilt from ``recipe`` that dies on the chunk whose first text is ``fail_at``."""
    encode = recipe(device)

    def wrapped(texts, on_batch=None):
        if texts and texts[0] == fail_at:
            raise RuntimeError("worker lost (simulated)")
        return encode(texts, on_batch)

    return wrapped


def _artifacts(corpus, cache: Path, doc_pass: DocPass) -> list:
    meta = {"test": "resume", "precision": doc_pass.precision}  # the pass's precision is part of every key
    return [VectorsArtifact(cache / "dense" / "v", meta, doc_pass, CHUNK, progress=False),
            TokenIndexArtifact(cache / "colbert" / "t", meta, doc_pass, CHUNK, progress=False)]


def test_a_killed_ray_encode_resumes_with_only_the_missing_chunks(ray_head, corpus_dir, tmp_path):
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this file
    corpus = load_beir(corpus_dir).corpus
    real = get_sentence_encoder(None, "cpu").doc_pass(128, "", 4)
    dying = DocPass(real.key, real.encode, functools.partial(failing_recipe, real.recipe, corpus.texts[2 * CHUNK]),
                    real.precision, real.device)
    arts = _artifacts(corpus, tmp_path / "ray", dying)
    one_by_one = RayEngine(address=ray_head, num_workers=1, chunks_in_flight=1)  # chunks in order: 0, 8, then 16
    with pytest.raises(CascadeError, match="failed on documents 16:24.*2 chunks finished so far are saved"):
        build_pass(arts, corpus, one_by_one)
    for art in arts:
        assert sorted(p.name for p in art.partial.glob("*.chunk.json")) == [
            "0000000000.chunk.json", "0000000008.chunk.json"]
        assert not art.is_built()

    arts = _artifacts(corpus, tmp_path / "ray", real)  # the same pass, healthy workers
    build_pass(arts, corpus, RayEngine(address=ray_head, num_workers=2))
    for art in arts:
        meta = json.loads((art.path / "meta.json").read_text())
        assert meta["encoded_docs"] == len(corpus) - 2 * CHUNK  # only the missing chunks were encoded
        assert not art.partial.exists()
    local = _artifacts(corpus, tmp_path / "local", real)
    build_pass(local, corpus)
    for mine, theirs in zip(arts, local):
        for name in ("vectors.npy", "tokens.npy", "offsets.npy"):
            if (theirs.path / name).is_file():
                np.testing.assert_allclose(np.load(mine.path / name).astype(np.float64),
                                           np.load(theirs.path / name).astype(np.float64), atol=2e-3, rtol=0)


def test_joining_a_cluster_that_is_not_there_is_a_clear_error(corpus_dir, tmp_path, capsys):
    port = free_port()  # nobody listens there
    code = cli_main(["index", *_overrides(corpus_dir, tmp_path / "c", "encoding=ray",
                                          f"encoding.address=127.0.0.1:{port}")])
    assert code == 2
    assert f"no Ray cluster answers at encoding.address=127.0.0.1:{port}" in capsys.readouterr().err
    assert not ray.is_initialized() and not any(tmp_path.glob("c/dense/*/meta.json"))
