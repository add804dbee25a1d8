"""The HTTP app of ``cascade serve``: search, rerank, health, statistics, and a search page at ``/``.

:func:`create_app` takes one or more :class:`~cascade.app.serve_search.Searcher` (bound pipelines
behind a batcher) and returns a FastAPI app. Request bodies are pydantic models whose limits
come from :class:`Limits`, so bad input is refused with a 422 naming the field before any work.
With a token set, ``/search``, ``/rerank``, ``/stats`` and the write endpoints (``/documents``: add,
replace, delete, for a saved index) need ``Authorization: Bearer TOKEN``; ``/``, ``/health`` and
the OpenAPI docs (``/docs``) stay open. FastAPI and uvicorn are the
optional extra ``serve``, imported here only. (No ``from __future__ import annotations``: FastAPI
reads the endpoints' annotations, which name the models :func:`~cascade.app.serve_models.models` makes.)
"""
import asyncio
import hmac
import logging
import os
import time
from collections.abc import Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from cascade.app.serve_models import Limits, models
from cascade.app.serve_search import Answer, Searcher, Stats
from cascade.core.errors import CascadeError

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")
INSTALL_HINT = 'pip install "cascade-rerank[serve]" (from a checkout: pip install -e ".[serve]")'


def import_fastapi():
    """The ``fastapi`` module (uvicorn checked too), or a CascadeError saying how to install them."""
    try:
        import fastapi
        import uvicorn  # noqa: F401 - needed to serve; checked before any index is opened
    except ImportError:
        raise CascadeError(
            f"cascade serve needs FastAPI and uvicorn, which are not installed: {INSTALL_HINT}"
        ) from None
    return fastapi


def _hits(ranking) -> list[dict]:
    return [{"id": h.doc_id, "score": h.score, "text": h.text, "rank": h.rank, "index": h.index} for h in ranking]


def _result(answer: Answer, trace: list[dict]) -> dict:
    kept = answer.kept or (None,) * len(trace)
    return {"query": answer.ranking.query, "hits": _hits(answer.ranking),
            "stages": [{**row, "kept": n} for row, n in zip(trace, kept)]}


def _describe(error: dict) -> str:
    """``body.k: Input should be ...``: one validation error, its field first."""
    loc = [str(p) for p in error.get("loc", ())]
    if error.get("type") == "json_invalid":  # loc is ("body", character position)
        return f"body: invalid JSON at character {loc[-1] if len(loc) > 1 else '?'}"
    return f"{'.'.join(loc)}: {error.get('msg')}"


def _error(err: BaseException):
    """The HTTPException for a failure inside a pipeline: 400 for bad input the stages refuse, else 500."""
    from fastapi import HTTPException

    if isinstance(err, (CascadeError, NotImplementedError)):
        return HTTPException(400, detail=str(err))
    log.exception("request failed", exc_info=err)
    return HTTPException(500, detail=f"{type(err).__name__}: {err}")


