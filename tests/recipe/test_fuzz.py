"""Recipe fuzzing: malformed recipes give RecipeError (a NetcompressError), never another exception,
and validation never writes a file."""
import os

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netcompress.core.errors import NetcompressError
from netcompress.recipe import loads_recipe, parse_recipe
from netcompress.recipe import stage_names

stage_names()  # registers every stage before hypothesis starts timing

KEYS = ["model", "data", "stages", "budget", "measure", "name", "seed", "version", "type", "epochs", "lr",
        "formats", "config", "loss", "callbacks", "weights", "factory", "kwargs", "pretrain", "deploy", "modle",
        "batch_sizes", "image_size", "optimizer", "scheduler", "fine-tune", "export", "prune", "onnx", "digits",
        "lenet5", "mlp", "auto", "os:system", "../../etc/passwd", "/tmp/x"]
leaf = (st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=True)
        | st.sampled_from(KEYS) | st.text(max_size=12))
values = st.recursive(leaf, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6) | st.integers(), inner, max_size=5),
                      max_leaves=25)
GOOD = {"model": {"name": "mlp", "kwargs": {"hidden": [8]}}, "data": {"name": "digits"},
        "stages": [{"type": "fine-tune", "epochs": 1}, {"type": "export"}]}


def mutate(draw_path, value):
    data = yaml.safe_load(yaml.safe_dump(GOOD))
    node = data
    for step in draw_path[:-1]:
        if isinstance(node, dict) and node:
            node = node[sorted(node, key=str)[step % len(node)]]
        elif isinstance(node, list) and node:
            node = node[step % len(node)]
    if isinstance(node, dict):
        keys = sorted(node, key=str) + ["zz_new"]
        node[keys[draw_path[-1] % len(keys)]] = value
    elif isinstance(node, list):
        node.append(value)
    return data


def check(call):
    before = set(os.listdir("."))
    try:
        call()
    except NetcompressError as exc:
        assert str(exc) and "Traceback" not in str(exc)
    assert set(os.listdir(".")) == before


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.lists(st.integers(0, 7), min_size=1, max_size=4), values)
def test_mutated_recipes_fail_cleanly(path, value):
    check(lambda: parse_recipe(mutate(path, value), "fuzz.yaml"))


@FUZZ
@given(values)
def test_random_documents_fail_cleanly(doc):
    check(lambda: parse_recipe(doc, "fuzz.yaml"))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=200) | st.binary(max_size=200))
def test_random_text_fails_cleanly(text):
    check(lambda: loads_recipe(text, "fuzz.yaml"))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.lists(st.integers(0, 7), min_size=1, max_size=4), values)
def test_run_recipe_on_malformed_recipe_writes_nothing(tmp_path_factory, path, value):
    from netcompress.recipe import run_recipe

    root = tmp_path_factory.mktemp("fuzzrun")
    src = root / "r.yaml"
    src.write_text(yaml.safe_dump(mutate(path, value)))
    before = sorted(p.name for p in root.rglob("*"))
    try:
        parse_recipe(yaml.safe_load(src.read_text()), "r.yaml")
    except NetcompressError:
        try:
            run_recipe(src, root / "run")
        except NetcompressError:
            pass
        assert sorted(p.name for p in root.rglob("*")) == before  # not even the run directory
