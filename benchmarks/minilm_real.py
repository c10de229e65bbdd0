"""Issue 5: int8 on the real pretrained MiniLM-L6 (sentence-transformers all-MiniLM-L6-v2): accuracy and speed.

Accuracy, each int8 variant against the fp32 model on real text (gensim's packaged test data):
- cosine of each sentence embedding to the fp32 one (200 Pang-Lee sentences at seq 128, 50 Lee documents at 256);
- Lee-50: Pearson correlation of embedding cosine similarities with the mean human rating of the 1,225 pairs;
- sentiment probe: 5-fold logistic regression on the 200 Pang-Lee sentence embeddings (same folds for all).
Speed, 1 thread, seq 128, batch 1 and 32, interleaved medians (compare_latency): torch fp32 eager (sdpa, and
BERT's eager attention), onnxruntime fp32, ours (quantize_onnx, Int8Onnx(static=False): s8 per-channel weights;
also with activation_matmuls), onnxruntime's quantize_dynamic defaults (in its default session and in ours),
torch.ao dynamic int8 (x86 engine), and torch bf16 (16-bit, not int8: AMX / AVX512-BF16 where the CPU has
them). Every ONNX file is from the same fp32 export (minilm.export_onnx).

    OMP_NUM_THREADS=1 python -m benchmarks.minilm_real [--repeats 100 --repeats-b32 20]
"""
from __future__ import annotations

import copy
import logging
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import markdown_table, parser, start, write_json
from benchmarks.quant_int8_speed import _default_session, _ort_own_dynamic
from netcompress.data.text import lee50, pang_lee_polarity
from netcompress.export import Int8Onnx, ort_session, quantize_onnx
from netcompress.measure import compare_latency, file_bytes, ort_callable, ratios
from netcompress.models.minilm import embed, export_onnx, load_minilm, load_tokenizer, model_dir, tokenize
from netcompress.quantize import Float16, quantize_

log = logging.getLogger("bench")
SEQ_SENTENCES, SEQ_DOCS = 128, 256  # Lee documents have 53-154 tokens: 256 (the model's own limit) keeps all


