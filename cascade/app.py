"""A configured run: build dataset and pipeline from config, run, evaluate, save.

``run(cfg)`` is a plain function (tests call it directly); ``cascade run`` wraps it
with ``@hydra.main`` in :mod:`cascade.cli`.
"""
from __future__ import annotations

import logging
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from cascade.cache import atomic_write_json, atomic_write_text
from cascade.data import Dataset
from cascade.errors import CascadeError, ConfigError
from cascade.evaluation import evaluate, parse_metrics, per_query, stage_report
from cascade.run import write_trec_run
from cascade.stage import Pipeline, Stage, check_positive

log = logging.getLogger(__name__)

RESULT_FILES = ("config.yaml", "stages.json", "per_query.json", "run.trec", "summary.json", "metrics.json")


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
        message = str(err).strip().splitlines()[0]
        if "Error locating target" in message:
            raise ConfigError(
                f"{what}: {message} - the _target_ must be an importable 'module.Class' "
                "(e.g. stages.bm25.BM25); check the spelling and that the package is installed"
            ) from None
        raise ConfigError(f"{what}: could not be built from its config: {message}") from None


def build_dataset(cfg: DictConfig) -> Dataset:
    dataset = build(cfg.dataset, "dataset")
    limit = check_positive(cfg.get("max_queries"), "max_queries", null_means="all queries")
    if limit is not None:
        dataset = dataset.subset(limit)
    return dataset


def build_pipeline(cfg: DictConfig) -> Pipeline:
    pipeline = build(cfg.pipeline, "pipeline")
    if not isinstance(pipeline, Stage):
        raise ConfigError(f"pipeline: built a {type(pipeline).__name__}, expected a cascade Stage or Pipeline")
    return pipeline if isinstance(pipeline, Pipeline) else Pipeline([pipeline])


def run(cfg: DictConfig, output_dir: str | Path | None = None,
        index_lock: AbstractContextManager | None = None) -> dict:
    """Run the configured pipeline on the configured dataset and save the results.

    Writes :data:`RESULT_FILES` into ``output_dir`` (default ``cfg.paths.output_dir``);
    ``metrics.json`` (metric name -> mean value) comes last. ``index_lock``, if given, is
    held while the stages build or load their indexes (parallel sweep jobs take turns).
    Returns ``{"metrics", "stages", "output_dir", "summary"}``.
    """
    out = Path(output_dir if output_dir is not None else cfg.paths.output_dir)
    metric_names = [str(m) for m in cfg.metrics]
    parse_metrics(metric_names)  # reject a bad metric name before any work
    pipeline = build_pipeline(cfg)
    dataset = build_dataset(cfg)
    index_s = [0.0] * len(pipeline.stages)
    if index_lock is not None:
        with index_lock:
            index_s = pipeline.index_seconds(dataset.corpus)
    result = pipeline.run(dataset)
    metrics = evaluate(result, dataset.qrels, metric_names)
    stages = stage_report(result, dataset.qrels)
    for row, seconds in zip(stages, index_s):  # indexes prepared under the lock: count that time
        row["index_s"] += seconds
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    atomic_write_json(out / "stages.json", stages)
    atomic_write_json(out / "per_query.json", per_query(result, dataset.qrels, metric_names))
    write_trec_run(result, out / "run.trec", tag=str(cfg.pipeline.get("name", "cascade")))
    summary = {"dataset": dataset.name, "queries": len(dataset.query_ids), "metrics": metrics,
               "ms_per_query": sum(row["ms_per_query"] for row in stages),
               "index_s": sum(row["index_s"] for row in stages)}
    atomic_write_json(out / "summary.json", summary)
    atomic_write_json(out / "metrics.json", metrics)  # written last: its presence marks a finished run
    return {"metrics": metrics, "stages": stages, "output_dir": str(out), "summary": summary}
