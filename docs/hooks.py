"""MkDocs hooks: the reference pages generated from the repository at build time.

A page may hold these markers, each alone on a line; the build replaces them:

* ``<!-- gen:config -->``: every YAML file under ``conf/``, grouped by config group, with its
  comments (the documentation of each key) as the file holds them.
* ``<!-- gen:cli -->``: the help text of every ``cascade`` command, printed by this checkout.
* ``<!-- gen:modules PACKAGE -->``: one mkdocstrings ``:::`` entry per module of PACKAGE (a
  folder of this repository, e.g. ``cascade.core``), so a new module joins the API reference.
* ``<!-- gen:stages -->``: for every module of ``stages/``, its ``Stage`` subclasses (constructor
  arguments = config keys) and then the rest of the module, so a new stage joins the stage reference.

Nothing is copied by hand, so the reference cannot drift from ``conf/`` or the code.
"""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARKER = re.compile(r"^<!-- gen:(\w+)(?: ([\w.]+))? -->$", re.M)

# (title, arguments of `cascade`) for the CLI reference, in the order of `cascade --help`
# (`cascade run` is Hydra's, described in words below)
CLI = [
    ("cascade", ["--help"]),
    ("cascade run", ["run", "--help"]),
    ("cascade index", ["index", "--help"]),
    ("cascade serve", ["serve", "--help"]),
    ("cascade report", ["report", "--help"]),
    ("cascade tune", ["tune", "--help"]),
    ("cascade download", ["download", "--help"]),
    ("cascade verify", ["verify", "--help"]),
    ("cascade eval", ["eval", "--help"]),
]


def _config() -> str:
    conf = ROOT / "conf"
    out = []
    files = sorted(p for p in conf.rglob("*.yaml"))
    groups: dict[str, list[Path]] = {}
    for path in files:
        rel = path.relative_to(conf)
        group = "(top level)" if len(rel.parts) == 1 else "/".join(rel.parts[:-1])
        groups.setdefault(group, []).append(path)
    for group, paths in groups.items():
        out.append(f"## {group if group != '(top level)' else 'config.yaml'}\n")
        if group != "(top level)":
            names = ", ".join(f"`{p.stem}`" for p in paths)
            out.append(f"Choose one with `{group}=NAME` on the command line; NAME is one of {names}.\n")
        for path in paths:
            rel = path.relative_to(ROOT)
            out.append(f"### `{rel}`\n\n```yaml\n{path.read_text().rstrip()}\n```\n")
    return "\n".join(out)


def _cli() -> str:
    out = []
    for title, args in CLI:
        if title == "cascade run":
            # `cascade run --help` is Hydra's: the composed config, long; the config page shows it file by file
            out.append(f"## `{title}`\n\n`cascade run [key=value ...]` composes `conf/config.yaml` with the "
                       "overrides (Hydra syntax; `-m` for a sweep) and runs the pipeline. `cascade run --help` "
                       "prints Hydra's help with the composed config; every key is on the "
                       "[configuration page](config.md).\n")
            continue
        proc = subprocess.run([sys.executable, "-m", "cascade.app.cli", *args], cwd=ROOT, capture_output=True,
                              text=True, timeout=120)
        text = (proc.stdout + proc.stderr).strip()
        if not text.startswith("usage") and "usage" not in text:
            raise RuntimeError(f"`cascade {' '.join(args)}` printed no usage: {text[:500]}")
        text = text.removeprefix("error: unknown option '--help'").strip()
        out.append(f"## `{title}`\n\n```text\n{text}\n```\n")
    return "\n".join(out)


def _modules(package: str) -> str:
    folder = ROOT.joinpath(*package.split("."))
    if not folder.is_dir():
        raise RuntimeError(f"gen:modules {package}: no folder {folder}")
    names = sorted(p.stem for p in folder.glob("*.py") if p.stem != "__init__")
    return "\n".join(f"::: {package}.{name}\n" for name in names)


def _stages() -> str:
    out = []
    for path in sorted((ROOT / "stages").glob("*.py")):
        if path.stem == "__init__":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        classes = [node.name for node in tree.body if isinstance(node, ast.ClassDef)
                   and any(getattr(base, "id", None) == "Stage" for base in node.bases)]
        module = f"stages.{path.stem}"
        for name in classes:
            out.append(f"::: {module}.{name}\n    options:\n      show_root_full_path: false\n      members: false\n")
        hidden = "".join(f', "!^{name}$"' for name in classes)
        out.append(f"::: {module}\n    options:\n      show_root_full_path: false\n"
                   f'      filters: ["!^_"{hidden}]\n')
    return "\n".join(out)


def on_page_markdown(markdown: str, page, config, files) -> str:
    def replace(match: re.Match) -> str:
        kind, arg = match.group(1), match.group(2)
        if kind == "config":
            return _config()
        if kind == "cli":
            return _cli()
        if kind == "modules" and arg:
            return _modules(arg)
        if kind == "stages":
            return _stages()
        raise RuntimeError(f"{page.file.src_path}: unknown generator marker {match.group(0)}")

    return MARKER.sub(replace, markdown)
