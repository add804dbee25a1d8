"""Scores equal the checkpoint's own: settings a checkpoint saves are honoured, never silently replaced.

* A PyLate Dense module saved with ``use_residual`` adds its input to its projection (PyLate 1.6.0's
  ``Dense.forward``); cascade computes the same, and refuses any Dense setting it cannot honour.
  ``tests/reference/pylate_residual_reference.py`` (run in a venv with PyLate) compared cascade
  with real PyLate on checkpoints PyLate itself saved.
* A cross-encoder's saved max length is the default one, as in sentence-transformers' ``CrossEncoder``.
"""
from __future__ import annotations

import json
import string

import numpy as np
import pytest
import torch
import yaml

from cascade import Batch, Candidates, CascadeError
from cascade.core.data import Corpus
from cascade.encoders.colbert_formats import PyLateEncoder, load_token_encoder
from cascade.testing import tiny_cross_encoder, tiny_pylate

from conftest import REPO

QUERIES = ["what do cats eat", "how fast can a dog run"]
DOCS = ["Cats eat fish, mice and the food their owners leave out for them, often at night.",
        "A greyhound can run at about seventy kilometres per hour over a short distance.",
        "Fish swim in cold rivers and lakes; some of them, like salmon, swim upstream to spawn."]


# --- PyLate Dense use_residual ------------------------------------------------------------------

# What PyLate 1.6.0's ColBERT.save wrote for a tiny BERT (tests/reference/pylate_residual_reference.py)
PYLATE_FILES = ["1_Dense/config.json", "1_Dense/model.safetensors", "README.md", "config.json",
                "config_sentence_transformers.json", "model.safetensors", "modules.json", "sentence_bert_config.json",
                "tokenizer.json", "tokenizer_config.json"]
PYLATE_MODULE_TYPES = ["sentence_transformers.models.Transformer", "pylate.models.Dense.Dense"]
PYLATE_ST_CONFIG_KEYS = ["__version__", "attend_to_expansion_tokens", "default_prompt_name", "do_query_expansion",
                         "document_length", "document_prefix", "model_type", "prompts", "query_length",
                         "query_prefix", "similarity_fn_name", "skiplist_words"]
# (use_residual, hidden, dim): PyLate adds the input itself when the width is kept, else a learned residual.weight
CASES = [(False, 32, 16), (True, 32, 32), (True, 32, 16)]


@pytest.fixture(scope="module")
def pylate_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("pylate")
    return {case: tiny_pylate(root / f"r{case[0]}-{case[2]}", hidden=case[1], dim=case[2], use_residual=case[0])
            for case in CASES}


def _pylate_by_hand(folder, texts, query: bool):
    """What PyLate computes, written out: its token ids, BERT, then linear (+ residual), L2-normalized, kept tokens."""
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    bert = AutoModel.from_pretrained(folder).eval()
    cfg = json.loads((folder / "1_Dense" / "config.json").read_text())
    weights = load_file(str(folder / "1_Dense" / "model.safetensors"))
    length = 16 if query else 48
    skip = {tok.convert_tokens_to_ids(p) for p in string.punctuation}
    out = []
    for text in texts:
        words = tok(text, add_special_tokens=False)["input_ids"][:length - 3]
        ids = [tok.cls_token_id, tok.convert_tokens_to_ids("[Q] " if query else "[D] ")] + words + [tok.sep_token_id]
        attention = [1] * len(ids)
        if query:  # expanded with [MASK] to the query length, which attends to nothing
            ids, attention = ids + [tok.mask_token_id] * (length - len(ids)), attention + [0] * (length - len(ids))
        with torch.no_grad():
            x = bert(input_ids=torch.tensor([ids]), attention_mask=torch.tensor([attention])).last_hidden_state[0]
            y = x @ weights["linear.weight"].T
            if cfg["use_residual"]:
                y = y + (x if cfg["in_features"] == cfg["out_features"] else x @ weights["residual.weight"].T)
            y = torch.nn.functional.normalize(y, dim=-1).numpy()
        out.append(y if query else y[[i not in skip for i in ids]])
    return out


def _maxsim(q: np.ndarray, d: np.ndarray) -> float:
    return float((q @ d.T).max(axis=1).sum())


