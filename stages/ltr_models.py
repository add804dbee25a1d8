"""The rankers behind :class:`cascade.stages.ltr.LearnedFusion`, trained on feature rows grouped by query.

- ``linear``: a linear scoring function ``w · standardize(x)`` that minimizes the pairwise logistic
  (RankNet) loss ``log(1 + exp(-(s_i - s_j)))`` averaged over every pair of one query's candidates
  with ``rel_i > rel_j``, plus ``l2 · |w|²``, by L-BFGS (scipy). No extra dependency. Saved as JSON.
- ``lambdamart``: LightGBM's ``lambdarank`` objective (LambdaMART, gradient-boosted trees optimizing
  nDCG). Needs the ``ltr`` extra; saved as LightGBM's own text model beside a JSON file.

Both save the feature list (column names, in order) and the training queries in the JSON; nothing
is pickled.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from cascade.core.errors import ConfigError, DataError

log = logging.getLogger(__name__)

KINDS = ("lambdamart", "linear")
FORMAT = 1
LAMBDAMART_DEFAULTS = {"n_estimators": 200, "learning_rate": 0.05, "num_leaves": 15, "min_child_samples": 20,
                       "subsample": 1.0, "colsample_bytree": 1.0, "reg_lambda": 1.0}


def _lightgbm():
    try:
        import lightgbm
    except ImportError:
        raise ConfigError('kind=lambdamart needs LightGBM: pip install "cascade-rerank[ltr]" (or pip install '
                          'lightgbm); or use kind=linear, which needs nothing extra') from None
    return lightgbm


class Ranker:
    """A trained scoring function over named feature columns."""

    kind = ""

    def __init__(self, features: list[str], trained_on: list[str], params: dict):
        self.features, self.trained_on, self.params = list(features), list(trained_on), dict(params)

    def predict(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def importances(self) -> dict[str, float]:  # pragma: no cover - abstract
        raise NotImplementedError

    def save(self, path: Path) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _meta(self) -> dict:
        return {"format": FORMAT, "kind": self.kind, "features": self.features, "params": self.params,
                "trained_on": self.trained_on}


class LinearRanker(Ranker):
    """``w · (x - mean) / std``: pairwise logistic loss (see the module doc)."""

    kind = "linear"

    def __init__(self, features, trained_on, params, mean, std, weights):
        super().__init__(features, trained_on, params)
        self.mean, self.std = np.asarray(mean, np.float64), np.asarray(std, np.float64)
        self.weights = np.asarray(weights, np.float64)

    @classmethod
    def train(cls, x: np.ndarray, y: np.ndarray, groups: np.ndarray, features, trained_on, params) -> LinearRanker:
        from scipy.optimize import minimize

        l2 = float(params.get("l2", 1e-3))
        mean, std = x.mean(0), x.std(0)
        std = np.where(std > 0, std, 1.0)
        z = (x - mean) / std
        hi, lo = _pairs(y, groups)
        if not len(hi):
            raise DataError("no query has candidates of different relevance to learn from; check the qrels and "
                            "that the pipeline's candidates hold relevant documents")
        diff = z[hi] - z[lo]

        def loss(w):
            m = diff @ w
            value = np.logaddexp(0.0, -m).mean() + l2 * w @ w
            grad = -(diff * (1.0 / (1.0 + np.exp(m)))[:, None]).mean(0) + 2 * l2 * w
            return value, grad

        fitted = minimize(loss, np.zeros(x.shape[1]), jac=True, method="L-BFGS-B", options={"maxiter": 500})
        log.info("linear ranker: %d pairs, loss %.4f (%s)", len(hi), fitted.fun, fitted.message)
        return cls(features, trained_on, {"l2": l2}, mean, std, fitted.x)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.std) @ self.weights

    def importances(self) -> dict[str, float]:
        """|weight| of each standardized feature."""
        return {f: float(abs(w)) for f, w in zip(self.features, self.weights)}

    def save(self, path: Path) -> None:
        meta = {**self._meta(), "mean": self.mean.tolist(), "std": self.std.tolist(), "weights": self.weights.tolist()}
        path.write_text(json.dumps(meta, indent=1), encoding="utf-8")


class LambdaMART(Ranker):
    """LightGBM ``lambdarank`` trees."""

    kind = "lambdamart"

    def __init__(self, features, trained_on, params, booster):
        super().__init__(features, trained_on, params)
        self.booster = booster

    @classmethod
    def train(cls, x, y, groups, features, trained_on, params) -> LambdaMART:
        lgb = _lightgbm()
        params = {**LAMBDAMART_DEFAULTS, **params}
        sizes = np.diff(np.flatnonzero(np.r_[True, groups[1:] != groups[:-1], True]))
        model = lgb.LGBMRanker(objective="lambdarank", n_jobs=1, random_state=0, deterministic=True,
                               force_row_wise=True, verbose=-1, **params)
        model.fit(x, y.astype(int), group=sizes, feature_name=[_safe(f) for f in features])
        return cls(features, trained_on, params, model.booster_)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.booster.predict(x, num_threads=1)

    def importances(self) -> dict[str, float]:
        """Total gain of the splits on each feature."""
        gains = self.booster.feature_importance(importance_type="gain")
        return {f: float(g) for f, g in zip(self.features, gains)}

    def save(self, path: Path) -> None:
        booster = path.with_suffix(".lgb.txt")
        booster.write_text(self.booster.model_to_string(), encoding="utf-8")
        path.write_text(json.dumps({**self._meta(), "booster": booster.name}, indent=1), encoding="utf-8")


def _safe(name: str) -> str:
    return name.replace(".", "__")  # LightGBM refuses some punctuation in feature names


def _pairs(y: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (hi, lo) of every within-query pair with y[hi] > y[lo]."""
    his, los = [], []
    for start, end in zip(*_bounds(groups)):
        rel = y[start:end]
        a, b = np.nonzero(rel[:, None] > rel[None, :])
        his.append(a + start)
        los.append(b + start)
    return (np.concatenate(his), np.concatenate(los)) if his else (np.zeros(0, int), np.zeros(0, int))