def probe_accuracy(emb: np.ndarray, labels: np.ndarray, folds: int = 5) -> float:
    """Mean accuracy of a logistic regression on frozen embeddings, stratified k-fold (seeded: same folds for all)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    cv = StratifiedKFold(folds, shuffle=True, random_state=0)
    return float(cross_val_score(LogisticRegression(max_iter=2000), emb, labels, cv=cv).mean())


def lee_pearson(emb: np.ndarray, lee) -> float:
    i, j = lee.pairs()
    sims = (emb @ emb.T)[i, j]  # unit vectors: dot product = cosine
    return float(np.corrcoef(sims, lee.similarity[i, j])[0, 1])


def accuracy(variants: dict, tok, sentences, labels, lee) -> list[dict]:
    emb = {k: (embed(f, tok, sentences, SEQ_SENTENCES), embed(f, tok, lee.documents, SEQ_DOCS))
           for k, f in variants.items()}
    ref_s, ref_d = emb["torch fp32"]
    rows = []
    for k, (s, d) in emb.items():
        cos = torch.cat([(s * ref_s).sum(1), (d * ref_d).sum(1)])
        rows.append({"variant": k, "cos_mean": float(cos.mean()), "cos_min": float(cos.min()),
                     "lee50_pearson": lee_pearson(d.numpy(), lee),
                     "probe_acc": probe_accuracy(s.numpy(), labels)})
    return rows


def speed(cands: dict, docs: list[str], tok, batches, repeats: dict) -> list[dict]:
    rows = []
    for b in batches:
        x = tokenize(tok, docs[:b], SEQ_SENTENCES)  # real text, truncated / padded to 128 tokens
        stats = compare_latency(cands, x, warmup=3, repeats=repeats[b], threads=1)
        r_torch = ratios(stats, "torch fp32 eager (sdpa)")
        r_own = ratios(stats, "onnxruntime quantize_dynamic (defaults), default session")
        r_own_ours = ratios(stats, "onnxruntime quantize_dynamic (defaults), our session")
        for k, s in stats.items():
            rows.append({"batch": b, "variant": k, "median_ms": s.median_ms, "p10_ms": s.p10_ms, "p90_ms": s.p90_ms,
                         "repeats": s.repeats, "vs_torch_fp32": r_torch[k], "vs_ort_quantizer": r_own[k],
                         "vs_ort_quantizer_same_session": r_own_ours[k]})
    return rows


def main():
    ap = parser(__doc__, repeats=100)
    ap.add_argument("--repeats-b32", type=int, default=20, help="timed calls per candidate at batch 32")
    args = start(ap)
    load, t0 = os.getloadavg(), time.time()
    enc, tok = load_minilm(), load_tokenizer()
    sentences, labels = pang_lee_polarity()
    lee = lee50()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        fp32 = export_onnx(enc, tmp / "minilm.onnx")
        ours = quantize_onnx(fp32, tmp / "minilm_int8.onnx", Int8Onnx(static=False))
        ours_am = quantize_onnx(fp32, tmp / "minilm_int8_am.onnx", Int8Onnx(static=False, activation_matmuls=True))
        own = _ort_own_dynamic(fp32, tmp / "minilm_ort_default.onnx")
        torch.backends.quantized.engine = "x86"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ao = torch.ao.quantization.quantize_dynamic(copy.deepcopy(enc), {torch.nn.Linear}, dtype=torch.qint8)
        bf16 = copy.deepcopy(enc)
        quantize_(bf16, Float16(torch.bfloat16))
        sizes = {"safetensors (fp32, the package's file)": file_bytes(model_dir() / "model.safetensors"),
                 "onnxruntime fp32 .onnx": file_bytes(fp32), "ours int8 .onnx": file_bytes(ours),
                 "onnxruntime quantize_dynamic (defaults) .onnx": file_bytes(own)}
        sess = {"fp32": ort_session(fp32), "ours": ort_session(ours), "ours_am": ort_session(ours_am),
                "own": ort_session(own)}
        acc = accuracy({"torch fp32": enc, "onnxruntime fp32": ort_callable(sess["fp32"]),
                        "ours int8 (dynamic, s8 per-channel)": ort_callable(sess["ours"]),
                        "ours int8 + activation MatMuls": ort_callable(sess["ours_am"]),
                        "onnxruntime quantize_dynamic (defaults, per-tensor)": ort_callable(sess["own"]),
                        "torch.ao quantize_dynamic (x86)": ao, "torch bf16": bf16}, tok, sentences, labels, lee)
        t_acc = time.time() - t0
        cands = {"torch fp32 eager (sdpa)": enc,
                 "torch fp32 eager (eager attention)": load_minilm(attn_implementation="eager"),
                 "onnxruntime fp32, our session": ort_callable(sess["fp32"]),
                 "ours int8, our session": ort_callable(sess["ours"]),
                 "ours int8 + activation MatMuls, our session": ort_callable(sess["ours_am"]),
                 "onnxruntime quantize_dynamic (defaults), default session": ort_callable(_default_session(own)),
                 "onnxruntime quantize_dynamic (defaults), our session": ort_callable(sess["own"]),
                 "torch.ao quantize_dynamic (x86)": ao, "torch bf16 (sdpa)": bf16}
        spd = speed(cands, lee.documents, tok, (1, 32), {1: args.repeats, 32: args.repeats_b32})
    print(markdown_table(acc, ["variant", "cos_mean", "cos_min", "lee50_pearson", "probe_acc"]))
    print()
    print(markdown_table(spd, ["batch", "variant", "median_ms", "p10_ms", "vs_torch_fp32", "vs_ort_quantizer",
                               "vs_ort_quantizer_same_session"]))
    print()
    print(markdown_table([{"file": k, "bytes": v, "MiB": v / 2 ** 20} for k, v in sizes.items()]))
    after = os.getloadavg()
    print(f"load average before: {load}, after: {after}; accuracy part {t_acc:.0f}s, wall {time.time() - t0:.0f}s")
    write_json("minilm_real", {"accuracy": acc, "speed": spd, "file_bytes": sizes, "loadavg_before": load,
                               "loadavg_after": after, "threads": 1, "seq_sentences": SEQ_SENTENCES,
                               "seq_docs": SEQ_DOCS, "seq_speed": SEQ_SENTENCES})


if __name__ == "__main__":
    main()
