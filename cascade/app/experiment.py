"""``cascade.Experiment``: several pipelines on one dataset, compared in one pandas DataFrame.

::

    import cascade
    from cascade.stages.bm25 import BM25
    from cascade.stages.biencoder import BiEncoder
    ds = cascade.load_beir("data/scifact")
    table = cascade.Experiment([BM25() % 100, BM25() % 1000 >> BiEncoder() % 100], ds,
                               ["nDCG@10", "R@100"], baseline=0, test="ttest", correction="holm")
    table.best_under(ms=5)          # the best pipeline within 5 ms/query, cross-validated over queries

One row per pipeline: each metric's mean, then against the baseline row ``delta_<metric>``,
``p_<metric>`` and ``p_holm_<metric>`` (paired tests of the per-query values, the sweep's
statistics: :mod:`cascade.app.significance`), ``ms_per_query``, and per stage its cutoff
``k_<stage>``, the recall of what it kept ``recall_<stage>`` (R@k, k its cutoff, as
:func:`cascade.core.evaluation.stage_report` gives) and ``ms_<stage>``.

A pipeline with an untrained learned stage (:class:`cascade.stages.ltr.LearnedFusion`, no model) is
reported only through query-fold cross-validation: features computed once, a model trained on k-1
folds scores the held-out fold (column ``evaluated``: ``5-fold CV``). A trained one that saw any of
the dataset's queries is refused before anything runs unless it was made with ``in_sample=True``;
its row then says ``in-sample``.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

try:
    import pandas as pd
except ImportError:  # pragma: no cover - depends on the environment
    raise ImportError('cascade.Experiment needs pandas: pip install pandas (or pip install "cascade-rerank")') from None

from cascade.app.significance import check_test, compare_to_baseline
from cascade.app.tune import Candidate, TuneResult, tune
from cascade.core.data import Dataset
from cascade.core.errors import ConfigError
from cascade.core.evaluation import DEFAULT_METRICS, parse_metrics, per_query, stage_report
from cascade.core.results import Run
from cascade.core.stage import Pipeline, Stage

log = logging.getLogger(__name__)


@dataclass
class ExperimentData:
    """What an experiment measured, kept with its table: per-query values, runs, timings, settings."""

    names: list[str]
    pipelines: list[Stage]
    metrics: list[str]
    per_query: dict[str, dict[str, dict[str, float]]]  # name -> metric -> query id -> value
    ms_per_query: dict[str, float]
    baseline: str | None
    test: str
    correction: str | None
    runs: dict[str, Run] = field(default_factory=dict, repr=False)


class ExperimentFrame(pd.DataFrame):
    """The DataFrame :func:`Experiment` returns; :meth:`best_under` tunes over its pipelines."""

    _metadata = ["experiment"]

    @property
    def _constructor(self) -> type:
        return ExperimentFrame

    def best_under(self, ms: float, metric: str | None = None, folds: int = 5, seed: int = 0) -> TuneResult:
        """The pipeline with the best ``metric`` (default: the first metric) within ``ms`` ms/query.

        Same procedure as ``cascade tune``: the choice on all queries (``.chosen``, its pipeline
        in ``.chosen.obj``) and the cross-validated quality of choosing (``.cv_value``, and
        ``.cv.delta`` / ``.cv.p_value`` against the baseline). All the experiment's pipelines take
        part, whatever rows this frame was narrowed to.
        """
        data: ExperimentData | None = getattr(self, "experiment", None)
        if data is None:
            raise ConfigError("best_under needs the frame cascade.Experiment returned (this one has lost its data)")
        if data.baseline is None:
            raise ConfigError("best_under tests the choice against the baseline: run Experiment with baseline=...")
        metric = metric or data.metrics[0]
        if metric not in data.metrics:
            raise ConfigError(f"metric {metric!r} was not measured; choose one of {', '.join(data.metrics)}")
        candidates = [Candidate(n, data.ms_per_query[n], data.per_query[n][metric], None, p)
                      for n, p in zip(data.names, data.pipelines)]
        base = candidates[data.names.index(data.baseline)]
        return tune(candidates, base, ms, folds, seed, data.test, metric)


def _names(pipelines: Sequence[Stage], names: Sequence[str] | None) -> list[str]:
    if names is None:
        out = [repr(p) for p in pipelines]
        return [n if out.count(n) == 1 else f"{n} #{i}" for i, n in enumerate(out)]
    names = [str(n) for n in names]
    if len(names) != len(pipelines):
        raise ConfigError(f"names has {len(names)} entries for {len(pipelines)} pipelines; give one name each")
    if len(set(names)) != len(names):
        raise ConfigError(f"names must be unique, got {names}")
    return names


def _baseline(baseline: int | str | None, names: list[str]) -> str | None:
    if baseline is None:
        return None
    if isinstance(baseline, str):
        if baseline not in names:
            raise ConfigError(f"baseline {baseline!r} is not one of the names {names}")
        return baseline
    if isinstance(baseline, bool) or not isinstance(baseline, int) or not -len(names) <= baseline < len(names):
        raise ConfigError(f"baseline must be a pipeline's position (0 to {len(names) - 1}) or name, got {baseline!r}")
    return names[baseline]


def _dataset(dataset: Any) -> Dataset:
    if isinstance(dataset, Dataset):
        return dataset
    if isinstance(dataset, (str, os.PathLike)):
        try:
            from cascade.core.sources import load_dataset
        except ImportError:
            pass
        else:
            return load_dataset(dataset)
    raise ConfigError(f"dataset must be a cascade Dataset (e.g. cascade.load_beir(path)), got "
                      f"{type(dataset).__name__}")


def _learned(pipe: Stage, ds: Dataset) -> str:
    """How a pipeline's learned stage is evaluated: "" (none), "cv", "held-out" or "in-sample"."""
    stages = [s for s in pipe.walk() if hasattr(s, "check_queries") and getattr(s, "wants_features", False)]
    if not stages:
        return ""
    if any(getattr(s, "ranker", None) is None for s in stages):
        return "cv"
    for s in stages:
        s.check_queries(ds.corpus, ds.query_ids)  # a ConfigError for in-sample scoring without in_sample=True
    return "in-sample" if any(getattr(s, "scored_in_sample", False) for s in stages) else "held-out"


