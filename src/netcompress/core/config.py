"""One frozen base for every config: validated from its annotations, data in and data out.

A config is a frozen dataclass that subclasses :class:`Config`. Defining it registers it: ``from_dict``
resolves ``{type: Name, field: value}`` among the concrete subclasses of the expected type, so a nested
field annotated ``importance: Importance`` accepts exactly the importances that exist, with no hand list
anywhere. The annotations are the validation: ``int`` refuses ``True`` and ``2.5``, ``float`` refuses NaN,
``Literal[...]`` names its choices, ``tuple[str, ...]`` takes a list (or one string), a config-typed field
takes an instance, a ``{type: ...}`` mapping or a bare type name, and the ``Annotated`` ranges below
(:data:`Fraction`, :data:`PositiveInt`, ...) are checked with one message format. Rules between fields go
in :meth:`Config.validate`.

>>> from dataclasses import dataclass
>>> @dataclass(frozen=True)
... class Ratio(Config):
...     value: Fraction = 0.5
...     names: tuple[str, ...] = ()
>>> Ratio(names="conv1")
Ratio(value=0.5, names=('conv1',))
>>> Ratio.from_dict({"type": "Ratio", "value": 0.25}).to_dict()
{'type': 'Ratio', 'value': 0.25, 'names': []}
>>> Ratio(value=1.0)
Traceback (most recent call last):
...
netcompress.core.errors.ConfigError: Ratio.value must be a number in [0, 1); got 1.0
"""
from __future__ import annotations

import contextvars
import dataclasses
import functools
import importlib
import math
import types
import typing
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Union

from .errors import ConfigError
from .registry import did_you_mean

__all__ = ["Config", "Interval", "Fraction", "Share", "PositiveInt", "NonNegativeInt", "PositiveFloat",
           "NonNegativeFloat", "Globs", "check", "config_types"]

# subpackages that define configs; from_dict imports them before reporting a name as unknown
_FAMILIES = ("prune", "prune.structured", "quantize", "lowrank", "arch", "distill", "dynamic", "export", "train")


@dataclasses.dataclass(frozen=True)
class Interval:
    """A range rule for ``Annotated[int | float, Interval(...)]``; ``closed`` says which ends are included."""

    low: float | None = None
    high: float | None = None
    closed: str = "[]"

    def holds(self, v: float) -> bool:
        lo_ok = self.low is None or (v >= self.low if self.closed[0] == "[" else v > self.low)
        hi_ok = self.high is None or (v <= self.high if self.closed[1] == "]" else v < self.high)
        return lo_ok and hi_ok

    def describe(self, integer: bool) -> str:
        what = "an integer" if integer else "a number"
        if self.high is None:
            return f"{what} {'>=' if self.closed[0] == '[' else '>'} {self.low:g}"
        if self.low is None:
            return f"{what} {'<=' if self.closed[1] == ']' else '<'} {self.high:g}"
        return f"{what} in {self.closed[0]}{self.low:g}, {self.high:g}{self.closed[1]}"


Fraction = Annotated[float, Interval(0, 1, "[)")]          # a share removed: 0 allowed, everything not
Share = Annotated[float, Interval(0, 1, "(]")]             # a share kept: more than nothing, up to all
PositiveInt = Annotated[int, Interval(1, None)]
NonNegativeInt = Annotated[int, Interval(0, None)]
PositiveFloat = Annotated[float, Interval(0, None, "()")]
NonNegativeFloat = Annotated[float, Interval(0, None, "[)")]
Globs = tuple[str, ...]                                    # layer-name globs; one string is a 1-tuple


# the key path of the config being built from data ("stages[1].config.budget"), so nested errors name it
_WHERE: contextvars.ContextVar[tuple[str | None, type] | None] = contextvars.ContextVar("netcompress_config_path",
                                                                                     default=None)


class _Mismatch(Exception):
    """``value`` at ``where`` does not fit the annotation; ``expected`` says what would."""

    def __init__(self, expected: str, where: str = "", value=None):
        super().__init__(expected)
        self.expected, self.where, self.value = expected, where, value

    def message(self) -> str:
        return f"{self.where} must be {self.expected}; got {self.value!r}"


def _describe(ann) -> str:
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin is Annotated:
        rules = [m for m in args[1:] if isinstance(m, Interval)]
        return rules[0].describe(args[0] is int) if rules else _describe(args[0])
    if origin in (Union, types.UnionType):  # None is allowed where a default is None; the message names the rest
        return " or ".join(_describe(a) for a in args if a is not type(None))
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is tuple:
        if args and not (len(args) == 2 and args[1] is Ellipsis):
            return f"a list of {len(args)} ({', '.join(_describe(a) for a in args)})"
        return f"a list of {_describe(args[0]).removeprefix('a ').removeprefix('an ')}s" if args else "a list"
    if ann is type(None):
        return "null"
    if isinstance(ann, type) and issubclass(ann, Config):
        return f"a {ann.__name__} ({{type: Name, ...}})"
    return {bool: "true or false", int: "an integer", float: "a finite number", str: "a string"}.get(
        ann, getattr(ann, "__name__", str(ann)))


