"""One cache discipline: damage is detected and rebuilt, concurrent builders share one build, content-only keys."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from cascade import Corpus, CorruptArtifactError
from cascade.index import store
from cascade.stages.biencoder import BiEncoder
from cascade.stages.colbert import ColBERT
from cascade.testing import tiny_sentence_transformer
from conftest import REPO, write_beir


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_sentence_transformer(tmp_path_factory.mktemp("m") / "st", max_seq_length=32)


CORPUS = Corpus([f"d{i}" for i in range(40)], [f"document {i} about topic {i % 7} and more words {i * 3}"
                                                for i in range(40)])


def _build(model, cache):
    bi = BiEncoder(k=5, model=model, cache_dir=cache, progress=False)
    col = ColBERT(k=5, model=model, cache_dir=cache, progress=False)
    (bi >> col).prepare(CORPUS)
    return np.array(bi._vectors), np.array(col._index.tokens)


def _damage(path, how):
    target = path / ("vectors.npy" if (path / "vectors.npy").exists() else "tokens.npy")
    if how == "truncate":
        with target.open("r+b") as f:
            f.truncate(target.stat().st_size // 2)
    elif how == "zero":
        arr = np.load(target, mmap_mode="r+")
        arr[:] = 0
        arr.flush()
    elif how == "random":  # a valid .npy header with other numbers behind it
        arr = np.load(target, mmap_mode="r+")
        arr[:] = np.random.default_rng(0).standard_normal(arr.shape).astype(arr.dtype)
        arr.flush()
    elif how == "delete_array":
        target.unlink()
    elif how == "delete_meta":
        (path / "meta.json").unlink()
    elif how == "garble_meta":
        (path / "meta.json").write_text("{not json")


@pytest.mark.parametrize("how", ["truncate", "zero", "random", "delete_array", "delete_meta", "garble_meta"])
def test_damaged_artifacts_are_detected_and_rebuilt(model, tmp_path, how, caplog):
    vectors, tokens = _build(model, tmp_path)
    for kind in ("dense", "colbert"):
        (path,) = [p for p in (tmp_path / kind).iterdir() if p.is_dir()]
        _damage(path, how)
        with pytest.raises(CorruptArtifactError, match=f"delete {path}"):
            store.check(path)
    again_vectors, again_tokens = _build(model, tmp_path)  # fresh stages: rebuild, same content
    assert np.array_equal(again_vectors, vectors) and np.array_equal(again_tokens, tokens)
    for kind in ("dense", "colbert"):
        assert len([p for p in (tmp_path / kind).iterdir()]) == 1  # no leftovers (.partial, .building)


def test_check_is_cheap_for_large_files(tmp_path):
    """Large files are checked by a sample of blocks: a change anywhere in a sampled block is caught."""
    path = tmp_path / "a"
    store.ensure(path, lambda tmp: np.save(tmp / "x.npy", np.arange(4_000_000, dtype=np.int64)), {})
    meta = store.check(path)
    assert meta["files"]["x.npy"]["bytes"] == (path / "x.npy").stat().st_size
    arr = np.load(path / "x.npy", mmap_mode="r+")
    arr[0] = -1  # first block is always sampled
    arr.flush()
    with pytest.raises(CorruptArtifactError, match="does not match its checksum"):
        store.check(path)


CONCURRENT = """
import sys, logging
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
from cascade import Corpus
from cascade.stages.biencoder import BiEncoder
from cascade.stages.colbert import ColBERT
corpus = Corpus([f"d{i}" for i in range(300)], [f"text number {i} " * (5 + i % 20) for i in range(300)])
pipe = BiEncoder(k=5, model=sys.argv[1], cache_dir=sys.argv[2], progress=False, chunk_size=32) >> \\
       ColBERT(k=5, model=sys.argv[1], cache_dir=sys.argv[2], progress=False, chunk_size=32)
pipe.prepare(corpus)
print(pipe.stages[1]._index.tokens.shape)
"""


def test_concurrent_builders_share_one_build(model, tmp_path):
    script = tmp_path / "build.py"
    script.write_text(CONCURRENT)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, str(script), str(model), str(tmp_path / "cache")], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    assert outs[0][0] == outs[1][0]
    logs = outs[0][1] + outs[1][1]
    assert logs.count("encoded 300 documents") == 1, logs[-3000:]


def test_two_neural_cli_runs_on_one_empty_cache(model, tmp_path):
    """Two `cascade run` of a neural pipeline at once: both succeed, same output, the corpus encoded once."""
    docs = {f"d{i}": (f"title {i}", f"body text {i} about subject {i % 9} " * (3 + i % 11)) for i in range(400)}
    queries = {f"q{i}": f"subject {i}" for i in range(9)}
    data = write_beir(tmp_path / "data", docs=docs, queries=queries, qrels={q: {f"d{i}": 1} for i, q in enumerate(queries)})
    env = {**os.environ, "CASCADE_CACHE_DIR": str(tmp_path / "cache")}
    args = ["pipeline=bm25_colbert", f"dataset.path={data}", f"stage.colbert.model={model}", "stage.colbert.chunk_size=32",
            "stage.colbert.progress=false"]
    procs = [subprocess.Popen([sys.executable, "-m", "cascade.app.cli", "run", *args, f"hydra.run.dir={tmp_path / n}"],
                              cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for n in ("a", "b")]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    assert (tmp_path / "a" / "run.trec").read_bytes() == (tmp_path / "b" / "run.trec").read_bytes()
    assert json.loads((tmp_path / "a" / "metrics.json").read_text()) == json.loads((tmp_path / "b" / "metrics.json").read_text())
    logs = "".join(out + err for out, err in outs)  # Hydra logs to stdout
    assert logs.count("encoded 400 documents") == 1, logs[-3000:]
