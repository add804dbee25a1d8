"""The Hydra callback of ``cascade run -m``: names the sweep's folders and writes its report at the end.

Configured in ``conf/hydra/default.yaml``. At the start of a multirun it fixes the sweep folder
(an absolute path, so jobs on other processes or machines write into the same one) and names
job folders after the overrides that vary; at the end it writes ``results.csv``,
``results.md`` and the plot with :func:`cascade.app.sweep.write_report`, and hands the summary
to the command line through the file named by ``report_file``.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from cascade.app.naming import EXPERIMENT_KEYS, raw_node, register_resolvers
from cascade.core.files import atomic_write_json

log = logging.getLogger(__name__)
register_resolvers()  # ${cascade.sweep_name:} and ${cascade.safe_name:...}, wherever jobs are configured


# environment variables set for every job from this process's config, so that workers started
# elsewhere (joblib, a Ray cluster, SLURM) use the same cache and data folders
PINNED_ENV = {"CASCADE_CACHE_DIR": "paths.cache_dir", "CASCADE_DATA_DIR": "paths.data_dir"}


def constant_keys(config: DictConfig) -> list[str]:
    """Override keys with one value for every job of the sweep: left out of job folder names."""
    lines = [str(o) for o in raw_node(config, "hydra.overrides.task") or []]
    params = raw_node(config, "hydra.sweeper.params") or {}
    lines += [f"{key}={value}" for key, value in params.items()]
    parsed = OverridesParser.create().parse_overrides(lines)
    swept = {o.get_key_element() for o in parsed if o.is_sweep_override()}
    keys = [o.get_key_element() for o in parsed if o.get_key_element() not in swept]
    return list(dict.fromkeys([*keys, *EXPERIMENT_KEYS]))


def _quote(value: object) -> str:
    """A Hydra override value as a quoted string (commas and '=' stay literal)."""
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


class SweepReport(Callback):
    """Fixes the sweep and job folder names at the start of a multirun and reports at its end."""

    def __init__(self, enabled: bool = True, report_file: str | None = None) -> None:
        self.enabled = enabled
        self.report_file = report_file  # where the end-of-sweep summary goes (the CLI prints it)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        if not sweep_dir.is_absolute():
            sweep_dir = Path(str(config.hydra.runtime.cwd)) / sweep_dir
        exclude = constant_keys(config)
        quoted = ",".join(f"'{key}'" for key in exclude)
        # Every job, in whatever process or machine runs it, reads and writes the same folders.
        env = {var: os.path.abspath(os.path.expanduser(str(OmegaConf.select(config, key))))
               for var, key in PINNED_ENV.items() if OmegaConf.select(config, key, default=None) is not None}
        # Jobs are composed again from hydra.overrides.hydra: these make them agree with this process.
        with read_write(config.hydra), open_dict(config.hydra):
            config.hydra.sweep.dir = str(sweep_dir)
            config.hydra.job.config.override_dirname.exclude_keys = exclude
            config.hydra.overrides.hydra.append(f"hydra.sweep.dir={_quote(sweep_dir)}")
            config.hydra.overrides.hydra.append(f"hydra.job.config.override_dirname.exclude_keys=[{quoted}]")
            for var, value in env.items():
                config.hydra.job.env_set[var] = value
                config.hydra.overrides.hydra.append(f"++hydra.job.env_set.{var}={_quote(value)}")
        log.info("sweep folder: %s", sweep_dir)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if not self.enabled:
            return
        from cascade.app.sweep import write_report

        summary = write_report(str(config.hydra.sweep.dir))
        if self.report_file:
            atomic_write_json(self.report_file, summary.to_dict())
