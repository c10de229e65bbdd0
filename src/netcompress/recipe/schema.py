"""The recipe schema (pydantic v2) and its loader.

A recipe is data: ``yaml.safe_load`` (no tags that build objects), every key checked (unknown keys are
errors with a did-you-mean), every type name resolved through a registry. The one place a recipe names
Python code is ``model.factory: package.module:function``; see :class:`ModelSpec` for how it is
restricted.

>>> r = parse_recipe({"model": {"name": "lenet_300_100"}, "stages": [{"type": "fine-tune", "epochs": 1}]})
>>> r.stage_list[0].type, r.stage_list[0].params.epochs
('fine-tune', 1)
>>> parse_recipe({"model": {"nme": "lenet5"}, "stages": []}, source="r.yaml")
Traceback (most recent call last):
...
netcompress.recipe.errors.RecipeError: r.yaml: model.nme: unknown key 'nme'. Did you mean 'name'? Allowed keys: name, factory, kwargs, weights, pretrain
r.yaml: stages: List should have at least 1 item after validation, not 0; got []
"""
from __future__ import annotations

import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import (BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_serializer, field_validator,
                      model_validator)

from ..core.errors import ConfigError
from .errors import RecipeError, short_repr, unknown_key, unknown_name
from ..core.config import Config
from ..train import TrainConfig
from .registry import stage_type

MAX_RECIPE_BYTES = 1 << 20
FACTORY_RE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")
Scalar = Union[bool, int, float, str, None]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class ModelSpec(_Strict):
    """``name`` (a zoo model) or ``factory`` (``package.module:function``), optional ``weights``.

    Safety: a factory means importing a module, which runs its code. Loading a recipe therefore never
    imports; at run time only modules under a *trusted* top-level package may be imported: ``netcompress``
    itself, or packages the user trusts explicitly (``--trust PKG`` / ``trusted=("pkg",)``). The spec
    must match ``package.module:function`` (no private or dunder names), and the object found must be a
    function or class defined in that module, returning an ``nn.Module``. So a recipe received from
    someone else cannot run code the user did not name on the command line."""

    name: Optional[str] = None
    factory: Optional[str] = None
    kwargs: dict[str, Union[Scalar, list[Scalar]]] = Field(default_factory=dict)
    weights: Optional[str] = None
    pretrain: Optional[Any] = None  # a TrainConfig (the baseline is trained in the run)

    @field_validator("pretrain", mode="before")
    @classmethod
    def _train_config(cls, v):
        if v is None or isinstance(v, TrainConfig):
            return v
        try:
            return TrainConfig.from_dict(v)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None

    @field_serializer("pretrain")
    def _dump_train(self, v):
        return None if v is None else {k: x for k, x in v.to_dict().items() if k != "type"}

    @field_validator("name")
    @classmethod
    def _zoo_name(cls, v):
        if v is not None:
            from ..models import MODELS

            if v not in MODELS:
                raise ValueError(unknown_name("model", v, MODELS.names()))
        return v

    @field_validator("factory")
    @classmethod
    def _factory(cls, v):
        if v is not None:
            if len(v) > 200 or not FACTORY_RE.match(v):
                raise ValueError(f"{short_repr(v)} is not of the form 'package.module:function'")
            if any(part.startswith("_") for part in re.split(r"[.:]", v)):
                raise ValueError(f"{short_repr(v)}: private and dunder names are not allowed")
        return v

    @model_validator(mode="after")
    def _one_source(self):
        if (self.name is None) == (self.factory is None):
            raise ValueError("give exactly one of 'name' (a zoo model) or 'factory' (package.module:function)")
        return self


class DataSpec(_Strict):
    name: str = "auto"
    data_dir: Optional[str] = None
    seed: int = Field(0, ge=0, le=2**31)
    image_size: int = Field(28, ge=8, le=64)
    train_subset: Optional[int] = Field(None, ge=1)
    eval_subset: Optional[int] = Field(None, ge=1)
    calibration: int = Field(512, ge=1, le=100_000)

    @field_validator("name")
    @classmethod
    def _known(cls, v):
        from ..data import DATASETS

        allowed = ["auto", *DATASETS.names()]
        if v not in allowed:
            raise ValueError(unknown_name("data set", v, allowed))
        return v


