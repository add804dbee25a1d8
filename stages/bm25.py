"""BM25 over the whole corpus or over given candidates, with the bm25s or rank_bm25 backend."""
from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from cascade.core.candidates import Batch, Candidates
from cascade.core.data import Corpus
from cascade.core.errors import ConfigError, CorruptArtifactError
from cascade.core.stage import Stage
from cascade.core.timing import timed
from cascade.index import store
from cascade.kernels.dense import top_k_indices

log = logging.getLogger(__name__)

BACKENDS = ("bm25s", "rank_bm25")
RANK_BM25_VARIANTS = {"okapi": "BM25Okapi", "bm25l": "BM25L", "bm25plus": "BM25Plus"}


class Tokenizer:
    """Lowercase, drop stopwords, stem: the analysis shared by both backends."""

    def __init__(self, stemmer: str | None = "english", stopwords: str | list[str] | None = "en"):
        self.stemmer_name = stemmer
        self.stopwords = list(stopwords) if isinstance(stopwords, (list, tuple)) else stopwords
        self._stemmer = None
        if stemmer:
            import Stemmer  # PyStemmer, a dependency of cascade

            try:
                self._stemmer = Stemmer.Stemmer(stemmer)
            except KeyError:
                raise ConfigError(
                    f"unknown stemmer {stemmer!r}; use one of {Stemmer.algorithms()} or null"
                ) from None

    def settings(self) -> dict:
        return {"stemmer": self.stemmer_name, "stopwords": self.stopwords}

    def __call__(self, texts: list[str] | tuple[str, ...]) -> list[list[str]]:
        import bm25s

        return bm25s.tokenize(
            list(texts), stopwords=self.stopwords or [], stemmer=self._stemmer,
            return_ids=False, show_progress=False,
        )


