"""`cascade serve`'s app: /search and /rerank answer as pipe.search and pipe.rerank do, with the stage
trace; bad input is a 422 naming the field before any work; the token; /stats; stage failures."""
from __future__ import annotations

import pytest

pytest.importorskip("fastapi", reason='the serve extra is not installed: pip install -e ".[serve]"')
from fastapi.testclient import TestClient  # noqa: E402

import cascade  # noqa: E402
from cascade.app.serve import Limits  # noqa: E402
from cascade.core.errors import DataError  # noqa: E402
from cascade.stages.bm25 import BM25  # noqa: E402

from serve_helpers import app_over, corpus, neural_pipeline, queries, same_ranking, tiny_models  # noqa: E402

DOCS = corpus()


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CASCADE_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        models = tiny_models(tmp_path_factory.mktemp("models"))
        yield app_over({"cascade": neural_pipeline(models), "bm25": BM25() % 10}, DOCS)


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app) as c:
        yield c


def bound(app, name: str = "cascade"):
    return app.state.searchers[name].target


def test_search_equals_pipe_search_with_stage_trace(app, client):
    pipe = bound(app)
    for query in queries(3):
        traced = pipe.run(cascade.Batch((query,), pipe._search_corpus)).stages
        for k in (1, 10, 50):
            body = client.post("/search", json={"query": query, "k": k}).json()
            assert body["pipeline"] == "cascade"
            (result,) = body["results"]
            assert result["query"] == query
            assert same_ranking(result["hits"], pipe.search(query, k=k))
            assert [s["stage"] for s in result["stages"]] == ["bm25", "biencoder", "colbert"]
            assert [s["k"] for s in result["stages"]] == [60, 20, 10]
            assert [s["kept"] for s in result["stages"]] == [int((t.candidates.doc_idx >= 0).sum()) for t in traced]
            assert all(s["ms"] > 0 for s in result["stages"]) and body["ms"] > 0


def test_queries_list_and_pipeline_choice(app, client):
    qs = queries(5)
    body = client.post("/search", json={"queries": qs, "k": 4}).json()
    assert [r["query"] for r in body["results"]] == qs
    for result, ranking in zip(body["results"], bound(app).search(qs, k=4)):
        assert same_ranking(result["hits"], ranking)
    body = client.post("/search", json={"query": qs[0], "k": 5, "pipeline": "bm25"}).json()
    assert body["pipeline"] == "bm25" and [s["stage"] for s in body["results"][0]["stages"]] == ["bm25"]
    assert same_ranking(body["results"][0]["hits"], bound(app, "bm25").search(qs[0], k=5))


def test_rerank_equals_pipe_rerank(app, client):
    docs = list(DOCS.values())[:15]
    for k in (None, 3):
        body = client.post("/rerank", json={"query": "cat gene virus", "docs": docs, "k": k}).json()
        expected = bound(app).rerank("cat gene virus", docs, k=k)
        assert same_ranking(body["hits"], expected)
        assert [h["index"] for h in body["hits"]] == expected.indices
    named = {f"x{i}": t for i, t in enumerate(docs)}
    body = client.post("/rerank", json={"query": "river", "docs": named, "pipeline": "bm25"}).json()
    assert same_ranking(body["hits"], bound(app, "bm25").rerank("river", named))
    assert all(h["id"].startswith("x") for h in body["hits"])


def test_health_page_and_docs(client):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["auth"] is False
    assert [p["name"] for p in health["pipelines"]] == ["cascade", "bm25"]
    assert health["pipelines"][0]["stages"] == [{"name": "bm25", "k": 60}, {"name": "biencoder", "k": 20},
                                                {"name": "colbert", "k": 10}]
    assert health["pipelines"][0]["documents"] == len(DOCS)
    page = client.get("/")
    assert page.status_code == 200 and 'id="query"' in page.text and "/static/app.js" in page.text
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/docs").status_code == 200
    schema = client.get("/openapi.json").json()
    assert {"/search", "/rerank", "/health", "/stats"} <= set(schema["paths"])


BAD_SEARCH = [
    ({"k": 3}, "body: Value error, give exactly one of 'query'"),
    ({"query": "a", "queries": ["b"]}, "give exactly one of"),
    ({"query": ""}, "body.query: String should have at least 1 character"),
    ({"query": "   "}, "body.query: String should match pattern"),
    ({"query": "x" * 2001}, "body.query: String should have at most 2000 characters"),
    ({"queries": []}, "body.queries: List should have at least 1 item"),
    ({"queries": ["ok", ""]}, "body.queries.1: String should have at least 1 character"),
    ({"queries": ["q"] * 65}, "body.queries: List should have at most 64 items"),
    ({"queries": "not a list"}, "body.queries: Input should be a valid list"),
    ({"query": 5}, "body.query: Input should be a valid string"),
    ({"query": "x", "k": 0}, "body.k: Input should be greater than or equal to 1"),
    ({"query": "x", "k": -3}, "body.k: Input should be greater than or equal to 1"),
    ({"query": "x", "k": 1001}, "body.k: Input should be less than or equal to 1000"),
    ({"query": "x", "k": "3"}, "body.k: Input should be a valid integer"),
    ({"query": "x", "k": 2.5}, "body.k: Input should be a valid integer"),
    ({"query": "x", "k": True}, "body.k: Input should be a valid integer"),
    ({"query": "x", "pipeline": "nope"}, "body.pipeline: Input should be 'cascade' or 'bm25'"),
    ({"query": "x", "top_k": 3}, "body.top_k: Extra inputs are not permitted"),
]
BAD_RERANK = [
    ({"docs": ["a"]}, "body.query: Field required"),
    ({"query": "q"}, "body.docs: Field required"),
    ({"query": "q", "docs": []}, "body.docs"),
    ({"query": "q", "docs": "one text"}, "body.docs"),
    ({"query": "q", "docs": ["a"] * 1001}, "body.docs"),
    ({"query": "q", "docs": ["a", 3]}, "body.docs"),
    ({"query": "q", "docs": ["a"], "k": 0}, "body.k: Input should be greater than or equal to 1"),
]


