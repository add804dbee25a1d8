"""Which ``_target_`` a config may name: cascade's own modules, plus what the user allows.

Configs come from others (experiment files, ``--config-dir``, shared sweep folders), and
Hydra instantiates any importable callable. So every ``_target_`` in a config is checked
against an allow-list before anything is built; a disallowed target never runs.

The list is ``cascade.*`` plus the prefixes in the config's ``allowed_targets`` and in
``$CASCADE_ALLOWED_TARGETS`` (comma-separated), e.g. ``allowed_targets: [mylab.stages]``
allows ``mylab.stages.MyReranker`` and everything under ``mylab.stages.``.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from cascade.core.errors import ConfigError

BUILTIN_PREFIXES = ("cascade",)
ENV_VAR = "CASCADE_ALLOWED_TARGETS"
# keys Hydra itself instantiates from its own settings (callbacks, launchers): checked too
_SKIP_ROOTS = ("hydra",)


def allowed_prefixes(cfg: DictConfig | None = None) -> tuple[str, ...]:
    """cascade's own prefix, the config's ``allowed_targets`` and ``$CASCADE_ALLOWED_TARGETS``."""
    extra: list[str] = []
    if cfg is not None:
        listed = OmegaConf.select(cfg, "allowed_targets", default=None)
        if listed is not None:
            if isinstance(listed, str) or not isinstance(listed, (list, ListConfig)):
                raise ConfigError("allowed_targets must be a list of module prefixes, e.g. [mylab.stages]")
            extra += [str(p) for p in listed]
    extra += [p for p in os.environ.get(ENV_VAR, "").split(",")]
    return BUILTIN_PREFIXES + tuple(p.strip().rstrip(".") for p in extra if p and p.strip())


def is_allowed(target: str, prefixes: tuple[str, ...]) -> bool:
    """Whether dotted path ``target`` is one of ``prefixes`` or lies under one of them."""
    return any(target == p or target.startswith(p + ".") for p in prefixes)


def iter_targets(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every ``(config key, _target_ value)`` in a plain container (dicts and lists)."""
    if isinstance(node, dict):
        for key, value in node.items():
            child = f"{path}.{key}" if path else str(key)
            if key == "_target_":
                yield child, value
            else:
                yield from iter_targets(value, child)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from iter_targets(value, f"{path}[{i}]")


def _plain(node: Any) -> Any:
    """``node`` as plain containers, interpolations resolved where they can be (so a target
    reached through ``${...}`` is seen), else left as written."""
    if not isinstance(node, (DictConfig, ListConfig)):
        return node
    try:
        return OmegaConf.to_container(node, resolve=True)
    except Exception:  # noqa: BLE001 - e.g. ${hydra:...} outside a Hydra app
        return OmegaConf.to_container(node, resolve=False)


# Hydra's own settings (launchers, sweepers, callbacks) may also name Hydra's and its plugins' classes
HYDRA_PREFIXES = ("hydra", "hydra_plugins")


def check_targets(cfg: DictConfig, *keys: str) -> None:
    """Raise :class:`ConfigError` naming the key and the fix if any ``_target_`` is not allowed.

    ``keys``: the config subtrees to check (default: everything but Hydra's own settings;
    ``"hydra"`` checks those too, where Hydra's and its plugins' classes are also allowed).
    Nothing is instantiated here, so a disallowed target never runs.
    """
    base = allowed_prefixes(cfg)
    roots = keys or tuple(str(k) for k in cfg.keys() if k not in _SKIP_ROOTS and k != "allowed_targets")
    for root in roots:
        if root not in cfg:
            continue
        prefixes = base + HYDRA_PREFIXES if root == "hydra" else base
        for key, target in iter_targets(_plain(cfg._get_node(root)), root):
            if not isinstance(target, str) or not is_allowed(target, prefixes):
                module = _module_of(target)
                raise ConfigError(
                    f"{key} = {target!r} is not allowed; configs may only build objects from "
                    f"{', '.join(p + '.*' for p in prefixes)}. If you trust this target, allow its module: "
                    f"add `allowed_targets: [{module}]` to your config (or `allowed_targets=[{module}]` "
                    f"on the command line, or set {ENV_VAR}={module})"
                )


def _module_of(target: Any) -> str:
    text = str(target)
    return text.rsplit(".", 1)[0] if "." in text else text