class BM25(Stage):
    """BM25 ranking. Retrieves from the whole corpus when given no candidates.

    Args:
        k: how many documents to keep per query.
        backend: ``bm25s`` (fast sparse matrices, default) or ``rank_bm25``.
        k1, b: the usual BM25 parameters.
        method: bm25s scoring variant (``lucene``, ``robertson``, ``atire``, ``bm25l``, ``bm25+``).
        variant: rank_bm25 class (``okapi``, ``bm25l``, ``bm25plus``).
        delta, epsilon: BM25L/BM25+ delta and Okapi's idf floor.
        stemmer: a Snowball language (``english``) or None; stopwords: ``en``, a list, or None.
        cache_dir: where indexes are saved and reused.
    """

    def __init__(self, k: int | None = 1000, backend: str = "bm25s", k1: float = 1.5, b: float = 0.75,
                 method: str = "lucene", variant: str = "okapi", delta: float = 0.5, epsilon: float = 0.25,
                 stemmer: str | None = "english", stopwords: str | list[str] | None = "en",
                 cache_dir: str | None = None, fusion=None, name: str | None = None):
        super().__init__(k=k, fusion=fusion, name=name or "bm25")
        if backend not in BACKENDS:
            raise ConfigError(f"unknown BM25 backend {backend!r}; use one of {', '.join(BACKENDS)}")
        if variant not in RANK_BM25_VARIANTS:
            raise ConfigError(f"unknown rank_bm25 variant {variant!r}; use one of {', '.join(RANK_BM25_VARIANTS)}")
        self.backend, self.k1, self.b, self.method, self.variant = backend, k1, b, method, variant
        self.delta, self.epsilon, self.cache_dir = delta, epsilon, cache_dir
        self.tokenizer = Tokenizer(stemmer, stopwords)
        self._model: Any = None  # see the backend_model property
        self._doc_terms: Any = None  # scipy CSC (docs x vocab) for rank_bm25's "matches any term" mask
        self._vocab: dict[str, int] = {}
        # a saved index (cascade.saved) with deletions: the model's rows are the corpus rows _rows of _num_rows
        self._rows: np.ndarray | None = None
        self._num_rows = 0

    # --- indexing ---------------------------------------------------------------------
    def load(self, corpus: Corpus, artifacts: list) -> None:
        """Build (once, cached under a lock) or load the index for ``corpus``."""
        self._rows = None  # the model covers every row of ``corpus``
        settings = {"corpus": corpus.fingerprint, **self.tokenizer.settings()}
        if self.backend == "bm25s":
            settings.update(method=self.method, k1=self.k1, b=self.b, delta=self.delta)
            path = store.artifact_dir(self.cache_dir, "bm25s", **settings)
            self._model = self._load_bm25s(path, corpus, settings)
        else:
            path = store.artifact_dir(self.cache_dir, "tokens", **settings)
            self._model = self._load_rank_bm25(path, corpus, settings)
        self._path = path

    @property
    def backend_model(self) -> Any:
        """The backend model :meth:`load` built or opened (a ``bm25s.BM25``, or a rank_bm25 one)."""
        if self._model is None:
            raise ConfigError(f"{self.name}: no BM25 index is open; prepare the stage for a corpus first "
                              "(stage.index(corpus), or run it on a dataset)")
        return self._model

    @property
    def index_path(self) -> Path | None:
        """The folder of the cached index this stage loaded (None before :meth:`load`)."""
        return getattr(self, "_path", None)

    def index_info(self) -> dict:
        """Index size: bytes of the cached index files."""
        path = getattr(self, "_path", None)
        if path is None or not path.is_dir():
            return {}
        return {"index_bytes": sum(p.stat().st_size for p in path.iterdir() if p.is_file())}

    def _load_bm25s(self, path: Path, corpus: Corpus, settings: dict):
        import bm25s

        def build(tmp: Path) -> None:
            log.info("building bm25s index for %d docs in %s", len(corpus), path)
            model = bm25s.BM25(k1=self.k1, b=self.b, delta=self.delta, method=self.method)
            with _quiet_bm25s():
                model.index(_indexable(self.tokenizer(corpus.texts)), show_progress=False)
                model.save(tmp, show_progress=False)

        store.ensure(path, build, settings)
        with _quiet_bm25s():
            return bm25s.BM25.load(path, mmap=True, show_progress=False)

    def _load_rank_bm25(self, path: Path, corpus: Corpus, settings: dict):
        import rank_bm25
        from scipy import sparse

        def build(tmp: Path) -> dict:
            log.info("tokenizing %d docs into %s", len(corpus), path)
            return _save_tokens(tmp, _indexable(self.tokenizer(corpus.texts)))

        store.ensure(path, build, settings)
        tokens, vocab = _load_tokens(path)
        words = np.array(vocab, dtype=object)
        lists = [list(words[row]) for row in tokens]
        cls = getattr(rank_bm25, RANK_BM25_VARIANTS[self.variant])
        extra = {"epsilon": self.epsilon} if self.variant == "okapi" else {"delta": self.delta}
        self._vocab = {w: i for i, w in enumerate(vocab)}
        rows = np.repeat(np.arange(len(tokens)), [len(t) for t in tokens])
        cols = np.concatenate(tokens) if tokens else np.zeros(0, np.int64)
        self._doc_terms = sparse.csc_matrix((np.ones(len(cols), np.float32), (rows, cols)),
                                            shape=(len(tokens), max(len(vocab), 1)))
        return cls(lists, k1=self.k1, b=self.b, **extra)

    # --- scoring ------------------------------------------------------------------------
    def _full_scores(self, tokens: list[str]) -> np.ndarray:
        """Scores of every document (corpus row) for one tokenized query."""
        scores = np.asarray(self.backend_model.get_scores(tokens), dtype=np.float32)
        if self._rows is None:
            return scores
        full = np.zeros(self._num_rows, np.float32)
        full[self._rows] = scores
        return full

    def _matches(self, tokens: list[str], scores: np.ndarray) -> np.ndarray:
        """Which documents contain at least one query term."""
        if self.backend == "bm25s":
            return scores > 0
        ids = [self._vocab[t] for t in tokens if t in self._vocab]
        if not ids:
            return np.zeros(len(scores), bool)
        return np.asarray(self._doc_terms[:, ids].sum(axis=1)).ravel() > 0

    def retrieve(self, batch: Batch, k: int | None) -> Candidates:
        with timed("encode"):
            queries = self.tokenizer(batch.query_texts)
        rows_idx: list[np.ndarray] = []
        rows_sc: list[np.ndarray] = []
        allowed = batch.row_mask  # a filtered search, or a saved index's deletions: masked before the top k
        with timed("score"):
            for tokens in queries:
                if not tokens:
                    rows_idx.append(np.zeros(0, np.int64))
                    rows_sc.append(np.zeros(0, np.float32))
                    continue
                scores = self._full_scores(tokens)
                matches = self._matches(tokens, scores)
                hits = np.flatnonzero(matches if allowed is None else matches & allowed)
                if k is not None and len(hits) > k:
                    hits = hits[top_k_indices(scores[hits], k)]  # ties at the cutoff: lowest doc index
                rows_idx.append(hits)
                rows_sc.append(scores[hits])
        if not any(len(r) for r in rows_idx):
            return Candidates.empty(batch.num_queries)
        return Candidates.from_lists(rows_idx, rows_sc).topk(k)

    def score(self, batch: Batch) -> np.ndarray:
        with timed("encode"):
            queries = self.tokenizer(batch.query_texts)
        cands = batch.need_candidates()
        out = np.zeros(cands.doc_idx.shape, np.float32)
        with timed("score"):
            for row, tokens in enumerate(queries):
                if tokens:
                    out[row] = self._full_scores(tokens)[np.maximum(cands.doc_idx[row], 0)]
        return out

    # what extra_features adds (learned fusion checks models against it)
    feature_columns = ("terms_matched", "terms_frac", "term_max")

    def extra_features(self, batch: Batch, cands: Candidates) -> dict[str, np.ndarray]:
        """Query-term statistics of each candidate (:mod:`cascade.core.features`): how many distinct query
        terms it contains (``terms_matched``), that as a share of the query's terms (``terms_frac``) and
        the largest single term's BM25 contribution (``term_max``)."""
        shape = cands.doc_idx.shape
        matched, best = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
        frac = np.zeros(shape, np.float32)
        rows = np.maximum(cands.doc_idx, 0)
        for q, tokens in enumerate(self.tokenizer(batch.query_texts)):
            terms = list(dict.fromkeys(tokens))
            for term in terms:
                part = self._full_scores([term])[rows[q]]
                matched[q] += part != 0
                best[q] = np.maximum(best[q], part)
            frac[q] = matched[q] / max(len(terms), 1)
        return {"terms_matched": matched, "terms_frac": frac, "term_max": best}

    def __repr__(self) -> str:
        return f"BM25(k={self.k}, backend={self.backend!r})"


