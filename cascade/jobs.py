"""One job of a sweep: resume it if already done, record it as failed without stopping the others.

Used by ``cascade run -m`` (:func:`cascade.cli.hydra_main`) under any Hydra launcher
(basic, joblib, Ray, submitit); the job's folder is ``cfg.paths.output_dir``.
"""
from __future__ import annotations

import json
import logging
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import yaml
from omegaconf import DictConfig, OmegaConf

from cascade.app import run
from cascade.cache import atomic_write_json, resolve_cache_dir
from cascade.errors import CascadeError

log = logging.getLogger(__name__)

ERROR_FILE = "error.json"
# config keys that do not change a job's results: where files live, logging, how the sweep is reported
IGNORED_KEYS = ("paths", "log_level", "sweep")
# keys ignored at any depth: where a stage keeps its cache does not change what it computes
IGNORED_ANYWHERE = ("cache_dir", "progress")


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in IGNORED_ANYWHERE}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def comparable(config: dict) -> dict:
    """``config`` without :data:`IGNORED_KEYS` (top level) and :data:`IGNORED_ANYWHERE` (any level),
    for deciding whether saved results are still valid."""
    return _strip({key: value for key, value in config.items() if key not in IGNORED_KEYS})


def finished(cfg: DictConfig, out: Path) -> dict | None:
    """The saved results in ``out`` if that job finished with the same config, else None."""
    if not (out / "metrics.json").is_file() or not (out / "config.yaml").is_file():
        return None
    try:
        saved = yaml.safe_load((out / "config.yaml").read_text(encoding="utf-8")) or {}
        current = OmegaConf.to_container(cfg, resolve=True)
        same = comparable(saved) == comparable(current)
    except Exception as err:  # an unreadable or unresolvable config: run the job again
        log.warning("cannot compare the config saved in %s (%s); running the job again", out, err)
        return None
    if not same:
        log.info("%s holds results of a different config; running the job again", out)
        return None
    result = {name: json.loads((out / f"{name}.json").read_text(encoding="utf-8"))
              for name in ("metrics", "stages", "summary") if (out / f"{name}.json").is_file()}
    return {**result, "output_dir": str(out), "status": "skipped"}


@contextmanager
def index_lock(cache_dir: str | None) -> Iterator[None]:
    """An exclusive lock on the cache while a job builds or loads its indexes.

    Parallel jobs (joblib, Ray, SLURM) take turns here, so the first builds each index or
    embedding matrix and the others load it instead of computing it again.
    """
    try:
        import fcntl
    except ImportError:  # no flock (Windows): jobs may build the same artifact twice, harmlessly
        yield
        return
    path = resolve_cache_dir(cache_dir) / "locks" / "index.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def record_failure(out: Path, err: BaseException) -> dict:
    """Write ``error.json`` (type, message, traceback) into the job folder and return it."""
    error = {"type": type(err).__name__, "message": str(err),
             "traceback": "".join(traceback.format_exception(type(err), err, err.__traceback__))}
    atomic_write_json(out / ERROR_FILE, error)
    return error


def run_sweep_job(cfg: DictConfig) -> dict:
    """Run one sweep job; never raises for a failing job.

    Returns :func:`cascade.app.run`'s result with ``status`` ``ok``, the saved one with
    ``skipped`` when ``sweep.resume`` and the folder already holds results of this config,
    or ``{"status": "failed", "error", "output_dir"}``.
    """
    out = Path(cfg.paths.output_dir)
    resume = OmegaConf.select(cfg, "sweep.resume", default=True)
    done = finished(cfg, out) if resume else None
    if done is not None:
        log.info("job %s already finished with this config; reusing its results", out.name)
        return done
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("metrics.json", ERROR_FILE):  # a rerun must not look finished until it is
        (out / stale).unlink(missing_ok=True)
    try:
        result = run(cfg, out, index_lock=index_lock(OmegaConf.select(cfg, "paths.cache_dir", default=None)))
    except Exception as err:
        error = record_failure(out, err)
        log.error("job %s failed: %s: %s", out.name, error["type"], error["message"],
                  exc_info=not isinstance(err, CascadeError))
        return {"status": "failed", "error": error, "output_dir": str(out)}
    return {**result, "status": "ok"}