class Budget(_Strict):
    """Targets the final model must meet; stages may read them (e.g. budget-driven pruning)."""

    bytes: Optional[int] = Field(None, ge=1)
    macs: Optional[int] = Field(None, ge=1)
    params: Optional[int] = Field(None, ge=1)
    latency_ms: Optional[float] = Field(None, gt=0)


class MeasureSpec(_Strict):
    latency_repeats: int = Field(30, ge=3, le=10_000)
    latency_warmup: int = Field(5, ge=0, le=1000)
    batch_sizes: list[int] = Field(default_factory=lambda: [1], min_length=1, max_length=4)
    threads: int = Field(1, ge=1, le=64)

    @field_validator("batch_sizes")
    @classmethod
    def _positive(cls, v):
        if any(b < 1 or b > 4096 for b in v):
            raise ValueError(f"batch sizes must be in [1, 4096]; got {v}")
        return v


@dataclass(frozen=True)
class Stage:
    index: int
    type: str
    name: str
    params: Any


class Recipe(_Strict):
    version: Literal[1] = 1
    name: str = Field("run", pattern=r"^[\w.-]{1,64}$")
    seed: int = Field(0, ge=0, le=2**31)
    model: ModelSpec
    data: DataSpec = Field(default_factory=DataSpec)
    stages: list[dict[str, Any]] = Field(min_length=1, max_length=64)
    budget: Optional[Budget] = None
    measure: MeasureSpec = Field(default_factory=MeasureSpec)
    _stages: tuple = PrivateAttr(default=())
    _source: str = PrivateAttr(default="<recipe>")

    @property
    def stage_list(self) -> tuple[Stage, ...]:
        return self._stages

    @property
    def source(self) -> str:
        return self._source


# --------------------------------------------------------------------------------- error formatting

def _inner(annotation):
    """Unwrap Optional[...] / list[...] / dict[..., X] down to a pydantic model class, if any."""
    stack = [annotation]
    while stack:
        ann = stack.pop()
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            return ann
        stack.extend(typing.get_args(ann))
    return None


def _model_at(root: type[BaseModel], loc: tuple) -> Optional[type[BaseModel]]:
    current: Any = root
    for part in loc:
        if isinstance(part, str) and current is not None and part in current.model_fields:
            current = _inner(current.model_fields[part].annotation)
        elif isinstance(part, int):
            continue
        else:
            return None
    return current


