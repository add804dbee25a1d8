"""Paired significance tests of per-query scores: two systems, the same queries.

Two-sided tests of "mean per-query difference is zero": Student's paired t-test
(scipy) and the paired randomization (sign-flip) test, exact for small query sets.
"""
from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import ArrayLike

from cascade.core.errors import ConfigError

TESTS = ("ttest", "randomization")
CORRECTIONS = ("holm", None)


def paired_ttest(a: ArrayLike, b: ArrayLike) -> float:
    """Two-sided p-value of the paired t-test; 1.0 when every pair is equal."""
    diff = np.asarray(b, float) - np.asarray(a, float)
    if diff.size < 2 or np.all(diff == diff[0]):
        return 1.0 if not diff.size or diff[0] == 0 else 0.0
    from scipy import stats

    return float(stats.ttest_rel(b, a).pvalue)


def randomization_test(a: ArrayLike, b: ArrayLike, n_resamples: int = 10_000, seed: int = 0) -> float:
    """Two-sided p-value of the paired randomization test (random sign flips of the differences).

    Exact (every sign pattern) when there are at most ``n_resamples`` patterns; otherwise
    Monte Carlo with ``n_resamples`` draws and the usual +1 correction.
    """
    diff = np.asarray(b, float) - np.asarray(a, float)
    n = diff.size
    if n == 0:
        return 1.0
    observed = abs(diff.mean())
    tolerance = 1e-12 * max(observed, 1.0)
    if 2**n <= n_resamples:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
        means = np.abs(signs @ diff) / n
        return float(np.mean(means >= observed - tolerance))
    rng = np.random.default_rng(seed)
    hits = 0
    for start in range(0, n_resamples, 1000):
        signs = rng.choice((-1.0, 1.0), size=(min(1000, n_resamples - start), n))
        hits += int(np.sum(np.abs(signs @ diff) / n >= observed - tolerance))
    return (hits + 1) / (n_resamples + 1)


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm-Bonferroni adjusted p-values (None entries are skipped and stay None)."""
    present = sorted((p, i) for i, p in enumerate(pvalues) if p is not None)
    adjusted: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(present):
        running = max(running, min(1.0, (len(present) - rank) * p))
        adjusted[i] = running
    return adjusted


@dataclass(frozen=True)
class Comparison:
    """A system against the baseline over the queries both evaluated."""

    queries: int
    delta: float
    p_value: float
    p_adjusted: float | None = None  # set by :func:`compare_to_baseline` when a correction is asked for


def check_test(test: str, correction: str | None = None) -> None:
    """A ConfigError, before any work, for an unknown test or multiple-comparison correction."""
    if test not in TESTS:
        raise ConfigError(f"significance test {test!r} is unknown; use one of {', '.join(TESTS)}")
    if correction not in CORRECTIONS:
        raise ConfigError(f"correction {correction!r} is unknown; use 'holm' or None (no correction)")


def compare(baseline: Mapping[str, float], other: Mapping[str, float], test: str = "ttest") -> Comparison | None:
    """Paired test of ``other`` against ``baseline`` (``{query_id: score}``); None if no shared query."""
    check_test(test)
    shared = sorted(set(baseline) & set(other))
    if not shared:
        return None
    a = np.array([baseline[q] for q in shared], float)
    b = np.array([other[q] for q in shared], float)
    p = paired_ttest(a, b) if test == "ttest" else randomization_test(a, b)
    return Comparison(len(shared), float(np.mean(b - a)), p)


def compare_to_baseline(baseline: Mapping[str, float], others: Mapping[str, Mapping[str, float]],
                        test: str = "ttest", correction: str | None = "holm") -> dict[str, Comparison | None]:
    """Each of ``others`` (name -> ``{query_id: score}``) against ``baseline``, as :func:`compare`.

    With ``correction="holm"`` every comparison also gets its Holm-adjusted p-value
    (``p_adjusted``), adjusted for the number of systems compared; None where no query is shared.
    """
    check_test(test, correction)
    results = {name: compare(baseline, scores, test) for name, scores in others.items()}
    if correction == "holm":
        adjusted = holm([r.p_value if r is not None else None for r in results.values()])
        results = {name: replace(r, p_adjusted=p) if r is not None else None
                   for (name, r), p in zip(results.items(), adjusted)}
    return results
