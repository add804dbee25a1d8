"""Learned fusion: a ranker trained on judgments that scores candidates from the features earlier stages recorded.

::

    from cascade.stages.ltr import LearnedFusion
    base = BM25() % 1000 >> BiEncoder(fusion=...) % 100 >> ColBERT(k=None, fusion=...)
    ltr = LearnedFusion(k=10, kind="linear").fit(base, train_set)   # needs qrels
    ltr.save_model("fusion.json")
    run = (base >> LearnedFusion(k=10, model="fusion.json"))(test_set)

The stage asks the pipeline to record feature columns (:mod:`cascade.core.features`), so its input
candidates carry every earlier stage's score, z-score and rank, document length, BM25's query-term
statistics and ColBERT's per-query-token maxima; the model (:mod:`cascade.stages.ltr_models`) turns
them into this stage's score. A model remembers the queries it was trained on; scoring any of them
again is refused unless ``in_sample=True`` (then the log says "in-sample"), and
:func:`cross_validate` gives the honest figure: each query scored by a model trained on the other folds.
"""
from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cascade.core.candidates import Batch, Candidates
from cascade.core.data import Dataset
from cascade.core.errors import ConfigError, DataError
from cascade.core.evaluation import make_folds
from cascade.core.features import record_features, sequence
from cascade.core.results import Run, StageTrace
from cascade.core.stage import Pipeline, Stage
from cascade.stages import ltr_models
from cascade.stages.ltr_models import Ranker

log = logging.getLogger(__name__)


def query_keys(corpus: Any, query_ids) -> list[str]:
    """What a model records of its training queries: the corpus fingerprint's hash and each query id."""
    tag = hashlib.sha1(str(corpus.fingerprint).encode()).hexdigest()[:12]
    return [f"{tag}:{q}" for q in query_ids]


