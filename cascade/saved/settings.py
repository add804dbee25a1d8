"""A pipeline's stages as plain JSON settings, and back; the identity of the models behind each index.

A saved index records every leaf stage as ``{"class", "name", "fusion", "settings", "encoding"}``:
``settings`` are the stage's constructor arguments read back from the stage (so a stage gains a
setting and it is saved with it), ``encoding`` everything that changes its stored vectors (model
content, maximum length, prefix, precision...). Opening rebuilds each stage from its settings and
refuses one whose ``encoding`` differs now (another model at that path, another precision). Only
cascade's own stage classes are rebuilt: an index folder never names code to import.
"""
from __future__ import annotations

import dataclasses
import inspect
import json
from typing import Any

from cascade.core.errors import ConfigError, DataError
from cascade.core.fusion import Fusion
from cascade.core.stage import Pipeline, Stage
from cascade.encoders.models import default_model_path, model_identity
from cascade.stages.biencoder import BiEncoder
from cascade.stages.bm25 import BM25
from cascade.stages.colbert import ColBERT
from cascade.stages.cross_encoder import CrossEncoder

CLASSES: dict[str, type] = {"BM25": BM25, "BiEncoder": BiEncoder, "ColBERT": ColBERT, "CrossEncoder": CrossEncoder}
# where a constructor argument is kept under another attribute
ALIASES = {"BM25": {"stemmer": lambda s: s.tokenizer.stemmer_name, "stopwords": lambda s: s.tokenizer.stopwords},
           "ColBERT": {"search": lambda s: s.search_mode}}
# arguments that belong to the machine, not the index: chosen again when it is opened
LOCAL = {"self", "device", "cache_dir", "progress", "fusion", "name", "k"}


def _json(value: Any, where: str) -> Any:
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError):
        raise ConfigError(f"cannot save {where}: {value!r} is not plain JSON data") from None


def model_spec(model: str) -> str | None:
    """How a resolved model is recorded: None for the packaged MiniLM (found again wherever it is installed)."""
    try:
        if model == str(default_model_path()):
            return None
    except Exception:  # noqa: BLE001 - no packaged model here: the path is kept as it is
        pass
    return model


def encoding(stage: Stage) -> dict:
    """What the stored vectors of ``stage`` depend on (checked again when the index is opened)."""
    if isinstance(stage, BiEncoder):
        enc, (_, doc_len) = stage.encoder, stage._lengths()
        return {**enc.identity(), "doc_max_length": doc_len, "doc_prefix": stage.doc_prefix,
                "similarity": stage.similarity, "precision": enc.precision}
    if isinstance(stage, ColBERT):
        return _json({k: v for k, v in stage.encoder.settings().items()}, stage.name)
    if isinstance(stage, CrossEncoder):
        return model_identity(stage.model)
    return {}


def describe_stage(stage: Stage) -> dict:
    """The JSON record of one leaf stage (see the module docstring); a ConfigError for a stage that cannot be saved."""
    cls = type(stage).__name__
    if CLASSES.get(cls) is not type(stage):
        raise ConfigError(f"cannot save stage {stage.name!r} ({type(stage).__name__}): a saved index holds "
                          f"pipelines of {', '.join(CLASSES)} stages only (functions and unions are code or "
                          "combinations that the folder cannot describe)")
    settings = {}
    for param in inspect.signature(type(stage).__init__).parameters:
        if param in LOCAL:
            continue
        getter = ALIASES.get(cls, {}).get(param)
        if getter is None and not hasattr(stage, param):
            raise ConfigError(f"cannot save stage {stage.name!r}: its setting {param!r} is not kept on the stage")
        settings[param] = getter(stage) if getter else getattr(stage, param)
    if "model" in settings:
        settings["model"] = model_spec(settings["model"])
    fusion = dataclasses.asdict(stage.fusion) if stage.fusion is not None else None
    return {"class": cls, "name": stage.name, "k": stage.k, "fusion": fusion,
            "settings": _json(settings, f"stage {stage.name!r}"), "encoding": _json(encoding(stage), stage.name)}


def build_stage(record: dict, model: str | None = None, device: str | None = None) -> Stage:
    """The stage a record describes (``model`` replaces a recorded local model path), checked against its encoding."""
    cls = CLASSES.get(str(record.get("class")))
    if cls is None:
        raise DataError(f"the index names stage class {record.get('class')!r}, which this cascade does not have")
    settings = dict(record["settings"])
    if model is not None:
        settings["model"] = model
    fusion = Fusion(**record["fusion"]) if record.get("fusion") else None
    parameters = inspect.signature(cls).parameters
    extra: dict[str, Any] = {"device": device} if "device" in parameters else {}
    if "progress" in parameters:
        extra["progress"] = False
    try:
        stage = cls(k=record["k"], fusion=fusion, name=record["name"], **settings, **extra)
    except TypeError as err:
        raise DataError(f"the index's stage {record['name']!r} has settings this cascade does not take ({err}); "
                        "open it with the cascade version that saved it") from None
    found = _json(encoding(stage), stage.name)
    if found != record.get("encoding", {}):
        then = record.get("encoding", {})
        diff = sorted(k for k in set(found) | set(then) if found.get(k) != then.get(k))
        changes = ", ".join(f"{k}: {then.get(k)!r} then, {found.get(k)!r} now" for k in diff)
        raise DataError(f"stage {stage.name!r}: the model or settings here differ from those that built the index "
                        f"({changes})"
                        f"; give the same model files (cascade.load(DIR, models={{{stage.name!r}: PATH}}) for a "
                        "model that moved), or rebuild the index with this one")
    return stage


def describe_pipeline(pipeline: Pipeline) -> tuple[dict, list[Stage]]:
    """(the pipeline's shape with leaves as part numbers, its distinct leaf stages in order)."""
    leaves: list[Stage] = list(dict.fromkeys(pipeline.parts()))
    number = {id(s): i for i, s in enumerate(leaves)}

    def shape(stage: Stage) -> dict:
        if isinstance(stage, Pipeline):
            return {"pipeline": [shape(s) for s in stage.stages], "k": stage.k, "name": stage.name}
        return {"part": number[id(stage)]}
    return shape(pipeline), leaves


def build_pipeline(shape: dict, parts: list[Stage]) -> list[Stage]:
    """The top-level stage list of ``shape`` (nested pipelines rebuilt) over the built leaf stages."""
    def build(node: dict) -> Stage:
        if "part" in node:
            return parts[node["part"]]
        return Pipeline([build(n) for n in node["pipeline"]], k=node.get("k"), name=node.get("name", "pipeline"))
    return [build(n) for n in shape["pipeline"]]
