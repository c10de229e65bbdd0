import dataclasses
import math

import pytest

from netcompress.core.errors import ConfigError
from netcompress.train import TrainConfig


def test_defaults_are_valid_and_frozen():
    cfg = TrainConfig()
    assert cfg.optimizer == "sgd" and cfg.scheduler == "cosine" and cfg.num_workers == 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.lr = 0.5


@pytest.mark.parametrize("field,value", [
    ("epochs", -1), ("epochs", 1.5), ("epochs", True),
    ("batch_size", 0), ("batch_size", "32"),
    ("lr", 0), ("lr", -0.1), ("lr", math.nan), ("lr", math.inf), ("lr", "0.1"),
    ("optimizer", "rmsprop"), ("optimizer", None),
    ("momentum", 1.0), ("momentum", -0.1),
    ("weight_decay", -1e-4),
    ("nesterov", "yes"),
    ("scheduler", "linear"), ("scheduler", "Cosine"),
    ("step_size", 0), ("gamma", 0.0), ("gamma", 1.5),
    ("seed", -1), ("seed", 0.5),
    ("grad_clip", 0.0), ("grad_clip", -1.0),
    ("num_workers", -1),
    ("progress", 1),
    ("eval_batch_size", 0),
    ("label_smoothing", 1.0), ("label_smoothing", -0.1),
])
def test_invalid_field_raises_config_error_naming_it(field, value):
    with pytest.raises(ConfigError) as info:
        TrainConfig(**{field: value})
    assert f"TrainConfig.{field}" in str(info.value)
    assert repr(value) in str(info.value)


def test_error_lists_allowed_values():
    with pytest.raises(ConfigError, match=r"'sgd', 'adam', 'adamw'"):
        TrainConfig(optimizer="rmsprop")
    with pytest.raises(ConfigError, match=r"scheduler must be one of 'cosine', 'step', 'onecycle'"):
        TrainConfig(scheduler="linear")


def test_nesterov_needs_sgd_with_momentum():
    assert TrainConfig(nesterov=True, momentum=0.9).nesterov
    with pytest.raises(ConfigError, match="nesterov"):
        TrainConfig(nesterov=True, optimizer="adam")
    with pytest.raises(ConfigError, match="nesterov"):
        TrainConfig(nesterov=True, momentum=0.0)


def test_ints_for_float_fields_become_floats():
    cfg = TrainConfig(lr=1, grad_clip=5, momentum=0)
    assert isinstance(cfg.lr, float) and isinstance(cfg.grad_clip, float)
    assert isinstance(cfg.momentum, float)


def test_dict_round_trip_and_unknown_keys():
    cfg = TrainConfig(epochs=3, lr=0.01, optimizer="adamw", scheduler="onecycle", grad_clip=1.0)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="learning_rate"):
        TrainConfig.from_dict({"learning_rate": 0.1})
    with pytest.raises(ConfigError, match="mapping"):
        TrainConfig.from_dict([("lr", 0.1)])
    assert cfg.replace(lr=0.5).lr == 0.5 and cfg.lr == 0.01
    with pytest.raises(ConfigError, match="TrainConfig.lr"):
        cfg.replace(lr=-1)
