"""Shared pieces of the serve tests: a tiny corpus, a BM25 >> bi-encoder >> ColBERT pipeline of tiny
random models, and an app over it."""
from __future__ import annotations

import random
import socket
from contextlib import contextmanager
from pathlib import Path

import cascade
from cascade.app.serve import Limits, create_app
from cascade.app.serve_search import Searcher, Stats
from cascade.stages.biencoder import BiEncoder
from cascade.stages.bm25 import BM25
from cascade.stages.colbert import ColBERT
from cascade.testing import tiny_colbert_ai, tiny_sentence_transformer

WORDS = ("cat dog bird fish river mountain protein cell gene virus bacteria climate ocean star galaxy "
         "enzyme membrane receptor insulin neuron").split()


def corpus(n: int = 120, seed: int = 0) -> dict[str, str]:
    rng = random.Random(seed)
    return {f"d{i}": " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 30))) for i in range(n)}


def queries(n: int = 24, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 8))) for _ in range(n)]


def tiny_models(folder: Path) -> tuple[str, str]:
    return str(tiny_sentence_transformer(folder / "st")), str(tiny_colbert_ai(folder / "colbert"))


def neural_pipeline(models: tuple[str, str]) -> cascade.Pipeline:
    st, cb = models
    return (BM25() % 60 >> BiEncoder(model=st, progress=False, fusion="zscore") % 20
            >> ColBERT(model=cb, progress=False, fusion="zscore") % 10)


def app_over(pipelines: dict[str, cascade.Stage], docs, token=None, limits=Limits(), **batching):
    """A FastAPI app serving ``pipelines`` (name -> unbound pipeline), each bound to ``docs``."""
    stats = Stats()
    searchers = [Searcher(name, pipe.index(docs), stats=stats, **batching) for name, pipe in pipelines.items()]
    return create_app(searchers, token, limits, stats)


def same_ranking(hits: list[dict], ranking) -> bool:
    """Whether served hits equal a Ranking exactly: ids, scores, texts and ranks 1..n."""
    return ([h["id"] for h in hits] == ranking.doc_ids and [h["score"] for h in hits] == ranking.scores
            and [h["text"] for h in hits] == ranking.texts
            and [h["rank"] for h in hits] == list(range(1, len(ranking) + 1)))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def uvicorn_thread(app, port: int):
    """Serve ``app`` with a real uvicorn on 127.0.0.1:``port`` in a thread; stop it after."""
    import threading
    import time

    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
