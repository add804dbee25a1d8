"""Run files without a corpus, evaluate() on paths and dicts, Run.to_pandas / to_dict."""
import logging

import numpy as np
import pandas as pd
import pytest

from cascade import Candidates, ConfigError, DataError, Run, evaluate, per_query, read_run, read_trec_run
from cascade.core.sources import run_dict

QRELS = {"q1": {"d1": 1, "d3": 1}, "q2": {"d2": 1}}
SIX = "q1 Q0 d3 1 3.5 run\nq1 Q0 x9 2 2.25 run\nq1 Q0 d1 3 1 run\nq2 Q0 d2 1 -0.5 run\n"
EXPECTED = {"q1": {"d3": 3.5, "x9": 2.25, "d1": 1.0}, "q2": {"d2": -0.5}}


def _write(tmp_path, text, name="r.run"):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("text", [
    SIX,
    SIX.replace(" ", "\t").replace("\trun", "\tmy run"),  # tab-separated: a tag may hold a space
    "".join(" ".join(line.split()[:5]) + "\n" for line in SIX.splitlines()),  # qid Q0 docid rank score
    "".join("\t".join(line.split()[:1] + line.split()[2:]) + "\n" for line in SIX.splitlines()),  # no Q0
    "\n" + SIX.replace("\n", "  \n") + "\n\n",  # blank lines, trailing spaces
])
def test_run_file_layouts_read_without_a_corpus(tmp_path, text):
    assert read_run(_write(tmp_path, text)) == EXPECTED


@pytest.mark.parametrize("text, message", [
    ("q1 Q0 d1 1 1.0 t\nq1 d2 2 0.5\n", r"r\.run, line 2: expected .* got 4 columns"),
    ("q1 Q0 d1 1 1.0 t\nq1 Q0 d2 2 0.5\n", "line 2: .*as on the file's first line \\(6 columns\\)"),
    ("q1 Q0 d1 1 1.0\nq1 d2 2 0.5 t\n", "line 2: expected"),  # 5 columns, but the Q0 column went missing
    ("q1 Q0 d1 1 high t\n", "line 1: rank '1' must be an integer and score 'high' a number"),
    ("q1 Q0 d1 first 1.0 t\n", "line 1: rank 'first' must be an integer"),
    ("q1 Q0 d1 1 nan t\n", "line 1: score 'nan' is not a finite number"),
    ("q1 Q0 d1 1 1.0 t\nq1 Q0 d1 2 0.5 t\n", "line 2: document 'd1' is ranked twice .*also on line 1"),
    ("q1\tQ0\t\td1\t1\t1.0\n", "line 1: expected"),  # an empty tab-separated column
    ("q1 Q0 d1 1 1.0 t extra\n", "line 1: expected .* got 7 columns"),
    ("\n\n", "holds no ranked documents"),
])
def test_malformed_run_files_name_file_and_line(tmp_path, text, message):
    with pytest.raises(DataError, match=message):
        read_run(_write(tmp_path, text))


def test_missing_run_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        evaluate(tmp_path / "nope.run", QRELS)


def test_read_trec_run_needs_no_corpus(tmp_path):
    run = read_trec_run(_write(tmp_path, SIX))
    assert run.doc_ids == ("d3", "x9", "d1", "d2") and run.query_ids == ("q1", "q2")
    assert run.to_dict() == EXPECTED
    assert evaluate(run, QRELS, ["RR@10", "nDCG@10"]) == evaluate(EXPECTED, QRELS, ["RR@10", "nDCG@10"])
    with pytest.raises(DataError, match="line 2: document 'x9' is not in the corpus"):
        read_trec_run(tmp_path / "r.run", ("d1", "d2", "d3"))


def test_documents_missing_from_qrels_are_unjudged(tmp_path):
    path = _write(tmp_path, "q1 Q0 x9 1 2.0 t\nq1 Q0 d1 2 1.0 t\nq2 Q0 y 1 1.0 t\n")
    assert per_query(path, QRELS, ["RR@10"]) == {"RR@10": {"q1": 0.5, "q2": 0.0}}


