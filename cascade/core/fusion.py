"""Score fusion: combine a stage's scores with the scores its candidates carried in."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cascade.core.errors import ConfigError

METHODS = ("zscore", "minmax", "rrf")


def _masked_stats(scores: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, ...]:
    filled = np.where(mask, scores, 0.0)
    count = np.maximum(mask.sum(axis=1, keepdims=True), 1)
    mean = filled.sum(axis=1, keepdims=True) / count
    var = (np.where(mask, scores - mean, 0.0) ** 2).sum(axis=1, keepdims=True) / count
    lo = np.where(mask, scores, np.inf).min(axis=1, keepdims=True, initial=np.inf)
    hi = np.where(mask, scores, -np.inf).max(axis=1, keepdims=True, initial=-np.inf)
    return mean, np.sqrt(var), lo, hi


def _shared_ranks(scores: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """0-based rank of each entry among its row's valid entries; equal scores share the best rank.

    The rank is the number of valid entries with a strictly higher score, so RRF of a row does
    not depend on the order its candidates came in.
    """
    keys = np.where(mask, -scores, np.inf)
    order = np.argsort(keys, axis=1, kind="stable")
    ordered = np.take_along_axis(keys, order, axis=1)
    pos = np.broadcast_to(np.arange(keys.shape[1]), keys.shape)
    starts = np.ones(keys.shape, bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    run_start = np.maximum.accumulate(np.where(starts, pos, 0), axis=1)
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, run_start, axis=1)
    return ranks


def normalize(scores: np.ndarray, mask: np.ndarray, method: str, rrf_k: float = 60.0) -> np.ndarray:
    """Normalize each row of ``scores`` over its valid entries (``mask``); padding becomes 0.

    ``rrf``: ``1 / (rrf_k + rank)`` with rank 1 for the best score; tied scores share a rank.
    """
    scores = scores.astype(np.float64)
    if method == "rrf":
        out = 1.0 / (rrf_k + _shared_ranks(scores, mask) + 1)
    else:
        mean, std, lo, hi = _masked_stats(scores, mask)
        if method == "zscore":
            out = (scores - mean) / np.where(std > 0, std, 1.0)
        else:
            out = (scores - lo) / np.where(hi > lo, hi - lo, 1.0)
    return np.where(mask, out, 0.0)


@dataclass(frozen=True)
class Fusion:
    """Weighted sum of normalized incoming and own scores.

    ``fused = weight_in * norm(incoming) + weight_own * norm(own)``, normalized per
    query over its candidates with ``method`` (``zscore``, ``minmax`` or ``rrf``).
    """

    method: str = "zscore"
    weight_in: float = 0.3
    weight_own: float = 0.7
    rrf_k: float = 60.0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"fusion method {self.method!r} is unknown; use one of {', '.join(METHODS)}")
        if self.weight_in < 0 or self.weight_own < 0 or self.weight_in + self.weight_own == 0:
            raise ConfigError("fusion weights must be non-negative and not both zero")

    def __call__(self, incoming: np.ndarray, own: np.ndarray, mask: np.ndarray) -> np.ndarray:
        fused = self.weight_in * normalize(incoming, mask, self.method, self.rrf_k)
        fused = fused + self.weight_own * normalize(own, mask, self.method, self.rrf_k)
        return np.where(mask, fused, -np.inf).astype(np.float32)
