"""The documentation's examples are checked: Python blocks run, shell commands parse and compose.

Each page of ``docs/`` is a test: its ```python blocks run in order in one namespace from the repo
root, on the small SciFact of tests/test_readme.py (same helpers). Every ``cascade ...`` line of a
```bash block is checked as far as it can be without running it: ``cascade run`` lines go through
what ``cascade run`` does before Hydra starts (baseline spelling, launcher plugin, composition of
every swept job, the ``_target_`` checks), ``index`` / ``serve`` overrides compose, ``eval`` /
``tune`` options parse with their own parsers. YAML blocks that quote a file of ``conf/`` (first
line ``# conf/...``) must equal it.

An example that cannot run offline is marked on the line before its fence with
``<!-- docs-test: skip (the reason) -->``; ``test_marked_examples`` reports each one, with its
reason, as a skipped test (``-ra`` prints them).
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from test_readme import README, run_blocks, use_small_scifact

from conftest import REPO

DOCS = REPO / "docs"
PAGES = sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md"))
FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>[\w-]*)\s*$")
MARKER = re.compile(r"<!--\s*docs-test:\s*(?P<body>.*?)\s*-->")
SKIP = re.compile(r"^skip \((?P<reason>[^)]+)\)$")


@dataclass(frozen=True)
class Block:
    page: str
    line: int  # of the opening fence, 1-based
    lang: str
    code: str
    skip: str | None  # the stated reason, when marked


def blocks(path: Path) -> list[Block]:
    """Every fenced block of a Markdown file (indented ones too), with its skip marker if any."""
    lines = path.read_text(encoding="utf-8").splitlines()
    out, i, previous = [], 0, ""
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            if lines[i].strip():
                previous = lines[i].strip()
            i += 1
            continue
        indent, start = match["indent"], i
        i += 1
        body = []
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i])
            i += 1
        marker = MARKER.fullmatch(previous)
        skip = None
        if marker:
            found = SKIP.match(marker["body"])
            if not found:
                raise ValueError(f"{path}:{start}: a docs-test marker must read "
                                 f"'<!-- docs-test: skip (the reason) -->', got {previous!r}")
            skip = found["reason"]
        out.append(Block(path.name if path == README else path.relative_to(DOCS).as_posix(), start + 1,
                         match["lang"], "\n".join(body) + "\n", skip))
        previous, i = "", i + 1
    return out


def page_blocks(page: str, lang: str) -> list[Block]:
    return [b for b in blocks(DOCS / page) if b.lang == lang]


# --- Python ------------------------------------------------------------------------------------
PY_PAGES = [p for p in PAGES if any(b.skip is None for b in page_blocks(p, "python"))]


def _check_add_a_stage(namespace: dict) -> None:
    """The DocLength example keeps the shortest documents, at most k of them."""
    ds, run = namespace["ds"], namespace["stage_run"]
    for row in run.candidates.doc_idx:
        lengths = [len(ds.corpus.texts[i]) for i in row if i >= 0]
        assert lengths == sorted(lengths) and len(lengths) <= 5
    assert (run.candidates.lengths <= 5).all()


CHECKS = {"how-to/add-a-stage.md": _check_add_a_stage}


@pytest.fixture(scope="module")
def docs_cache(tmp_path_factory) -> Path:
    """One cache for every page, so the small corpus is encoded once."""
    return tmp_path_factory.mktemp("docs-cache")


@pytest.mark.parametrize("page", PY_PAGES)
def test_page_python_blocks_run(page, scifact_path, docs_cache, monkeypatch):
    monkeypatch.setenv("CASCADE_CACHE_DIR", str(docs_cache))
    monkeypatch.chdir(REPO)
    use_small_scifact(monkeypatch)
    runnable = [b for b in page_blocks(page, "python") if b.skip is None]
    namespace = run_blocks([b.code for b in runnable], f"docs/{page}")
    if page in CHECKS:
        CHECKS[page](namespace)


# --- shell -------------------------------------------------------------------------------------
def commands(code: str) -> list[list[str]]:
    """The ``cascade ...`` commands of a shell block: continuations joined, comments dropped,
    ``a && b`` split; a leading ``time`` is skipped."""
    out = []
    for line in code.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        command: list[str] = []
        for word in [*words, "&&"]:
            if word in ("&&", ";", "||"):
                if command[:1] == ["time"]:
                    command = command[1:]
                if command[:1] == ["cascade"]:
                    out.append(command[1:])
                command = []
            else:
                command.append(word)
    return out


def _loader(flags: list[str]):
    """cascade's checking config loader over the search path ``cascade run FLAGS`` gives Hydra."""
    from hydra._internal.utils import create_config_search_path
    from hydra.core.config_search_path import SearchPathQuery

    from cascade.app.precheck import CheckedConfigLoader

    path = create_config_search_path("pkg://cascade.conf")
    options = dict(zip(flags, flags[1:]))
    config_dir = options.get("-cd") or options.get("--config-dir")
    if config_dir:
        path.prepend(provider="command-line", path=f"file://{Path(config_dir).expanduser().resolve()}",
                     anchor=SearchPathQuery(provider="schema"))  # where Hydra puts --config-dir
    return CheckedConfigLoader(config_search_path=path), options.get("-cn") or options.get("--config-name") or "config"


