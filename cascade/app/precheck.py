"""Check a ``cascade run`` command line before Hydra starts.

Hydra configures logging (``hydra.hydra_logging``) and builds its callbacks, launcher and
sweeper before :func:`cascade.app.runner.run` is called, and configures ``hydra.job_logging``
and ``hydra.job.env_set`` for each job before its task runs. So the config is composed here as
Hydra will compose it (the same search path, ``--config-dir``, ``--config-name``), and for a
sweep once per value of every swept key (from the command line and ``hydra.sweeper.params``),
and everything Hydra would build or apply is checked (:mod:`cascade.app.targets`,
:mod:`cascade.app.hydra_checks`). A refused config never reaches Hydra.
"""
from __future__ import annotations

import itertools
import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from cascade.app.hydra_checks import check_hydra
from cascade.app.targets import check_targets
from cascade.core.errors import ConfigError

log = logging.getLogger(__name__)

CONFIG_MODULE = "cascade.conf"
# Hydra's flags that take a value, and its flags that take none
_VALUE_FLAGS = {"-cd", "--config-dir", "-cn", "--config-name", "-c", "--cfg", "-p", "--package"}
_BARE_FLAGS = {"-h", "--help", "--hydra-help", "-m", "--multirun", "--resolve", "-sc", "--shell-completion",
               "--run", "-r"}
_INFO = {"-i", "--info"}
MAX_COMBINATIONS = 64  # a sweep with more jobs is checked one swept value at a time


def parse_args(args: list[str]) -> tuple[dict[str, str], list[str], bool]:
    """``(options, overrides, multirun)`` of a ``cascade run`` command line; ConfigError for what cascade refuses."""
    options: dict[str, str] = {}
    overrides: list[str] = []
    multirun, it = False, iter(args)
    for arg in it:
        flag, eq, value = arg.partition("=")
        if flag in ("--experimental-rerun",):
            raise ConfigError("--experimental-rerun is not supported: it loads a pickled config, which can run "
                              "code; rerun a job from its folder's config.yaml, or rerun the sweep (finished jobs "
                              "are reused)")
        if flag in ("-cp", "--config-path"):
            raise ConfigError(f"{flag} is not supported by cascade run; use --config-dir DIR to put your config "
                              "folder in front of cascade's (and --config-name NAME to pick its primary config)")
        if flag in ("-m", "--multirun"):
            multirun = True
        elif flag in _VALUE_FLAGS:
            options[flag] = value if eq else next(it, "")
        elif flag in _INFO:
            if not eq and (nxt := next(it, None)) is not None:  # argparse takes a next word as its value
                if nxt.startswith("-"):
                    raise ConfigError(f"put {nxt!r} before --info")
        elif flag in _BARE_FLAGS:
            continue
        elif arg.startswith("-"):
            raise ConfigError(f"unknown option {arg!r}; `cascade run --help` lists the options")
        else:
            overrides.append(arg)
    return options, overrides, multirun


def _loader(options: dict[str, str]):
    """Hydra's config loader over the search path ``cascade run`` uses."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.utils import create_config_search_path
    from hydra.core.config_search_path import SearchPathQuery

    path = create_config_search_path(f"pkg://{CONFIG_MODULE}")
    config_dir = options.get("-cd") or options.get("--config-dir")
    if config_dir:
        path.prepend(provider="command-line", path=f"file://{Path(config_dir).expanduser().resolve()}",
                     anchor=SearchPathQuery(provider="schema"))  # where Hydra puts --config-dir
    return ConfigLoaderImpl(config_search_path=path)


def _sweeps(cfg: DictConfig, overrides: list[str]) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """The fixed overrides, and each swept key with its values (command line, then ``hydra.sweeper.params``)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = OmegaConf.select(cfg, "hydra.sweeper.params", default=None) or {}
    listed = [f"{k}={v}" for k, v in params.items()] + overrides  # the command line wins, as in Hydra
    fixed: list[str] = []
    swept: dict[str, list[str]] = {}
    seen: set[str] = set()
    for override in reversed(OverridesParser.create().parse_overrides(listed)):
        key = override.get_key_element()
        if key in seen:
            continue
        seen.add(key)
        if override.is_sweep_override():
            try:
                values = [f"{key}={v}" for v in override.sweep_string_iterator()]
            except Exception:  # noqa: BLE001 - e.g. interval(): numbers, never a target or a file name
                continue
            swept[key] = values
        else:
            assert override.input_line is not None  # parsed from a line, so it keeps it
            fixed.append(override.input_line)
    return list(reversed(fixed)), list(reversed(swept.items()))


def _jobs(fixed: list[str], swept: list[tuple[str, list[str]]]) -> list[list[str]]:
    """Override lists to check: every job when few, else each swept value once (the rest at their first)."""
    sizes = [len(values) for _, values in swept]
    total = 1
    for size in sizes:
        total *= size
    if total <= MAX_COMBINATIONS:
        return [fixed + list(combo) for combo in itertools.product(*(values for _, values in swept))]
    firsts = [values[0] for _, values in swept]
    jobs = []
    for i, (_, values) in enumerate(swept):
        jobs += [fixed + firsts[:i] + [v] + firsts[i + 1:] for v in values]
    log.info("sweep of %d jobs: checking each of its swept values once", total)
    return jobs


def check_config(cfg: DictConfig) -> None:
    """Everything a composed config would make Hydra or cascade build or apply."""
    check_targets(cfg)
    check_hydra(cfg)


def precheck(args: list[str]) -> DictConfig | None:
    """Compose the config(s) ``cascade run ARGS`` will run and check them; ConfigError if refused.

    Returns the composed (primary) config. Composition errors are left for Hydra to report with
    its own hints (None): a config that does not compose is never run.
    """
    from hydra.types import RunMode

    options, overrides, multirun = parse_args(args)
    loader = _loader(options)
    name = options.get("-cn") or options.get("--config-name") or "config"
    mode = RunMode.MULTIRUN if multirun else RunMode.RUN
    try:
        cfg = loader.load_configuration(name, overrides, run_mode=mode)
    except Exception:  # noqa: BLE001 - Hydra reports composition errors itself
        return None
    if not multirun:
        check_config(cfg)
        return cfg
    # a sweep: Hydra builds its callbacks, launcher and sweeper once, from this config; each job's
    # config (its logging, environment and targets) is composed and checked as Hydra will compose it
    check_targets(cfg, "hydra")
    fixed, swept = _sweeps(cfg, overrides)
    for job in _jobs(fixed, swept) if swept else [overrides]:
        try:
            job_cfg = loader.load_configuration(name, job, run_mode=RunMode.MULTIRUN)
        except Exception:  # noqa: BLE001 - cannot compose it here: hold the sweep's own config to every rule
            check_config(cfg)
            continue
        check_config(job_cfg)
    return cfg
