"""Extension points of the pipeline: every name a recipe may use resolves through one of these registries.

A family plugs in with one registration next to its own code, e.g. in ``netcompress/quantize/recipe.py``::

    class QuantizeParams(StageParams):          # pydantic, extra keys rejected with did-you-mean
        bits: int = 8

    @register_stage("quantize", QuantizeParams, restore=_requantize)
    def run_quantize(ctx, params): ...          # mutates ctx.model, or assigns a new one

``restore(ctx, params)`` rebuilds the *structure* a finished stage leaves behind (removed channels,
quantized modules) so that ``--resume`` can load the stage's saved weights into it; stages that only
change values (fine-tuning) need none.

No name in a recipe is ever imported: the modules that register stages are listed here, in code.
"""
from __future__ import annotations

import dataclasses
import importlib
import logging
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..core.errors import ConfigError
from ..core.registry import Registry, did_you_mean

log = logging.getLogger(__name__)

# Modules that register stages/losses/callbacks/exporters when imported. A family's module may not
# exist yet on this branch; it is skipped quietly.
PROVIDERS = (
    "netcompress.recipe.builtin",
    "netcompress.prune.recipe",
    "netcompress.prune.structured.recipe",
    "netcompress.quantize.recipe",
    "netcompress.distill.recipe",
    "netcompress.lowrank.recipe",
    "netcompress.dynamic.recipe",
    "netcompress.arch.recipe",
    "netcompress.recipe.families",  # last: wiring for families that do not register their own names
)
# stage names the issue plans; shown when one is used before its family is installed
PLANNED = {"prune": "netcompress.prune", "quantize": "netcompress.quantize", "distill": "netcompress.distill",
           "decompose": "netcompress.lowrank", "exits": "netcompress.dynamic", "fine-tune": "netcompress.train",
           "export": "netcompress.export"}


