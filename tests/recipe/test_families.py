"""The families through recipes: structured prune + KD fine-tune + int8 ONNX, on a tiny ResNet."""
import json

import pytest
import torch
import yaml

from netcompress.core.errors import ConfigError
from netcompress.recipe import RecipeError, loads_recipe, run_recipe

torch.set_num_threads(1)
PIPELINE = {
    "name": "sp-kd-int8", "seed": 0,
    "model": {"name": "resnet20", "kwargs": {"width": 4}, "pretrain": {"epochs": 1, "lr": 0.05, "batch_size": 64}},
    "data": {"name": "digits", "image_size": 8, "train_subset": 640, "calibration": 128},
    "stages": [
        {"type": "sensitivity", "levels": [0.0, 0.9], "samples": 64},
        {"type": "prune", "config": {"type": "ChannelPruning", "budget": {"type": "MACs", "fraction": 0.5},
                                     "importance": {"type": "L1"}}},
        {"type": "fine-tune", "epochs": 1, "lr": 0.01, "batch_size": 64,
         "callbacks": [{"type": "distill", "terms": [{"type": "KD", "temperature": 4.0}]}]},
        {"type": "export", "formats": ["onnx-int8"]}],
    "measure": {"latency_repeats": 3, "latency_warmup": 0, "batch_sizes": [1]}}


def test_structured_prune_kd_int8_pipeline_and_resume(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(PIPELINE, sort_keys=False))
    m = run_recipe(path, tmp_path / "run", progress=False)
    b, f = m["baseline"], m["final"]
    assert f["macs"] <= 0.55 * b["macs"] and f["params"] < b["params"]  # channels really removed
    assert f["format"] == "onnx-int8" and f["runtime"] == "onnxruntime"
    art = tmp_path / "run" / "artifacts"
    assert sorted(p.name for p in art.iterdir()) == ["baseline.onnx", "model-int8.onnx"]
    fp32_onnx = (art / "baseline.onnx").stat().st_size
    assert fp32_onnx >= 4 * b["params"]  # weights inside the file, not in a side file
    assert f["bytes_on_disk"] < 0.7 * fp32_onnx  # int8 weights of the pruned model (QDQ scales weigh a lot at width 4)
    lat, r = m["latency_ms"]["b1"], m["ratios"]
    # same-runtime ratio from its own onnxruntime A/B loop; the user-facing one from the torch loop
    assert r["speedup_same_runtime_onnx_x"]["b1"] == lat["baseline_onnx"] / lat["final_onnx"]
    assert r["speedup_vs_torch_eager_x"]["b1"] == lat["baseline_torch"] / lat["final_onnx_vs_torch"]
    import onnx

    graph = onnx.load(str(art / "model-int8.onnx")).graph  # compacted for shipping: short names, no debug data
    assert max(len(t.name) for t in graph.initializer) <= 8 and not any(n.metadata_props for n in graph.node)
    torch_final = m["stages"][-1]["accuracy"]
    assert abs(f["accuracy"] - torch_final) <= 0.05  # int8 onnxruntime vs the torch model it came from
    # resume of a finished run rebuilds the pruned structure and gives the same numbers
    again = run_recipe(path, tmp_path / "run", resume=True, progress=False)
    for key in ("accuracy", "params", "macs", "bytes_on_disk"):
        assert again["final"][key] == f[key], key
    assert json.loads((tmp_path / "run" / "run.json").read_text())["deploy"] == "onnx-int8"
    page = (tmp_path / "run" / "report.html").read_text()
    for plot in ("per-layer sparsity", "per-layer bit width", "sensitivity", "accuracy vs size", "accuracy vs latency"):
        assert f'alt="{plot}"' in page, plot
    curves = m["records"]["01-sensitivity"]["sensitivity"]
    assert len({pts[0][1] for pts in curves.values()}) == 1  # level 0 prunes nothing: the same accuracy everywhere


