"""Recipe validation: each bad recipe gives a RecipeError naming the file, the key path and the fix."""
import pytest
import yaml

from netcompress.core.errors import ConfigError, NetcompressError
from netcompress.recipe import RecipeError, loads_recipe, parse_recipe, recipe_to_dict

GOOD = {"model": {"name": "mlp", "kwargs": {"hidden": [16]}}, "data": {"name": "digits", "image_size": 8},
        "stages": [{"type": "fine-tune", "epochs": 1}, {"type": "export", "formats": ["onnx"]}]}


def with_(path, value):
    """GOOD with one key replaced (path like 'stages.0.epochs'); value DROP deletes it."""
    data = yaml.safe_load(yaml.safe_dump(GOOD))
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
    node = data
    for p in parents:
        node = node[p]
    if value is DROP:
        del node[last]
    else:
        node[last] = value
    return data


DROP = object()

# (key to change, new value, key path in the message, words the message must contain)
CASES = [
    ("modle", {"name": "lenet5"}, "modle", ["Did you mean 'model'", "Allowed keys"]),
    ("model.nme", "lenet5", "model.nme", ["Did you mean 'name'"]),
    ("model.name", "resnt20", "model.name", ["Did you mean 'resnet20'", "lenet5"]),
    ("model.factory", "os.path:join", "model", ["exactly one of 'name'"]),
    ("model.weights", 3, "model.weights", ["valid string"]),
    ("data.name", "cifar10", "data.name", ["unknown data set", "digits"]),
    ("data.image_size", 4, "data.image_size", ["greater than or equal to 8"]),
    ("stages", [], "stages", ["at least 1"]),
    ("stages", "fine-tune", "stages", ["valid list"]),
    ("stages.0.type", "fine-tun", "stages[0].type", ["Did you mean 'fine-tune'", "export"]),
    ("stages.0.type", "exit", "stages[0].type", ["Did you mean 'exits'"]),
    ("stages.0.type", DROP, "stages[0]", ["needs a 'type'"]),
    ("stages.0.epoch", 3, "stages[0].epoch", ["Did you mean 'epochs'"]),
    ("stages.0.epochs", "3", "stages[0].epochs", ["an integer >= 0", "'3'"]),
    ("stages.0.epochs", -1, "stages[0].epochs", ["an integer >= 0"]),
    ("stages.0.lr", True, "stages[0].lr", ["a number > 0", "True"]),
    ("stages.0.optimizer", "sgdd", "stages[0].optimizer", ["'sgd'", "'adam'", "'adamw'"]),
    ("stages.0.scheduler", "cos", "stages[0].scheduler", ["'cosine'"]),
    ("stages.0.nesterov", True, "stages[0].nesterov", ["optimizer='sgd'"]),  # fine with sgd + momentum: see below
    ("stages.0.loss", "kd", "stages[0].loss", ["has no field 'loss'"]),
    ("stages.0.seed", 3, "stages[0].seed", ["the recipe's top-level seed"]),
    ("stages.0.callbacks", [{"type": "gradual"}], "stages[0].callbacks[0]", ["unknown CallbackConfig 'gradual'",
                                                                               "GradualPrune"]),
    ("stages.1.formats", ["onnx", "tflite"], "stages[1].formats", ["unknown export format 'tflite'", "onnx"]),
    ("stages.1.deploy", "safetensors", "stages[1].deploy", ["must be one of the formats"]),
    ("stages.1.opset", 99, "stages[1].opset", ["an integer in [18, 23]"]),
    ("stages.1.name", "a b", "stages[1].name", ["must match"]),
    ("budget", {"byte": 10}, "budget.byte", ["Did you mean 'bytes'"]),
    ("budget", {"latency_ms": 0}, "budget.latency_ms", ["greater than 0"]),
    ("measure", {"batch_sizes": [0]}, "measure.batch_sizes", ["[1, 4096]"]),
    ("version", 2, "version", ["1"]),
    ("name", "../evil", "name", ["should match pattern"]),
]


@pytest.mark.parametrize("path,value,where,words", CASES, ids=[c[0] + "=" + repr(c[1])[:20] for c in CASES])
def test_bad_recipe_names_file_path_and_allowed(path, value, where, words):
    data = with_(path, value)
    if path == "stages.0.nesterov":
        data["stages"][0]["optimizer"] = "adam"
    with pytest.raises(RecipeError) as info:
        parse_recipe(data, source="my.yaml")
    err = info.value
    assert isinstance(err, ConfigError) and isinstance(err, NetcompressError)
    assert where in err.paths, (where, str(err))
    line = next(ln for ln in str(err).splitlines() if ln.startswith(f"my.yaml: {where}"))
    for word in words:
        assert word in line, (word, line)


def test_good_recipe_round_trips_through_yaml():
    recipe = parse_recipe(GOOD)
    again = loads_recipe(yaml.safe_dump(recipe_to_dict(recipe)))
    assert recipe_to_dict(again) == recipe_to_dict(recipe)
    assert [s.name for s in again.stage_list] == ["01-fine-tune", "02-export"]
    assert again.stage_list[0].params.epochs == 1 and again.stage_list[0].params.lr == 0.1  # TrainConfig's defaults


def test_all_problems_reported_at_once():
    data = with_("stages.0.epoch", 3)
    data["modle"] = 1
    with pytest.raises(RecipeError) as info:
        parse_recipe(data, "f.yaml")
    assert {"modle", "stages[0].epoch"} <= set(info.value.paths)


@pytest.mark.parametrize("text,words", [
    ("a: [", "not valid YAML: line 1"),
    ("- 1\n- 2", "a recipe is a mapping"),
    ("", "a recipe is a mapping"),
    ("!!python/object/apply:os.system ['echo hi']", "not valid YAML"),
    (b"\xff\xfe", "not UTF-8"),
    ("1: 2", "keys must be strings"),
])
def test_loader_rejects_non_recipes(text, words):
    with pytest.raises(RecipeError, match="x.yaml") as info:
        loads_recipe(text, "x.yaml")
    assert words in str(info.value)


def test_duplicate_stage_names():
    data = with_("stages.1.name", "s")
    data["stages"][0]["name"] = "s"
    with pytest.raises(RecipeError, match="unique"):
        parse_recipe(data)


def test_missing_file_names_it(tmp_path):
    from netcompress.recipe import load_recipe

    with pytest.raises(RecipeError, match="nope.yaml: <top level>: no such file"):
        load_recipe(tmp_path / "nope.yaml")


def test_recipes_folder_examples_validate():
    from pathlib import Path

    from netcompress.recipe import load_recipe
    from netcompress.recipe.registry import STAGES, stage_names

    stage_names()
    folder = Path(__file__).resolve().parents[2] / "recipes"
    files = sorted(folder.glob("*.yaml"))
    assert files, "recipes/ has examples"
    for f in files:
        assert {s.get("type") for s in yaml.safe_load(f.read_text())["stages"]} <= set(STAGES.names()), f
        load_recipe(f)