def _indexable(docs: list[list[str]]) -> list[list[str]]:
    """``docs`` (tokenized) as both backends can index them: when no document has a term (all empty or
    stopwords), the first holds the empty-string term, which no tokenized query has, so every score is 0."""
    return docs if any(docs) else [[""], *docs[1:]]


def _save_tokens(out: Path, docs: list[list[str]]) -> dict:
    """Write the tokenized corpus (ids, offsets, vocabulary) into ``out``; read by :func:`_load_tokens`."""
    vocab: dict[str, int] = {}
    ids = [vocab.setdefault(tok, len(vocab)) for doc in docs for tok in doc]
    offsets = np.cumsum([0] + [len(doc) for doc in docs])
    np.save(out / "token_ids.npy", np.asarray(ids, dtype=np.int64))
    np.save(out / "offsets.npy", offsets.astype(np.int64))
    (out / "vocab.json").write_text(json.dumps(list(vocab)), encoding="utf-8")
    return {"num_docs": len(docs), "vocab_size": len(vocab)}


def _load_tokens(path: Path) -> tuple[list[np.ndarray], list[str]]:
    meta = store.check(path)
    ids = np.load(path / "token_ids.npy", mmap_mode="r")
    offsets = np.load(path / "offsets.npy")
    vocab = json.loads((path / "vocab.json").read_text(encoding="utf-8"))
    if len(offsets) != meta.get("num_docs", -1) + 1 or offsets[-1] != len(ids) or len(vocab) != meta.get("vocab_size"):
        raise CorruptArtifactError(f"the token store at {path} is inconsistent; delete it and rebuild")
    return [np.asarray(ids[a:b]) for a, b in zip(offsets[:-1], offsets[1:])], vocab


@contextlib.contextmanager
def _quiet_bm25s():
    """bm25s logs '[bm25s][DEBUG] ...' lines at build and load; keep normal runs quiet."""
    logger = logging.getLogger("bm25s")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)
