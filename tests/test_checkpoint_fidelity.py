"""Scores equal the checkpoint's own: settings a checkpoint saves are honoured, never silently replaced.

* A PyLate Dense module saved with ``use_residual`` adds its input to its projection (PyLate 1.6.0's
  ``Dense.forward``); cascade computes the same, and refuses any Dense setting it cannot honour.
  ``tests/reference/pylate_residual_reference.py`` (run in a venv with PyLate) compared cascade
  with real PyLate on checkpoints PyLate itself saved.
* A cross-encoder's saved max length is the default one, as in sentence-transformers' ``CrossEncoder``.
"""
from __future__ import annotations

import json

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


@pytest.fixture(scope="module")
def pylate_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("pylate")
    # hidden == dim: PyLate only allows a residual when the projection keeps the width
    return {residual: tiny_pylate(root / f"residual-{residual}", hidden=32, dim=32, use_residual=residual)
            for residual in (False, True)}


def _pylate_by_hand(folder, texts, query: bool):
    """What PyLate computes, written out in torch: hidden -> linear (+ input) -> L2 normalize, per kept token."""
    from transformers import AutoModel, AutoTokenizer

    enc = PyLateEncoder(folder)  # only its tokenization (ids, masks) is reused; the maths is done here
    tok = AutoTokenizer.from_pretrained(folder)
    bert = AutoModel.from_pretrained(folder).eval()
    cfg = json.loads((folder / "1_Dense" / "config.json").read_text())
    from safetensors.torch import load_file

    weight = load_file(str(folder / "1_Dense" / "model.safetensors"))["linear.weight"]
    enc._loaded = (tok, None, [])
    enc.lowercase = False
    ids, attention, types, model_attention = enc._tensorize(list(texts), query)
    with torch.no_grad():
        hidden = bert(input_ids=torch.as_tensor(ids), attention_mask=torch.as_tensor(model_attention),
                      token_type_ids=torch.as_tensor(types)).last_hidden_state
        out = hidden @ weight.T
        if cfg.get("use_residual"):
            out = out + hidden
        out = torch.nn.functional.normalize(out, dim=-1).numpy()
    skip = {tok.convert_tokens_to_ids(w) for w in enc.skiplist_words}
    rows = []
    for i in range(len(texts)):
        keep = np.ones(ids.shape[1], bool) if query else attention[i].astype(bool) & ~np.isin(ids[i], list(skip))
        rows.append(out[i][keep])
    return rows


def _maxsim(q: np.ndarray, d: np.ndarray) -> float:
    return float((q @ d.T).max(axis=1).sum())


def test_tiny_pylate_has_the_layout_pylate_writes(pylate_models):
    """The files and Dense config keys PyLate 1.6.0 saved (see the reference script) are the ones built here."""
    for residual, folder in pylate_models.items():
        modules = json.loads((folder / "modules.json").read_text())
        assert [m["type"] for m in modules] == ["sentence_transformers.models.Transformer", "pylate.models.Dense.Dense"]
        dense = json.loads((folder / "1_Dense" / "config.json").read_text())
        assert dense == {"in_features": 32, "out_features": 32, "bias": False,
                         "activation_function": "torch.nn.modules.linear.Identity", "use_residual": residual}
        assert (folder / "1_Dense" / "model.safetensors").is_file()


@pytest.mark.parametrize("residual", [False, True])
def test_pylate_token_vectors_equal_pylates_computation(pylate_models, residual):
    folder = pylate_models[residual]
    enc = load_token_encoder(str(folder))
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


def test_the_residual_changes_the_vectors(pylate_models):
    """Same weights, residual on or off: a loader that ignores use_residual cannot pass both tests above."""
    plain = load_token_encoder(str(pylate_models[False])).encode_docs(DOCS).tokens
    residual = load_token_encoder(str(pylate_models[True])).encode_docs(DOCS).tokens
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
    ({"use_residual": "yes"}, ["use_residual", "'yes'"]),
    ({"scale": 2.0}, ["scale", "unknown"]),
    ({"in_features": 16}, ["in_features", "16", "32"]),
    ({"out_features": 8}, ["out_features", "8"]),
    ({"bias": True}, ["bias", "linear.bias"]),
])
def test_a_dense_setting_the_loader_cannot_honour_is_refused(tmp_path, changes, words):
    folder = tiny_pylate(tmp_path / "m", hidden=32, dim=16)
    _edit_dense(folder, **changes)
    with pytest.raises(CascadeError) as err:
        load_token_encoder(str(folder)).encode_queries(["a query"])
    message = str(err.value)
    for word in words + ["1_Dense/config.json"]:
        assert word in message, message


def test_a_residual_across_a_width_change_is_refused(tmp_path):
    """PyLate itself refuses it at load; cascade says so instead of broadcasting or crashing."""
    folder = tiny_pylate(tmp_path / "m", hidden=32, dim=16)
    _edit_dense(folder, use_residual=True)
    with pytest.raises(CascadeError, match="use_residual.*32.*16"):
        load_token_encoder(str(folder)).encode_queries(["a query"])


def test_a_dense_with_tanh_and_bias_is_honoured(tmp_path):
    """The settings cascade does implement still load (Tanh activation, a bias)."""
    folder = tiny_pylate(tmp_path / "m", hidden=32, dim=16)
    from safetensors.torch import load_file, save_file

    weights = load_file(str(folder / "1_Dense" / "model.safetensors"))
    weights["linear.bias"] = torch.linspace(-1, 1, 16)
    save_file(weights, str(folder / "1_Dense" / "model.safetensors"))
    _edit_dense(folder, bias=True, activation_function="torch.nn.modules.activation.Tanh")
    vecs, mask = load_token_encoder(str(folder)).encode_queries(["a query"])
    assert vecs.shape[-1] == 16 and np.isfinite(vecs[mask]).all()


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

    pairs = [(q, d) for q in QUERIES for d in DOCS]
    tok = AutoTokenizer.from_pretrained(cross_encoder_24)
    assert all(len(tok(q, d)["input_ids"]) > 24 for q, d in pairs)  # every pair is truncated at 24
    reference = STCrossEncoder(str(cross_encoder_24), device="cpu")
    assert reference.max_seq_length == 24
    want = reference.predict(pairs, activation_fn=torch.nn.Identity(), convert_to_numpy=True).reshape(-1)
    np.testing.assert_array_equal(_cross_encoder_scores(cross_encoder_24, pairs), want.astype(np.float32))
    overridden = _cross_encoder_scores(cross_encoder_24, pairs, max_length=512)
    assert np.abs(overridden - want).min() > 1e-4  # an explicit max_length still overrides, on every pair


def test_cross_encoder_config_keeps_the_checkpoints_max_length():
    cfg = yaml.safe_load((REPO / "conf" / "stage" / "cross_encoder.yaml").read_text())
    assert cfg["max_length"] is None
