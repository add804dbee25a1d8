"""Which ``_target_`` a config may name: checked by what it resolves to, never by its spelling.

Configs come from others (experiment files, ``--config-dir``, shared sweep folders), and
Hydra instantiates any importable callable. So every ``_target_`` in a config is resolved
here exactly as Hydra resolves it (import the first name, then take attributes, importing a
submodule where an attribute is missing) *without calling it*, and accepted only if

* the spelled path lies under an allowed prefix (so no module outside them is imported);
* every step of the walk stays inside the allowed prefixes: a module reached on the way is
  itself an allowed module (``cascade.core.files.tempfile`` walks into :mod:`tempfile`: refused),
  and a class or function on the way is defined in one;
* the object reached is a class or a function defined in a module configs may build from.

What configs may build: cascade's stages, pipelines, fusions, unions, datasets, encoding
engines and sweep callbacks (:data:`BUILDABLE`), not its file-writing plumbing, plus the
prefixes in the config's ``allowed_targets`` and in ``$CASCADE_ALLOWED_TARGETS``
(comma-separated), e.g. ``allowed_targets: [mylab.stages]`` allows everything defined under
``mylab.stages``. Within ``hydra.*`` (launchers, sweepers, callbacks), classes of Hydra and
its plugins are allowed too.
"""
from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import Iterator
from types import ModuleType
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from cascade.core.errors import ConfigError

BUILTIN_PREFIXES = ("cascade",)  # where a target's dotted path may walk
# where the object a config builds may be defined (cascade's own; no file-writing helpers)
BUILDABLE = ("cascade.stages", "cascade.core.stage", "cascade.core.union", "cascade.core.apply",
             "cascade.core.fusion", "cascade.core.data", "cascade.core.sources", "cascade.core.irds",
             "cascade.index.encoding", "cascade.index.ray_engine", "cascade.app.callbacks")
ENV_VAR = "CASCADE_ALLOWED_TARGETS"
# keys Hydra itself instantiates from its own settings (callbacks, launchers): checked apart
_SKIP_ROOTS = ("hydra",)
# Hydra's own settings (launchers, sweepers, callbacks) may also name classes of Hydra and its plugins
HYDRA_PREFIXES = ("hydra", "hydra_plugins")


def user_prefixes(cfg: DictConfig | None = None) -> tuple[str, ...]:
    """The config's ``allowed_targets`` and ``$CASCADE_ALLOWED_TARGETS``, as module prefixes."""
    extra: list[str] = []
    if cfg is not None:
        listed = OmegaConf.select(cfg, "allowed_targets", default=None)
        if listed is not None:
            if isinstance(listed, str) or not isinstance(listed, (list, ListConfig)):
                raise ConfigError("allowed_targets must be a list of module prefixes, e.g. [mylab.stages]")
            extra += [str(p) for p in listed]
    extra += [p for p in os.environ.get(ENV_VAR, "").split(",")]
    return tuple(p.strip().rstrip(".") for p in extra if p and p.strip())


def allowed_prefixes(cfg: DictConfig | None = None) -> tuple[str, ...]:
    """Where a target's path may walk: cascade's own prefix plus the user's."""
    return BUILTIN_PREFIXES + user_prefixes(cfg)


def is_allowed(target: str, prefixes: tuple[str, ...]) -> bool:
    """Whether dotted path ``target`` is one of ``prefixes`` or lies under one of them."""
    return any(target == p or target.startswith(p + ".") for p in prefixes)


class _Refused(ConfigError):
    """Why a target is refused, and the module that would have to be trusted to allow it."""

    def __init__(self, reason: str, module: str | None = None):
        super().__init__(reason)
        self.module = module


