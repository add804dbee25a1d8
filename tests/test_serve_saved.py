"""`cascade serve DIR`: a saved index served as it was saved; /documents adds, replaces and deletes its
documents (behind the token), and searches see each change from the next batch."""
from __future__ import annotations

import pytest

pytest.importorskip("fastapi", reason='the serve extra is not installed: pip install -e ".[serve]"')
from fastapi.testclient import TestClient  # noqa: E402

import cascade  # noqa: E402
from cascade.app.cli import main as cli_main  # noqa: E402
from cascade.app.serve_cmd import ServeSpec, build_app, parse  # noqa: E402
from cascade.stages.biencoder import BiEncoder  # noqa: E402
from cascade.stages.bm25 import BM25  # noqa: E402
from cascade.testing import tiny_sentence_transformer  # noqa: E402

from serve_helpers import app_over, corpus, queries, same_ranking  # noqa: E402

AUTH = {"Authorization": "Bearer w"}


@pytest.fixture
def saved(tmp_path):
    model = str(tiny_sentence_transformer(tmp_path / "st"))
    pipe = BM25() % 20 >> BiEncoder(model=model, progress=False, fusion="zscore") % 5
    pipe.index(corpus(40)).save(tmp_path / "my-index")
    return tmp_path / "my-index"


def test_serve_dir_answers_as_the_loaded_index(saved):
    spec, _ = parse([str(saved)])
    assert spec.indexes == (str(saved.resolve()),) and spec.overrides == ()
    index = cascade.load(saved)
    with TestClient(build_app(spec)) as client:
        health = client.get("/health").json()["pipelines"][0]
        assert health["name"] == "my-index" and health["writable"] and health["documents"] == 40
        for query in queries(4):
            body = client.post("/search", json={"query": query, "k": 5}).json()
            assert same_ranking(body["results"][0]["hits"], index.search(query, k=5))
            assert [s["stage"] for s in body["results"][0]["stages"]] == [s.name for s in index.stages]


def test_documents_add_replace_delete(saved):
    with TestClient(build_app(ServeSpec(indexes=(str(saved),), token="w"))) as client:
        new = [{"id": "n1", "text": "quasar quasar nebula", "metadata": {"source": "test"}},
               {"id": "n2", "text": "a second new text about comets"}]
        assert client.post("/documents", json={"docs": new}).status_code == 401  # writes need the token
        added = client.post("/documents", json={"docs": new}, headers=AUTH).json()
        assert added["changed"] == 2 and added["documents"] == 42 and added["generation"] >= 1
        hits = client.post("/search", json={"query": "quasar nebula", "k": 3}, headers=AUTH).json()
        assert hits["results"][0]["hits"][0]["id"] == "n1"
        assert cascade.load(saved).doc("n1")["metadata"] == {"source": "test"}  # on disk, for every reader

        replaced = client.put("/documents", json={"docs": [{"id": "n1", "text": "plain words now"}]}, headers=AUTH)
        assert replaced.status_code == 200 and replaced.json()["documents"] == 42
        hits = client.post("/search", json={"query": "quasar nebula", "k": 3}, headers=AUTH).json()
        assert "n1" not in [h["id"] for h in hits["results"][0]["hits"]]

        gone = client.request("DELETE", "/documents", json={"ids": ["n2"]}, headers=AUTH).json()
        assert gone["documents"] == 41
        hits = client.post("/search", json={"query": "comets", "k": 10}, headers=AUTH).json()
        assert "n2" not in [h["id"] for h in hits["results"][0]["hits"]]

        missing = client.request("DELETE", "/documents", json={"ids": ["nope"]}, headers=AUTH)
        assert missing.status_code == 400 and "nope" in missing.json()["detail"]
        ignored = client.request("DELETE", "/documents", json={"ids": ["nope"], "missing": "ignore"}, headers=AUTH)
        assert ignored.status_code == 200 and ignored.json()["documents"] == 41
        again = client.post("/documents", json={"docs": [{"id": "d1", "text": "exists"}]}, headers=AUTH)
        assert again.status_code == 400 and "d1" in again.json()["detail"]


@pytest.mark.parametrize("method, body, field", [
    ("post", {"docs": []}, "body.docs"),
    ("post", {"docs": [{"text": "no id"}]}, "body.docs.0.id"),
    ("post", {"docs": [{"id": "x", "text": "t", "colour": "red"}]}, "body.docs.0.colour"),
    ("post", {"docs": [{"id": "x", "text": 3}]}, "body.docs.0.text"),
    ("delete", {"ids": []}, "body.ids"),
    ("delete", {"ids": ["a"], "missing": "sometimes"}, "body.missing"),
])
def test_bad_document_requests_are_422s(saved, method, body, field):
    with TestClient(build_app(ServeSpec(indexes=(str(saved),)))) as client:
        response = client.request(method.upper(), "/documents", json=body)
        assert response.status_code == 422 and response.json()["message"].startswith(field)
        assert client.get("/health").json()["pipelines"][0]["documents"] == 40


def test_a_config_corpus_is_read_only(tmp_path):
    with TestClient(app_over({"bm25": BM25() % 10}, corpus(10))) as client:
        response = client.post("/documents", json={"docs": [{"id": "z", "text": "new"}]})
        assert response.status_code == 400 and "cascade serve DIR" in response.json()["detail"]
        assert client.get("/health").json()["pipelines"][0]["writable"] is False


def test_folder_arguments(saved, tmp_path, capsys):
    assert cli_main(["serve", str(saved), "pipeline=bm25"]) == 2
    assert "give folders only" in capsys.readouterr().err
    assert cli_main(["serve", str(saved), "--pipeline", "bm25"]) == 2
    assert cli_main(["serve", str(tmp_path / "st")]) == 2  # a folder that is not a saved index
    assert "is not a cascade index" in capsys.readouterr().err
    assert cli_main(["serve", str(tmp_path / "absent")]) == 2
    assert "no such folder" in capsys.readouterr().err