def _bounds(groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    cuts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1], True])
    return cuts[:-1], cuts[1:]


def train(kind: str, x: np.ndarray, y: np.ndarray, groups: np.ndarray, features: list[str],
          trained_on: list[str], params: dict | None = None) -> Ranker:
    """A ``kind`` ranker fitted on rows ``x`` (N, F), relevance ``y`` and query ``groups`` (contiguous)."""
    check_kind(kind)
    cls = LambdaMART if kind == "lambdamart" else LinearRanker
    return cls.train(np.asarray(x, np.float64), np.asarray(y, np.float64), np.asarray(groups), features,
                     trained_on, dict(params or {}))


def check_kind(kind: Any) -> str:
    """``kind`` if known (LightGBM itself is imported only when a LambdaMART model is trained or loaded)."""
    if kind not in KINDS:
        raise ConfigError(f"learned fusion kind {kind!r} is unknown; use lambdamart or linear")
    return kind


def save(ranker: Ranker, path: str | Path) -> Path:
    """Write ``ranker`` to ``path`` (JSON; LambdaMART also ``<stem>.lgb.txt`` beside it)."""
    path = Path(path)
    if path.suffix != ".json":
        raise ConfigError(f"a learned fusion model is saved as a .json file (LightGBM's text model beside it), "
                          f"got {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    ranker.save(path)
    return path


def load(path: str | Path) -> Ranker:
    """Read a model written by :func:`save`; a ConfigError naming the file when it is missing or malformed."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"learned fusion model {path} does not exist; train one with LearnedFusion.fit(...) "
                          "and .save(path), or set the stage's model setting to an existing file")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        kind, features, trained_on = meta["kind"], list(meta["features"]), list(meta.get("trained_on", []))
        if meta.get("format") != FORMAT:
            raise ValueError(f"format {meta.get('format')!r}, expected {FORMAT}")
        if kind == "linear":
            linear = LinearRanker(features, trained_on, meta.get("params", {}), meta["mean"], meta["std"],
                                  meta["weights"])
            if not len(linear.weights) == len(features) == len(linear.mean):
                raise ValueError("weights, mean and features differ in length")
            return linear
        if kind == "lambdamart":
            lgb = _lightgbm()
            booster = lgb.Booster(model_str=(path.parent / meta["booster"]).read_text(encoding="utf-8"))
            if booster.num_feature() != len(features):
                raise ValueError(f"the booster has {booster.num_feature()} features, the list {len(features)}")
            return LambdaMART(features, trained_on, meta.get("params", {}), booster)
        raise ValueError(f"unknown kind {kind!r}")
    except ConfigError:
        raise
    except (OSError, KeyError, TypeError, ValueError) as err:
        raise ConfigError(f"learned fusion model {path} is not a valid model file ({err}); retrain and save it "
                          "again") from None
