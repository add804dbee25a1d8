"""``sweep.baseline``: which job of a sweep the others are tested against, in spellings without quoting traps.

A baseline is one or more ``key:value`` conditions on a job's overrides (``key=value`` works too);
the baseline job is the finished job whose overrides satisfy all of them::

    cascade run -m pipeline=bm25,bm25_dense sweep.baseline=pipeline:bm25
    cascade run -m +experiment=cutoffs sweep.baseline=pipeline:cascade+stage.bm25.k:1000+stage.biencoder.k:100

Several conditions are joined with ``+`` (safe in every shell and in Hydra's grammar), or given as
a list (``[pipeline:bm25,stage.bm25.k:100]``, as in YAML: ``baseline: [pipeline=bm25]``), or as a
mapping (YAML ``baseline: {pipeline: bm25}``). On the command line ``cascade run`` also accepts
``sweep.baseline=[pipeline=bm25]``, ``sweep.baseline=pipeline=bm25``, a quoted ``a:b;c:d`` and
comma-joined conditions, which Hydra alone would reject or turn into a sweep over baselines: they
are rewritten to a list before Hydra parses them (:func:`normalise_args`).
"""
from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from cascade.core.errors import ConfigError

log = logging.getLogger(__name__)

KEY = "sweep.baseline"
# ';' anywhere, or '+' (or ',') where a new 'key:' or 'key=' starts
_SPLIT = re.compile(r";|[+,](?=\s*[+~]*[A-Za-z_][\w.\-/@]*\s*[:=])")
_CONDITION = re.compile(r"^\s*([+~]*[A-Za-z_][\w.\-/@]*)\s*[:=]\s*(.*?)\s*$")
EXAMPLE = "sweep.baseline=pipeline:bm25 (several: sweep.baseline=pipeline:bm25+stage.bm25.k:100)"


def _key(key: str) -> str:
    return key.lstrip("+~").strip()


def _conditions(text: str) -> list[tuple[str, str]]:
    out = []
    for part in _SPLIT.split(text):
        if not part.strip():
            continue
        match = _CONDITION.match(part.strip().strip("'\""))
        if match is None:
            raise ConfigError(f"sweep.baseline: {part.strip()!r} is not a key:value condition; write e.g. {EXAMPLE}")
        out.append((_key(match.group(1)), match.group(2).strip("'\"")))
    return out


def parse_baseline(value: Any) -> dict[str, str] | None:
    """``sweep.baseline`` (None, a string, a list of conditions or a mapping) as ``{key: value}``.

    None (or empty) means no baseline. Raises :class:`ConfigError` for a condition that is not
    ``key:value`` / ``key=value`` and for a key given two different values.
    """
    if value is None or value == "" or (isinstance(value, (Sequence, Mapping)) and not len(value)):
        return None
    if isinstance(value, Mapping):
        pairs = [(_key(str(k)), str(v)) for k, v in value.items()]
    elif isinstance(value, str):
        pairs = _conditions(value)
    elif isinstance(value, Iterable):
        pairs = [pair for item in value for pair in _conditions(str(item))]
    else:
        raise ConfigError(f"sweep.baseline must be key:value conditions, got {value!r}; write e.g. {EXAMPLE}")
    wanted: dict[str, str] = {}
    for key, val in pairs:
        if wanted.get(key, val) != val:
            raise ConfigError(f"sweep.baseline gives {key} two values ({wanted[key]!r} and {val!r}); keep one")
        wanted[key] = val
    return wanted or None


def matches(overrides: Iterable[str], wanted: Mapping[str, str]) -> bool:
    """Whether a job with these ``key=value`` overrides satisfies every baseline condition."""
    have = {_key(k): v for k, _, v in (str(o).partition("=") for o in overrides)}
    return all(have.get(k) == v for k, v in wanted.items())


def match_baseline(jobs: list[dict], baseline: Any) -> dict | None:
    """The first finished job (``status == "ok"``) whose overrides satisfy ``baseline``; None if none does.

    When several jobs match, the first is used and a warning names how many matched (add
    conditions to pick one).
    """
    wanted = parse_baseline(baseline)
    if wanted is None:
        return None
    found = [job for job in jobs if job["status"] == "ok" and matches(job["overrides"], wanted)]
    if len(found) > 1:
        log.warning("sweep.baseline %s matches %d jobs (%s, ...); using the first: add conditions to pick one",
                    wanted, len(found), ", ".join(j["dir"] for j in found[:3]))
    return found[0] if found else None


def _hydra_quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def normalise_args(args: list[str]) -> list[str]:
    """Command-line overrides with every ``sweep.baseline=...`` in a spelling Hydra parses as one value.

    An override Hydra already reads as a single value is kept as it is; one it cannot parse
    (``[pipeline=bm25]``, ``pipeline=bm25``, ``a:b;c:d``) or would sweep over (``a:b,c:d``) is
    rewritten to the list ``['a:b','c:d']``. Raises :class:`ConfigError` for a value that is not
    conditions at all, before anything runs.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser, out = OverridesParser.create(), []
    for arg in args:
        key, eq, value = arg.partition("=")
        if not eq or _key(key) != KEY:
            out.append(arg)
            continue
        try:
            parsed = parser.parse_override(arg)
            keep = not parsed.is_sweep_override()
            if keep:
                parse_baseline(parsed.value())  # a readable error now, not after the sweep
        except ConfigError:
            raise
        except Exception:  # noqa: BLE001 - Hydra's grammar error: rewrite it below
            keep = False
        if keep:
            out.append(arg)
            continue
        text = value.strip()
        if text.startswith("[") and text.endswith("]"):
            text = text[1:-1]
        wanted = parse_baseline(text)
        listed = ",".join(_hydra_quote(f"{k}:{v}") for k, v in (wanted or {}).items())
        out.append(f"{key}=[{listed}]" if wanted else f"{key}=null")
    return out
