"""Readable, stable folder names for sweeps and their jobs, built from Hydra overrides.

``cascade run -m +experiment=cutoffs max_queries=50`` sweeps into ``multirun/cutoffs,max_queries=50``
and each job gets a folder named after the overrides that vary, e.g.
``pipeline=cascade,stage.bm25.k=300``. Running the same command again finds the same folders,
which is what lets a sweep resume.
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

_UNSAFE = re.compile(r"[^-\w.=,+%@]")
MAX_NAME = 120
EXPERIMENT_KEYS = ("experiment", "+experiment", "++experiment")


def safe_name(text: str, empty: str = "default") -> str:
    """``text`` as a folder name; a short hash is appended when characters were replaced or cut."""
    if not text:
        return empty
    clean = _UNSAFE.sub("_", text)
    if clean != text or len(clean) > MAX_NAME:
        digest = hashlib.sha256(text.encode()).hexdigest()[:8]
        clean = f"{clean[:MAX_NAME]}-{digest}"
    return clean


def split_experiment(overrides: Iterable[str]) -> tuple[str | None, list[str]]:
    """The experiment chosen by ``+experiment=NAME`` (or None) and the other overrides."""
    experiment, rest = None, []
    for line in overrides:
        key, _, value = str(line).partition("=")
        if key.strip() in EXPERIMENT_KEYS:
            experiment = value.strip()
        else:
            rest.append(str(line).strip())
    return experiment, rest


def sweep_name(overrides: Sequence[str]) -> str:
    """Folder name of a sweep: the experiment name, then the command line's other overrides.

    ``sweep.*`` settings (baseline, metric, test, resume) are left out: they change how the jobs
    are reported, not what they compute, so the same jobs are found (and resumed) under any of them.
    """
    experiment, rest = split_experiment(overrides)
    rest = [o for o in rest if not o.partition("=")[0].lstrip("+~").startswith("sweep.")]
    return safe_name(",".join(([experiment] if experiment else []) + rest), empty="sweep")


def raw_node(cfg: DictConfig, key: str) -> Any:
    """``cfg``'s ``key`` as typed, interpolations unresolved (None if absent): Hydra keeps the command
    line's overrides as strings, and one may hold an interpolation (``k='${x}'``) of a job's config."""
    node = OmegaConf.select(cfg, key, default=None, throw_on_resolution_failure=False)
    return OmegaConf.to_container(node, resolve=False) if isinstance(node, (DictConfig, ListConfig)) else node


def _sweep_dir_resolver(*, _root_: DictConfig) -> str:
    return sweep_name([str(o) for o in raw_node(_root_, "hydra.overrides.task") or []])


def register_resolvers() -> None:
    """``${cascade.sweep_name:}`` and ``${cascade.safe_name:TEXT}`` for conf/hydra/default.yaml."""
    OmegaConf.register_new_resolver("cascade.sweep_name", _sweep_dir_resolver, replace=True)
    OmegaConf.register_new_resolver("cascade.safe_name", lambda text="": safe_name(str(text)), replace=True)