def create_app(searchers: Sequence[Searcher], token: str | None = None, limits: Limits = Limits(),
               stats: Stats | None = None):
    """A FastAPI app over ``searchers`` (the first is the default pipeline); see the module docstring."""
    fastapi = import_fastapi()
    from fastapi import Depends, FastAPI, HTTPException, Request
    from fastapi.encoders import jsonable_encoder
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse
    from fastapi.staticfiles import StaticFiles
    from starlette.concurrency import run_in_threadpool

    import cascade

    if not searchers:
        raise CascadeError("cascade serve needs at least one pipeline")
    by_name = {s.name: s for s in searchers}
    if len(by_name) != len(searchers):
        raise CascadeError(f"pipeline names must differ, got {[s.name for s in searchers]}")
    stats = stats or searchers[0].stats
    m = models(limits, list(by_name))

    @asynccontextmanager
    async def lifespan(app):
        yield
        for searcher in searchers:  # answer what is queued, then stop the workers
            await run_in_threadpool(searcher.close)

    app = FastAPI(title="cascade", version=cascade.__version__, lifespan=lifespan,
                  description="Multi-stage cascade search: BM25 >> bi-encoder >> ColBERT >> cross-encoder.")
    app.state.searchers, app.state.stats = by_name, stats

    def authorize(request: Request) -> None:
        if token is None:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            raise HTTPException(401, detail="missing or wrong token: send the header 'Authorization: Bearer TOKEN'",
                                headers={"WWW-Authenticate": "Bearer"})

    protected = writers = [Depends(authorize)]  # with a token set: every endpoint but the page, /health, /docs

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        errors = jsonable_encoder(exc.errors(), exclude={"input", "url", "ctx"})
        message = "; ".join(_describe(e) for e in errors)
        stats.count("invalid")
        return JSONResponse({"detail": errors, "message": message}, status_code=422)

    @app.middleware("http")
    async def count(request: Request, call_next):
        response = await call_next(request)
        stats.count(f"requests.{request.url.path}")
        stats.count(f"status.{response.status_code}")
        return response

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Whether the server is up, its pipelines (the first is the default) and whether a token is needed."""
        return {"status": "ok", "version": cascade.__version__, "auth": token is not None, "pid": os.getpid(),
                "pipelines": [s.describe() for s in searchers],
                "limits": {k: getattr(limits, k) for k in limits.__dataclass_fields__}}

    @app.post("/search", response_model=m.SearchResponse, dependencies=protected)
    async def search(body: m.SearchRequest):  # type: ignore[name-defined]  # m: models built at runtime
        """The top ``k`` documents per query, with each stage's candidates kept and milliseconds."""
        start = time.perf_counter()
        searcher = by_name[body.pipeline or searchers[0].name]
        queries = [body.query] if body.query is not None else list(body.queries)
        try:
            answers, trace, info = await asyncio.wrap_future(searcher.submit(queries, body.k))
        except Exception as err:  # noqa: BLE001 - a stage failure is this request's error, not the server's
            raise _error(err) from None
        ms = 1000 * (time.perf_counter() - start)
        stats.add(f"request_ms.search.{searcher.name}", ms)
        return {"pipeline": searcher.name, "results": [_result(a, trace) for a in answers], "ms": ms,
                "batch": {"queries": info.queries, "requests": info.requests, "queue_ms": 1000 * info.wait_s,
                          "run_ms": 1000 * info.run_s}}

    @app.post("/rerank", response_model=m.RerankResponse, dependencies=protected)
    async def rerank(body: m.RerankRequest):  # type: ignore[name-defined]  # m: models built at runtime
        """``docs`` ranked for ``query`` by the pipeline's stages (nothing cached); hits keep their ``index``."""
        start = time.perf_counter()
        searcher = by_name[body.pipeline or searchers[0].name]
        try:
            ranking = await run_in_threadpool(searcher.rerank, body.query, body.docs, body.k)
        except Exception as err:  # noqa: BLE001
            raise _error(err) from None
        ms = 1000 * (time.perf_counter() - start)
        stats.add(f"request_ms.rerank.{searcher.name}", ms)
        return {"pipeline": searcher.name, "query": body.query, "hits": _hits(ranking), "ms": ms}

    async def write(op: str, pipeline: str | None, changed: int, **kwargs: Any) -> dict[str, Any]:
        start = time.perf_counter()
        searcher = by_name[pipeline or searchers[0].name]
        try:
            state = await run_in_threadpool(searcher.write, op, **kwargs)
        except Exception as err:  # noqa: BLE001
            raise _error(err) from None
        return {"pipeline": searcher.name, "changed": changed, "ms": 1000 * (time.perf_counter() - start), **state}

    def _docs(body) -> list[dict]:
        return [d.model_dump(exclude_none=True) for d in body.docs]

    @app.post("/documents", response_model=m.WriteResponse, dependencies=writers)
    async def add_documents(body: m.AddRequest):  # type: ignore[name-defined]  # m: models built at runtime
        """Add documents to the saved index (``cascade serve DIR``); searches see them from the next batch."""
        return await write("add", body.pipeline, len(body.docs), docs=_docs(body))

    @app.put("/documents", response_model=m.WriteResponse, dependencies=writers)
    async def update_documents(body: m.AddRequest):  # type: ignore[name-defined]  # m: models built at runtime
        """Replace documents of the saved index by these versions (same ids)."""
        return await write("update", body.pipeline, len(body.docs), docs=_docs(body))

    @app.delete("/documents", response_model=m.WriteResponse, dependencies=writers)
    async def delete_documents(body: m.DeleteRequest):  # type: ignore[name-defined]  # m: models built at runtime
        """Delete documents of the saved index by id."""
        return await write("delete", body.pipeline, len(body.ids), ids=list(body.ids), missing=body.missing)

    @app.get("/stats", dependencies=protected)
    async def get_stats() -> dict[str, Any]:
        """Request counts; p50/p95/p99 (ms) of requests, queueing and each stage; queries and requests per batch."""
        return stats.snapshot()

    log.info("cascade serve: pipelines %s (fastapi %s)", list(by_name), fastapi.__version__)
    return app
