"""What Hydra itself builds or applies from a config, checked before Hydra applies it.

Besides ``_target_`` (:mod:`cascade.app.targets`), Hydra passes ``hydra.job_logging`` and
``hydra.hydra_logging`` to :func:`logging.config.dictConfig`, which calls any factory named
under ``"()"`` or ``class`` and resolves ``ext://`` names; and it exports
``hydra.job.env_set`` into the job's environment (and every process the job starts). So:

* every ``"()"`` and ``class`` in a logging config must be one of the :mod:`logging` handlers,
  formatters and filters below, or an object the user allows (``allowed_targets``), resolved
  as :mod:`cascade.app.targets` resolves targets;
* file handlers write only ``*.log`` files (a log line can be made to look like Python, and a
  ``.pth`` file in site-packages runs at every start), ``ext://`` names only ``sys.stdout`` and
  ``sys.stderr``, and ``"."`` (attributes set after construction) is refused;
* ``hydra.job.env_set`` may not set variables that make programs load code
  (``LD_PRELOAD``, ``PYTHONPATH``...) or widen the allow-list (``CASCADE_ALLOWED_TARGETS``).
"""
from __future__ import annotations

import re
from typing import Any

from omegaconf import DictConfig, ListConfig, Node, OmegaConf

from cascade.app.targets import ENV_VAR, refusal, resolve, user_prefixes
from cascade.core.errors import ConfigError

LOGGING_KEYS = ("hydra.job_logging", "hydra.hydra_logging")
# the standard library's local handlers, formatters and filters (no network handlers)
LOGGING_FACTORIES = {
    "logging.StreamHandler", "logging.FileHandler", "logging.NullHandler", "logging.Formatter",
    "logging.Filter", "logging.handlers.RotatingFileHandler", "logging.handlers.TimedRotatingFileHandler",
    "logging.handlers.WatchedFileHandler", "logging.handlers.MemoryHandler", "logging.handlers.QueueHandler",
}
STREAMS = {"ext://sys.stdout", "ext://sys.stderr"}
_FILE_KEYS = ("filename",)
# environment variables that make a program (Python, the dynamic linker, a shell) load code
_CODE_ENV = re.compile(r"^(LD_.*|DYLD_.*|PYTHON.*|PATH|BASH_ENV|ENV|PERL5OPT|PERL5LIB|RUBYOPT|NODE_OPTIONS|"
                       + re.escape(ENV_VAR) + r")$")


def _resolved(node: Any) -> Any:
    """``node`` as plain containers, each part resolved where it can be (``${hydra:...}`` cannot
    be before Hydra runs a job: such a leaf is kept as written)."""
    if not isinstance(node, (DictConfig, ListConfig)):
        return node
    try:
        return OmegaConf.to_container(node, resolve=True)
    except Exception:  # noqa: BLE001 - resolve the parts that can be
        pass
    if isinstance(node, ListConfig):
        keys: Any = range(len(node))
    else:
        keys = [k for k, _ in node.items_ex(resolve=False)]
    out = {k: None for k in keys} if isinstance(node, DictConfig) else [None] * len(node)
    for k in keys:
        child = node._get_node(k)
        if isinstance(child, (DictConfig, ListConfig)):
            out[k] = _resolved(child)
        else:
            assert isinstance(child, Node)  # the key is the node's own: its child is a leaf node
            try:
                out[k] = child._dereference_node()._value()
            except Exception:  # noqa: BLE001
                out[k] = child._value()
    return out


def _leaves(node: Any, path: str) -> list[tuple[str, str, Any]]:
    """``(parent key, name, value)`` of every entry of a plain container, nested ones included."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    out: list[tuple[str, str, Any]] = []
    for name, value in items:
        if isinstance(value, (dict, list)):
            out.append((path, str(name), value))  # a container's own key is checked too (e.g. ".")
            out += _leaves(value, f"{path}.{name}" if isinstance(node, dict) else f"{path}[{name}]")
        else:
            out.append((path, str(name), value))
    return out


def _walk(cfg: DictConfig, key: str) -> list[tuple[str, str, Any]]:
    node = OmegaConf.select(cfg, key, throw_on_resolution_failure=False)
    return _leaves(_resolved(node), key) if isinstance(node, (DictConfig, ListConfig)) else []


def _check_factory(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    """A logging factory beyond the standard ones must be defined under the user's ``allowed_targets``."""
    what = ("the standard library's local logging handlers, formatters and filters in a logging config"
            + (f", and objects defined in {', '.join(p + '.*' for p in allowed)}" if allowed else ""))
    reason = "not a logging handler, formatter or filter of the standard library"
    if not allowed or not isinstance(value, str):
        raise refusal(key, value, reason, what)
    try:
        resolve(value, allowed, allowed)
    except ConfigError as err:
        raise refusal(key, value, f"{reason}, and {err}", what, getattr(err, "module", None)) from None


def check_logging(cfg: DictConfig) -> None:
    """Refuse a logging config that names a factory, a file or an ``ext://`` object it may not."""
    allowed = user_prefixes(cfg)
    for root in LOGGING_KEYS:
        for parent, name, value in _walk(cfg, root):
            key = f"{parent}.{name}"
            if name in ("()", "class"):
                if value not in LOGGING_FACTORIES:
                    _check_factory(key, value, allowed)
            elif name == ".":
                raise ConfigError(f"{key}: setting attributes on logging objects from a config is not allowed; "
                                  "remove the '.' entry")
            elif isinstance(value, str) and value.startswith("ext://") and value not in STREAMS:
                raise ConfigError(f"{key} = {value!r} is not allowed: a logging config may name only "
                                  f"{' and '.join(sorted(STREAMS))} by ext://")
            elif isinstance(value, (dict, list)):
                continue
            elif name in _FILE_KEYS and not str(value).endswith(".log"):
                raise ConfigError(f"{key} = {value!r} is not allowed: log files from a config must end in .log "
                                  "(a log line can be made to read as code in a .pth or shell file)")


def check_env(cfg: DictConfig) -> None:
    """Refuse ``hydra.job.env_set`` entries that make programs load code or widen the allow-list."""
    env = OmegaConf.select(cfg, "hydra.job.env_set", default=None, throw_on_resolution_failure=False)
    for name in (env or {}):
        if _CODE_ENV.match(str(name)):
            raise ConfigError(f"hydra.job.env_set.{name} is not allowed: a config may not set {name}, which makes "
                              f"programs load code or widens the _target_ allow-list; set it in your shell instead")


def check_hydra(cfg: DictConfig) -> None:
    """Every check of what Hydra itself builds: its targets, logging configs and job environment."""
    from cascade.app.targets import check_targets

    check_targets(cfg, "hydra")
    check_logging(cfg)
    check_env(cfg)
