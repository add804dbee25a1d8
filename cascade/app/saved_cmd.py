"""``cascade index add|update|delete|compact|info DIR ...``: change or describe a saved index.

(``cascade index [overrides] --out DIR`` builds and saves one: :mod:`cascade.app.index_cmd`.)
"""
from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from cascade.core.errors import CascadeError

COMMANDS = ("add", "update", "delete", "compact", "info")
USAGE = """usage:
  cascade index [key=value ...] --out DIR   build the configured pipeline's indexes and save them as folder DIR
  cascade index add DIR FILE                add the documents of FILE (corpus.jsonl: _id, text, title, metadata)
  cascade index update DIR FILE             replace documents already in DIR (same ids) by those of FILE
  cascade index delete DIR ID [ID ...]      delete documents (ids, comma-separated, or @FILE: one id per line)
  cascade index compact DIR [--retrain]     rewrite DIR without deleted documents (--retrain: train codecs again)
  cascade index info DIR                    generation, documents, bytes, codec drift (JSON)

options: --wait SECONDS (how long to wait for another writer, default 60); --ignore-missing (delete: skip
ids not in the index instead of failing)
"""


def _options(args: list[str]) -> tuple[list[str], dict]:
    rest, opts, i = [], {"wait": 60.0, "ignore_missing": False, "retrain": False}, 0
    while i < len(args):
        arg = args[i]
        if arg == "--wait" or arg.startswith("--wait="):
            value = arg.split("=", 1)[1] if "=" in arg else (args[i + 1] if i + 1 < len(args) else "")
            i += 0 if "=" in arg else 1
            try:
                opts["wait"] = float(value)
            except ValueError:
                raise CascadeError(f"--wait takes a number of seconds, got {value!r}") from None
        elif arg in ("--ignore-missing", "--retrain"):
            opts[arg[2:].replace("-", "_")] = True
        elif arg.startswith("--"):
            raise CascadeError(f"unknown option {arg!r}\n\n{USAGE}")
        else:
            rest.append(arg)
        i += 1
    return rest, opts


def _ids(args: list[str]) -> list[str]:
    ids = []
    for arg in args:
        if arg.startswith("@"):
            path = Path(arg[1:])
            if not path.is_file():
                raise CascadeError(f"ids file {path} does not exist")
            ids += [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        else:
            ids += [part for part in arg.split(",") if part]
    return ids


def main(args: Sequence[str]) -> int:
    """Run one subcommand; 2 (with ``error: ...``) on bad input, before anything is changed."""
    command, (rest, opts) = args[0], _options(list(args[1:]))
    want = {"add": 2, "update": 2, "compact": 1, "info": 1}.get(command)
    if (want is not None and len(rest) != want) or (command == "delete" and len(rest) < 2):
        print(USAGE, file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    logging.getLogger("cascade").setLevel(logging.INFO)
    from cascade.saved import load

    try:
        index = load(rest[0])
        before = index.generation
        if command == "add":
            index.add(rest[1], timeout=opts["wait"])
        elif command == "update":
            index.update(rest[1], timeout=opts["wait"])
        elif command == "delete":
            index.delete(_ids(rest[1:]), missing="ignore" if opts["ignore_missing"] else "error",
                         timeout=opts["wait"])
        elif command == "compact":
            index.compact(retrain=opts["retrain"], timeout=opts["wait"])
        info = index.info()
    except CascadeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if command == "info":
        print(json.dumps(info, indent=2))
    else:
        changed = "unchanged" if index.generation == before else f"generation {index.generation}"
        print(f"{index.root}: {changed}; {info['documents']} documents ({info['deleted']} deleted, not yet "
              f"compacted), {info['bytes']:,} bytes")
        for stage, drift in index.codec_drift().items():
            print(f"{stage}: codec drift {json.dumps(drift)}")
    return 0