class LearnedFusion(Stage):
    """Scores candidates with a trained ranker over their feature columns; keeps the top ``k``.

    Args:
        k: documents kept per query.
        model: path of a saved model (``.json``; see :meth:`save_model`); None: untrained until :meth:`fit`.
        kind: what :meth:`fit` trains: ``lambdamart`` (LightGBM, the ``ltr`` extra) or ``linear``
            (pairwise logistic loss, numpy/scipy only); a loaded model keeps its own kind.
        params: training settings (LightGBM's ``n_estimators``, ``learning_rate``...; linear: ``l2``).
        in_sample: allow scoring queries the model was trained on (the figures are then in-sample).
        name: the stage's name.
    """

    wants_features = True

    def __init__(self, k: int | None = 10, model: str | None = None, kind: str = "lambdamart",
                 params: dict | None = None, in_sample: bool = False, name: str | None = None):
        super().__init__(k=k, name=name or "ltr")
        if not isinstance(in_sample, bool):
            raise ConfigError(f"{self.name}.in_sample must be true or false, got {in_sample!r}")
        self.params, self.in_sample = dict(params or {}), in_sample
        self.ranker: Ranker | None = ltr_models.load(model) if model else None
        self.kind = self.ranker.kind if self.ranker else ltr_models.check_kind(kind)
        self.scored_in_sample = False

    @property
    def features(self) -> list[str]:
        """The feature columns the model reads, in order (empty until trained)."""
        return list(self.ranker.features) if self.ranker else []

    # --- training -------------------------------------------------------------------------
    def fit(self, pipeline: Stage, dataset: Dataset) -> LearnedFusion:
        """Train on the candidates ``pipeline`` (the stages before this one) gives ``dataset``'s judged queries."""
        base = before_learned(pipeline)
        judged = check_judged(dataset, "fit")
        run = collect(base, dataset)
        keep = [i for i, q in enumerate(run.query_ids) if q in judged]
        self.fit_candidates(run, dataset, keep)
        return self

    def fit_candidates(self, run: Run, dataset: Dataset, rows: list[int] | None = None) -> LearnedFusion:
        """Train on ``run``'s recorded candidates (only query ``rows``; None: all), judged by ``dataset.qrels``."""
        cands = run.candidates
        rows = list(range(cands.num_queries)) if rows is None else list(rows)
        names = list(cands.feature_names)
        if not names:
            raise ConfigError("the candidates carry no feature columns: collect them with cascade.stages.ltr.collect "
                              "(features are recorded only while a learned stage or fit asks for them)")
        x, y, groups = training_rows(cands, run, dataset.qrels, rows, names)
        qids = [run.query_ids[i] for i in rows]
        self.ranker = ltr_models.train(self.kind, x, y, groups, names, query_keys(dataset.corpus, qids), self.params)
        return self

    def save_model(self, path: str | Path) -> Path:
        """Write the trained model (JSON with the feature list; LambdaMART's LightGBM text model beside it)."""
        if self.ranker is None:
            raise ConfigError(f"{self.name} is not trained; call fit(pipeline, dataset) first")
        return ltr_models.save(self.ranker, path)

    def importances(self) -> dict[str, float]:
        """Feature importances of the trained model (trees: total gain; linear: |standardized weight|)."""
        if self.ranker is None:
            raise ConfigError(f"{self.name} is not trained; call fit(pipeline, dataset) first")
        return self.ranker.importances()

    # --- scoring ----------------------------------------------------------------------------
    def check_queries(self, corpus: Any, query_ids) -> None:
        """Refuse queries the model was trained on unless ``in_sample``; sets :attr:`scored_in_sample`."""
        if self.ranker is None or not query_ids:
            return
        seen = set(self.ranker.trained_on).intersection(query_keys(corpus, query_ids))
        if seen and not self.in_sample:
            raise ConfigError(f"{self.name}: the model was trained on {len(seen)} of these {len(query_ids)} queries; "
                              "scoring them gives in-sample figures. Cross-validate (cascade.stages.ltr.cross_validate "
                              "or cascade.Experiment), train on other queries, or set in_sample=true to allow it")
        if seen:
            self.scored_in_sample = True
            log.warning("%s: in-sample: the model was trained on %d of these %d queries", self.name, len(seen),
                        len(query_ids))

    def score(self, batch: Batch) -> np.ndarray:
        if self.ranker is None:
            raise ConfigError(f"{self.name} has no model: set model= to a saved model file, or call "
                              "fit(pipeline, dataset) first")
        self.check_queries(batch.corpus, batch.query_ids)
        cands = batch.candidates
        assert cands is not None, "a reranking stage is scored on candidates (Stage.__call__ retrieves first)"
        x = feature_matrix(cands, self.ranker.features, self.name)
        out = np.full(cands.doc_idx.shape, -np.inf, np.float32)
        out[cands.mask] = self.ranker.predict(x)
        return out

    def __repr__(self) -> str:
        return f"LearnedFusion(k={self.k}, kind={self.kind!r})"


def check_judged(dataset: Any, what: str) -> set[str]:
    """The dataset's query ids that have judgments; a DataError before any work when there are none."""
    if not isinstance(dataset, Dataset):
        raise ConfigError(f"{what} needs a cascade Dataset with qrels (e.g. cascade.load_beir(path)), got "
                          f"{type(dataset).__name__}")
    judged = {q for q in dataset.query_ids if dataset.qrels.get(q)}
    if not judged:
        raise DataError(f"dataset {dataset.name!r} has no qrels (relevance judgments) for its queries; {what} learns "
                        "from judgments: load a split that has them (qrels/<split>.tsv)")
    return judged


def before_learned(pipeline: Stage) -> Pipeline:
    """The stages of ``pipeline`` before its learned stage (all of them when it has none)."""
    if not isinstance(pipeline, Stage):
        raise ConfigError(f"fit needs the pipeline whose candidates it learns from, got {type(pipeline).__name__}")
    stages = sequence(pipeline)
    cut = next((i for i, s in enumerate(stages) if isinstance(s, LearnedFusion)), len(stages))
    if cut == 0:
        raise ConfigError("the learned stage needs earlier stages to give it candidates, e.g. BM25() % 1000 >> ...")
    return Pipeline(stages[:cut], name="features")


