"""Every config ``cascade run`` composes is checked where Hydra composes it, before Hydra uses it.

Hydra configures logging (``hydra.hydra_logging``) and builds its callbacks, launcher and
sweeper from the config it composes before :func:`cascade.app.runner.run` is called, and
configures ``hydra.job_logging`` and ``hydra.job.env_set`` for each job before its task runs.
So ``cascade run`` gives Hydra a config loader of its own (:class:`CheckedConfigLoader`, put in
place by :func:`checked_composition`) that checks each config as it is composed, the run's, a
sweep's and each sweep job's, and hands a refused one back to the CLI (:class:`ConfigRefused`)
before Hydra applies any of it. Each config is composed once, by Hydra, and checked once
(:mod:`cascade.app.targets`, :mod:`cascade.app.hydra_checks`).

A sweep is refused before any job runs: Hydra's sweeper composes every job's config to validate
the batch before it launches one (a sweeper that does not validate stops at the refused job).
"""
from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from cascade.app.baseline import parse_baseline
from cascade.app.hydra_checks import check_hydra
from cascade.app.targets import check_targets
from cascade.core.errors import ConfigError

# Hydra's flags that take a value, and its flags that take none
_VALUE_FLAGS = {"-cd", "--config-dir", "-cn", "--config-name", "-c", "--cfg", "-p", "--package"}
_BARE_FLAGS = {"-h", "--help", "--hydra-help", "-m", "--multirun", "--resolve", "-sc", "--shell-completion",
               "--run", "-r"}
_INFO = {"-i", "--info"}


def parse_args(args: list[str]) -> tuple[list[str], list[str], bool]:
    """``(flags, overrides, multirun)`` of a ``cascade run`` command line, flags with their values in
    order (Hydra wants them before the overrides); ConfigError for what cascade refuses."""
    flags: list[str] = []
    overrides: list[str] = []
    multirun, it = False, iter(args)
    for arg in it:
        flag, eq, _ = arg.partition("=")
        if flag in ("--experimental-rerun",):
            raise ConfigError("--experimental-rerun is not supported: it loads a pickled config, which can run "
                              "code; rerun a job from its folder's config.yaml, or rerun the sweep (finished jobs "
                              "are reused)")
        if flag in ("-cp", "--config-path"):
            raise ConfigError(f"{flag} is not supported by cascade run; use --config-dir DIR to put your config "
                              "folder in front of cascade's (and --config-name NAME to pick its primary config)")
        if flag in _VALUE_FLAGS:
            flags.append(arg)
            if not eq:
                flags.append(next(it, ""))
        elif flag in _INFO:
            flags.append(arg)
            if not eq and (nxt := next(it, None)) is not None:  # argparse takes a next word as its value
                if nxt.startswith("-"):
                    raise ConfigError(f"put {nxt!r} before --info")
                flags.append(nxt)
        elif flag in _BARE_FLAGS:
            multirun = multirun or flag in ("-m", "--multirun")
            flags.append(arg)
        elif arg.startswith("-"):
            raise ConfigError(f"unknown option {arg!r}; `cascade run --help` lists the options")
        else:
            overrides.append(arg)
    return flags, overrides, multirun


def check_config(cfg: DictConfig, run_mode: RunMode = RunMode.RUN) -> None:
    """Everything a composed config would make Hydra or cascade build or apply.

    A sweep's own config (``RunMode.MULTIRUN``) holds no swept value: Hydra builds its callbacks,
    launcher and sweeper and configures its logging from it, so those are checked, and its
    ``sweep.baseline``; each job's config is checked whole when it is composed.
    """
    if run_mode == RunMode.MULTIRUN:
        check_targets(cfg, "hydra")
    else:
        check_targets(cfg)
    check_hydra(cfg)
    parse_baseline(OmegaConf.select(cfg, "sweep.baseline", default=None))  # a bad one fails before any job


class ConfigRefused(BaseException):
    """A composed config was refused; carries the :class:`ConfigError` past Hydra's own error handler
    (which catches every ``Exception`` and prints a traceback) to the CLI, like ``SystemExit``."""

    def __init__(self, error: ConfigError):
        super().__init__(str(error))
        self.error = error


def _sweep_dir(cfg: DictConfig) -> Path | None:
    """Where a sweep's folder will be (None if it cannot be told yet)."""
    try:
        return Path(str(cfg.hydra.sweep.dir)).expanduser().absolute()
    except Exception:  # noqa: BLE001 - an unresolvable name: Hydra reports it
        return None


class CheckedConfigLoader(ConfigLoaderImpl):
    """Hydra's config loader, checking each config it composes (:func:`check_config`) before
    returning it; a refused one raises :class:`ConfigRefused`.

    Hydra's sweeper saves ``multirun.yaml`` in a new sweep folder before it composes the jobs:
    a sweep refused before any job ran leaves no folder behind.
    """

    _sweep_folder: Path | None = None  # where the sweep composed last will put its jobs
    _created: Path | None = None  # the outermost of its folders that did not exist yet

    def load_configuration(self, config_name: str | None, overrides: list[str], run_mode: RunMode,
                           from_shell: bool = True, validate_sweep_overrides: bool = True) -> DictConfig:
        cfg = super().load_configuration(config_name, overrides, run_mode, from_shell=from_shell,
                                         validate_sweep_overrides=validate_sweep_overrides)
        try:
            check_config(cfg, run_mode)
        except ConfigError as err:
            self._remove_empty_sweep_dir()
            raise ConfigRefused(err) from None
        if run_mode == RunMode.MULTIRUN:
            self._sweep_folder, self._created = _sweep_dir(cfg), None
            for folder in [self._sweep_folder, *self._sweep_folder.parents] if self._sweep_folder else []:
                if folder.exists():
                    break
                self._created = folder  # the outermost folder the sweep will create
        return cfg

    def _remove_empty_sweep_dir(self) -> None:
        """Remove what the sweep created if it holds nothing but Hydra's ``multirun.yaml``."""
        top, folder = self._created, self._sweep_folder
        if top is None or folder is None or not top.is_dir():
            return
        if all(p.is_dir() or p == folder / "multirun.yaml" for p in top.rglob("*")):
            shutil.rmtree(top, ignore_errors=True)


@contextlib.contextmanager
def checked_composition() -> Iterator[None]:
    """Within it, the Hydra app that starts (``@hydra.main``) composes with :class:`CheckedConfigLoader`."""
    import hydra._internal.hydra as hydra_app

    if getattr(hydra_app, "ConfigLoaderImpl", None) is not ConfigLoaderImpl:
        raise ConfigError("this version of hydra-core builds its config loader differently; cascade cannot "
                          "check configs under it: pip install \"hydra-core>=1.3.2,<1.4\"")
    hydra_app.ConfigLoaderImpl = CheckedConfigLoader  # type: ignore[misc]
    try:
        yield
    finally:
        hydra_app.ConfigLoaderImpl = ConfigLoaderImpl  # type: ignore[misc]


def composed_by_cascade() -> bool:
    """Whether the running Hydra app composed (and so checked) its config with :class:`CheckedConfigLoader`."""
    from hydra.core.global_hydra import GlobalHydra

    app: Any = GlobalHydra.instance().hydra if GlobalHydra.instance().is_initialized() else None
    return app is not None and isinstance(app.config_loader, CheckedConfigLoader)
