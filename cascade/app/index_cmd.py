"""``cascade index [overrides]``: build (or find built) every artifact a pipeline needs, without evaluating.

The config is the one ``cascade run`` composes (``cascade.conf``, the same overrides, the same
``_target_`` allow-list). :func:`index` builds the missing artifacts of every stage in one
planned step (shared encoder passes run once, on the configured ``encoding`` engine), opens
them all as a run would, and returns one :class:`ArtifactReport` per artifact. Sweeps and CI
can call it first, so their jobs find every index built.
"""
from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from cascade.app.runner import Built
from cascade.app.tables import markdown_table
from cascade.app.targets import check_targets
from cascade.core.data import Corpus
from cascade.core.errors import CascadeError, ConfigError
from cascade.core.indexing import build_all
from cascade.core.stage import Pipeline, prepare_stages
from cascade.index import store

log = logging.getLogger(__name__)

CONFIG_MODULE = "cascade.conf"
USAGE = """usage: cascade index [key=value ...]

Build (or reuse) every cached artifact the configured pipeline needs for the dataset, without
evaluating; the overrides are those of `cascade run`, e.g.
  cascade index pipeline=cascade dataset.path=/data/beir/nfcorpus
  cascade index encoding=ray encoding.num_workers=4             # encode on a private local Ray
  cascade index encoding=ray encoding.address=auto encoding.num_gpus_per_worker=1   # on a cluster
  cascade index pipeline=cascade --out my-index      # and save them as a folder you own (cascade.load)
"""


@dataclass(frozen=True)
class ArtifactReport:
    """One artifact after ``cascade index``: whether this command built it, its size and build time."""

    stage: str
    kind: str
    key: str
    status: str  # "built" or "reused"
    docs: int
    bytes: int
    seconds: float
    path: str


def compose_config(overrides: Sequence[str]) -> DictConfig:
    """The config ``cascade run OVERRIDES`` runs (targets checked); a ConfigError if it does not compose."""
    from hydra import compose, initialize_config_module

    bad = [arg for arg in overrides if arg.startswith("-")]
    if bad:
        raise ConfigError(f"cascade index takes key=value overrides only, not {bad[0]!r} "
                          "(a sweep's -m: index each configuration, or its shared settings, once)")
    try:
        with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
            cfg = compose("config", overrides=list(overrides))
    except Exception as err:  # noqa: BLE001 - Hydra's composition errors: report them whole, with usage
        message = " ".join(str(err).split())
        raise ConfigError(f"the config does not compose: {message}. Check the override names and values "
                          "(`cascade run --help` lists the config groups and their options)") from None
    check_targets(cfg)
    return cfg


def _folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _report(stage: str, path: Path, built: bool, seconds: float, corpus: Corpus) -> ArtifactReport:
    meta = store.read_meta(path) if store.is_complete(path) else {}
    return ArtifactReport(stage, path.parent.name, path.name, "built" if built else "reused",
                          int(meta.get("num_docs", len(corpus))), _folder_bytes(path), round(seconds, 3), str(path))


def index_pipeline(pipeline: Pipeline, corpus: Corpus, engine: Any = None) -> list[ArtifactReport]:
    """Build what ``pipeline`` is missing for ``corpus`` (passes run by ``engine``) and open everything.

    Artifacts a stage declares (:meth:`~cascade.core.stage.Stage.artifacts`) are reported with
    their share of the build time; an index a stage builds itself while loading (BM25) is reported
    from its ``index_path``, with the stage's load time.
    """
    stages = list(dict.fromkeys(pipeline.parts()))
    declared: dict[Path, tuple[str, Any]] = {}
    for stage in stages:
        for art in stage.artifacts(corpus):
            declared.setdefault(Path(art.path), (stage.name, art))
    missing = {path for path, (_, art) in declared.items() if not art.is_built()}
    seconds = build_all([art for _, art in declared.values()], corpus, engine)
    reports = [_report(name, path, path in missing, seconds.get(path, 0.0), corpus)
               for path, (name, art) in declared.items()]
    for stage in stages:  # open everything as a run would; stages with their own index build it here
        start = time.time()
        spent = prepare_stages([stage], corpus, engine).get(stage.name, 0.0)
        path = getattr(stage, "index_path", None)
        if path is not None and Path(path) not in declared and store.is_complete(Path(path)):
            built = (Path(path) / store.META).stat().st_mtime >= start
            reports.append(_report(stage.name, Path(path), built, spent if built else 0.0, corpus))
    order = {stage.name: i for i, stage in reversed(list(enumerate(stages)))}
    return sorted(reports, key=lambda r: order[r.stage])  # pipeline order