def collect(pipeline: Stage, dataset: Dataset, engine: Any = None) -> Run:
    """Run ``pipeline`` over ``dataset`` with feature columns recorded (compute once, reuse for every fold)."""
    base = pipeline if isinstance(pipeline, Pipeline) else Pipeline([pipeline])
    with record_features():
        return base.run(dataset, engine)


def feature_matrix(cands: Candidates, names: list[str], owner: str = "ltr") -> np.ndarray:
    """(valid candidates, F) rows of columns ``names``; ConfigError for a missing column, DataError for NaN."""
    missing = [n for n in names if n not in cands.feature_names]
    if missing:
        raise ConfigError(f"{owner}: the model reads feature columns {missing} that the pipeline does not record "
                          f"(it records {list(cands.feature_names) or 'none'}); the model was trained on another "
                          "pipeline: retrain it on this one, or run the pipeline it was trained on")
    cols = [cands.feature_names.index(n) for n in names]
    if cands.features is None:  # no column recorded at all (and the model names none)
        return np.zeros((int(cands.mask.sum()), 0), np.float32)
    x = cands.features[cands.mask][:, cols]
    bad = np.isnan(x)
    if bad.any():
        worst = [names[j] for j in np.flatnonzero(bad.any(0))]
        raise DataError(f"{owner}: {int(bad.sum())} feature values of real candidates are NaN (columns {worst}); "
                        "a stage recorded NaN for a document it scored - check that stage's scores")
    return x


def _rows(features: np.ndarray | None, rows: list[int]) -> np.ndarray | None:
    """The feature columns of query ``rows`` (None: the candidates record none)."""
    return None if features is None else features[rows]


def training_rows(cands: Candidates, run: Run, qrels: dict, rows: list[int], names: list[str]):
    """Rows ``x``, relevance ``y`` and query ``groups`` of the candidates of query rows ``rows``."""
    sub = Candidates(cands.doc_idx[rows], cands.scores[rows], _rows(cands.features, rows), cands.feature_names)
    x = feature_matrix(sub, names, "fit")
    q_of, k_of = np.nonzero(sub.mask)
    y = np.array([qrels.get(run.query_ids[rows[q]], {}).get(run.doc_ids[sub.doc_idx[q, k]], 0)
                  for q, k in zip(q_of, k_of)], np.float64)
    return x, np.maximum(y, 0), np.asarray(rows)[q_of]


@dataclass(frozen=True)
class CrossValidation:
    """Held-out rankings of every query, from models that never saw it, and what they cost."""

    run: Run  # final candidates: each query ranked by its fold's model
    folds: tuple[tuple[str, ...], ...]
    models: tuple[LearnedFusion, ...]
    predict_seconds: float  # the learned stage's own time over all queries (feature gather + predict + top k)


