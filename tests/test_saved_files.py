"""The files of a saved index: append-only arrays (a killed append's bytes are cut, readers map only their
rows), range checksums verified once per file identity, the docstore read per access, the writer lock."""
from __future__ import annotations

import numpy as np
import pytest

from cascade.core.errors import CascadeError, CorruptArtifactError
from cascade.index import appendable, generations
from cascade.index.docstore import DocStore, DocWriter, StoredCorpus


def test_appends_are_ranges_and_readers_map_only_their_rows(tmp_path):
    spec = appendable.new_spec("a.npy", np.float16, (3,))
    first, _ = appendable.append(tmp_path, spec, np.arange(6).reshape(2, 3))
    reader = appendable.open_array(tmp_path, first)
    second, _ = appendable.append(tmp_path, first, np.ones((4, 3)))
    assert reader.shape == (2, 3) and np.array_equal(reader, np.arange(6).reshape(2, 3))  # undisturbed
    assert [r[:2] for r in second["ranges"]] == [[0, 2], [2, 6]] and second["shape"] == [6, 3]
    assert np.load(tmp_path / "a.npy").shape == (6, 3)  # a plain .npy (the header follows the last append)
    with open(tmp_path / "a.npy", "ab") as handle:  # a killed append leaves bytes no generation names
        handle.write(b"\x01" * 17)
    assert np.array_equal(appendable.open_array(tmp_path, second)[2:], np.ones((4, 3)))
    appendable.verify(tmp_path, [second], full=True)
    third, _ = appendable.append(tmp_path, second, np.full((1, 3), 7))
    assert np.array_equal(appendable.open_array(tmp_path, third)[-1], [7, 7, 7])  # cut, then appended
    assert (tmp_path / "a.npy").stat().st_size == appendable.HEADER + 7 * 3 * 2


def test_checksums_name_the_damaged_rows_and_are_verified_once_per_identity(tmp_path):
    spec, app = appendable.append(tmp_path, appendable.new_spec("a.npy", np.int64), np.arange(100))
    spec, app2 = appendable.append(tmp_path, spec, np.arange(50))
    assert appendable.verify(tmp_path, [spec]) == 150 * 8
    assert appendable.verify(tmp_path, [spec]) == 0  # identity unchanged: only stat-ed
    more, app3 = appendable.append(tmp_path, spec, np.arange(5))
    appendable.record(tmp_path, [app3], [], ["a.npy"])  # the writer carries the verification over
    assert appendable.verify(tmp_path, [more]) == 0
    data = bytearray((tmp_path / "a.npy").read_bytes())
    data[appendable.HEADER + 120 * 8] ^= 1
    (tmp_path / "a.npy").write_bytes(data)
    with pytest.raises(CorruptArtifactError, match=r"a.npy rows 100:150 do not match their checksum"):
        appendable.verify(tmp_path, [more])
    fixed = appendable.save_file(tmp_path, "b.npy", np.arange(3))
    (tmp_path / "b.npy").write_bytes((tmp_path / "b.npy").read_bytes()[:-1])
    with pytest.raises(CorruptArtifactError, match="b.npy does not match its checksum"):
        appendable.verify(tmp_path, [fixed])
    (tmp_path / "a.npy").unlink()
    with pytest.raises(CorruptArtifactError, match="a.npy is missing"):
        appendable.verify(tmp_path, [more])


def test_the_docstore_reads_texts_per_access(tmp_path):
    writer = DocWriter(tmp_path, None, 0)
    writer.add(["a", "b"], ["Première ligne", "zweite"], [{"k": 1}, None])
    parts = writer.finish()
    writer = DocWriter(tmp_path, parts, 0)
    writer.add(["c"], ["third ☃"], [{"k": [1, 2]}])
    parts = writer.finish()
    store = DocStore(tmp_path, parts)
    corpus = StoredCorpus(store, np.array([True, False, True]), "fp", "x")
    assert corpus.ids == ("a", "b", "c") and len(corpus) == 3 and corpus.num_live == 2
    assert corpus.texts[2] == "third ☃" and corpus.texts[0:2] == ["Première ligne", "zweite"]
    assert list(corpus.texts) == ["Première ligne", "zweite", "third ☃"] and corpus.fingerprint == "fp"
    assert corpus.index_of == {"a": 0, "c": 2} and corpus.meta("c") == {"k": [1, 2]}
    assert corpus.rows_where({"k": 1}).tolist() == [True, False, False]
    assert corpus.rows_where({"k": [[1, 2], 1]}).tolist() == [True, False, True]


def test_the_lock_is_exclusive_and_names_its_holder(tmp_path):
    with generations.writer_lock(tmp_path):
        with pytest.raises(CascadeError, match=r"another process \(pid \d+\)"):
            with generations.writer_lock(tmp_path, timeout=0.1):
                pass
    with generations.writer_lock(tmp_path, timeout=0.1):  # released
        pass


def test_cleanup_deletes_only_what_no_generation_uses(tmp_path):
    for name in ("gen-00000001.json", "docs.texts.e0.npy", "s0.vectors.e0.npy", "s0.vectors.e1.npy",
                 ".x.123.tmp", "notes.txt", ".hidden"):
        (tmp_path / name).write_text("x")
    (tmp_path / "s0.bm25.g1").mkdir()
    manifest = {"generation": 2, "docstore": {"texts": {"file": "docs.texts.e0.npy"}},
                "stages": [{"vectors": {"file": "s0.vectors.e1.npy"}}]}
    generations.cleanup(tmp_path, manifest)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hidden", "docs.texts.e0.npy", "notes.txt",
                                                          "s0.vectors.e1.npy"]


def test_an_index_opened_again_hashes_nothing(tmp_path, monkeypatch):
    """A write records every file of its generation as verified (the BM25 model folder's too), so neither
    its own reopening nor a later open hashes anything."""
    from cascade import load
    from cascade.stages.bm25 import BM25

    index = (BM25() % 5).index({"a": "cat sat", "b": "dog ran", "c": "fish swam"}).save(tmp_path / "i")
    hashed = []
    real = appendable.verify
    monkeypatch.setattr(appendable, "verify", lambda *a, **k: hashed.append(real(*a, **k)) or hashed[-1])
    index.add({"d": "bird flew"})
    load(tmp_path / "i")
    assert hashed == [0, 0]
