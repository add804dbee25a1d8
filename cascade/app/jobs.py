"""One job of a sweep: resume it if already done, record it as failed without stopping the others.

Used by ``cascade run -m`` (:func:`cascade.app.cli.hydra_main`) under any Hydra launcher
(basic, joblib, Ray, submitit); the job's folder is ``cfg.paths.output_dir``.
"""
from __future__ import annotations

import json
import logging
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from cascade.app.runner import (
    INPUTS_FILE,
    RESULT_FILES,
    Built,
    RunResult,
    Summary,
    inputs_fingerprint,
    run,
)
from cascade.core.errors import CascadeError
from cascade.core.files import atomic_write_json

log = logging.getLogger(__name__)

ERROR_FILE = "error.json"
# config keys that do not change a job's results: where files live, logging, how the sweep is reported
IGNORED_KEYS = ("paths", "log_level", "sweep")
# keys ignored at any depth: where a stage keeps its cache does not change what it computes
IGNORED_ANYWHERE = ("cache_dir", "progress")


@dataclass(frozen=True)
class JobOutcome:
    """One sweep job's outcome: ``ok``, ``skipped`` (reused saved results) or ``failed``."""

    status: str
    output_dir: str
    result: RunResult | None = None
    error: dict | None = None

    @property
    def metrics(self) -> dict[str, float]:
        return self.result.metrics if self.result is not None else {}


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


def finished(cfg: DictConfig, out: Path, built: Built | None = None) -> JobOutcome | None:
    """The saved results in ``out`` if that job finished with the same config and the same inputs.

    Inputs are the dataset's corpus, queries and qrels fingerprints and the models' content
    identities (``inputs.json``), so a job whose data or model changed runs again. ``built``: where
    the dataset and pipeline are built (kept for the run when the job must run again).
    """
    if not all((out / name).is_file() for name in ("metrics.json", "config.yaml", INPUTS_FILE)):
        return None
    try:
        saved = yaml.safe_load((out / "config.yaml").read_text(encoding="utf-8")) or {}
        current = OmegaConf.to_container(cfg, resolve=True)
        assert isinstance(current, dict)  # a DictConfig's container is a dict
        same = comparable(saved) == comparable(current)
    except Exception as err:  # an unreadable or unresolvable config: run the job again
        log.warning("cannot compare the config saved in %s (%s); running the job again", out, err)
        return None
    if not same:
        log.info("%s holds results of a different config; running the job again", out)
        return None
    try:
        saved_inputs = json.loads((out / INPUTS_FILE).read_text(encoding="utf-8"))
        built = Built(cfg) if built is None else built
        now = inputs_fingerprint(built.dataset, built.pipeline)
    except (OSError, ValueError) as err:
        log.warning("cannot compare the inputs of %s (%s); running the job again", out, err)
        return None
    if saved_inputs != now:
        changed = sorted(k for k in set(saved_inputs) | set(now) if saved_inputs.get(k) != now.get(k))
        log.info("%s: the job's inputs changed (%s); running it again", out, ", ".join(changed))
        return None
    try:
        result = RunResult(json.loads((out / "metrics.json").read_text(encoding="utf-8")),
                           json.loads((out / "stages.json").read_text(encoding="utf-8")), str(out),
                           Summary.from_dict(json.loads((out / "summary.json").read_text(encoding="utf-8"))))
    except (OSError, ValueError) as err:
        log.warning("cannot read the results saved in %s (%s); running the job again", out, err)
        return None
    return JobOutcome("skipped", str(out), result)


def record_failure(out: Path, err: BaseException) -> dict:
    """Write ``error.json`` (type, message, traceback) into the job folder and return it."""
    error = {"type": type(err).__name__, "message": str(err),
             "traceback": "".join(traceback.format_exception(type(err), err, err.__traceback__))}
    atomic_write_json(out / ERROR_FILE, error)
    return error


def run_sweep_job(cfg: DictConfig, checked: bool = False) -> JobOutcome:
    """Run one sweep job; never raises for a failing job.

    ``ok``: it ran; ``skipped``: ``sweep.resume`` found results of the same config and inputs
    in its folder; ``failed``: the error is in the outcome and in the folder's ``error.json``.
    ``checked``: the caller has checked ``cfg``'s targets (``cascade run``'s config loader did).
    """
    out = Path(cfg.paths.output_dir)
    resume = OmegaConf.select(cfg, "sweep.resume", default=True)
    built = None
    try:
        built = Built(cfg, checked)  # targets checked once; what the resume check builds, the run reuses
        done = finished(cfg, out, built) if resume else None
    except Exception as err:  # e.g. a config that no longer builds: the run below reports it
        log.debug("resume check of %s failed: %s", out, err)
        done = None
    if done is not None:
        log.info("job %s already finished with this config and inputs; reusing its results", out.name)
        return done
    out.mkdir(parents=True, exist_ok=True)
    for stale in (*RESULT_FILES, ERROR_FILE):  # a rerun leaves nothing of the old results, even if it fails
        (out / stale).unlink(missing_ok=True)
    try:
        result = run(cfg, out, built)
    except Exception as err:
        error = record_failure(out, err)
        log.error("job %s failed: %s: %s", out.name, error["type"], error["message"],
                  exc_info=not isinstance(err, CascadeError))
        return JobOutcome("failed", str(out), None, error)
    return JobOutcome("ok", str(out), result)