@pytest.mark.parametrize("change,where,words", [
    (("stages", 1, "config", "budget", "type"), "stages[1].config", "Did you mean 'MACs'"),
    (("stages", 1, "config", "importance", "type"), "stages[1].config.importance", "unknown Importance"),
    (("stages", 2, "callbacks", 0, "terms", 0, "type"), "stages[2].callbacks[0].terms[0]", "unknown Term"),
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


def test_prune_then_cluster_keeps_zeros_exact(tmp_path):
    """Deep Compression order: magnitude masks, then k-means weight sharing; pruned weights stay exactly 0."""
    spec = {"model": {"name": "mlp", "kwargs": {"hidden": [32]}, "pretrain": {"epochs": 1, "lr": 0.1}},
            "data": {"name": "digits", "image_size": 8, "train_subset": 320},
            "stages": [{"type": "prune", "config": {"type": "Unstructured", "sparsity": 0.8,
                                                    "criterion": {"type": "Magnitude"}}},
                       {"type": "quantize", "config": {"type": "Clustered", "bits": 3}},
                       {"type": "export", "formats": ["compressed"], "deploy": "compressed"}],
            "measure": {"latency_repeats": 3, "latency_warmup": 0}}
    path = tmp_path / "dc.yaml"
    path.write_text(yaml.safe_dump(spec))
    m = run_recipe(path, tmp_path / "run", progress=False)
    pruned = m["stages"][1]
    assert pruned["nonzero_params"] <= m["baseline"]["params"] * 0.3
    from netcompress.export import load_compressed

    state = load_compressed(tmp_path / "run" / "artifacts" / "model.ncz")
    # the deployed weights keep exactly the pruned zeros (the counter would also count the codebooks)
    assert sum(int(torch.count_nonzero(t)) for t in state.values()) == pruned["nonzero_params"]
    w = state["net.1.weight"] if "net.1.weight" in state else next(v for k, v in state.items() if k.endswith("weight"))
    assert len(torch.unique(w[w != 0])) <= 2 ** 3  # shared values: at most 2^bits distinct nonzeros
    assert m["final"]["bytes_on_disk"] < m["baseline"]["bytes_on_disk"] / 4
    assert set(m["records"]["02-quantize"]["bit_widths"].values()) == {3}


def test_config_stages_take_a_built_config_or_name_the_wrong_object():
    """prune / quantize / decompose / exits stages are derived from their verbs: a config built in Python passes
    through unchanged, a config of another verb or any other object is refused with what is accepted."""
    from netcompress.lowrank import SVD
    from netcompress.prune.structured import ChannelPruning, MACs
    from netcompress.quantize import PTQ
    from netcompress.recipe.registry import stage_type

    for stage, config in (("prune", ChannelPruning(budget=MACs(0.5))), ("quantize", PTQ()),
                          ("decompose", SVD(keep=0.5))):
        params = stage_type(stage).params
        assert params(config=config).config is config
        with pytest.raises(ConfigError, match=r"config must be a \w+Config"):
            params(config=3)
    with pytest.raises(ConfigError, match=r"config must be a PruneConfig"):
        stage_type("prune").params(config=PTQ())
    assert stage_type("prune").params.from_dict(
        {"config": {"type": "ChannelPruning", "budget": {"type": "MACs", "fraction": 0.5}}}).config \
        == ChannelPruning(budget=MACs(0.5))


def test_recipe_names_the_latency_aware_scope_and_its_options():
    """A recipe reaches LatencyAware (both runtimes, mean scale) and max_ratio; a wrong runtime is named."""
    from netcompress.prune.structured import ChannelPruning, LatencyAware, MACs
    from netcompress.recipe.registry import stage_type

    params = stage_type("prune").params
    cfg = {"type": "ChannelPruning", "budget": {"type": "MACs", "fraction": 0.5}, "max_ratio": 0.5, "round_to": 16,
           "scope": {"type": "LatencyAware", "runtime": "both", "importance_scale": "mean"}}
    assert params.from_dict({"config": cfg}).config == ChannelPruning(
        budget=MACs(0.5), max_ratio=0.5, round_to=16, scope=LatencyAware(runtime="both", importance_scale="mean"))
    with pytest.raises(ConfigError, match=r"config.scope.runtime must be one of"):
        params.from_dict({"config": {**cfg, "scope": {"type": "LatencyAware", "runtime": "gpu"}}})