def _stage_columns(stages: list[dict]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for row in stages:
        name, n = row["stage"], 2
        while f"k_{name}" in out:  # the same stage name twice in one pipeline
            name, n = f"{row['stage']}#{n}", n + 1
        out[f"k_{name}"] = row["k"]
        out[f"recall_{name}"] = row["recall"]
        out[f"ms_{name}"] = row["ms_per_query"]
    return out


def Experiment(pipelines: Sequence[Stage], dataset: Dataset, metrics: Sequence[str] = DEFAULT_METRICS,  # noqa: N802
               baseline: int | str | None = 0, test: str = "ttest", correction: str | None = "holm",
               names: Sequence[str] | None = None, folds: int = 5, seed: int = 0) -> ExperimentFrame:
    """Run each pipeline on ``dataset`` and compare them: one row per pipeline (see the module doc).

    ``baseline``: the position or name of the reference pipeline (None: no tests); ``test``:
    ``"ttest"`` or ``"randomization"``; ``correction``: ``"holm"`` (adjusted over the pipelines
    compared, per metric) or None. ``folds``/``seed``: the query folds of learned stages (see the module
    doc). Everything is checked before any pipeline runs.
    """
    if isinstance(pipelines, Stage) or not isinstance(pipelines, Sequence) or not pipelines:
        raise ConfigError("pipelines must be a non-empty list of stages or pipelines, e.g. [BM25() % 100, ...]")
    for p in pipelines:
        if not isinstance(p, Stage):
            raise ConfigError(f"every pipeline must be a cascade Stage or Pipeline, got {type(p).__name__}: {p!r}")
    metrics = [str(m) for m in ([metrics] if isinstance(metrics, str) else metrics)]
    if not metrics:
        raise ConfigError("metrics is empty; name at least one, e.g. ['nDCG@10', 'R@100']")
    parse_metrics(metrics)
    check_test(test, correction)
    labels = _names(pipelines, names)
    base = _baseline(baseline, labels)
    ds = _dataset(dataset)
    learned = {name: _learned(pipe, ds) for name, pipe in zip(labels, pipelines)}  # refuses in-sample before work
    data = ExperimentData(labels, list(pipelines), metrics, {}, {}, base, test, correction)
    rows: list[dict[str, Any]] = []
    for name, pipe in zip(labels, pipelines):
        if learned[name] == "cv":
            from cascade.stages.ltr import cross_validate

            run = cross_validate(pipe, ds, folds, seed).run
            learned[name] = f"{folds}-fold CV"
        else:
            run = (pipe if isinstance(pipe, Pipeline) else Pipeline([pipe])).run(ds)
        scores = per_query(run, ds.qrels, metrics)
        stages = stage_report(run, ds.qrels, metrics[0])
        data.runs[name], data.per_query[name] = run, scores
        data.ms_per_query[name] = sum(row["ms_per_query"] for row in stages)
        log.info("experiment: %s done, %.2f ms/query", name, data.ms_per_query[name])
        means = {m: (sum(v.values()) / len(v) if v else float("nan")) for m, v in scores.items()}
        rows.append({"name": name, **means, "_stages": stages})
    tests: dict[str, dict] = {}
    if base is not None:
        for m in metrics:
            others = {n: data.per_query[n][m] for n in labels if n != base}
            tests[m] = compare_to_baseline(data.per_query[base][m], others, test, correction)
    records: list[dict] = []
    stage_cols: dict[str, None] = {}
    for row in rows:
        name, stages = row["name"], row.pop("_stages")
        record = dict(row)
        for m in tests:
            result = tests[m].get(name)
            record[f"delta_{m}"] = result.delta if result is not None else float("nan")
            record[f"p_{m}"] = result.p_value if result is not None else float("nan")
            if correction is not None:
                adjusted = result.p_adjusted if result is not None else None
                record[f"p_{correction}_{m}"] = adjusted if adjusted is not None else float("nan")
        record["ms_per_query"] = data.ms_per_query[name]
        if any(learned.values()):  # a learned stage takes part: say how each row was evaluated
            record["evaluated"] = learned[name]
        head = list(record)  # the same for every row
        per_stage = _stage_columns(stages)
        stage_cols.update(dict.fromkeys(per_stage))
        record.update(per_stage)
        record["index_s"] = sum(r["index_s"] for r in stages)
        record["queries"] = len(next(iter(data.per_query[name].values()), {}))
        record["baseline"] = name == base
        records.append(record)
    columns = [*head, *stage_cols, "index_s", "queries", "baseline"]
    frame = ExperimentFrame(pd.DataFrame(records, columns=columns))
    frame.experiment = data
    return frame