def cross_validate(pipeline: Stage, dataset: Dataset, folds: int | list = 5, seed: int = 0,
                   kind: str | None = None, params: dict | None = None, k: int | None = None,
                   collected: Run | None = None) -> CrossValidation:
    """Query-fold cross-validation of the learned stage of ``pipeline`` (or one appended to it).

    Features are computed once (``collected``: reuse a :func:`collect` run); each fold's model is
    trained on the other folds' judged queries and scores the held-out ones.
    """

    learned = next((s for s in sequence(pipeline) if isinstance(s, LearnedFusion)), None)
    kind = kind or (learned.kind if learned else "lambdamart")
    params = params if params is not None else (learned.params if learned else {})
    k = k if k is not None else (learned.k if learned else 10)
    name = learned.name if learned else "ltr"
    judged = check_judged(dataset, "cross-validation")
    run = collected if collected is not None else collect(before_learned(pipeline), dataset)
    qids = [q for q in run.query_ids if q in judged]
    parts = make_folds(qids, folds, seed) if isinstance(folds, int) else [tuple(p) for p in folds]
    row_of = {q: i for i, q in enumerate(run.query_ids)}
    cands = run.candidates
    scores = np.full(cands.doc_idx.shape, -np.inf, np.float32)
    models, seconds = [], 0.0
    for i, held in enumerate(parts):
        train = [row_of[q] for j, p in enumerate(parts) if j != i for q in p]
        model = LearnedFusion(k=k, kind=kind, params=params, name=name).fit_candidates(run, dataset, train)
        test = [row_of[q] for q in held]
        batch = Batch(tuple(run.query_ids[r] for r in test), dataset.corpus,
                      Candidates(cands.doc_idx[test], cands.scores[test], _rows(cands.features, test),
                                 cands.feature_names),
                      tuple(run.query_ids[r] for r in test))
        start = time.perf_counter()
        scores[test] = model.score(batch)
        seconds += time.perf_counter() - start
        models.append(model)
    start = time.perf_counter()
    scored = [row_of[q] for p in parts for q in p]
    final = Candidates(cands.doc_idx[scored], scores[scored], _rows(cands.features, scored),
                       cands.feature_names).topk(k)
    seconds += time.perf_counter() - start
    ids = tuple(run.query_ids[r] for r in scored)
    trace = tuple(StageTrace(t.name, t.k, Candidates(t.candidates.doc_idx[scored], t.candidates.scores[scored]),
                             t.seconds, t.phases, t.index_seconds, t.index_info) for t in run.stages)
    trace += (StageTrace(name, k, final, seconds, {"score": seconds}),)
    log.info("%s: %d-fold cross-validation over %d queries", name, len(parts), len(ids))
    return CrossValidation(Run(ids, run.doc_ids, final, trace), tuple(parts), tuple(models), seconds)


def recorded_columns(stages: list[Stage]) -> list[str] | None:
    """The feature columns ``stages`` record, known before they run; None when a stage's are not known."""
    from cascade.stages.biencoder import BiEncoder
    from cascade.stages.bm25 import BM25
    from cascade.stages.colbert import ColBERT
    from cascade.stages.cross_encoder import CrossEncoder

    names: list[str] = []
    for stage in stages:  # a stage retrieves only first; later ones rescore (and fuse)
        if not isinstance(stage, (BM25, BiEncoder, ColBERT, CrossEncoder)):
            return None
        names += [] if names else ["doc.length"]
        names += [f"{stage.name}.{c}" for c in ("score", "z", "rank")]
        retrieving = stage is stages[0]  # the first stage retrieves: nothing to fuse with
        names += [f"{stage.name}.fused"] if stage.fusion is not None and not retrieving else []
        names += [f"{stage.name}.{c}" for c in getattr(stage, "feature_columns", ())]
    return names


def check_pipeline(pipeline: Stage) -> None:
    """Before any work: a ConfigError when a trained learned stage reads columns its earlier stages never record."""
    stages = sequence(pipeline)
    for i, stage in enumerate(stages):
        if isinstance(stage, LearnedFusion) and stage.ranker is not None:
            known = recorded_columns(stages[:i])
            missing = [] if known is None else [f for f in stage.features if f not in known]
            if missing:
                raise ConfigError(f"{stage.name}: the model's feature list does not match the pipeline: it reads "
                                  f"{missing}, which the stages before it ({', '.join(s.name for s in stages[:i])}) do "
                                  f"not record (they record {known}); retrain the model on this pipeline")


def learned_pipeline(stages: list[Stage], name: str = "pipeline", k: int | None = None,
                     fusion: bool = True) -> Pipeline:
    """A :class:`~cascade.core.stage.Pipeline` whose learned stage's model is checked against its stages first
    (``pipeline=cascade_ltr`` builds this)."""
    pipe = Pipeline(list(stages), k=k, name=name, fusion=fusion)
    check_pipeline(pipe)
    return pipe