def compose_run(args: list[str]) -> None:
    """Compose (and check) the config of ``cascade run ARGS`` as Hydra would, and each job of a sweep."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from cascade.app.precheck import ConfigRefused, parse_args

    flags, overrides, multirun = parse_args(args)
    loader, name = _loader(flags)
    try:
        cfg = loader.load_configuration(name, overrides, run_mode=RunMode.MULTIRUN if multirun else RunMode.RUN)
        if not multirun:
            return
        params = OmegaConf.select(cfg, "hydra.sweeper.params", default=None) or {}
        parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()] + overrides)
        for job in BasicSweeper.split_arguments(parsed, None)[0]:  # the jobs as Hydra's sweeper makes them
            try:
                loader.load_sweep_config(cfg, list(job))
            except ConfigRefused:
                raise
            except Exception as err:  # noqa: BLE001 - Hydra's composition errors, reported whole
                raise AssertionError(f"a job of `cascade run {' '.join(args)}` does not compose: "
                                     f"{' '.join(job)}: {err}") from None
    except ConfigRefused as refused:
        raise refused.error from None


def check_command(args: list[str]) -> str | None:
    """Check one ``cascade ARGS`` as far as possible without running it; a reason when it cannot be."""
    from cascade.app import cli, eval_cmd, index_cmd, serve_cmd, tune

    command, rest = args[0], args[1:]
    if command == "run":
        rest = cli.normalise_baseline(rest)
        try:
            cli.check_launcher(rest)
        except cli.CascadeError as err:
            return f"its launcher's plugin is not installed here ({err})"
        compose_run(rest)
    elif command == "index":
        if rest[:1] and rest[0] in ("add", "update", "delete", "compact", "info"):
            needs = {"add": 2, "update": 2, "delete": 2}.get(rest[0], 1)
            assert len([a for a in rest[1:] if not a.startswith("-")]) >= needs, f"too few arguments: {args}"
        else:
            overrides, _ = index_cmd._out_option(rest)
            index_cmd.compose_config(overrides)
    elif command == "serve":
        opts = serve_cmd._parser().parse_intermixed_args(rest)
        overrides = [a for a in opts.args if "=" in a]
        for name in opts.pipeline or [None]:
            index_cmd.compose_config(overrides + ([f"pipeline={name}"] if name else []))
    elif command == "eval":
        eval_cmd.build_parser().parse_args(rest)
    elif command == "tune":
        tune.parse_args(rest)
    elif command in ("report", "download"):
        assert len(rest) == (1 if command == "report" else 2) or rest in (["-h"], ["--help"]), f"usage: {args}"
    elif command == "verify":
        assert len([a for a in rest if a != "--all"]) <= 1, f"usage: {args}"
    elif command not in ("--help", "-h", "--version"):
        raise AssertionError(f"no such command: cascade {command}")
    return None


SHELL = [(b.page, b) for p in [*PAGES, None] for b in (blocks(README) if p is None else page_blocks(p, "bash"))
         if b.lang == "bash" and b.skip is None and commands(b.code)]


@pytest.mark.parametrize("page,block", SHELL, ids=[f"{p}:{b.line}" for p, b in SHELL])
def test_shell_commands_compose(page, block, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    cannot = []
    for args in commands(block.code):
        try:
            reason = check_command(args)
        except SystemExit as err:  # argparse's way of refusing
            raise AssertionError(f"{page}:{block.line}: `cascade {' '.join(args)}` does not parse ({err})") from None
        if reason:
            cannot.append(f"`cascade {' '.join(args)}`: {reason}")
    if cannot:
        pytest.skip(f"{page}:{block.line}: checked the rest; " + "; ".join(cannot))


def test_commands_are_found():
    """The parser sees the commands, so an empty check cannot pass for a page of commands."""
    assert commands("cascade run pipeline=bm25 \\\n  stage.bm25.k=5  # a comment\nls && time cascade index") == [
        ["run", "pipeline=bm25", "stage.bm25.k=5"], ["index"]]
    assert len(SHELL) >= 15


# --- YAML quoted from conf/ ----------------------------------------------------------------------
QUOTES = [b for p in PAGES for b in page_blocks(p, "yaml")] + [b for b in blocks(README) if b.lang == "yaml"]
QUOTES = [b for b in QUOTES if b.code.startswith("# conf/")]


@pytest.mark.parametrize("block", QUOTES, ids=[f"{b.page}:{b.line}" for b in QUOTES])
def test_yaml_quotes_equal_conf(block):
    path = REPO / block.code.splitlines()[0][2:].split()[0]
    assert yaml.safe_load(block.code) == yaml.safe_load(path.read_text(encoding="utf-8")), \
        f"{block.page}:{block.line} quotes {path.relative_to(REPO)}, which now reads differently"


# --- marked examples, stated -----------------------------------------------------------------------
MARKED = [b for p in PAGES for b in blocks(DOCS / p) if b.skip]


@pytest.mark.parametrize("block", MARKED, ids=[f"{b.page}:{b.line}" for b in MARKED])
def test_marked_examples(block):
    pytest.skip(f"docs/{block.page}:{block.line} ({block.lang}) not run: {block.skip}")


# --- the front page and the studies ---------------------------------------------------------------
def test_readme_is_a_front_page_whose_links_exist():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 150
    links = re.findall(r"\]\(((?:docs/|[A-Z]+\.md|LICENSE)[^)#]*)", text)
    assert len(links) >= 15
    missing = [link for link in links if not (REPO / link).exists()]
    assert not missing, f"README links to files that do not exist: {missing}"


def test_studies_sweep_pipelines_that_exist():
    pipelines = {p.stem for p in (REPO / "conf" / "pipeline").glob("*.yaml")}
    for path in sorted((REPO / "experiments").glob("*/experiment.yaml")):
        cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
        swept = str(((cfg.get("hydra") or {}).get("sweeper") or {}).get("params", {}).get("pipeline", ""))
        names = [n.strip() for n in swept.split(",") if n.strip()]
        names += [d["override /pipeline"] for d in cfg.get("defaults", []) if isinstance(d, dict)
                  and "override /pipeline" in d]
        unknown = sorted(set(names) - pipelines)
        assert not unknown, f"{path.relative_to(REPO)} sweeps pipelines that conf/pipeline/ lacks: {unknown}"


def test_api_page_lists_every_public_name():
    import cascade

    table = (DOCS / "reference" / "api" / "cascade.md").read_text(encoding="utf-8").split("## The names", 1)[1]
    listed = set(re.findall(r"`(\w+)`", "\n".join(line.split("|")[1] for line in table.splitlines()
                                                 if line.startswith("| `"))))
    assert listed == set(cascade.__all__) - {"__version__"}
