"""Base class of stages that encode the corpus with a neural model into cached views."""
from __future__ import annotations

from typing import Iterable, Sequence

from cascade.corpus_encoding import CorpusView, build_views
from cascade.data import Corpus
from cascade.stage import Stage


def leaf_stages(stages: Iterable[Stage]) -> list[Stage]:
    """The stages of a pipeline with nested pipelines expanded."""
    out: list[Stage] = []
    for stage in stages:
        inner = getattr(stage, "stages", None)
        out.extend(leaf_stages(inner) if inner is not None else [stage])
    return out


class EncoderStage(Stage):
    """A stage whose index is one or more :class:`CorpusView` built by an encoder pass over the corpus.

    Inside a pipeline, the first such stage to be prepared builds the missing views
    of every encoder stage in the pipeline, so stages sharing a model (and its
    settings) encode each document once (see :func:`cascade.corpus_encoding.build_views`).
    """

    chunk_size: int = 256
    progress: bool = True

    def corpus_views(self, corpus: Corpus) -> list[CorpusView]:
        """The cached artifacts this stage needs for ``corpus``."""
        raise NotImplementedError

    def load(self, corpus: Corpus, views: list[CorpusView]) -> None:
        """Open the finished views (memory-mapped)."""
        raise NotImplementedError

    def index_together(self, corpus: Corpus, peers: Sequence[Stage]) -> None:
        views = [v for p in leaf_stages(peers) if isinstance(p, EncoderStage) for v in p.corpus_views(corpus)]
        build_views(views, corpus, self.chunk_size, self.progress)

    def index(self, corpus: Corpus) -> None:
        views = self.corpus_views(corpus)
        build_views(views, corpus, self.chunk_size, self.progress)
        self.load(corpus, views)
