"""What ``cascade serve`` serves, picklable (:class:`ServeSpec`), and the app built from it, here and
on every Ray Serve replica (:mod:`cascade.app.serve_ray`)."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from cascade.app.serve_models import Limits
from cascade.app.serve_search import Searcher, Stats
from cascade.core.errors import ConfigError


@dataclass(frozen=True)
class ServeSpec:
    """Everything needed to build the served app again (picklable: each Ray Serve replica builds its own)."""

    overrides: tuple[str, ...] = ()
    pipelines: tuple[str, ...] = ()
    max_batch: int = 32
    max_wait_ms: float = 2.0
    token: str | None = None
    limits: Limits = field(default_factory=Limits)
    indexes: tuple[str, ...] = ()  # saved index folders (cascade serve DIR ...), instead of a config


def build_searchers(spec: ServeSpec, stats: Stats | None = None) -> list[Searcher]:
    """One bound pipeline per configured pipeline (the corpus loaded once when their datasets agree)."""
    from cascade.app.index_cmd import compose_config
    from cascade.app.runner import build_dataset, build_pipeline

    stats = stats or Stats()
    if spec.indexes:  # saved indexes: each one a ready pipeline over its own documents
        import cascade

        saved = [Searcher(Path(d).name, cascade.load(d), spec.max_batch, spec.max_wait_ms, stats)
                 for d in spec.indexes]
        if len({s.name for s in saved}) < len(saved):
            raise ConfigError(f"saved index folders must have different names, got {list(spec.indexes)}")
        return saved
    configs = [compose_config([*spec.overrides, f"pipeline={p}"]) for p in spec.pipelines] \
        or [compose_config(spec.overrides)]  # every config composed and checked before anything is built
    corpora: dict[str, object] = {}
    searchers: list[Searcher] = []
    for cfg in configs:
        logging.getLogger("cascade").setLevel(cfg.get("log_level", "INFO"))
        pipeline = build_pipeline(cfg)
        if any(s.name == pipeline.name for s in searchers):
            raise ConfigError(f"pipeline {pipeline.name!r} is configured twice; give each --pipeline once")
        key = OmegaConf.to_yaml(cfg.dataset) + str(cfg.get("max_queries"))
        if key not in corpora:
            corpora[key] = build_dataset(cfg).corpus
        bound = pipeline.index(corpora[key])
        searchers.append(Searcher(pipeline.name, bound, spec.max_batch, spec.max_wait_ms, stats))
    return searchers


def build_app(spec: ServeSpec):
    """The FastAPI app of ``spec``: its pipelines bound and batched (see :func:`cascade.app.serve.create_app`)."""
    from cascade.app.serve import create_app, import_fastapi

    import_fastapi()  # before any index is opened: a missing extra fails at once
    stats = Stats()
    return create_app(build_searchers(spec, stats), spec.token, spec.limits, stats)
