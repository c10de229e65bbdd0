"""Issue 7, claim 2: "structured prune + KD + int8" on ResNet-20 / Fashion-MNIST through one recipe.

Runs recipes/structured_kd_int8.yaml from the shared cached dense baseline (trained_baseline), then
reports accuracy drop, bytes on disk, and latency: onnxruntime int8 (final) vs onnxruntime fp32 (dense,
same runtime) and vs torch fp32 eager, batch 1 and 32, interleaved medians, 1 thread.

    nice python -m benchmarks.issue7_pipeline [--fine-tune-epochs N] [--fraction F]
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch
import yaml

from benchmarks.common import OUT_DIR, dataset, machine, markdown_table, trained_baseline, write_json
from netcompress.core.io import save_weights
from netcompress.measure import set_threads
from netcompress.recipe import parse_recipe, run_recipe

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "structured_kd_int8.yaml"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--fine-tune-epochs", type=int, default=None)
    ap.add_argument("--args-note", default="", help=argparse.SUPPRESS)
    ap.add_argument("--fraction", type=float, default=None, help="MACs kept by the channel pruning")
    ap.add_argument("--out", default=str(OUT_DIR / "issue7_pipeline_run"))
    ap.add_argument("--weights", default=None, help="a cached dense ResNet-20 (e.g. another benchmark's subset "
                    "baseline) instead of trained_baseline's full schedule")
    ap.add_argument("--train-subset", type=int, default=None, help="fine-tune on the first N training images")
    ap.add_argument("--eval-subset", type=int, default=None, help="evaluate on the first N test images")
    args = ap.parse_args(argv)
    set_threads(1)  # a shared 2-core machine: one thread for training and for latency
    splits = dataset("fashion_mnist")
    if args.weights:
        weights, base_test = Path(args.weights), None
    else:
        model, base_test = trained_baseline("resnet20", splits)
        weights = save_weights(model, OUT_DIR / "issue7_resnet20_baseline.safetensors", force=True)
    raw = yaml.safe_load(RECIPE.read_text())
    raw["model"].pop("pretrain")
    raw["model"]["weights"] = str(weights)
    if args.fine_tune_epochs is not None:
        raw["stages"][1]["epochs"] = args.fine_tune_epochs
    if args.train_subset:
        raw["data"]["train_subset"] = args.train_subset
    if args.eval_subset:
        raw["data"]["eval_subset"] = args.eval_subset
    if args.fraction is not None:
        raw["stages"][0]["config"]["budget"]["fraction"] = args.fraction
    recipe = parse_recipe(raw, str(RECIPE))
    m = run_recipe(recipe, args.out, force=True, progress=False, recipe_text=yaml.safe_dump(raw, sort_keys=False))
    b, f, r = m["baseline"], m["final"], m["ratios"]
    rows = [{"model": "dense fp32 (torch eager / onnxruntime fp32)", "accuracy": b["accuracy"], "params": b["params"],
             "MACs": b["macs"], "bytes": b["bytes_on_disk"],
             **{f"ms {k}": v["baseline_torch"] for k, v in m["latency_ms"].items()},
             **{f"ort ms {k}": v["baseline_onnx"] for k, v in m["latency_ms"].items()}},
            {"model": "structured prune + KD + int8 (onnxruntime)", "accuracy": f["accuracy"], "params": f["params"],
             "MACs": f["macs"], "bytes": f["bytes_on_disk"],
             **{f"ms {k}": v["final_onnx"] for k, v in m["latency_ms"].items()},
             **{f"ort ms {k}": v["final_onnx"] for k, v in m["latency_ms"].items()}}]
    print(markdown_table(rows))
    summary = {"accuracy_drop_points": r["accuracy_drop_points"], "size_x": r["size_x"],
               "speedup_same_runtime_onnx_x": r["speedup_same_runtime_onnx_x"],
               "speedup_vs_torch_eager_x": r["speedup_vs_torch_eager_x"],
               "targets": {"accuracy_drop_points": "<= 1", "speedup_same_runtime_onnx_x": ">= 3 at b1 and b32",
                           "size_x": ">= 10"}}
    print(yaml.safe_dump(summary, sort_keys=False))
    print(f"load average at the end: {os.getloadavg()}")
    write_json("issue7_pipeline", {"recipe": raw, "metrics": {k: m[k] for k in ("baseline", "final", "ratios",
                                                                               "latency_ms", "latency_note", "stages")},
                                   "summary": summary, "baseline_test": base_test, "args": vars(args), "load_avg": os.getloadavg(),
                                   "machine_at_start": machine()})
    return m


if __name__ == "__main__":
    main()
