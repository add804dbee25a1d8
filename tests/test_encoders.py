"""Model resolution and loading errors, and the shared sentence encoder against transformers directly."""
import shutil

import numpy as np
import pytest
import torch

from cascade import CascadeError
from cascade.core.timing import run_scope
from cascade.encoders.models import default_model_path, model_identity, resolve_model
from cascade.encoders.sentence import SentenceEncoder, clear_encoders, get_sentence_encoder
from cascade.testing import tiny_sentence_transformer

TEXTS = ["The cat sat on the mat, purring loudly while the dog barked at the mail carrier outside.",
         "Dogs bark.", "", "word " * 100]


@pytest.fixture(scope="module")
def tiny_st(tmp_path_factory):
    return tiny_sentence_transformer(tmp_path_factory.mktemp("models") / "st", max_seq_length=32)


def test_default_model_is_the_packaged_minilm():
    assert resolve_model(None) == str(default_model_path())
    assert (default_model_path() / "modules.json").is_file()


def test_missing_local_folder_is_a_clear_error(tmp_path):
    with pytest.raises(CascadeError, match="does not exist"):
        resolve_model(str(tmp_path / "no-such-model"))
    (tmp_path / "weights.bin").write_text("x")
    with pytest.raises(CascadeError, match="is a file"):
        resolve_model(str(tmp_path / "weights.bin"))


def test_hub_name_offline_says_how_to_supply_a_local_path(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    encoder = SentenceEncoder("some-org/some-model-that-is-not-cached")
    with pytest.raises(CascadeError, match="offline") as err:
        _ = encoder.model
    assert "--local-dir" in str(err.value) and "model path" in str(err.value)


def test_unloadable_local_folder_is_a_clear_error(tmp_path):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    with pytest.raises(CascadeError, match="could not load"):
        _ = SentenceEncoder(str(tmp_path / "broken")).model


def test_model_identity_follows_content(tmp_path, tiny_st):
    first = model_identity(str(tiny_st))
    assert first == model_identity(str(tiny_st))
    other = tiny_sentence_transformer(tmp_path / "other", seed=1)
    assert model_identity(str(other))["model_content"] != first["model_content"]
    copy = tmp_path / "elsewhere" / "same"
    shutil.copytree(tiny_st, copy)
    assert model_identity(str(copy)) == first  # content only: the same model at another path shares caches
    assert model_identity("org/name") == {"model": "org/name", "revision": "main"}


def _reference(folder, text, max_length):
    """Last hidden states (normalized, [CLS]/[SEP] dropped) and the mean-pooled normalized vector."""
    from transformers import AutoModel, AutoTokenizer

    tok, model = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()
    ids = tok(text, truncation=True, max_length=max_length, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**ids).last_hidden_state[0]
    pooled = torch.nn.functional.normalize(hidden.mean(0), dim=0).numpy()
    inner = hidden[1:-1] if hidden.shape[0] > 2 else hidden[:1]  # an empty text keeps its [CLS]
    return torch.nn.functional.normalize(inner, dim=-1).numpy(), pooled


def test_one_pass_gives_pooled_and_token_vectors_equal_to_transformers(tiny_st):
    encoder = SentenceEncoder(str(tiny_st), precision="fp32")  # the reference below runs in fp32
    out = encoder.encode(TEXTS, max_length=16, batch_size=3)
    assert out.truncated == 2  # the first and the last text exceed 16 tokens
    assert out.lengths.sum() == len(out.tokens)
    start = 0
    for i, text in enumerate(TEXTS):
        tokens, pooled = _reference(str(tiny_st), text, 16)
        np.testing.assert_allclose(out.tokens[start:start + out.lengths[i]], tokens, atol=1e-5)
        np.testing.assert_allclose(out.pooled[i], pooled, atol=1e-5)
        start += out.lengths[i]
    padded, mask = out.padded()
    assert padded.shape[:2] == mask.shape and (mask.sum(1) == out.lengths).all()


def test_memo_shares_a_repeated_query_pass_within_one_run(tiny_st):
    encoder = SentenceEncoder(str(tiny_st))
    calls = []
    encoder.model.register_forward_hook(lambda module, args, out: calls.append(1))
    with run_scope():
        first = encoder.encode(TEXTS, 16, memo=True)
        per_pass = len(calls)  # forward calls of one pass over TEXTS (one per length bucket)
        assert per_pass >= 1
        again = encoder.encode(TEXTS, 16, memo=True)
        assert again is first and len(calls) == per_pass
        encoder.encode(TEXTS, 16, prefix="x ", memo=True)  # other settings: a new pass
        assert len(calls) > per_pass
    before = len(calls)
    with run_scope():  # the next run (e.g. the next sweep job) pays for its own pass
        encoder.encode(TEXTS, 16, memo=True)
    assert len(calls) == before + per_pass
    encoder.encode(TEXTS, 16, memo=True)  # outside any run: nothing kept
    encoder.encode(TEXTS, 16, memo=True)
    assert len(calls) == before + 3 * per_pass


def test_stages_naming_one_model_share_one_encoder(tiny_st):
    clear_encoders()
    assert get_sentence_encoder(str(tiny_st)) is get_sentence_encoder(str(tiny_st) + "/")
    assert get_sentence_encoder(str(tiny_st)) is not get_sentence_encoder(None)


def test_cuda_on_a_machine_without_it_says_so(monkeypatch):
    from cascade.encoders.models import pick_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(CascadeError, match="device=cuda was asked for, but torch sees no CUDA GPU"):
        pick_device("cuda")
    assert pick_device(None) == "cpu" and pick_device("cpu") == "cpu"


def test_solo_passes_give_every_query_the_vectors_it_gets_alone():
    """Inside solo_passes a batch's vectors are bit for bit each text's alone (the packaged MiniLM).

    Merged passes round differently here (bf16 on this CPU: 16 of 64 SciFact queries), which is why
    the server's batcher runs inside solo_passes."""
    from cascade.core.passes import solo_passes
    from cascade.kernels.precision import cpu_bf16_supported

    texts = [" ".join(["word"] * n) + f" query {n}" for n in range(1, 41)] + ["a", "bb cc", "what is life?"]
    encoder = get_sentence_encoder(None, "cpu", "bf16" if cpu_bf16_supported() else "fp32")
    alone = [encoder.encode([t], 64) for t in texts]
    with solo_passes():
        together = encoder.encode(texts, 64, batch_size=32)
    ends = np.cumsum(together.lengths)
    for i, one in enumerate(alone):
        assert np.array_equal(one.pooled[0], together.pooled[i])
        assert np.array_equal(one.tokens, together.tokens[ends[i] - together.lengths[i]:ends[i]])


def test_bucket_batches_pad_each_text_by_its_own_length():
    from cascade.encoders.sentence import bucket_batches

    lengths = [3, 9, 8, 17, 300, 16, 1]
    batches = bucket_batches(lengths, 2, max_length=20)
    assert sorted(i for rows, _ in batches for i in rows) == list(range(len(lengths)))
    padded = {int(i): pad for rows, pad in batches for i in rows}
    assert padded == {0: 8, 1: 16, 2: 8, 3: 20, 4: 20, 5: 16, 6: 8}  # next multiple of 8, capped at 20
    assert all(len(rows) <= 2 for rows, _ in batches)
    assert [pad for _, pad in batches] == sorted((pad for _, pad in batches), reverse=True)