def _is_ancestor(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(p.startswith(name + ".") for p in prefixes)


def _home(obj: Any) -> str | None:
    """The module an object belongs to: a module's own name, else its ``__module__``."""
    if isinstance(obj, ModuleType):
        return obj.__name__
    home = getattr(obj, "__module__", None)
    return home if isinstance(home, str) else None


def resolve(target: str, walk: tuple[str, ...], build: tuple[str, ...]) -> Any:
    """The object ``target`` names, resolved as Hydra's ``_locate`` does, never called.

    Raises :class:`ConfigError` (reason only) if the path or any step leaves ``walk``, or the
    object is not a class or function defined under ``build``. Returns None if the path does
    not resolve (Hydra fails the same way, before calling anything).
    """
    parts = target.split(".")
    if not target or any(not p for p in parts):
        raise _Refused("it is not a dotted path")
    if not is_allowed(target, walk):
        raise _Refused("it lies outside the allowed modules")
    try:
        obj: Any = importlib.import_module(parts[0])
    except Exception:  # noqa: BLE001 - not importable: Hydra cannot build it either
        return None
    for m in range(1, len(parts) + 1):
        spelled = ".".join(parts[:m])
        home = _home(obj)
        if _is_ancestor(spelled, walk) and not is_allowed(spelled, walk):
            if not (isinstance(obj, ModuleType) and home == spelled):
                raise _Refused(f"{spelled!r} is not the module of that name", home)
        elif home is None or not is_allowed(home, walk):
            kind = "module" if isinstance(obj, ModuleType) else "object"
            raise _Refused(f"{spelled!r} is the {kind} {home or type(obj).__name__!r}, outside the allowed "
                           f"modules; name an object by its own module", home)
        if m == len(parts):
            break
        try:
            obj = getattr(obj, parts[m])
        except AttributeError:
            if not isinstance(obj, ModuleType):
                return None
            try:
                obj = importlib.import_module(".".join(parts[:m + 1]))
            except Exception:  # noqa: BLE001 - as Hydra: no such submodule, nothing is built
                return None
    if isinstance(obj, ModuleType) or not (inspect.isclass(obj) or inspect.isroutine(obj)):
        raise _Refused(f"it resolves to {type(obj).__name__} {target!r}, not a class or function")
    if not is_allowed(_home(obj) or "", build):
        raise _Refused(f"it is defined in {_home(obj)!r}, which configs may not build from", _home(obj))
    return obj


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


def plain(node: Any) -> Any:
    """``node`` as plain containers, interpolations resolved where they can be (so a target
    reached through ``${...}`` is seen), else left as written."""
    if not isinstance(node, (DictConfig, ListConfig)):
        return node
    try:
        return OmegaConf.to_container(node, resolve=True)
    except Exception:  # noqa: BLE001 - e.g. ${hydra:...} outside a Hydra app
        return OmegaConf.to_container(node, resolve=False)


def refusal(key: str, target: Any, reason: str, what: str, module: str | None = None) -> ConfigError:
    """The one message for a refused target: the key, the value, why, and the line to add."""
    module = module or _module_of(target)
    return ConfigError(
        f"{key} = {target!r} is not allowed ({reason}); configs may only build {what}. "
        f"If you trust this target, allow its module: "
        f"add `allowed_targets: [{module}]` to your config (or `allowed_targets=[{module}]` "
        f"on the command line, or set {ENV_VAR}={module})")


def check_target(key: str, target: Any, cfg: DictConfig | None, hydra: bool = False) -> Any:
    """Resolve one ``_target_`` (see :func:`resolve`); :class:`ConfigError` naming ``key`` if refused."""
    user = user_prefixes(cfg)
    walk = BUILTIN_PREFIXES + user + (HYDRA_PREFIXES if hydra else ())
    build = BUILDABLE + user
    try:
        if not isinstance(target, str):
            raise _Refused("it is not a dotted path")
        obj = resolve(target, walk, build + (HYDRA_PREFIXES if hydra else ()))
        if hydra and obj is not None and is_allowed(_home(obj) or "", HYDRA_PREFIXES) and not inspect.isclass(obj):
            raise _Refused("within hydra.*, only classes of Hydra and its plugins may be named")
        return obj
    except _Refused as err:
        raise refusal(key, target, str(err), _what(user, hydra), err.module) from None


def _what(user: tuple[str, ...], hydra: bool) -> str:
    """The sentence naming what configs may build."""
    mine = ("cascade's stages, pipelines, fusions, datasets, encoding engines and callbacks"
            + (", Hydra's and its plugins' classes" if hydra else ""))
    return mine + (f", and objects defined in {', '.join(p + '.*' for p in user)}" if user else "")


def check_targets(cfg: DictConfig, *keys: str) -> None:
    """Raise :class:`ConfigError` naming the key and the fix if any ``_target_`` is not allowed.

    ``keys``: the config subtrees to check (default: everything but Hydra's own settings;
    ``"hydra"`` checks those too, where Hydra's and its plugins' classes are also allowed).
    Nothing is instantiated here, so a disallowed target never runs.
    """
    user_prefixes(cfg)  # a malformed allowed_targets is refused even when nothing is checked against it
    roots = keys or tuple(str(k) for k in cfg.keys() if k not in _SKIP_ROOTS and k != "allowed_targets")
    for root in roots:
        if root not in cfg:
            continue
        for key, target in iter_targets(plain(cfg._get_node(root)), root):
            check_target(key, target, cfg, hydra=root == "hydra")


def _module_of(target: Any) -> str:
    text = str(target)
    return text.rsplit(".", 1)[0] if "." in text else text
