"""``cascade index ... --out DIR`` and ``cascade index add|update|delete|compact|info DIR``."""
from __future__ import annotations

import json

import cascade

from conftest import cascade_cli


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_the_life_of_an_index_from_the_command_line(tiny_beir, tmp_path):
    cache, out = tmp_path / "cache", tmp_path / "my-index"
    done = cascade_cli("index", "pipeline=bm25", f"dataset.path={tiny_beir}", "--out", str(out), cwd=tmp_path,
                       cache=cache)
    assert done.returncode == 0, done.stderr
    assert "saved index" in done.stdout and cascade.load(out).search("cat mat", k=2).doc_ids == ["d1", "d3"]
    again = cascade_cli("index", "pipeline=bm25", f"dataset.path={tiny_beir}", f"--out={out}", cwd=tmp_path,
                        cache=cache)
    assert again.returncode == 2 and "already exists" in again.stderr
    new = _jsonl(tmp_path / "new.jsonl", [{"_id": "d7", "title": "Cats", "text": "A cat on a mat, again.",
                                           "metadata": {"source": "cli"}}, {"_id": "d8", "text": "Owls hoot."}])
    done = cascade_cli("index", "add", str(out), str(new), cwd=tmp_path, cache=cache)
    assert done.returncode == 0, done.stderr
    assert "generation 1; 8 documents" in done.stdout
    index = cascade.load(out)
    assert index.doc("d7")["metadata"] == {"source": "cli"}
    assert index.search("cat mat", k=5, where={"source": "cli"}).doc_ids == ["d7"]
    taken = cascade_cli("index", "add", str(out), str(new), cwd=tmp_path, cache=cache)
    assert taken.returncode == 2 and "already in the index" in taken.stderr
    unknown = cascade_cli("index", "delete", str(out), "d1,nope", cwd=tmp_path, cache=cache)
    assert unknown.returncode == 2 and "'nope'" in unknown.stderr and "d1" in cascade.load(out)
    (tmp_path / "ids.txt").write_text("d2\nd8\n")
    done = cascade_cli("index", "delete", str(out), "d1", "@" + str(tmp_path / "ids.txt"), cwd=tmp_path, cache=cache)
    assert done.returncode == 0 and "5 documents (3 deleted" in done.stdout, done.stderr
    update = _jsonl(tmp_path / "upd.jsonl", [{"_id": "d3", "text": "Owls and cats."}])
    done = cascade_cli("index", "update", str(out), str(update), cwd=tmp_path, cache=cache)
    assert done.returncode == 0, done.stderr
    done = cascade_cli("index", "compact", str(out), cwd=tmp_path, cache=cache)
    assert done.returncode == 0 and "5 documents (0 deleted" in done.stdout, done.stderr
    info = cascade_cli("index", "info", str(out), cwd=tmp_path, cache=cache)
    assert info.returncode == 0 and json.loads(info.stdout)["rows"] == 5
    index = cascade.load(out)
    assert sorted(index.corpus.ids) == ["d3", "d4", "d5", "d6", "d7"] and index.doc("d3")["text"] == "Owls and cats."


def test_bad_index_commands_fail_clearly(tmp_path):
    (tmp_path / "plain").mkdir()
    done = cascade_cli("index", "add", str(tmp_path / "plain"), "x.jsonl", cwd=tmp_path, cache=tmp_path / "c")
    assert done.returncode == 2 and "not a cascade index: it has no index.json" in done.stderr
    done = cascade_cli("index", "delete", str(tmp_path / "plain"), cwd=tmp_path, cache=tmp_path / "c")
    assert done.returncode == 2 and "usage" in done.stderr
    done = cascade_cli("index", "pipeline=bm25", "--out", cwd=tmp_path, cache=tmp_path / "c")
    assert done.returncode == 2 and "--out needs a folder" in done.stderr
