"""ColBERT: the three checkpoint formats against a direct transformers computation, the token index, resume."""
import json
import logging
import string

import numpy as np
import pytest
import torch

from cascade import Batch, Candidates, Corpus, Pipeline
from cascade.encoders.colbert_formats import detect_format
from cascade.index.store import is_complete
from cascade.kernels.maxsim import maxsim_naive
from cascade.stages.colbert import ColBERT
from cascade.testing import tiny_colbert_ai, tiny_pylate, tiny_sentence_transformer

DOCS = ["The cat sat on the mat, purring (loudly)!", "Dogs bark at the mail carrier.",
        "Fish swim in cold rivers; lakes too.", "Birds sing " * 30, ""]
QUERIES = ["where do cats sit?", "barking dogs and the mail carrier who brings the letters every morning"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {"plain": tiny_sentence_transformer(root / "st", max_seq_length=40),
            "colbert_ai": tiny_colbert_ai(root / "ca", query_maxlen=12, doc_maxlen=20),
            "pylate": tiny_pylate(root / "pl", query_length=12, document_length=20)}


@pytest.fixture
def corpus():
    return Corpus([f"d{i}" for i in range(len(DOCS))], DOCS)


# --- independent references: one text at a time, ids built by hand -------------------------------
def _bert(folder, prefixed=False):
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModel, BertModel

    if not prefixed:
        return AutoModel.from_pretrained(folder).eval()
    model = BertModel(AutoConfig.from_pretrained(folder)).eval()
    state = load_file(str(folder / "model.safetensors"))
    model.load_state_dict({k[len("bert."):]: v for k, v in state.items() if k.startswith("bert.")})
    return model


def _run(model, ids, attention, weight=None):
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids]), attention_mask=torch.tensor([attention])).last_hidden_state[0]
    if weight is not None:
        out = out @ weight.T
    return torch.nn.functional.normalize(out, dim=-1).numpy()


def reference(fmt, folder, text, query):
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    words = tok(text, add_special_tokens=False)["input_ids"]
    cls, sep, mask_id = tok.cls_token_id, tok.sep_token_id, tok.mask_token_id
    if fmt == "plain":
        ids = [cls] + words[:38] + [sep]
        vecs = _run(_bert(folder), ids, [1] * len(ids))
        return vecs[1:-1] if len(ids) > 2 else vecs[:1]
    if fmt == "colbert_ai":
        weight = load_file(str(folder / "model.safetensors"))["linear.weight"]
        marker = tok.convert_tokens_to_ids("[unused0]" if query else "[unused1]")
        length = 12 if query else 20
        ids = [cls, marker] + words[:length - 3] + [sep]
        attention = [1] * len(ids)
        if query:
            ids, attention = ids + [mask_id] * (length - len(ids)), attention + [0] * (length - len(ids))
        vecs = _run(_bert(folder, prefixed=True), ids, attention, weight)
        if query:
            return vecs
        skip = {tok.encode(p, add_special_tokens=False)[0] for p in string.punctuation}
        return vecs[[i not in skip for i in ids]]
    weight = load_file(str(folder / "1_Dense" / "model.safetensors"))["linear.weight"]
    prefix = tok.convert_tokens_to_ids("[Q] " if query else "[D] ")
    length = 12 if query else 20
    ids = [cls, prefix] + words[:length - 3] + [sep]
    attention = [1] * len(ids)
    if query:
        ids, attention = ids + [mask_id] * (length - len(ids)), attention + [0] * (length - len(ids))
    vecs = _run(_bert(folder), ids, attention, weight)
    if query:
        return vecs
    skip = {tok.convert_tokens_to_ids(p) for p in string.punctuation}
    return vecs[[i not in skip for i in ids]]


@pytest.mark.parametrize("fmt", ["plain", "colbert_ai", "pylate"])
def test_format_detected(models, fmt):
    assert detect_format(models[fmt]) == fmt


@pytest.mark.parametrize("fmt", ["plain", "colbert_ai", "pylate"])
def test_scores_equal_a_direct_transformers_computation(models, fmt, corpus, tmp_path):
    stage = ColBERT(k=None, model=str(models[fmt]), cache_dir=tmp_path, progress=False, precision="fp32",
                    **({"doc_max_length": 40, "query_max_length": 40} if fmt == "plain" else {}))
    stage.prepare(corpus)
    # the token index holds exactly the reference document vectors, in fp16
    for i, text in enumerate(DOCS):
        np.testing.assert_allclose(stage._index.doc(i).astype(np.float32), reference(fmt, models[fmt], text, False),
                                   atol=2e-3)
    cands = Candidates(np.array([[0, 1, 2, 3, 4], [4, 2, -1, -1, -1]]), np.zeros((2, 5), np.float32))
    scores = stage.score(Batch(QUERIES, corpus, cands))
    ref_q = [reference(fmt, models[fmt], q, True) for q in QUERIES]
    ref_d = [reference(fmt, models[fmt], d, False) for d in DOCS]
    for qi, row in enumerate(cands.doc_idx):
        for ki, doc in enumerate(row):
            if doc >= 0:
                expected = (ref_q[qi] @ ref_d[doc].T).max(axis=1).sum()
                assert scores[qi, ki] == pytest.approx(expected, abs=2e-2)


