"""The one config base: every registered config round-trips through YAML and is reachable from a recipe stage."""
import dataclasses
import typing

import pytest
import yaml

from netcompress.core.config import Config, _config_arms, _hints, config_types
from netcompress.core.errors import ConfigError

# configs whose required fields have no default: one valid instance each (everything else builds with no arguments)
REQUIRED = {
    "NM": {}, "Hint": {"student": "layer1", "teacher": "layer1"}, "OneShot": {"final": 0.5},
    "Iterative": {"final": 0.9}, "AGP": {"final": 0.9, "end_step": 100}, "Params": {"fraction": 0.5},
    "MACs": {"fraction": 0.5}, "Latency": {"speedup": 2.0}, "Unstructured": {"sparsity": 0.5},
    "ChannelPruning": {"ratio": 0.3}, "BlockPruning": {"blocks": 1}, "SVD": {"keep": 0.5}, "Tucker2": {"rank": [2, 3]},
    "EarlyExits": {"points": ["layer1"]}, "AttentionTransfer": {"pairs": [["layer1", "layer1"]]},
    "FSP": {"pairs": [[["layer1", "layer2"], ["layer1", "layer2"]]]},
    "GradualPrune": {"config": {"type": "Unstructured", "sparsity": 0.0}, "schedule": {"type": "AGP", "final": 0.8,
                                                                                        "end_step": 10}},
    "PruneStage": {"config": {"type": "Unstructured", "sparsity": 0.5}},
    "QuantizeStage": {"config": {"type": "PTQ"}}, "DecomposeStage": {"config": {"type": "SVD", "keep": 0.5}},
    "ExitsStage": {"config": {"type": "EarlyExits", "points": ["layer1"]}},
}


def ours() -> list[type]:
    import netcompress.recipe.stages  # noqa: F401 (the stage params are configs too)

    return [c for c in config_types() if c.__module__.startswith("netcompress.")]


def example(cls: type) -> Config:
    return cls.from_dict(REQUIRED.get(cls.__name__, {}))


@pytest.mark.parametrize("cls", ours(), ids=lambda c: f"{c.__module__.split('.', 1)[1]}.{c.__name__}")
def test_every_config_round_trips_through_yaml(cls):
    cfg = example(cls)
    text = yaml.safe_dump(cfg.to_dict(), sort_keys=False)
    again = cls.from_dict(yaml.safe_load(text))
    assert again == cfg and type(again) is cls
    assert again.to_dict() == cfg.to_dict()
    if len([c for c in ours() if c.__name__ == cls.__name__]) == 1:  # unique names also resolve from the base
        assert Config.from_dict(yaml.safe_load(text)) == cfg


def _admitted(ann) -> set[type]:
    """Every concrete config class a field annotation admits (through Optional, unions, tuples, Annotated)."""
    found, stack = set(), [ann]
    while stack:
        a = stack.pop()
        for arm in _config_arms(a):
            found |= {c for c in config_types(arm)}
        stack.extend(typing.get_args(a))
    return found


def test_every_config_is_reachable_from_a_recipe_stage():
    from netcompress.recipe.registry import STAGES, stage_names

    stage_names()
    reachable = {STAGES.get(n).params for n in STAGES.names()}
    todo = list(reachable)
    while todo:
        cls = todo.pop()
        for f in dataclasses.fields(cls):
            for c in _admitted(_hints(cls)[f.name]) - reachable:
                reachable.add(c)
                todo.append(c)
    missing = sorted(c.__name__ for c in ours() if c not in reachable)
    assert not missing, f"configs no recipe can name: {missing}"


def test_ternary_ttq_and_binaryconnect_glorot_from_yaml():
    from netcompress.quantize import TTQ, Binary, Glorot, Ternary
    from netcompress.recipe import loads_recipe

    r = loads_recipe("model: {name: lenet5}\nstages:\n"
                     "  - {type: quantize, config: {type: Ternary, method: {type: TTQ, threshold: 0.1}}}\n"
                     "  - {type: quantize, config: {type: Binary, scale: Glorot, exclude: [classifier.3]}}\n")
    assert r.stage_list[0].params.config == Ternary(method=TTQ(0.1))
    assert r.stage_list[1].params.config == Binary(scale=Glorot(), exclude=("classifier.3",))


def test_annotations_are_the_validation():
    from netcompress.prune import Unstructured
    from netcompress.prune.structured import ChannelPruning, MACs

    assert ChannelPruning(budget={"type": "MACs", "fraction": 0.5}).budget == MACs(0.5)
    assert Unstructured(sparsity=0.5, include="net.1").include == ("net.1",)
    assert Unstructured(sparsity=0).sparsity == 0.0 and isinstance(Unstructured(sparsity=0).sparsity, float)
    for make, words in [(lambda: ChannelPruning(ratio=True), "ratio must be a number in [0, 1); got True"),
                        (lambda: ChannelPruning(ratio=float("nan")), "got nan"),
                        (lambda: MACs("half"), "MACs.fraction must be a number in (0, 1]; got 'half'"),
                        (lambda: ChannelPruning(budget={"type": "MACs", "fraction": 2}),
                         "ChannelPruning.budget.fraction must be a number in (0, 1]; got 2"),
                        (lambda: ChannelPruning.from_dict({"ratio": 0.5, "ration": 1}, where="stages[1].config"),
                         "stages[1].config.ration: ChannelPruning has no field 'ration'. Did you mean 'ratio'?"),
                        (lambda: Config.from_dict({"type": "Globl"}), "unknown Config 'Globl'"),
                        (lambda: Config.from_dict({"type": "Global"}), "'Global' is ambiguous here")]:
        with pytest.raises(ConfigError) as info:
            make()
        assert words in str(info.value), str(info.value)


def test_a_users_config_registers_by_being_defined():
    from netcompress.core.config import PositiveInt

    @dataclasses.dataclass(frozen=True)
    class Widget(Config):
        size: PositiveInt = 3

    assert Config.from_dict({"type": "Widget", "size": 4}) == Widget(4)
    assert Widget in config_types()
    with pytest.raises(ConfigError, match="Widget.size must be an integer >= 1; got 0"):
        Widget(0)