def index(cfg: DictConfig, checked: bool = False) -> list[ArtifactReport]:
    """``cascade index``: build or reuse every artifact of ``cfg.pipeline`` for ``cfg.dataset``
    (``checked``: ``cfg`` comes from :func:`compose_config`, which checked its targets)."""
    built = Built(cfg, checked)  # every target checked once, before anything is built
    return index_pipeline(built.pipeline, built.dataset.corpus, built.engine)


def format_reports(reports: Sequence[ArtifactReport]) -> str:
    """The table ``cascade index`` prints, and a totals line."""
    rows = [{k: v for k, v in asdict(r).items() if k != "path"} for r in reports]
    built = sum(r.status == "built" for r in reports)
    total = sum(r.bytes for r in reports)
    return (markdown_table(rows, ["stage", "kind", "key", "status", "docs", "bytes", "seconds"])
            + f"\n\n{len(reports)} artifacts: {built} built, {len(reports) - built} reused; {total:,} bytes"
            + (f"; in {Path(reports[0].path).parent.parent}" if reports else ""))


def _out_option(args: Sequence[str]) -> tuple[list[str], str | None]:
    """(the overrides, the folder of ``--out DIR`` / ``--out=DIR`` or None)."""
    rest, out, i = [], None, 0
    while i < len(args):
        if args[i] == "--out" or args[i].startswith("--out="):
            if args[i] == "--out" and i + 1 >= len(args):
                raise ConfigError("--out needs a folder: cascade index [overrides] --out DIR")
            out = args[i].split("=", 1)[1] if "=" in args[i] else args[i + 1]
            i += 1 if "=" in args[i] else 2
            continue
        rest.append(args[i])
        i += 1
    return rest, out


def save_index(cfg: DictConfig, out: str, checked: bool = False) -> tuple[list[ArtifactReport], Any]:
    """``cascade index ... --out DIR``: build (or reuse) the artifacts, then save the pipeline as folder ``out``."""
    from cascade.saved import save

    built = Built(cfg, checked)
    pipeline, engine, dataset = built.pipeline, built.engine, built.dataset
    if Path(out).exists():
        raise ConfigError(f"{out} already exists; save into a new folder (or delete that one first)")
    reports = index_pipeline(pipeline, dataset.corpus, engine)
    return reports, save(pipeline.index(dataset.corpus), out)


def main(args: Sequence[str]) -> int:
    """The ``cascade index`` command: print one row per artifact; 2 on bad input."""
    from cascade.app.saved_cmd import COMMANDS, USAGE as SAVED_USAGE, main as saved_main

    if args and args[0] in COMMANDS:
        return saved_main(args)
    if any(a in ("-h", "--help") for a in args):
        print(USAGE + "\n" + SAVED_USAGE)
        return 0
    try:
        args, out = _out_option(args)
        cfg = compose_config(args)
        logging.basicConfig(level=logging.WARNING, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
        logging.getLogger("cascade").setLevel(cfg.get("log_level", "INFO"))
        if out is None:
            reports, saved = index(cfg, checked=True), None
        else:
            reports, saved = save_index(cfg, out, checked=True)
    except CascadeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_reports(reports))
    if saved is not None:
        info = saved.info()
        print(f"\nsaved index: {info['path']} ({info['documents']} documents, {info['bytes']:,} bytes); open it with "
              "cascade.load(DIR), grow it with `cascade index add DIR FILE`")
    return 0