def test_token_index_is_contiguous_fp16_with_offsets(models, corpus, tmp_path):
    stage = ColBERT(model=str(models["colbert_ai"]), cache_dir=tmp_path, progress=False)
    stage.prepare(corpus)
    index = stage._index
    assert index.tokens.dtype == np.float16 and index.tokens.ndim == 2
    assert isinstance(index.tokens, np.memmap)
    assert index.offsets.dtype == np.int64 and len(index.offsets) == len(DOCS) + 1
    assert index.offsets[0] == 0 and index.offsets[-1] == len(index.tokens) and (index.lengths > 0).all()
    folder = next((tmp_path / "colbert").iterdir())
    assert sorted(p.name for p in folder.iterdir()) == [".verified.json", "meta.json", "offsets.npy", "tokens.npy"]
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["corpus"] == corpus.fingerprint and meta["format"] == "colbert_ai" and meta["doc_max_length"] == 20


def test_stage_scores_match_the_naive_kernel_on_its_own_vectors(models, corpus, tmp_path):
    stage = ColBERT(k=3, model=str(models["pylate"]), cache_dir=tmp_path, progress=False)
    stage.prepare(corpus)
    cands = Candidates(np.array([[3, 0, 1, 2]]), np.zeros((1, 4), np.float32))
    q, mask = stage.encoder.encode_queries(QUERIES[:1])
    expected = maxsim_naive(q, mask, stage._index.tokens, stage._index.offsets, cands.doc_idx)
    out = stage.rerank(Batch(QUERIES[:1], corpus, cands)).candidates
    order = np.argsort(-expected[0], kind="stable")[:3]
    assert list(out.doc_idx[0]) == list(cands.doc_idx[0][order])


def test_first_stage_on_the_fp16_index_is_exhaustive_maxsim(models, corpus, tmp_path):
    """First in a pipeline, ColBERT scores every document (search=exhaustive on the fp16 index)."""
    stage = ColBERT(k=3, model=str(models["colbert_ai"]), cache_dir=tmp_path, progress=False,
                    compute_dtype="float32")
    out = Pipeline([stage]).run(Batch(QUERIES, corpus)).candidates
    queries, mask = stage.encoder.encode_queries(QUERIES)
    every = np.tile(np.arange(len(corpus)), (len(QUERIES), 1))
    naive = maxsim_naive(queries, mask, stage._index.tokens, stage._index.offsets, every)
    for q in range(len(QUERIES)):
        best = np.lexsort((every[q], -naive[q].astype(np.float64)))[:3]
        assert out.doc_idx[q].tolist() == every[q][best].tolist()
        assert np.allclose(out.scores[q], naive[q][best], atol=1e-4)


def test_first_stage_scores_as_the_stage_reranks_in_either_dtype(models, corpus, tmp_path):
    """Retrieving first gives each document the score reranking it gives (bf16 included, compute_dtype=auto)."""
    for dtype in ("auto", "float32"):
        stage = ColBERT(k=len(corpus), model=str(models["colbert_ai"]), cache_dir=tmp_path, progress=False,
                        compute_dtype=dtype)
        first = Pipeline([stage]).run(Batch(QUERIES, corpus)).candidates
        every = Candidates(np.tile(np.arange(len(corpus)), (len(QUERIES), 1)),
                           np.zeros((len(QUERIES), len(corpus)), np.float32))
        scores = stage.score(Batch(QUERIES, corpus, every))
        np.testing.assert_allclose(first.scores, np.take_along_axis(scores, first.doc_idx, 1), rtol=0, atol=1e-6)


def test_long_documents_are_truncated_and_counted(models, corpus, tmp_path, caplog):
    stage = ColBERT(model=str(models["colbert_ai"]), cache_dir=tmp_path, progress=False)
    with caplog.at_level(logging.INFO, logger="cascade"):
        stage.prepare(corpus)
    assert "1 of 5 documents were longer than 20 tokens" in caplog.text
    assert stage._index.meta["truncated_docs"] == 1


def test_unknown_format_is_a_clear_error(models):
    with pytest.raises(Exception, match="format 'splade' is unknown"):
        ColBERT(model=str(models["plain"]), format="splade")