@pytest.mark.parametrize("path, body, message", [("/search", b, m) for b, m in BAD_SEARCH]
                         + [("/rerank", b, m) for b, m in BAD_RERANK])
def test_bad_input_is_a_422_naming_the_field_before_any_work(app, client, path, body, message):
    before = app.state.stats.snapshot()["counts"]
    response = client.post(path, json=body)
    assert response.status_code == 422, response.text
    assert message in response.json()["message"]
    after = app.state.stats.snapshot()["counts"]
    assert [after.get(f"batches.{n}") for n in ("cascade", "bm25")] == \
           [before.get(f"batches.{n}") for n in ("cascade", "bm25")]  # no pipeline ran
    assert client.post("/search", json={"query": "cat", "k": 2}).status_code == 200  # still serving


def test_malformed_json_and_wrong_method(client):
    response = client.post("/search", content=b'{"query": "cat", ', headers={"content-type": "application/json"})
    assert response.status_code == 422 and response.json()["message"].startswith("body: invalid JSON")
    assert client.get("/search").status_code == 405


def test_limits_follow_the_settings(tmp_path):
    app = app_over({"bm25": BM25() % 10}, DOCS, limits=Limits(max_k=5, max_queries=2))
    with TestClient(app) as c:
        assert c.post("/search", json={"query": "cat", "k": 5}).status_code == 200
        assert "less than or equal to 5" in c.post("/search", json={"query": "cat", "k": 6}).json()["message"]
        assert "at most 2 items" in c.post("/search", json={"queries": ["a", "b", "c"]}).json()["message"]
        assert c.get("/health").json()["limits"]["max_k"] == 5


def test_token_protects_search_rerank_and_stats(tmp_path):
    app = app_over({"bm25": BM25() % 10}, DOCS, token="s3cret")
    good, wrong = {"Authorization": "Bearer s3cret"}, {"Authorization": "Bearer nope"}
    with TestClient(app) as c:
        for method, path, body in [("post", "/search", {"query": "cat"}),
                                   ("post", "/rerank", {"query": "cat", "docs": ["a cat", "a dog"]}),
                                   ("get", "/stats", None)]:
            call = getattr(c, method)
            kwargs = {"json": body} if body is not None else {}
            for headers in ({}, wrong, {"Authorization": "s3cret"}):
                response = call(path, headers=headers, **kwargs)
                assert response.status_code == 401, (path, headers)
                assert "Bearer" in response.json()["detail"] and response.headers["www-authenticate"] == "Bearer"
            assert call(path, headers=good, **kwargs).status_code == 200
        assert c.get("/health").json()["auth"] is True
        assert c.get("/").status_code == 200 and c.get("/docs").status_code == 200


def test_stats_count_requests_latency_and_batches(tmp_path):
    app = app_over({"bm25": BM25() % 10}, DOCS)
    with TestClient(app) as c:
        for q in queries(7):
            assert c.post("/search", json={"query": q, "k": 3}).status_code == 200
        assert c.post("/search", json={"queries": queries(3), "k": 3}).status_code == 200
        c.post("/search", json={"query": "x", "k": 0})
        stats = c.get("/stats").json()
    counts, latency = stats["counts"], stats["latency"]
    assert counts["requests./search"] == 9 and counts["status.200"] == 8 and counts["status.422"] == 1
    assert counts["batches.bm25"] == 8
    request = latency["request_ms.search.bm25"]
    assert request["n"] == 8 and 0 < request["p50"] <= request["p95"] <= request["p99"] <= request["max"]
    assert latency["batch_queries.bm25"]["n"] == 8 and latency["batch_queries.bm25"]["max"] == 3
    assert latency["batch_queries.bm25"]["mean"] == pytest.approx(10 / 8)
    assert latency["stage_ms.bm25.bm25"]["n"] == 8 and latency["queue_ms.bm25"]["n"] == 8


@pytest.mark.parametrize("error, status", [(RuntimeError("kernel exploded"), 500), (DataError("bad query"), 400)])
def test_a_stage_failure_is_that_requests_error(tmp_path, error, status):
    @cascade.apply(per_query=True)
    def fragile(query, doc_ids, texts, scores):
        if "boom" in query:
            raise error
        return scores

    app = app_over({"fragile": BM25() % 10 >> fragile % 5}, DOCS)
    with TestClient(app) as c:
        response = c.post("/search", json={"query": "boom cat"})
        assert response.status_code == status and str(error) in response.json()["detail"]
        assert c.post("/search", json={"query": "cat"}).status_code == 200
        assert c.post("/rerank", json={"query": "boom", "docs": ["a", "b"]}).status_code == status
        assert c.post("/rerank", json={"query": "cat", "docs": ["a cat", "b"]}).status_code == 200
