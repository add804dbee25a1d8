"""A configured run: build dataset and pipeline from config, run, evaluate, save.

``run(cfg)`` is a plain function (tests call it directly); ``cascade run`` wraps it
with ``@hydra.main`` in :mod:`cascade.app.cli`.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from cascade.app.targets import check_targets
from cascade.core.data import Dataset
from cascade.core.errors import CascadeError, ConfigError
from cascade.core.evaluation import evaluate, parse_metrics, per_query, stage_report
from cascade.core.files import atomic_write_json, atomic_write_text
from cascade.core.results import write_trec_run
from cascade.core.stage import Pipeline, Stage, check_positive
from cascade.encoders.models import model_identity

log = logging.getLogger(__name__)

INPUTS_FILE = "inputs.json"
RESULT_FILES = ("config.yaml", INPUTS_FILE, "stages.json", "per_query.json", "run.trec", "summary.json",
                "metrics.json")


@dataclass(frozen=True)
class Summary:
    """``summary.json``: what a run was, and its totals."""

    dataset: str
    queries: int
    metrics: dict[str, float]
    ms_per_query: float
    index_s: float

    @classmethod
    def from_dict(cls, data: dict) -> Summary:
        return cls(str(data.get("dataset", "")), int(data.get("queries", 0)), dict(data.get("metrics", {})),
                   float(data.get("ms_per_query", 0.0)), float(data.get("index_s", 0.0)))


@dataclass(frozen=True)
class RunResult:
    """What a configured run produced: metrics, per-stage rows, its folder and summary."""

    metrics: dict[str, float]
    stages: list[dict]
    output_dir: str
    summary: Summary
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def build(node: Any, what: str) -> Any:
    """``hydra.utils.instantiate`` with errors that name the config node and the fix."""
    try:
        return instantiate(node)
    except InstantiationException as err:
        cause = err.__cause__
        while isinstance(cause, InstantiationException) and cause.__cause__ is not None:
            cause = cause.__cause__
        if isinstance(cause, CascadeError):
            raise type(cause)(f"{what}: {cause}") from None
        message = " ".join(str(err).split())  # whole, on one line
        if "Error locating target" in message:
            raise ConfigError(
                f"{what}: {message} - the _target_ must be an importable 'module.Class' "
                "(e.g. cascade.stages.bm25.BM25); check the spelling and that the package is installed"
                f"{_cause_chain(err.__cause__)}"
            ) from None
        raise ConfigError(f"{what}: could not be built from its config: {message}"
                          f"{_cause_chain(cause if cause is not None else None)}") from None


def _cause_chain(err: BaseException | None) -> str:
    """`` (caused by: Type: message; ...)``: an exception's cause chain, whole, on one line."""
    parts, seen = [], set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if not isinstance(err, InstantiationException):
            parts.append(f"{type(err).__name__}: {' '.join(str(err).split())}")
        err = err.__cause__ or err.__context__
    return f" (caused by: {'; '.join(parts)})" if parts else ""


class Built:
    """What a config builds (dataset, pipeline, engine), each built on first use and then kept.

    Every ``_target_`` of ``cfg`` is checked once, when this is made (:mod:`cascade.app.targets`),
    never per object; a resumed sweep job that must run again reuses what its resume check built.
    """

    def __init__(self, cfg: DictConfig, checked: bool = False):
        if not checked:  # checked: the caller checked this very config (cascade run's loader, cascade index)
            check_targets(cfg)
        self.cfg = cfg

    @functools.cached_property
    def dataset(self) -> Dataset:
        dataset = build(self.cfg.dataset, "dataset")
        limit = check_positive(self.cfg.get("max_queries"), "max_queries", null_means="all queries")
        return dataset if limit is None else dataset.subset(limit)

    @functools.cached_property
    def pipeline(self) -> Pipeline:
        pipeline = build(self.cfg.pipeline, "pipeline")
        if not isinstance(pipeline, Stage):
            raise ConfigError(f"pipeline: built a {type(pipeline).__name__}, expected a cascade Stage or Pipeline")
        return pipeline if isinstance(pipeline, Pipeline) else Pipeline([pipeline])

    @functools.cached_property
    def engine(self) -> Any:
        """The corpus-encoding engine of ``cfg.encoding`` (None when the config has none: encode locally)."""
        node = self.cfg.get("encoding")
        return None if node is None else build(node, "encoding")


def build_dataset(cfg: DictConfig) -> Dataset:
    """The configured dataset (``max_queries`` applied), its targets checked first."""
    return Built(cfg).dataset


def build_pipeline(cfg: DictConfig) -> Pipeline:
    """The configured pipeline, its targets checked first."""
    return Built(cfg).pipeline


def build_engine(cfg: DictConfig) -> Any:
    """The corpus-encoding engine of ``cfg.encoding`` (None: encode locally), its targets checked first."""
    return Built(cfg).engine


def _digest(items: Any) -> str:
    return hashlib.sha256(json.dumps(items, sort_keys=True, default=str).encode()).hexdigest()[:16]


def inputs_fingerprint(dataset: Dataset, pipeline: Pipeline) -> dict:
    """What a run read, by content: corpus, queries and qrels fingerprints, each model's identity."""
    models = {}
    for stage in pipeline.leaves():
        model = getattr(stage, "model", None)
        if isinstance(model, str):
            models[stage.name] = model_identity(model)
    return {"corpus": dataset.corpus.fingerprint,
            "queries": _digest(list(zip(dataset.query_ids, dataset.query_texts))),
            "qrels": _digest(dataset.qrels), "models": models}


def run(cfg: DictConfig, output_dir: str | Path | None = None, built: Built | None = None) -> RunResult:
    """Run the configured pipeline on the configured dataset and save the results.

    Every ``_target_`` is checked against the allow-list (:mod:`cascade.app.targets`) and every
    metric name is parsed before anything is built. Writes :data:`RESULT_FILES` into
    ``output_dir`` (default ``cfg.paths.output_dir``); ``built``: what a caller already built from
    ``cfg`` (a sweep job's resume check). ``metrics.json`` (metric name -> mean
    value) comes last. Index builds are locked per artifact, so concurrent runs share them.
    """
    out = Path(output_dir if output_dir is not None else cfg.paths.output_dir)
    built = Built(cfg) if built is None else built  # every target checked, nothing built yet
    metric_names = [str(m) for m in cfg.metrics]
    if not metric_names:
        raise ConfigError("metrics is empty; name at least one, e.g. metrics=[nDCG@10,R@100]")
    parse_metrics(metric_names)  # reject a bad metric name before any work
    pipeline, engine, dataset = built.pipeline, built.engine, built.dataset
    result = pipeline.run(dataset, engine=engine)
    metrics = evaluate(result, dataset.qrels, metric_names)
    stages = stage_report(result, dataset.qrels)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    atomic_write_json(out / INPUTS_FILE, inputs_fingerprint(dataset, pipeline))
    atomic_write_json(out / "stages.json", stages)
    atomic_write_json(out / "per_query.json", per_query(result, dataset.qrels, metric_names))
    write_trec_run(result, out / "run.trec", tag=str(cfg.pipeline.get("name", "cascade")))
    summary = Summary(dataset.name, len(dataset.query_ids), metrics,
                      sum(row["ms_per_query"] for row in stages), sum(row["index_s"] for row in stages))
    atomic_write_json(out / "summary.json", asdict(summary))
    atomic_write_json(out / "metrics.json", metrics)  # written last: its presence marks a finished run
    return RunResult(metrics, stages, str(out), summary)