# --- resumable, content-addressed index builds -------------------------------------------------
def _many_docs(n=22):
    return Corpus([f"d{i}" for i in range(n)], [f"document number {i} about topic {i % 5}" for i in range(n)])


def test_killed_build_resumes_and_equals_an_uninterrupted_one(models, tmp_path, monkeypatch):
    corpus = _many_docs()
    model = str(models["colbert_ai"])
    whole = ColBERT(model=model, cache_dir=tmp_path / "a", chunk_size=4, progress=False)
    whole.prepare(corpus)

    broken = ColBERT(model=model, cache_dir=tmp_path / "b", chunk_size=4, progress=False)
    real, calls = broken.encoder.encode_docs, []

    def failing(texts, on_batch=None):  # the process dies while encoding the third chunk
        calls.append(len(texts))
        if len(calls) == 3:
            raise SystemExit("killed")
        return real(texts, on_batch)

    monkeypatch.setattr(broken.encoder, "encode_docs", failing)
    with pytest.raises(SystemExit):
        broken.prepare(corpus)
    (partial,) = (tmp_path / "b" / "colbert").glob("*.partial")
    assert len(list(partial.glob("*.chunk.json"))) == 2
    assert not any(is_complete(p) for p in (tmp_path / "b" / "colbert").iterdir())

    calls.clear()
    resumed = ColBERT(model=model, cache_dir=tmp_path / "b", chunk_size=4, progress=False)
    real = resumed.encoder.encode_docs
    monkeypatch.setattr(resumed.encoder, "encode_docs",
                        lambda texts, cb=None: calls.append(len(texts)) or real(texts, cb))
    resumed.prepare(corpus)
    assert sum(calls) == len(corpus) - 8  # only the chunks not saved before the kill
    assert not list((tmp_path / "b" / "colbert").glob("*.partial"))
    assert np.array_equal(resumed._index.tokens, whole._index.tokens)
    assert np.array_equal(resumed._index.offsets, whole._index.offsets)


def test_a_chunk_damaged_while_the_build_was_stopped_is_encoded_again(models, tmp_path, monkeypatch):
    corpus = _many_docs()
    model = str(models["colbert_ai"])
    whole = ColBERT(model=model, cache_dir=tmp_path / "a", chunk_size=4, progress=False)
    whole.prepare(corpus)
    broken = ColBERT(model=model, cache_dir=tmp_path / "b", chunk_size=4, progress=False)
    real, calls = broken.encoder.encode_docs, []
    monkeypatch.setattr(broken.encoder, "encode_docs", lambda texts, cb=None: calls.append(1) or (
        real(texts, cb) if len(calls) < 3 else (_ for _ in ()).throw(SystemExit("killed"))))
    with pytest.raises(SystemExit):
        broken.prepare(corpus)
    (partial,) = (tmp_path / "b" / "colbert").glob("*.partial")
    saved = sorted(partial.glob("0000000004.*.npy"))
    assert saved, list(partial.iterdir())
    with saved[0].open("r+b") as handle:  # one byte of the second saved chunk, behind the .npy header
        handle.seek(saved[0].stat().st_size - 1)
        last = handle.read(1)
        handle.seek(saved[0].stat().st_size - 1)
        handle.write(bytes([last[0] ^ 0xFF]))
    calls.clear()
    resumed = ColBERT(model=model, cache_dir=tmp_path / "b", chunk_size=4, progress=False)
    real = resumed.encoder.encode_docs
    monkeypatch.setattr(
        resumed.encoder, "encode_docs", lambda texts, cb=None: calls.append(len(texts)) or real(texts, cb)
    )
    resumed.prepare(corpus)
    assert sum(calls) == len(corpus) - 4  # the damaged chunk again, with the ones never saved
    assert np.array_equal(resumed._index.tokens, whole._index.tokens)


def test_cache_is_reused_only_for_the_same_corpus_model_and_settings(models, tmp_path, monkeypatch):
    corpus = _many_docs(6)
    built = []

    def count(stage):
        real = stage.encoder.encode_docs
        monkeypatch.setattr(stage.encoder, "encode_docs", lambda t, cb=None: built.append(len(t)) or real(t, cb))
        return stage

    def stage(**kw):
        return count(ColBERT(cache_dir=tmp_path, progress=False, **{"model": str(models["colbert_ai"]), **kw}))

    stage().prepare(corpus)
    stage().prepare(corpus)
    assert built == [6]  # the second stage loaded the cache
    changed = Corpus(corpus.ids, corpus.texts[:-1] + ("an edited last document",))
    stage().prepare(changed)
    stage(doc_max_length=8).prepare(corpus)
    stage(model=str(models["pylate"])).prepare(corpus)
    assert built == [6, 6, 6, 6]
    assert len(list((tmp_path / "colbert").iterdir())) == 4