class StageParams(BaseModel):
    """Base for a stage's parameters: unknown keys are errors, values are validated on load."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False, arbitrary_types_allowed=True)


@dataclass(frozen=True)
class StageType:
    name: str
    params: type[StageParams]
    run: Callable[[Any, Any], None]
    restore: Optional[Callable[[Any, Any], None]] = None
    doc: str = ""


STAGES: Registry[StageType] = Registry("stage type")
# fine-tune ``loss: {type: kd, ...}`` -> factory(ctx, **fields) -> loss_fn(outputs, targets, inputs)
LOSSES: Registry[Callable] = Registry("loss")
# fine-tune ``callbacks: [{type: gradual-prune, ...}]`` -> factory(ctx, **fields) -> train.Callback
CALLBACKS: Registry[Callable] = Registry("callback")
# export ``formats: [onnx, ...]`` -> fn(ctx, params, path_stem) -> {artifact name: Path}
EXPORTERS: Registry[Callable] = Registry("export format")
# typed vocabulary values nested in configs: ``criterion: {type: OBS, fisher_batches: 16}``
VOCAB: Registry[type] = Registry("type")


def register_stage(name: str, params: type[StageParams], restore: Optional[Callable] = None):
    """Decorator: register ``fn(ctx, params)`` as the runner of stage ``name``."""
    if not (isinstance(params, type) and issubclass(params, BaseModel)):
        raise TypeError(f"stage {name!r}: params must be a pydantic model class")

    def deco(fn):
        STAGES.register(name)(StageType(name, params, fn, restore, (fn.__doc__ or "").strip()))
        return fn

    return deco


def load_providers() -> None:
    """Import the modules that register stages (idempotent; import caches them)."""
    for mod in PROVIDERS:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name is None or not mod.startswith(exc.name):
                raise
            log.debug("stage provider %s is not installed", mod)


def stage_type(name: str) -> StageType:
    load_providers()
    return STAGES.get(name)


def _fields(cls: type) -> list[str]:
    if dataclasses.is_dataclass(cls):
        return [f.name for f in dataclasses.fields(cls) if f.init]
    import inspect

    try:
        return [p for p in inspect.signature(cls).parameters if p not in ("self", "args", "kwargs")]
    except (TypeError, ValueError):
        return []


def build_typed(spec: Any, types: Mapping[str, type], what: str, path: str = "",
                vocab: Optional[Mapping[str, type]] = None) -> Any:
    """Build a typed config from ``"Name"`` or ``{type: Name, field: value, ...}``.

    Only classes in ``types`` (top level) or ``VOCAB`` (nested values) can be built, with keyword
    fields only; a class's own validation (``__post_init__``) runs. Errors are ConfigError naming the
    key path, the value and the allowed names/fields."""
    where = f"{path}: " if path else ""
    if isinstance(spec, str):
        name, kwargs = spec, {}
    elif isinstance(spec, Mapping):
        if "type" not in spec:
            raise ConfigError(f"{where}{what} needs a 'type' key; allowed types: {', '.join(sorted(types))}")
        name, kwargs = spec["type"], {k: v for k, v in spec.items() if k != "type"}
    else:
        raise ConfigError(f"{where}{what} must be a type name or a mapping with 'type'; got {type(spec).__name__}")
    if not isinstance(name, str) or name not in types:
        allowed = sorted(types)
        hint = did_you_mean(name, allowed) if isinstance(name, str) else ""
        raise ConfigError(f"{where}unknown {what} {name!r}.{hint} Allowed: {', '.join(allowed) or '(none registered)'}")
    cls = types[name]
    fields = _fields(cls)
    for key in kwargs:
        if not isinstance(key, str) or (fields and key not in fields):
            hint = did_you_mean(key, fields) if isinstance(key, str) else ""
            raise ConfigError(f"{where}{name} has no field {key!r}.{hint} Allowed fields: {', '.join(fields)}")
    if vocab is None:
        vocab = {n: VOCAB.get(n) for n in VOCAB.names()}

    def nested(value, key):
        if isinstance(value, Mapping) and "type" in value:
            return build_typed(value, vocab, key, f"{path}.{key}" if path else key, vocab)
        if isinstance(value, list):  # configs are frozen: tuples, not lists
            return tuple(nested(v, key) for v in value)
        return value

    built = {}
    for key, value in kwargs.items():
        value = nested(value, key)
        built[key] = value
    try:
        return cls(**built)
    except ConfigError as exc:
        raise ConfigError(f"{where}{exc}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}{name}({', '.join(f'{k}=...' for k in built)}) is invalid: {exc}; "
                          f"fields: {', '.join(fields)}") from None


def typed_field(spec, types: dict, what: str, vocab) -> Any:
    """build_typed with the config's own namespace for nested values; errors become ValueError for pydantic."""
    if isinstance(spec, tuple(types.values())):  # already built in Python
        return spec
    if not isinstance(spec, (str, dict)):
        raise ValueError(f"{what} must be a name or {{type: name, ...}}; got {type(spec).__name__}")
    name = spec if isinstance(spec, str) else spec.get("type")
    nested = vocab(types[name]) if callable(vocab) and name in types else vocab
    try:
        return build_typed(spec, types, what, vocab=nested if isinstance(nested, dict) else {})
    except ConfigError as exc:
        raise ValueError(str(exc)) from None


def config_stage_params(name: str, what: str, types, vocab, doc: str) -> type[StageParams]:
    """Params of a stage that is one ``verb_(model, config, data)`` call: a typed ``config`` built from
    ``types()`` (nested names from ``vocab()``) and how many training samples it may look at."""

    class Params(StageParams):
        config: Any
        calibration: Optional[int] = Field(None, ge=1, le=100_000)

        @field_validator("config", mode="before")
        @classmethod
        def _build(cls, v):
            return typed_field(v, types(), what, vocab())

    Params.__name__ = Params.__qualname__ = name
    Params.__doc__ = doc
    return Params
