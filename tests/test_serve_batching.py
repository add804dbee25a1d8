"""Dynamic batching: concurrent requests merged into one pipeline call, each answered exactly as alone."""
from __future__ import annotations

import asyncio
import threading
import time

import pytest

from cascade.app.batching import Batcher
from cascade.core.errors import ConfigError

httpx = pytest.importorskip("httpx", reason='httpx is not installed: pip install -e ".[test]"')
pytest.importorskip("fastapi", reason='the serve extra is not installed: pip install -e ".[serve]"')
from serve_helpers import app_over, corpus, neural_pipeline, queries, same_ranking, tiny_models  # noqa: E402


async def _post_all(app, bodies: list[dict], concurrent: bool) -> list[dict]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://serve") as client:
        if concurrent:
            responses = await asyncio.gather(*(client.post("/search", json=b) for b in bodies))
        else:
            responses = [await client.post("/search", json=b) for b in bodies]
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses if r.status_code != 200]
    return [r.json() for r in responses]


def test_concurrent_answers_equal_sequential_answers(tmp_path):
    models = tiny_models(tmp_path / "models")
    app = app_over({"cascade": neural_pipeline(models)}, corpus(), max_batch=8, max_wait_ms=200)
    pipe = app.state.searchers["cascade"].target
    qs = queries(20)
    bodies = [{"query": q, "k": (1, 3, 10, 50)[i % 4]} for i, q in enumerate(qs)]
    bodies.insert(5, {"queries": qs[:3], "k": 7})  # a request of several queries rides in a batch too
    try:
        alone = asyncio.run(_post_all(app, bodies, concurrent=False))
        together = asyncio.run(_post_all(app, bodies, concurrent=True))
    finally:
        app.state.searchers["cascade"].close()
    assert all(a["batch"]["requests"] == 1 for a in alone)
    assert max(t["batch"]["requests"] for t in together) > 1  # requests were merged
    assert max(t["batch"]["queries"] for t in together) <= 8
    for body, a, t in zip(bodies, alone, together):
        assert len(a["results"]) == len(t["results"]) == len(body.get("queries", [None]))
        for ra, rt in zip(a["results"], t["results"]):
            assert ra["query"] == rt["query"]
            assert [h["id"] for h in ra["hits"]] == [h["id"] for h in rt["hits"]]
            assert [h["score"] for h in ra["hits"]] == [h["score"] for h in rt["hits"]]  # exactly
            assert [s["kept"] for s in ra["stages"]] == [s["kept"] for s in rt["stages"]]
            assert len(rt["hits"]) <= body["k"]
            assert same_ranking(rt["hits"], pipe.search(rt["query"], k=body["k"]))


class Recorder:
    """A fake searcher: records each call's queries; its result for a query is (query, k)."""

    def __init__(self, fail_on: str | None = None, delay: float = 0.0):
        self.calls: list[list[str]] = []
        self.fail_on, self.delay = fail_on, delay
        self.gate, self.entered = threading.Event(), threading.Event()
        self.gate.set()

    def __call__(self, queries, k):
        self.entered.set()  # the worker holds a batch: what is submitted now queues
        self.gate.wait(10)
        time.sleep(self.delay)
        self.calls.append(list(queries))
        if self.fail_on in queries:
            raise RuntimeError(f"failed on {self.fail_on}")
        return [(q, k) for q in queries], {"calls": len(self.calls)}


def cut(result, k):
    return (result[0], min(result[1], k))


def test_batches_never_exceed_max_batch_and_a_large_request_runs_alone():
    run = Recorder()
    run.gate.clear()  # hold the worker so that everything below queues up
    batcher = Batcher(run, cut, max_batch=4, max_wait_ms=50)
    first = batcher.submit(["hold"], 1)
    assert run.entered.wait(10)
    futures = [batcher.submit([f"q{i}"], 10 + i) for i in range(6)] + [batcher.submit(["a", "b", "c", "d", "e"], 3)]
    run.gate.set()
    results = [f.result(10) for f in futures]
    assert first.result(10)[0] == [("hold", 1)]
    assert [r[0] for r in results[:6]] == [[(f"q{i}", 10 + i)] for i in range(6)]  # each its own k
    assert results[6][0] == [(q, 3) for q in "abcde"]
    assert run.calls[1:] == [["q0", "q1", "q2", "q3"], ["q4", "q5"], ["a", "b", "c", "d", "e"]]
    assert results[0][2].requests == 4 and results[0][2].queries == 4 and results[6][2].requests == 1
    batcher.close()


def test_max_batch_one_runs_requests_one_at_a_time_in_order():
    run = Recorder()
    run.gate.clear()
    batcher = Batcher(run, cut, max_batch=1, max_wait_ms=50)
    futures = [batcher.submit([f"q{i}"], 5) for i in range(5)]
    run.gate.set()
    assert [f.result(10)[0] for f in futures] == [[(f"q{i}", 5)] for i in range(5)]
    assert run.calls == [[f"q{i}"] for i in range(5)]
    batcher.close()


def test_a_failed_batch_fails_its_requests_and_the_worker_goes_on():
    run = Recorder(fail_on="bad")
    run.gate.clear()
    batcher = Batcher(run, cut, max_batch=8, max_wait_ms=50)
    hold = batcher.submit(["hold"], 1)
    assert run.entered.wait(10)
    bad, good = batcher.submit(["bad"], 1), batcher.submit(["good"], 1)
    run.gate.set()
    hold.result(10)
    for future in (bad, good):  # they rode in the same batch
        with pytest.raises(RuntimeError, match="failed on bad"):
            future.result(10)
    assert batcher.submit(["after"], 2).result(10)[0] == [("after", 2)]
    batcher.close()


def test_close_answers_what_is_queued_then_refuses():
    run = Recorder(delay=0.01)
    batcher = Batcher(run, cut, max_batch=2, max_wait_ms=0)
    futures = [batcher.submit([f"q{i}"], 1) for i in range(7)]
    batcher.close()
    assert [f.result(0)[0] for f in futures] == [[(f"q{i}", 1)] for i in range(7)]
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit(["late"], 1)


@pytest.mark.parametrize("settings", [{"max_batch": 0}, {"max_batch": 2.5}, {"max_wait_ms": -1},
                                      {"max_wait_ms": "5"}])
def test_bad_settings_are_refused(settings):
    with pytest.raises(ConfigError):
        Batcher(Recorder(), cut, **settings)


def test_merged_batches_run_neural_passes_one_query_at_a_time():
    """The worker runs each merged call inside solo_passes (encoders see one query per pass)."""
    from cascade.core.passes import solo_passes_active

    seen = []

    def run(queries, k):
        seen.append(solo_passes_active())
        return [(q, k) for q in queries], {}

    batcher = Batcher(run, cut, max_batch=4, max_wait_ms=50)
    try:
        futures = [batcher.submit([f"q{i}"], 3) for i in range(6)]
        assert [f.result(10)[0] for f in futures] == [[(f"q{i}", 3)] for i in range(6)]
    finally:
        batcher.close()
    assert seen and all(seen)
    assert not solo_passes_active()  # only inside the worker's call
