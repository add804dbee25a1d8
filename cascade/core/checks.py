"""Checks of numeric settings shared by every layer: a clear ConfigError naming the setting."""
from __future__ import annotations

import numbers
from typing import Any, Literal, overload

from cascade.core.errors import ConfigError


@overload
def check_positive(value: Any, what: str, allow_none: Literal[False], null_means: str = "") -> int: ...


@overload
def check_positive(value: Any, what: str, allow_none: bool = True, null_means: str = "") -> int | None: ...


def check_positive(value: Any, what: str, allow_none: bool = True, null_means: str = "") -> int | None:
    """A positive integer setting (or None where allowed), else a ConfigError naming it."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        hint = f"; null means {null_means}" if allow_none and null_means else ""
        raise ConfigError(f"{what} must be a positive integer{' or null' if allow_none else ''}, got {value!r}{hint}")
    return int(value)


def check_k(k: Any, owner: str = "stage") -> int | None:
    """Validate a cutoff: a positive integer, or None for "keep all"."""
    return check_positive(k, f"{owner}: k", null_means="keep every candidate")