@pytest.mark.parametrize("case", CASES)
def test_tiny_pylate_has_the_layout_pylate_writes(pylate_models, case):
    from safetensors.torch import load_file

    residual, hidden, dim = case
    folder = pylate_models[case]
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) == PYLATE_FILES
    assert [m["type"] for m in json.loads((folder / "modules.json").read_text())] == PYLATE_MODULE_TYPES
    assert sorted(json.loads((folder / "config_sentence_transformers.json").read_text())) == PYLATE_ST_CONFIG_KEYS
    dense = json.loads((folder / "1_Dense" / "config.json").read_text())
    assert dense == {"in_features": hidden, "out_features": dim, "bias": False,
                     "activation_function": "torch.nn.modules.linear.Identity", "use_residual": residual}
    tensors = {k: tuple(v.shape) for k, v in load_file(str(folder / "1_Dense" / "model.safetensors")).items()}
    assert tensors == {"linear.weight": (dim, hidden), **({"residual.weight": (dim, hidden)}
                                                           if residual and hidden != dim else {})}


@pytest.mark.parametrize("case", CASES)
def test_pylate_token_vectors_equal_pylates_computation(pylate_models, case):
    folder = pylate_models[case]
    enc = load_token_encoder(str(folder), precision="fp32")  # PyLate's computation below runs in fp32
    assert isinstance(enc, PyLateEncoder)
    q_vecs, q_mask = enc.encode_queries(QUERIES)
    docs = enc.encode_docs(DOCS)
    d_rows = np.split(docs.tokens, np.cumsum(docs.lengths)[:-1])
    want_q, want_d = _pylate_by_hand(folder, QUERIES, True), _pylate_by_hand(folder, DOCS, False)
    for i, want in enumerate(want_q):
        np.testing.assert_allclose(q_vecs[i][q_mask[i]], want, atol=1e-5)
    for got, want in zip(d_rows, want_d):
        np.testing.assert_allclose(got, want, atol=1e-5)
    for i in range(len(QUERIES)):
        for j in range(len(DOCS)):
            assert _maxsim(q_vecs[i][q_mask[i]], d_rows[j]) == pytest.approx(_maxsim(want_q[i], want_d[j]), abs=1e-4)


def test_the_residual_changes_the_vectors(tmp_path):
    """Same weights, residual on or off: a loader that ignored use_residual could not pass the test above."""
    plain = load_token_encoder(str(tiny_pylate(tmp_path / "a", dim=32))).encode_docs(DOCS).tokens
    residual = load_token_encoder(str(tiny_pylate(tmp_path / "b", dim=32, use_residual=True))).encode_docs(DOCS).tokens
    assert np.abs(plain - residual).max() > 0.1


def _edit_dense(folder, **changes):
    path = folder / "1_Dense" / "config.json"
    cfg = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            cfg.pop(key, None)
        else:
            cfg[key] = value
    path.write_text(json.dumps(cfg))


@pytest.mark.parametrize("changes, words", [
    ({"activation_function": "torch.nn.modules.activation.ReLU"}, ["activation_function", "ReLU"]),
    ({"activation_function": None}, ["activation_function", "None"]),
    ({"use_residual": "yes"}, ["use_residual", "'yes'"]),
    ({"use_residual": True}, ["use_residual", "residual.weight"]),  # 32 -> 16 needs the learned projection
    ({"scale": 2.0}, ["'scale'", "unknown"]),
    ({"module_input_name": "sentence_embedding"}, ["module_input_name", "sentence_embedding"]),
    ({"in_features": 16}, ["in_features", "16", "32"]),
    ({"out_features": 8}, ["out_features", "8"]),
    ({"out_features": 16.0}, ["out_features", "16.0"]),
    ({"bias": True}, ["bias", "linear.bias"]),
])
def test_a_dense_setting_the_loader_cannot_honour_is_refused(tmp_path, changes, words):
    folder = tiny_pylate(tmp_path / "m", hidden=32, dim=16)
    _edit_dense(folder, **changes)
    with pytest.raises(CascadeError) as err:
        load_token_encoder(str(folder)).encode_queries(["a query"])
    message = str(err.value)
    for word in words + ["1_Dense/config.json", "Fix:"]:
        assert word in message, message


def test_weights_the_config_does_not_use_are_refused(tmp_path):
    """A residual.weight saved beside use_residual: false would be dropped; PyLate's strict loading refuses it too."""
    from safetensors.torch import load_file, save_file

    folder = tiny_pylate(tmp_path / "m", hidden=32, dim=16, use_residual=True)
    _edit_dense(folder, use_residual=False)
    with pytest.raises(CascadeError, match="use_residual.*residual.weight"):
        load_token_encoder(str(folder)).encode_queries(["a query"])
    weights = load_file(str(folder / "1_Dense" / "model.safetensors"))
    save_file({"linear.weight": weights["linear.weight"]}, str(folder / "1_Dense" / "model.safetensors"))
    load_token_encoder(str(folder)).encode_queries(["a query"])  # consistent again: loads