def _config_arms(ann) -> list[type]:
    """The Config classes an annotation admits (through unions and Optional)."""
    origin = typing.get_origin(ann)
    if origin in (Union, types.UnionType):
        return [c for a in typing.get_args(ann) for c in _config_arms(a)]
    if origin is Annotated:
        return _config_arms(typing.get_args(ann)[0])
    return [ann] if isinstance(ann, type) and issubclass(ann, Config) else []


def _coerce(value, ann, where: str):
    """``value`` checked (and normalised: list -> tuple, int -> float, mapping -> config) against ``ann``."""
    if ann is Any or ann is object:
        return value
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin is Annotated:
        try:
            coerced = _coerce(value, args[0], where)
        except _Mismatch as exc:
            raise (_Mismatch(_describe(ann), where, value) if exc.where == where else exc) from None
        for rule in args[1:]:
            if isinstance(rule, Interval) and not rule.holds(coerced):
                raise _Mismatch(_describe(ann), where, value)
        return coerced
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        arms = _config_arms(ann)
        if arms and (isinstance(value, Mapping) or (isinstance(value, str) and str not in args)):
            return _build(value, tuple(arms), where)
        inner = None
        for arm in args:
            if arm is type(None):
                continue
            try:
                return _coerce(value, arm, where)
            except _Mismatch as exc:
                inner = inner or (exc if exc.where != where else None)  # a deeper mismatch is the clearer one
        if inner is not None and sum(a is not type(None) for a in args) == 1:
            raise inner
        raise _Mismatch(_describe(ann), where, value)
    if origin is Literal:
        if value in args and not (isinstance(value, bool) and not any(isinstance(a, bool) for a in args)):
            return value
        raise _Mismatch(_describe(ann), where, value)
    if origin is tuple:
        variable = len(args) == 2 and args[1] is Ellipsis
        if isinstance(value, str) and variable and args[0] is str:
            value = (value,)
        if not isinstance(value, (tuple, list)):
            raise _Mismatch(_describe(ann), where, value)
        if variable:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if args and len(args) != len(value):
            raise _Mismatch(f"a list of {len(args)} ({', '.join(_describe(a) for a in args)})", where, value)
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args))) if args else tuple(value)
    if ann is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch(_describe(ann), where, value)
    if ann is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Mismatch(_describe(ann), where, value)
    if ann is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        raise _Mismatch(_describe(ann), where, value)
    if isinstance(ann, type) and issubclass(ann, Config):
        if isinstance(value, ann):
            return value
        if isinstance(value, (Mapping, str)):
            return _build(value, (ann,), where)
        raise _Mismatch(_describe(ann), where, value)
    if isinstance(ann, type):
        if isinstance(value, ann):
            return value
        raise _Mismatch(_describe(ann), where, value)
    return value  # an annotation we do not interpret (e.g. a Callable): the config's validate() checks it


def _concrete(bases: tuple[type, ...]) -> dict[str, list[type]]:
    """name -> concrete config classes that subclass one of ``bases`` (defining a class registers it)."""
    found: dict[str, list[type]] = {}
    stack, seen = list(bases), set()
    while stack:
        cls = stack.pop()
        if cls in seen:
            continue
        seen.add(cls)
        stack.extend(cls.__subclasses__())
        if "__dataclass_fields__" in vars(cls) and not cls.__name__.startswith("_") and not vars(cls).get("_abstract"):
            found.setdefault(cls.__name__, []).append(cls)
    return found


def _load_families() -> None:
    for name in _FAMILIES:
        importlib.import_module(f"netcompress.{name}")


def _fold(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "").replace(" ", "")


def _resolve(name, bases: tuple[type, ...], where: str | None) -> type:
    kind = " or ".join(b.__name__ for b in bases)
    known = _concrete(bases)
    if isinstance(name, str) and name not in known:
        _load_families()
        known = _concrete(bases)
    if isinstance(name, str) and name not in known:  # "gradual-prune" / "distill" name GradualPrune / Distill
        folded = [n for n in known if _fold(n) == _fold(name)]
        name = folded[0] if len(folded) == 1 else name
    if not isinstance(name, str) or name not in known:
        names = sorted(known)
        hint = did_you_mean(name, names) if isinstance(name, str) else ""
        raise ConfigError(f"{_at(where)}unknown {kind} {name!r}.{hint} Allowed: {', '.join(names) or '(none)'}")
    if len(known[name]) > 1:
        paths = ", ".join(f"{c.__module__}.{c.__name__}" for c in known[name])
        raise ConfigError(f"{_at(where)}{name!r} is ambiguous here ({paths}); build it in Python or use a narrower field")
    return known[name][0]


