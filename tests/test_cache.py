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


def _large(tmp_path, n=6_000_000):
    """A published artifact holding one 48 MB array (the old sampled check read 4 MiB of it)."""
    path = tmp_path / "a"
    store.ensure(path, lambda tmp: np.save(tmp / "x.npy", np.arange(n, dtype=np.int64)), {"what": "test"})
    return path


def _flip(target, offset):
    with target.open("r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0x01]))


@pytest.mark.parametrize("where", ["start", "middle", "end", "between sampled blocks"])
def test_one_damaged_byte_anywhere_in_a_large_file_is_caught(tmp_path, where):
    path = _large(tmp_path)
    target = path / "x.npy"
    size = target.stat().st_size
    step = (size - (1 << 16)) // 63  # where the old 64 sampled 64 KiB blocks started
    offset = {"start": 200, "middle": size // 2, "end": size - 1, "between sampled blocks": step // 2 + 7}[where]
    store.check(path)  # verified once in this identity
    stat = target.stat()
    _flip(target, offset)
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # even with the mtime put back
    with pytest.raises(CorruptArtifactError, match="x.npy does not match its checksum"):
        store.check(path)


def test_a_verified_file_is_not_hashed_again_until_it_changes(tmp_path, monkeypatch):
    path = _large(tmp_path)
    hashed = []
    real = store.file_hash
    monkeypatch.setattr(store, "file_hash", lambda p: hashed.append(p.name) or real(p))
    store.check(path)
    assert hashed == []  # recorded as verified when published
    store.check(path, full=True)
    assert hashed == ["x.npy"]  # --all rehashes regardless
    os.utime(path / "x.npy")  # a new identity: hashed in full before use
    store.check(path)
    store.check(path)
    assert hashed == ["x.npy", "x.npy"]


def test_a_copied_artifact_is_verified_in_full(tmp_path, monkeypatch):
    import shutil

    path = _large(tmp_path)
    copy = tmp_path / "copy" / "a"
    shutil.copytree(path, copy)  # its .verified.json names the original files' identities
    hashed = []
    real = store.file_hash
    monkeypatch.setattr(store, "file_hash", lambda p: hashed.append(p) or real(p))
    store.check(copy)
    assert hashed == [copy / "x.npy"]


def test_a_tampered_or_old_meta_is_refused(tmp_path):
    path = _large(tmp_path)
    meta = json.loads((path / "meta.json").read_text())
    (path / "meta.json").write_text(json.dumps({**meta, "what": "other"}))
    with pytest.raises(CorruptArtifactError, match="does not match its own checksum"):
        store.check(path)
    old = {"what": "test", "files": {"x.npy": {"bytes": 1, "sample_sha256": "00"}}}
    (path / "meta.json").write_text(json.dumps(old))
    with pytest.raises(CorruptArtifactError, match="does not match its \\(sampled\\) checksum"):
        store.check(path)
    (path / "meta.json").write_text(json.dumps({"what": "test", "files": {"x.npy": {"bytes": 1}}}))
    with pytest.raises(CorruptArtifactError, match="no full checksums"):
        store.check(path)


def test_an_artifact_built_before_full_checksums_is_upgraded_not_rebuilt(tmp_path, caplog):
    """Re-encoding a corpus takes hours: an old artifact whose sampled stamps match is kept and hashed."""
    path = _large(tmp_path)
    target = path / "x.npy"
    stamp = {"bytes": target.stat().st_size, "sample_sha256": store._sampled_stamp(target)}
    (path / "meta.json").write_text(json.dumps({"what": "test", "files": {"x.npy": stamp}}))
    (path / ".verified.json").unlink()
    with caplog.at_level("WARNING"):
        meta = store.check(path)
    assert "built before full checksums" in caplog.text
    assert meta["files"]["x.npy"][store.HASH] == store.file_hash(target)
    assert store.read_meta(path)["checksums_upgraded_from"] == "sample_sha256"
    _flip(target, target.stat().st_size // 2 + 11)  # from now on, damage anywhere is caught
    with pytest.raises(CorruptArtifactError, match="does not match its checksum"):
        store.check(path)


def test_a_damaged_token_index_gives_the_undamaged_results(model, tmp_path):
    """Damage between the old sampled blocks of a real index: rebuilt, never scored."""
    _, tokens = _build(model, tmp_path)
    (path,) = [p for p in (tmp_path / "colbert").iterdir() if p.is_dir()]
    target = path / "tokens.npy"
    _flip(target, target.stat().st_size // 2 + 3)
    col = ColBERT(k=5, model=model, cache_dir=tmp_path, progress=False)
    col.prepare(CORPUS)
    assert np.array_equal(np.array(col._index.tokens), tokens)


def test_cascade_verify_reports_damage_with_the_folder(tmp_path):
    path = _large(tmp_path / "cache")
    run = lambda *a: subprocess.run([sys.executable, "-m", "cascade.app.cli", "verify", *a],  # noqa: E731
                                    capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    ok = run(str(tmp_path / "cache"), "--all")
    assert ok.returncode == 0 and "| a " in ok.stdout and "ok" in ok.stdout, ok.stdout + ok.stderr
    _flip(path / "x.npy", 5_000_000)
    bad = run(str(tmp_path / "cache"))
    assert bad.returncode == 1 and "DAMAGED" in bad.stdout
    assert f"delete {path}" in bad.stderr


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
    data = write_beir(
        tmp_path / "data", docs=docs, queries=queries, qrels={q: {f"d{i}": 1} for i, q in enumerate(queries)}
    )
    env = {**os.environ, "CASCADE_CACHE_DIR": str(tmp_path / "cache")}
    args = [
        "pipeline=bm25_colbert",
        f"dataset.path={data}",
        f"stage.colbert.model={model}",
        "stage.colbert.chunk_size=32",
        "stage.colbert.progress=false",
    ]
    procs = [subprocess.Popen([sys.executable, "-m", "cascade.app.cli", "run", *args, f"hydra.run.dir={tmp_path / n}"],
                              cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for n in ("a", "b")]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    assert (tmp_path / "a" / "run.trec").read_bytes() == (tmp_path / "b" / "run.trec").read_bytes()
    assert json.loads((tmp_path / "a" / "metrics.json").read_text()) == json.loads(
        (tmp_path / "b" / "metrics.json").read_text()
    )
    logs = "".join(out + err for out, err in outs)  # Hydra logs to stdout
    assert logs.count("encoded 400 documents") == 1, logs[-3000:]
