"""The in-place verbs (``prune_``, ``quantize_``, ``decompose_``, ``add_exits``) as one kind of object.

A verb dispatches on the config's type through its own registry; a family adds a technique with one
registration next to its config::

    @QUANTIZE.register(MyConfig)
    def _apply(model, config, report, *, data=None, example_inputs=None) -> None: ...

Every call returns a :class:`~netcompress.core.report.Report`. The recipe derives one stage per verb (stage
name = ``Verb.stage``), so a registered config is usable from YAML with no other edit.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from .config import Config
from .errors import ConfigError, ModelError
from .registry import Registry
from .report import Report

VERBS: Registry["Verb"] = Registry("verb")


class Verb:
    def __init__(self, name: str, stage: str, base: type[Config], doc: str = ""):
        self.name, self.stage, self.base, self.doc = name, stage, base, doc
        self._by_type: dict[type, Callable] = {}
        VERBS.register(stage)(self)

    def register(self, config_type: type):
        if not (isinstance(config_type, type) and issubclass(config_type, self.base)):
            raise TypeError(f"{self.name}: {config_type!r} must subclass {self.base.__name__}")

        def deco(fn):
            self._by_type[config_type] = fn
            return fn

        return deco

    def config_types(self) -> list[type]:
        return list(self._by_type)

    def transform(self, config) -> Callable:
        for cls in type(config).__mro__:
            if cls in self._by_type:
                return self._by_type[cls]
        known = ", ".join(sorted(t.__name__ for t in self._by_type))
        raise ConfigError(f"{type(config).__name__} is not a config {self.name} takes; known: {known}")

    def __call__(self, model: nn.Module, config, *, data=None, example_inputs=None, **options) -> Report:
        if not isinstance(model, nn.Module):
            raise ModelError(f"{self.name} needs an nn.Module, got {type(model).__name__}")
        fn = self.transform(config)
        report = Report(self.name, config, model)
        result = fn(model, config, report, data=data, example_inputs=example_inputs, **options)
        if isinstance(result, nn.Module):
            report.model = result
        return report

    def __repr__(self) -> str:
        return f"Verb({self.name!r}, stage={self.stage!r}, configs={[t.__name__ for t in self._by_type]})"