def test_evaluate_takes_paths_dicts_frames_and_runs_alike(tmp_path):
    path = _write(tmp_path, SIX)
    qrels_path = _write(tmp_path, "q1 0 d1 1\nq1 0 d3 1\nq2 0 d2 1\n", "qrels.txt")
    metrics = ["nDCG@10", "RR@10", "R@2", "AP"]
    expected = evaluate(read_trec_run(path), QRELS, metrics)
    assert expected["R@2"] == 0.75  # q1 finds d3 of {d1, d3} in its top 2, q2 finds d2
    assert evaluate(path, QRELS, metrics) == expected
    assert evaluate(str(path), qrels_path, metrics) == expected
    assert evaluate(EXPECTED, QRELS, metrics) == expected
    frame = pd.DataFrame([(q, d, s) for q, docs in EXPECTED.items() for d, s in docs.items()],
                         columns=["qid", "docno", "score"])
    assert evaluate(frame, QRELS, metrics) == expected
    assert evaluate({1: {2: 1.0}}, {"1": {"2": 1}}, ["RR@10"]) == {"RR@10": 1.0}  # integer ids converted
    with pytest.raises(ConfigError, match="candidates= applies only to a Run"):
        evaluate(path, QRELS, candidates=read_trec_run(path).candidates)


@pytest.mark.parametrize("run, message", [
    ({"q1": {"d1": float("nan")}}, "score nan is not a finite number"),
    ({"q1": {"d1": "high"}}, "score 'high' is not a finite number"),
    ({"q1": ["d1"]}, "expected a dict"),
    ([("q1", "d1", 1.0)], "cannot read a run from a list"),
])
def test_bad_run_dicts_are_data_errors(run, message):
    with pytest.raises(DataError, match=message):
        evaluate(run, QRELS)


def test_run_files_keep_float64_order_where_float32_would_tie(tmp_path, caplog):
    # as float32 both scores are 1.0, and the tie puts 'a' (not relevant) first
    path = _write(tmp_path, "q1 Q0 b 1 1.0000000001 t\nq1 Q0 a 2 1.0 t\n")
    assert evaluate({"q1": {"a": 1.0, "b": 1.0}}, {"q1": {"b": 1}}, ["RR@10"]) == {"RR@10": 0.5}
    assert evaluate(path, {"q1": {"b": 1}}, ["RR@10"]) == {"RR@10": 1.0}
    assert evaluate(read_run(path), {"q1": {"b": 1}}, ["RR@10"]) == {"RR@10": 1.0}
    with caplog.at_level(logging.WARNING, logger="cascade"):
        read_trec_run(path)
    assert "differ by less than float32 precision" in caplog.text


def _run():
    idx = [[2, 1, 0], [], [5, 1]]
    scores = [[1.0, 3.0, 2.0], [], [2.0, 4.0]]
    return Run(("q1", "q3", "q2"), ("d1", "d2", "d3", "d4", "d5", "d6"), Candidates.from_lists(idx, scores))


def test_run_to_pandas_is_a_pyterrier_frame_best_first():
    frame = _run().to_pandas()
    assert list(frame.columns) == ["qid", "docno", "rank", "score"]
    assert frame.values.tolist() == [["q1", "d2", 0, 3.0], ["q1", "d1", 1, 2.0], ["q1", "d3", 2, 1.0],
                                     ["q2", "d2", 0, 4.0], ["q2", "d6", 1, 2.0]]
    assert frame["score"].dtype == np.float64 and frame["rank"].dtype == np.int64
    assert run_dict(frame) == {q: d for q, d in _run().to_dict().items() if d}  # q3 retrieved nothing
    only_first = _run().to_pandas(Candidates.from_lists([[0], [], [3]], [[1.0], [], [1.0]]))
    assert only_first["docno"].tolist() == ["d1", "d4"]
    assert Run((), ("d1",), Candidates.empty(0)).to_pandas().empty


def test_run_to_dict_maps_queries_to_doc_scores():
    assert _run().to_dict() == {"q1": {"d3": 1.0, "d2": 3.0, "d1": 2.0}, "q3": {}, "q2": {"d6": 2.0, "d2": 4.0}}