def _message(root: type[BaseModel], err: dict) -> str:
    loc = tuple(err["loc"])
    kind = err["type"]
    if kind == "extra_forbidden" and loc:
        owner = _model_at(root, loc[:-1])
        return unknown_key(loc[-1], list(owner.model_fields) if owner else [])
    if kind == "missing":
        return "required key is missing"
    if kind == "literal_error":
        return f"must be one of {err['ctx']['expected']}; got {short_repr(err.get('input'))}"
    msg = err["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        msg = msg.removeprefix(prefix)
    if kind in ("value_error", "assertion_error") or "input" not in err:
        return msg
    return f"{msg}; got {short_repr(err['input'])}"


_UNION_TAGS = ("int", "float", "str", "bool", "none")


def _problems(root: type[BaseModel], exc: ValidationError, prefix: tuple = ()) -> list:
    out = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        if err["type"] != "extra_forbidden":
            # pydantic reports a failing union member under its type name; drop those loc parts
            loc = tuple(p for p in loc if not (isinstance(p, str) and (p.endswith("]") or p in _UNION_TAGS)))
        out.append((prefix + loc, _message(root, {**err, "loc": loc})))
    return out


# --------------------------------------------------------------------------------------- parsing

def _parse_stage(i: int, raw: dict, problems: list) -> Optional[Stage]:
    loc = ("stages", i)
    kind = raw.get("type")
    if kind is None:
        problems.append((loc, "each stage needs a 'type' key (e.g. fine-tune, prune, export)"))
        return None
    from .registry import STAGES, stage_names

    if not isinstance(kind, str) or kind not in stage_names():
        problems.append((loc + ("type",), unknown_name("stage type", kind, STAGES.names())))
        return None
    st = stage_type(kind)
    name = raw.get("name", f"{i + 1:02d}-{kind}")
    if not isinstance(name, str) or not re.match(r"^[\w.-]{1,64}$", name) or name == "baseline":
        problems.append((loc + ("name",), f"must match [A-Za-z0-9_.-]{{1,64}} and not be 'baseline'; got {short_repr(name)}"))
        return None
    params = {k: v for k, v in raw.items() if k not in ("type", "name")}
    fixed = [k for k in ("seed", "progress") if k in params and issubclass(st.params, TrainConfig)]
    if fixed:
        problems.append((loc + (fixed[0],), "a stage's seed and progress come from the run (the recipe's top-level "
                                            "seed, the command line); remove it here"))
        return None
    try:
        return Stage(i, kind, name, st.params.from_dict(params, where=f"stages[{i}]"))
    except ConfigError as exc:
        problems.append((None, str(exc)))
    return None


def parse_recipe(data: Any, source: str = "<recipe>") -> Recipe:
    """Validate a recipe mapping; raises RecipeError listing every problem with its key path."""
    if not isinstance(data, dict):
        raise RecipeError(source, [((), f"a recipe is a mapping of keys (model, data, stages, ...); "
                                        f"got {type(data).__name__}")])
    bad_keys = [k for k in data if not isinstance(k, str)]
    if bad_keys:
        raise RecipeError(source, [((), f"keys must be strings; got {short_repr(bad_keys[0])}")])
    problems: list = []
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        problems.extend(_problems(Recipe, exc))
        recipe = None
    stages = []
    raw_stages = data.get("stages")
    if isinstance(raw_stages, list):
        for i, raw in enumerate(raw_stages):
            if not isinstance(raw, dict):
                if recipe is not None:
                    problems.append((("stages", i), f"a stage is a mapping with a 'type'; got {short_repr(raw)}"))
                continue
            if any(not isinstance(k, str) for k in raw):
                problems.append((("stages", i), "stage keys must be strings"))
                continue
            stage = _parse_stage(i, raw, problems)
            stages.append(stage)
        names = [s.name for s in stages if s is not None]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            problems.append((("stages",), f"stage names must be unique; repeated: {dup}"))
    if problems:
        raise RecipeError(source, problems)
    recipe._stages = tuple(stages)
    recipe._source = source
    return recipe


MAX_YAML_DEPTH = 64
MAX_YAML_NODES = 100_000  # after aliases are expanded (100 characters of a string count as one node): a "billion
# laughs" recipe, or one long string aliased a thousand times, is refused before it is built


class RecipeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` (plain data only: no tag builds an object) that also refuses duplicate keys
    (a second ``stages:`` would silently replace the first), nesting deeper than MAX_YAML_DEPTH, and more
    than MAX_YAML_NODES nodes once aliases are expanded."""

    def compose_node(self, parent, index):
        depth = getattr(self, "_depth", 0) + 1
        if depth > MAX_YAML_DEPTH:
            mark = self.peek_event().start_mark
            raise yaml.composer.ComposerError(None, None, f"nesting deeper than {MAX_YAML_DEPTH} levels", mark)
        self._depth = depth
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth = depth - 1

    def construct_document(self, node):
        _count_nodes(node)
        return super().construct_document(node)

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            self.flatten_mapping(node)
            seen: dict = {}
            for key_node, _ in node.value[node._first_own:]:  # a key may override a merged one (<<: *x)
                key = self.construct_object(key_node, deep=True)
                try:
                    hash(key)
                except TypeError:
                    continue  # SafeLoader reports unhashable keys itself
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        "while reading a mapping", node.start_mark,
                        f"duplicate key {short_repr(key)} (first on line {seen[key] + 1}); give each key once",
                        key_node.start_mark)
                seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)

    def flatten_mapping(self, node):
        if not hasattr(node, "_first_own"):  # flatten once; merged entries are put first
            own = sum(1 for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge")
            super().flatten_mapping(node)
            node._first_own = len(node.value) - own


def _count_nodes(root) -> None:
    """Refuse a document whose alias-expanded size exceeds MAX_YAML_NODES (counted with memoisation: linear)."""
    sizes: dict[int, int] = {}
    stack = [(root, False)]
    while stack:
        node, done = stack.pop()
        if id(node) in sizes:
            continue
        children = []
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        if done or not children:
            own = 1 + len(node.value) // 100 if isinstance(node, yaml.ScalarNode) else 1  # long strings weigh more
            sizes[id(node)] = own + sum(sizes.get(id(c), 0) for c in children)
            if sizes[id(node)] > MAX_YAML_NODES:
                raise yaml.composer.ComposerError(None, None, f"more than {MAX_YAML_NODES:,} values once aliases "
                                                  "are expanded (an alias bomb); write the values out", node.start_mark)
            continue
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in sizes)


def read_recipe_text(path: str | Path) -> str:
    """The recipe file's text: a regular UTF-8 file of at most MAX_RECIPE_BYTES, else RecipeError naming why."""
    path = Path(path)
    source = str(path)

    def fail(msg: str):
        return RecipeError(source, [((), msg)])

    try:
        if path.is_dir():
            raise fail("is a directory; pass a recipe file (see recipes/)")
        if not path.exists():
            raise fail("no such file; check the path (examples are in recipes/)")
        if not path.is_file():
            raise fail("is not a regular file (a device or pipe); pass a recipe file")
        with open(path, "rb") as fh:
            raw = fh.read(MAX_RECIPE_BYTES + 1)
    except OSError as exc:
        raise fail(f"cannot read the recipe ({exc.strerror or exc}); check the path and permissions") from None
    if len(raw) > MAX_RECIPE_BYTES:
        raise fail(f"recipe is larger than {MAX_RECIPE_BYTES:,} bytes; a recipe is a short YAML file")
    return _decode(raw, source)


def _decode(raw: bytes, source: str) -> str:
    if b"\x00" in raw:
        raise RecipeError(source, [((), f"binary data (a NUL byte at {raw.index(0)}), not a YAML recipe; "
                                        "pass the recipe's .yaml file")])
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RecipeError(source, [((), f"not UTF-8 text (byte {exc.start}); save the recipe as UTF-8")]) from None


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a YAML recipe file (plain data only, see :class:`RecipeLoader`)."""
    return loads_recipe(read_recipe_text(path), str(path))


def loads_recipe(text: str | bytes, source: str = "<recipe>") -> Recipe:
    if len(text) > MAX_RECIPE_BYTES:
        raise RecipeError(source, [((), f"recipe is {len(text)} bytes; the limit is {MAX_RECIPE_BYTES}")])
    if isinstance(text, bytes):
        text = _decode(text, source)
    try:
        data = yaml.load(text, Loader=RecipeLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        if "could not determine a constructor for the tag" in problem:
            problem = (f"YAML tag {problem.split('tag', 1)[1].strip()} is not allowed: a recipe is plain data "
                       "(mappings, lists, strings, numbers)")
        raise RecipeError(source, [((), f"not valid YAML: {where}{problem}")]) from None
    except RecursionError:
        raise RecipeError(source, [((), "YAML nesting is too deep")]) from None
    try:
        return parse_recipe(data, source)
    except RecursionError:
        raise RecipeError(source, [((), "recipe nesting is too deep")]) from None


def recipe_to_dict(recipe: Recipe) -> dict:
    """The recipe as plain data (defaults filled in), e.g. for metrics.json."""
    return recipe.model_dump(mode="json")
