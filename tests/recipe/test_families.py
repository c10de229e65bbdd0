"""The families through recipes: structured prune + KD fine-tune + int8 ONNX, on a tiny ResNet."""
import json

import pytest
import torch
import yaml

from netcompress.recipe import RecipeError, loads_recipe, run_recipe

torch.set_num_threads(1)
PIPELINE = {
    "name": "sp-kd-int8", "seed": 0,
    "model": {"name": "resnet20", "kwargs": {"width": 4}, "pretrain": {"epochs": 1, "lr": 0.05, "batch_size": 64}},
    "data": {"name": "digits", "image_size": 8, "train_subset": 640, "calibration": 128},
    "stages": [
        {"type": "prune", "config": {"type": "ChannelPruning", "budget": {"type": "MACs", "fraction": 0.5},
                                     "importance": {"type": "L1"}}},
        {"type": "fine-tune", "epochs": 1, "lr": 0.01, "batch_size": 64,
         "callbacks": [{"type": "distill", "terms": [{"type": "KD", "temperature": 4.0}]}]},
        {"type": "export", "formats": ["onnx-int8", "onnx"], "deploy": "onnx-int8"}],
    "measure": {"latency_repeats": 3, "latency_warmup": 0, "batch_sizes": [1]}}


def test_structured_prune_kd_int8_pipeline_and_resume(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(PIPELINE, sort_keys=False))
    m = run_recipe(path, tmp_path / "run", progress=False)
    b, f = m["baseline"], m["final"]
    assert f["macs"] <= 0.55 * b["macs"] and f["params"] < b["params"]  # channels really removed
    assert f["format"] == "onnx-int8" and f["runtime"] == "onnxruntime"
    art = tmp_path / "run" / "artifacts"
    assert sorted(p.name for p in art.iterdir()) == ["baseline.onnx", "model-int8.onnx", "model.onnx"]
    fp32_onnx = (art / "model.onnx").stat().st_size
    assert fp32_onnx >= 4 * f["params"]  # weights inside the file, not in a side file
    assert f["bytes_on_disk"] < 0.9 * fp32_onnx  # int8 weights (scales and QDQ nodes weigh a lot at width 4)
    torch_final = m["stages"][-1]["accuracy"]
    assert abs(f["accuracy"] - torch_final) <= 0.05  # int8 onnxruntime vs the torch model it came from
    # resume of a finished run rebuilds the pruned structure and gives the same numbers
    again = run_recipe(path, tmp_path / "run", resume=True, progress=False)
    for key in ("accuracy", "params", "macs", "bytes_on_disk"):
        assert again["final"][key] == f[key], key
    assert json.loads((tmp_path / "run" / "run.json").read_text())["deploy"] == "onnx-int8"


@pytest.mark.parametrize("change,where,words", [
    (("stages", 0, "config", "budget", "type"), "stages[0].config", "Did you mean 'MACs'"),
    (("stages", 0, "config", "importance", "type"), "stages[0].config", "unknown importance"),
    (("stages", 1, "callbacks", 0, "terms", 0, "type"), "stages[1].callbacks", "unknown distillation term"),
])
def test_family_names_are_checked_on_load(change, where, words):
    data = yaml.safe_load(yaml.safe_dump(PIPELINE))
    node = data
    for k in change[:-1]:
        node = node[k]
    node[change[-1]] = "MAC" if "budget" in change else "Magnitude2"
    with pytest.raises(RecipeError) as info:
        loads_recipe(yaml.safe_dump(data), "f.yaml")
    assert where in str(info.value) and words in str(info.value)