def _at(where: str | None) -> str:
    return f"{where}: " if where else ""


def _build(spec, bases: tuple[type, ...], where: str | None):
    if isinstance(spec, str):
        spec = {"type": spec}
    if "type" not in spec:
        concrete = [b for b in bases if "__dataclass_fields__" in vars(b)]
        if len(concrete) != 1:
            raise ConfigError(f"{_at(where)}needs a 'type' key naming a {' or '.join(b.__name__ for b in bases)}; "
                              f"allowed: {', '.join(sorted(_concrete(bases)))}")
        cls = concrete[0]
    else:
        cls = _resolve(spec["type"], bases, where)
    fields = [f.name for f in dataclasses.fields(cls) if f.init]
    kwargs = {}
    for key, value in spec.items():
        if key == "type":
            continue
        if key not in fields:
            hint = did_you_mean(key, fields) if isinstance(key, str) else ""
            at = _at(f"{where}.{key}" if where else None)
            raise ConfigError(f"{at}{cls.__name__} has no field {key!r}.{hint} Fields: {', '.join(fields)}")
        kwargs[key] = value
    missing = [f.name for f in dataclasses.fields(cls) if f.init and f.name not in kwargs
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{_at(where)}{cls.__name__} needs {', '.join(missing)}")
    token = _WHERE.set((where, cls))
    try:
        return cls(**kwargs)
    except ConfigError as exc:  # a rule of validate(): say which field held the config
        if where and not str(exc).startswith(where.split("[")[0]):
            raise ConfigError(f"{where}: {exc}") from None
        raise
    finally:
        _WHERE.reset(token)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


def _encode(value):
    if isinstance(value, Config):
        return value.to_dict()
    if isinstance(value, (tuple, list)):
        return [_encode(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _encode(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise ConfigError(f"{type(value).__name__} value {value!r} is not plain data; a config holds numbers, "
                      "strings, lists and other configs")


class Config:
    """Base of every config. Subclass it with ``@dataclass(frozen=True)``; put cross-field rules in
    :meth:`validate`. ``to_dict`` / ``from_dict`` round-trip through YAML and JSON. A dataclass base that is
    not a config of its own sets ``_abstract = True`` in its body."""

    def __post_init__(self):
        hints = _hints(type(self))
        for f in dataclasses.fields(self):
            where = self.path(f.name)
            value = getattr(self, f.name)
            try:
                new = _coerce(value, hints[f.name], where)
            except _Mismatch as exc:
                raise ConfigError(exc.message()) from None
            if new is not value:
                object.__setattr__(self, f.name, new)
        self.validate()

    def validate(self) -> None:
        """Rules that involve several fields; raise ConfigError naming the fields (:meth:`path`) and the fix."""

    def path(self, field: str) -> str:
        """How to name ``field`` in an error: its key path while built from data (``stages[1].config.ratio``),
        else ``ClassName.field``."""
        building = _WHERE.get()
        base = building[0] if building and building[1] is type(self) and building[0] else type(self).__name__
        return f"{base}.{field}"

    def to_dict(self) -> dict[str, Any]:
        """``{type: ClassName, field: value, ...}`` with nested configs as mappings, tuples as lists."""
        out: dict[str, Any] = {"type": type(self).__name__}
        for f in dataclasses.fields(self):
            out[f.name] = _encode(getattr(self, f.name))
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | str, where: str | None = None) -> "Config":
        """Build from ``{type: Name, ...}`` (or a bare name); ``Name`` must be a concrete subclass of ``cls``
        (``type`` may be left out when ``cls`` is concrete). Errors name ``where`` (a key path)."""
        if not isinstance(data, (Mapping, str)):
            raise ConfigError(f"{where or cls.__name__}: a config is a mapping {{type: Name, field: value}}; "
                              f"got {type(data).__name__}")
        return _build(data, (cls,), where)

    def replace(self, **changes: Any) -> "Config":
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)


def check(value, annotation, where: str):
    """``value`` validated against ``annotation`` (e.g. :data:`Fraction`) outside a config: function
    arguments get the same rules and messages as config fields."""
    try:
        return _coerce(value, annotation, where)
    except _Mismatch as exc:
        raise ConfigError(exc.message()) from None


def config_types(base: type = Config) -> list[type]:
    """Every concrete config class under ``base`` (families are imported first)."""
    _load_families()
    return sorted((c for cs in _concrete((base,)).values() for c in cs), key=lambda c: (c.__module__, c.__name__))
