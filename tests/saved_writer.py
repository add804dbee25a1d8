"""A saved-index writer to kill: ``python saved_writer.py count|kill PRISTINE WORK OP [MODEL]``.

``count`` runs OP once on a copy of PRISTINE (``WORK/count``) and prints how many crash points it
passed. ``kill`` runs it on a fresh copy ``WORK/k<i>`` for every point ``i`` in turn, in a child
forked from this process (imports are paid once; the parent never runs torch),
which SIGKILLs itself at point ``i`` (:mod:`cascade.index.crashpoints`); it prints a JSON list of
(i, how the child ended). The parent imports what a writer imports (sentence-transformers alone takes
~5 s), so the children start warm; importing torch starts none of its threads, so forking stays safe.
OP is one of :data:`OPS`; ``save`` writes PRISTINE itself from scratch.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import sentence_transformers  # noqa: E402,F401

import cascade  # noqa: E402
import cascade.saved  # noqa: E402,F401 - a writer's imports, paid once here (see the docstring)
import cascade.stages.biencoder  # noqa: E402,F401
import cascade.stages.bm25  # noqa: E402,F401
import cascade.stages.colbert  # noqa: E402,F401
from cascade.index import crashpoints  # noqa: E402

from saved_helpers import make_docs, pipelines  # noqa: E402

ADDED = make_docs(6, seed=5, start=100)
UPDATED = {"d2": "ship sea ship sea train", "d5": {"title": "Moon", "text": "moon star night", "metadata": {"x": 1}}}


def run_op(op: str, folder: Path, model: str | None) -> None:
    if op == "save":
        pipelines(model)["cascade"].index(make_docs(30)).save(folder)
        return
    index = cascade.load(folder)
    if op == "add":
        index.add(ADDED, metadata={"d100": {"source": "new"}})
    elif op == "delete":
        index.delete(["d1", "d4", "d9"])
    elif op == "update":
        index.update(UPDATED)
    elif op == "compact":
        index.compact()
    elif op == "retrain":
        index.compact(retrain=True)
    else:
        raise SystemExit(f"unknown op {op}")


OPS = ("save", "add", "delete", "update", "compact", "retrain")


def _prepare(op: str, pristine: Path, target: Path) -> Path:
    shutil.rmtree(target, ignore_errors=True)
    if op == "save":
        target.mkdir(parents=True)
        return target / "index"
    shutil.copytree(pristine, target)
    return target


def _in_child(op: str, folder: Path, model: str | None, env: dict) -> int:
    pid = os.fork()
    if pid == 0:  # the writer
        try:
            os.environ.update(env)
            crashpoints._reached = 0
            run_op(op, folder, model)
            os._exit(0)
        except BaseException as err:  # noqa: BLE001 - report and end the child whatever happened
            print(f"child failed: {type(err).__name__}: {err}", file=sys.stderr)
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    return status


def main(mode: str, pristine: str, work: str, op: str, model: str | None = None) -> None:
    pristine_path, work_path = Path(pristine), Path(work)
    if mode == "count":
        log = work_path / "points.log"
        log.unlink(missing_ok=True)
        status = _in_child(op, _prepare(op, pristine_path, work_path / "count"), model,
                           {crashpoints.KILL_LOG: str(log)})
        if status != 0:
            raise SystemExit(f"the uninterrupted {op} failed (status {status})")
        print(len(log.read_text().splitlines()) if log.is_file() else 0)
        return
    total = int(os.environ["POINTS"])
    ends = []
    for i in range(1, total + 2):
        status = _in_child(op, _prepare(op, pristine_path, work_path / f"k{i}"), model,
                           {crashpoints.KILL_AT: str(i)})
        ends.append([i, "killed" if os.WIFSIGNALED(status) and os.WTERMSIG(status) == 9 else
                     f"exit {os.WEXITSTATUS(status)}" if os.WIFEXITED(status) else f"status {status}"])
    print(json.dumps(ends))


if __name__ == "__main__":
    main(*sys.argv[1:])
