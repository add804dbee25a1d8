"""`cascade eval RUN QRELS`: a run's saved run.trec evaluates to exactly its metrics.json."""
import json
import random
import re

import pytest
from test_cli import cascade

from cascade.app.cli import main

from conftest import write_beir

QRELS_TEXT = "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td3\t2\nq2\td2\t1\n"


def _synthetic_beir(root):
    """40 documents of random words and 8 queries, judged so that BM25 is fair but far from perfect."""
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(25)]
    docs = {f"doc{i}": (f"t{i}", " ".join(rng.choices(vocab, k=8))) for i in range(40)}
    queries, qrels = {}, {}
    for q in range(8):
        words = rng.sample(vocab, 3)
        queries[f"q{q}"] = " ".join(words)
        hits = [d for d, (_, text) in docs.items() if len(set(words) & set(text.split())) >= 2]
        judged = hits[::2] + rng.sample(list(docs), 3)  # half the matches, and some others
        qrels[f"q{q}"] = {d: rng.choice([1, 2]) for d in judged}
    return write_beir(root, docs, queries, qrels)


def _printed(stdout: str) -> dict[str, float]:
    rows = [line.split("\t") for line in stdout.splitlines()]
    assert all(len(r) == 3 and r[1] == "all" for r in rows), stdout
    return {name: float(value) for name, _, value in rows}


def test_eval_of_a_saved_run_prints_exactly_its_metrics_json(tmp_path):
    root = _synthetic_beir(tmp_path / "synth")
    out = tmp_path / "run"
    proc = cascade("run", "pipeline=bm25", f"dataset.path={root}", "stage.bm25.k=20", f"hydra.run.dir={out}")
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert all(0 < v < 1 for v in metrics.values()), metrics  # a non-trivial ranking to get right

    proc = cascade("eval", str(out / "run.trec"), str(root / "qrels" / "test.tsv"))  # default metrics
    assert proc.returncode == 0, proc.stderr
    printed = _printed(proc.stdout)
    assert printed == metrics and list(printed) == list(metrics)  # same names, same values to the last bit

    proc = cascade("eval", str(out / "run.trec"), str(root / "qrels" / "test.tsv"), "--json",
                   "--metrics", ",".join(list(metrics)[:2]), *list(metrics)[2:])
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == metrics


def test_complete_counts_judged_queries_missing_from_the_run(tmp_path, capsys):
    (tmp_path / "qrels.tsv").write_text(QRELS_TEXT)
    (tmp_path / "r.run").write_text("q1\tQ0\td3\t1\t2.0\tt\nq1\tQ0\tzz\t2\t1.0\tt\n")  # q2 absent, zz unjudged
    assert main(["eval", str(tmp_path / "r.run"), str(tmp_path / "qrels.tsv"), "-m", "RR@10", "R@1"]) == 0
    assert _printed(capsys.readouterr().out) == {"RR@10": 1.0, "R@1": 0.5}
    assert main(["eval", str(tmp_path / "r.run"), str(tmp_path / "qrels.tsv"), "-c", "-m", "RR@10,R@1"]) == 0
    assert _printed(capsys.readouterr().out) == {"RR@10": 0.5, "R@1": 0.25}


def test_per_query_values(tmp_path, capsys):
    (tmp_path / "qrels.tsv").write_text(QRELS_TEXT)
    (tmp_path / "r.run").write_text("q1 zz 1 2.0 t\nq1 d1 2 1.0 t\nq2 d2 1 5 t\n")  # 5 columns, no Q0
    assert main(["eval", str(tmp_path / "r.run"), str(tmp_path / "qrels.tsv"), "-q", "-m", "RR@10"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["RR@10\tq1\t0.5", "RR@10\tq2\t1.0", "RR@10\tall\t0.75"]


@pytest.mark.parametrize("run_text, qrels_text, extra, message", [
    ("q1 Q0 d1 1 1.0 t\nq1 Q0 d2 x 0.5 t\n", QRELS_TEXT, [], "r.run, line 2: rank 'x' must be an integer"),
    ("q1 Q0 d1 1 1.0 t\n", QRELS_TEXT, ["-m", "nDCG@ten"], "not an ir-measures name"),
    ("q7 Q0 d1 1 1.0 t\n", QRELS_TEXT, [], "none of the 1 queries of .* is judged in"),
    ("q1 Q0 d1 1 1.0 t\n", "", [], "holds no judgments"),
    ("q1 Q0 d1 1 1.0 t\n", "q1 0 d1 1\nq1 0 d2 high\n", [], "relevance 'high' is not an integer"),
])
def test_bad_inputs_are_reported_without_a_traceback(tmp_path, capsys, run_text, qrels_text, extra, message):
    (tmp_path / "r.run").write_text(run_text)
    (tmp_path / "qrels.tsv").write_text(qrels_text)
    assert main(["eval", str(tmp_path / "r.run"), str(tmp_path / "qrels.tsv"), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and re.search(message, err), err


def test_missing_files_and_usage(tmp_path, capsys):
    assert main(["eval", str(tmp_path / "none.run"), str(tmp_path / "none.tsv")]) == 2
    assert "qrels file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["eval", "only-one-argument"])
    assert exit_.value.code == 2 and "usage: cascade eval" in capsys.readouterr().err
    main(["--help"])
    assert "eval RUN QRELS" in capsys.readouterr().out