def test_a_module_pylate_would_not_run_is_refused(tmp_path):
    folder = tiny_pylate(tmp_path / "m")
    modules = json.loads((folder / "modules.json").read_text())
    modules.append({"idx": 2, "name": "2", "path": "2_Scale", "type": "mylib.Scale"})
    (folder / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(CascadeError, match="mylib.Scale"):
        load_token_encoder(str(folder)).encode_queries(["a query"])


def test_a_dense_with_tanh_and_bias_is_honoured(tmp_path):
    """The other settings cascade implements: a bias, the Tanh activation (activation(linear) + residual)."""
    from safetensors.torch import load_file, save_file

    folder = tiny_pylate(tmp_path / "m", hidden=32, dim=32, use_residual=True)
    weights = load_file(str(folder / "1_Dense" / "model.safetensors"))
    weights["linear.bias"] = torch.linspace(-1, 1, 32)
    save_file(weights, str(folder / "1_Dense" / "model.safetensors"))
    _edit_dense(folder, bias=True, activation_function="torch.nn.modules.activation.Tanh")
    enc = load_token_encoder(str(folder), precision="fp32")  # rebuilt below in fp32
    got = enc.encode_docs(DOCS[:1]).tokens
    plain = load_token_encoder(str(tiny_pylate(tmp_path / "p", hidden=32, dim=32)),
                               precision="fp32").encode_docs(DOCS[:1]).tokens
    from transformers import AutoModel

    # the same BERT and linear.weight: rebuild the pre-normalization vectors from the plain model's inputs
    tok, bert, _ = enc.parts
    ids, attention, types, model_attention = enc._tensorize(DOCS[:1], False)
    with torch.no_grad():
        x = AutoModel.from_pretrained(folder).eval()(input_ids=torch.as_tensor(ids),
                                                     attention_mask=torch.as_tensor(model_attention)).last_hidden_state
        y = torch.tanh(x @ weights["linear.weight"].T + weights["linear.bias"]) + x
        want = torch.nn.functional.normalize(y, dim=-1)[0].numpy()
    keep = attention[0].astype(bool) & ~np.isin(ids[0], enc.skip_ids)
    np.testing.assert_allclose(got, want[keep], atol=1e-5)
    assert np.abs(got - plain).max() > 0.1


# --- cross-encoder max_length ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def cross_encoder_24(tmp_path_factory):
    return tiny_cross_encoder(tmp_path_factory.mktemp("ce") / "ce24", max_length=24)


def _cross_encoder_scores(folder, pairs, **kwargs):
    from cascade.stages.cross_encoder import CrossEncoder

    corpus = Corpus([f"d{i}" for i in range(len(pairs))], [d for _, d in pairs])
    stage = CrossEncoder(k=None, model=str(folder), batch_size=4, **kwargs)
    stage.prepare(corpus)
    cands = Candidates.from_lists([[i] for i in range(len(pairs))], [[1.0]] * len(pairs))
    return stage.score(Batch([q for q, _ in pairs], corpus, cands))[:, 0]


def test_cross_encoder_default_is_the_checkpoints_saved_max_length(cross_encoder_24):
    from sentence_transformers import CrossEncoder as STCrossEncoder
    from transformers import AutoTokenizer

    pairs = [(q, f"{d} {d}") for q in QUERIES for d in DOCS]
    tok = AutoTokenizer.from_pretrained(cross_encoder_24)
    assert all(len(tok(q, d, truncation=False)["input_ids"]) > 24 for q, d in pairs)  # every pair is cut at 24
    reference = STCrossEncoder(str(cross_encoder_24), device="cpu")
    assert reference.max_seq_length == 24
    want = reference.predict(pairs, activation_fn=torch.nn.Identity(), convert_to_numpy=True).reshape(-1)
    np.testing.assert_array_equal(_cross_encoder_scores(cross_encoder_24, pairs), want.astype(np.float32))
    overridden = _cross_encoder_scores(cross_encoder_24, pairs, max_length=512)
    # an explicit max_length still overrides, on every pair (the tiny model's logits are ~0.01, float32 steps ~1e-9)
    assert np.abs(overridden - want).min() > 1e-6


def test_cross_encoder_config_keeps_the_checkpoints_max_length():
    cfg = yaml.safe_load((REPO / "conf" / "stage" / "cross_encoder.yaml").read_text())
    assert cfg["max_length"] is None
