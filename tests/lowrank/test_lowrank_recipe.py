"""The decompose stage through a recipe: SVD (data-aware) + KD fine-tune + ONNX, resumable."""
import pytest
import yaml

from netcompress.recipe import RecipeError, loads_recipe, run_recipe

SPEC = {
    "name": "lowrank", "seed": 0,
    "model": {"name": "mlp", "kwargs": {"hidden": [64, 32]}, "pretrain": {"epochs": 6, "lr": 0.1}},
    "data": {"name": "digits", "image_size": 8, "train_subset": 640, "calibration": 128},
    "stages": [
        {"type": "decompose", "config": {"type": "SVD", "keep": 0.4, "data_aware": True, "exclude": ["net.5"]}},
        {"type": "fine-tune", "epochs": 1, "lr": 0.02, "callbacks": [{"type": "distill", "terms": ["KD"]}]},
        {"type": "export", "formats": ["onnx"]}],
    "measure": {"latency_repeats": 3, "latency_warmup": 0, "batch_sizes": [1]}}


def test_decompose_stage_shrinks_and_resumes(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(SPEC, sort_keys=False))
    m = run_recipe(path, tmp_path / "run", progress=False)
    b, f = m["baseline"], m["final"]
    assert f["params"] < 0.6 * b["params"] and f["macs"] < 0.6 * b["macs"]
    factored = m["records"]["01-decompose"]["factored"]
    assert sorted(factored) == ["net.1", "net.3"]  # the excluded classifier kept its shape
    assert b["accuracy"] > 0.7 and f["accuracy"] >= b["accuracy"] - 0.05  # one KD epoch recovers the factored model
    again = run_recipe(path, tmp_path / "run", resume=True, progress=False)
    for key in ("accuracy", "params", "macs"):
        assert again["final"][key] == f[key], key


@pytest.mark.parametrize("config, words", [
    ({"type": "SVD", "keep": 0.5, "rnk": 3}, "rnk"),
    ({"type": "SVDD", "keep": 0.5}, "Did you mean 'SVD'"),
    ({"type": "Tucker2", "keep": 1.5}, "keep must be"),
])
def test_bad_decompose_configs_are_caught_on_load(config, words):
    spec = yaml.safe_load(yaml.safe_dump(SPEC))
    spec["stages"][0]["config"] = config
    with pytest.raises(RecipeError) as info:
        loads_recipe(yaml.safe_dump(spec), "f.yaml")
    assert "stages[0].config" in str(info.value) and words in str(info.value)
