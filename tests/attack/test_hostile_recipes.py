"""Hostile recipes: factories that would run commands or write files, YAML tags that build objects, alias
bombs, deep nesting, huge and binary files, bad encodings, duplicate keys. Each is refused with one line
before the run directory exists; none runs a command (the PWNED marker never appears)."""
from __future__ import annotations

import os
import random
import sys

import pytest

from tests.attack.harness import TINY, refused

MARK = "@MARK@"  # replaced by the sandbox's marker path in every case


def with_model(model: dict) -> dict:
    return {**TINY, "model": model}


def _sub(value, mark: str):
    if isinstance(value, str):
        return value.replace(MARK, mark)
    if isinstance(value, list):
        return [_sub(v, mark) for v in value]
    if isinstance(value, dict):
        return {k: _sub(v, mark) for k, v in value.items()}
    return value


# netcompress's own CLI and I/O functions, each with arguments that would write the marker (or a file) if called:
# a recipe can never call them, whatever --trust says
NETCOMPRESS_FACTORIES = [
    ("netcompress.cli:main", {"argv": ["export", "--model", "lenet5", "--out", MARK, "--force"]}),
    ("netcompress.cli:cmd_export", {}),
    ("netcompress.cli:cmd_compress", {}),
    ("netcompress.cli:cmd_train", {}),
    ("netcompress.cli:build_model", {"name": "lenet5", "input_shape": [1, 1, 28, 28]}),
    ("netcompress.cli:make_parser", {}),
    ("netcompress.core.io:save_weights", {"path": MARK}),
    ("netcompress.core.io:atomic_write", {"path": MARK}),
    ("netcompress.core.io:atomic_torch_save", {"obj": 1, "path": MARK}),
    ("netcompress.core.io:ensure_writable", {"path": MARK}),
    ("netcompress.core.io:load_weights", {"path": "/etc/passwd"}),
    ("netcompress.core.io:safe_torch_load", {"path": "/etc/passwd"}),
    ("netcompress.recipe:run_recipe", {"recipe": "inner.yaml", "out": MARK, "trusted": ["subprocess"]}),
    ("netcompress.recipe.runner:run_recipe", {"recipe": "inner.yaml", "out": MARK}),
    ("netcompress.recipe.runner:open_run_dir", {"out": MARK}),
    ("netcompress.export.onnx:to_onnx", {"path": MARK}),
    ("netcompress.export.onnx:compact_onnx", {"path": "x.onnx", "out": MARK}),
    ("netcompress.export.quantized:quantize_onnx", {"fp32_path": "x.onnx", "out_path": MARK}),
    ("netcompress.export.compressed:save_compressed", {"path": MARK}),
    ("netcompress.prune.sensitivity:write_csv", {"rows": [], "path": MARK}),
    ("netcompress.prune.sparse:save_sparse", {"path": MARK}),
    ("netcompress.quantize.ptq:write_stats_file", {"path": MARK}),
    ("netcompress.measure.report:write_report", {"out_dir": MARK}),
    ("netcompress.train.checkpoint:save_checkpoint", {"path": MARK}),
    ("netcompress.data:load_dataset", {"name": "digits"}),
    ("netcompress.models.zoo:create_model", {"name": "lenet5"}),
    ("netcompress.models:model_builder", {}),
    ("netcompress.models.minilm:load_minilm", {}),
]


@pytest.mark.parametrize("factory, kwargs", NETCOMPRESS_FACTORIES, ids=[f for f, _ in NETCOMPRESS_FACTORIES])
def test_netcompress_functions_are_never_factories(sandbox, factory, kwargs):
    recipe = sandbox.recipe(with_model({"factory": factory, "kwargs": _sub(kwargs, str(sandbox.marker))}))
    out = sandbox.root / "run"
    refused(sandbox.run(["compress", recipe, "--out", out, "--trust", "netcompress"]), factory,
            "is not a model builder")
    assert not out.exists()


# the standard library and torch, trusted on the command line: still no callable but a model builder
TRUSTED_FACTORIES = [
    ("os:system", {"command": f"touch {MARK}"}, "os"),
    ("os:remove", {"path": "precious.txt"}, "os"),
    ("os:makedirs", {"name": MARK}, "os"),
    ("posix:system", {"command": f"touch {MARK}"}, "posix"),
    ("subprocess:Popen", {"args": ["touch", MARK]}, "subprocess"),
    ("subprocess:run", {"args": ["touch", MARK]}, "subprocess"),
    ("subprocess:check_output", {"args": ["touch", MARK]}, "subprocess"),
    ("shutil:rmtree", {"path": "thesis"}, "shutil"),
    ("shutil:copyfile", {"src": "precious.txt", "dst": MARK}, "shutil"),
    ("builtins:exec", {"source": f"open('{MARK}', 'w')"}, "builtins"),
    ("builtins:eval", {"source": f"open('{MARK}', 'w')"}, "builtins"),
    ("builtins:open", {"file": MARK, "mode": "w"}, "builtins"),
    ("io:open", {"file": MARK, "mode": "w"}, "io"),
    ("pathlib:Path", {}, "pathlib"),
    ("runpy:run_path", {"path_name": "evil.py"}, "runpy"),
    ("importlib:import_module", {"name": "evil"}, "importlib"),
    ("ctypes:CDLL", {"name": "libc.so.6"}, "ctypes"),
    ("pickle:loads", {"data": "cos\nsystem\n"}, "pickle"),
    ("yaml:unsafe_load", {"stream": f"!!python/object/apply:os.system ['touch {MARK}']"}, "yaml"),
    ("torch:save", {"obj": 1, "f": MARK}, "torch"),
    ("torch:load", {"f": "evil.pt", "weights_only": False}, "torch"),
    ("torch.hub:load", {"repo_or_dir": "evil/repo", "model": "x"}, "torch"),
    ("numpy:save", {"file": MARK, "arr": [1]}, "numpy"),
    ("webbrowser:open", {"url": "http://localhost:1/"}, "webbrowser"),
]


@pytest.mark.parametrize("factory, kwargs, trust", TRUSTED_FACTORIES, ids=[f for f, _, _ in TRUSTED_FACTORIES])
def test_trusted_packages_still_give_only_model_builders(sandbox, factory, kwargs, trust):
    (sandbox.root / "evil.py").write_text(f"open({str(sandbox.marker)!r}, 'w')\n")
    recipe = sandbox.recipe(with_model({"factory": factory, "kwargs": _sub(kwargs, str(sandbox.marker))}))
    out = sandbox.root / "run"
    refused(sandbox.run(["compress", recipe, "--out", out, "--trust", trust]), "is not a model builder")
    assert not out.exists()


def test_untrusted_package_is_never_imported(sandbox, monkeypatch):
    """Its module would write the marker at import: it is not imported without --trust."""
    pkg = sandbox.tmp / "lib" / "evilpkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "models.py").write_text(f"open({str(sandbox.marker)!r}, 'w')\ndef build():\n    pass\n")
    monkeypatch.syspath_prepend(str(pkg.parent))
    recipe = sandbox.recipe(with_model({"factory": "evilpkg.models:build"}))
    refused(sandbox.run(["compress", recipe, "--out", sandbox.root / "run"]), "not trusted", "--trust evilpkg")
    assert "evilpkg.models" not in sys.modules


def _user_package(sandbox, monkeypatch, name):
    pkg = sandbox.tmp / "lib" / name
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "models.py").write_text(
        "from torch import nn\nfrom netcompress.models import model_builder\n"
        f"def unmarked(**kw):\n    open({str(sandbox.marker)!r}, 'w')\n    return nn.Linear(64, 10)\n"
        "@model_builder\ndef marked(hidden: int = 8):\n    return nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), "
        "nn.ReLU(), nn.Linear(hidden, 10))\n")
    monkeypatch.syspath_prepend(str(pkg.parent))


def test_trusted_user_function_must_be_marked(sandbox, monkeypatch):
    _user_package(sandbox, monkeypatch, "userpkg_a")
    recipe = sandbox.recipe(with_model({"factory": "userpkg_a.models:unmarked"}))
    refused(sandbox.run(["compress", recipe, "--out", sandbox.root / "run", "--trust", "userpkg_a"]),
            "is not a model builder", "model_builder")


def test_trusted_user_builder_runs(sandbox, monkeypatch):
    """Positive control: a marked builder in a trusted package is a valid factory."""
    _user_package(sandbox, monkeypatch, "userpkg_b")
    recipe = sandbox.recipe(with_model({"factory": "userpkg_b.models:marked", "kwargs": {"hidden": 8},
                                        "pretrain": {"epochs": 1}}))
    out = sandbox.root / "run"
    result = sandbox.run(["compress", recipe, "--out", out, "--trust", "userpkg_b", "--no-progress"], out=out)
    assert result.code == 0, result.err
    assert (out / "metrics.json").is_file() and (out / ".netcompress-run").is_file()


MALFORMED_FACTORIES = ["os.system", "os:system:x", "../evil:build", "a b:c", "netcompress.__main__:main",
                       "netcompress.models.zoo:_resnet", "x" * 300 + ":y", "netcompress.cli:__call__", ":main",
                       "netcompress/cli:main"]


@pytest.mark.parametrize("factory", MALFORMED_FACTORIES, ids=range(len(MALFORMED_FACTORIES)))
def test_malformed_factory_strings(sandbox, factory):
    recipe = sandbox.recipe(with_model({"factory": factory}))
    refused(sandbox.run(["compress", recipe, "--out", sandbox.root / "run", "--trust", "netcompress"]),
            "model.factory")


YAML_TAGS = [
    "model: !!python/object/apply:os.system ['touch @MARK@']\nstages: [{type: export}]\n",
    "model: !!python/object/new:subprocess.Popen [['touch', '@MARK@']]\nstages: [{type: export}]\n",
    "model: {name: !!python/name:os.system }\nstages: [{type: export}]\n",
    "model: !!python/module:os\nstages: [{type: export}]\n",
    "model: !!python/object:netcompress.cli.UsageError {prog: x}\nstages: [{type: export}]\n",
    "model: {name: lenet5}\nstages: !!python/tuple [{type: export}]\n",
    "model: !exec 'touch @MARK@'\nstages: [{type: export}]\n",
    "%TAG !py! tag:yaml.org,2002:python/object/apply:\n---\nmodel: !py!os.system ['touch @MARK@']\n",
    "model: {name: lenet5}\nstages: [{type: export, formats: !!python/object/apply:builtins.exec ['1']}]\n",
    "name: !!binary aGVsbG8=\nmodel: {name: lenet5}\nstages: [{type: export}]\n",
    "model: {name: lenet5}\nstages: !!set {a, b}\n",
]


@pytest.mark.parametrize("text", YAML_TAGS, ids=range(len(YAML_TAGS)))
def test_yaml_tags_never_build_objects(sandbox, text):
    recipe = sandbox.recipe(text.replace(MARK, str(sandbox.marker)))
    refused(sandbox.run(["compress", recipe, "--out", sandbox.root / "run"]), str(recipe))


def _laughs(levels: int, width: int) -> str:
    lines = ["a0: &a0 [lol]"] + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\nmodel: {name: lenet5}\nstages: [{type: export}]\n"


ALIAS_BOMBS = {
    "billion-laughs": _laughs(9, 10),
    "wide": _laughs(3, 400),
    "merge-bomb": "b0: &b0 {x: 1, y: 2}\n" + "".join(f"b{i}: &b{i} {{<<: *b{i - 1}, k{i}: [*b{i - 1}, *b{i - 1}]}}\n"
                                                      for i in range(1, 14))
                  + "model: {name: lenet5}\nstages: [{type: export}]\n",
    "long-string": "s: &s '" + "x" * 200_000 + "'\nmodel: {name: mlp, kwargs: {hidden: [*s" + ", *s" * 999 + "]}}\n"
                   "stages: [{type: export}]\n",
    "key-alias": "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
                 "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
                 "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n? [*e, *e]\n: 1\n",
}


@pytest.mark.parametrize("name", list(ALIAS_BOMBS))
def test_alias_bombs_are_refused_before_they_expand(sandbox, name):
    recipe = sandbox.recipe(ALIAS_BOMBS[name])
    refused(sandbox.run(["compress", recipe, "--out", sandbox.root / "run"]), "aliases are expanded")


NESTING = {
    "flow-lists": "model: " + "[" * 5000 + "]" * 5000 + "\n",
    "flow-maps": "model: " + "{a: " * 3000 + "1" + "}" * 3000 + "\n",
    "block-maps": "".join("  " * i + f"k{i}:\n" for i in range(200)) + "  " * 200 + "v\n",
    "mixed": "model: " + "[{a: " * 1000 + "1" + "}]" * 1000 + "\n",
    "just-over": "model: " + "[" * 70 + "]" * 70 + "\n",
}


@pytest.mark.parametrize("name", list(NESTING))
def test_deep_nesting(sandbox, name):
    recipe = sandbox.recipe(NESTING[name])
    refused(sandbox.run(["compress", recipe, "--out", sandbox.root / "run"]), "nesting deeper than")


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def test_huge_recipe_file(sandbox):
    recipe = _write(sandbox.root / "big.yaml", b"model: {name: lenet5}\nstages: [{type: export}]\n" + b"#" * (2 << 20))
    refused(sandbox.run(["compress", recipe, "--out", sandbox.root / "run"]), "larger than")


def test_sparse_ten_gigabyte_recipe_is_not_read(sandbox):
    recipe = sandbox.root / "sparse.yaml"
    with open(recipe, "wb") as fh:
        fh.truncate(10 << 30)
    refused(sandbox.run(["compress", recipe, "--out", sandbox.root / "run"]), "larger than")


rng = random.Random(0)
BINARY = {
    "latin-1": "model: {name: lenet5}\nname: caf\xe9\nstages: [{type: export}]\n".encode("latin-1"),
    "utf-16": "model: {name: lenet5}\nstages: [{type: export}]\n".encode("utf-16"),
    "utf-32": "model: {name: lenet5}\n".encode("utf-32"),
    "bad-continuation": b"model: {name: lenet5}\nname: \xc3\x28\n",
    "overlong": b"name: \xc0\xaf\n",
    "surrogate": b"name: \xed\xa0\x80\n",
    "random": bytes(rng.randrange(256) for _ in range(4096)),
    "png": b"\x89PNG\r\n\x1a\n" + bytes(64),
    "elf": b"\x7fELF\x02\x01\x01" + bytes(128),
    "gzip": b"\x1f\x8b\x08\x00" + bytes(32),
}


@pytest.mark.parametrize("name", list(BINARY))
def test_binary_and_non_utf8_recipes(sandbox, name):
    recipe = _write(sandbox.root / f"{name}.yaml", BINARY[name])
    line = refused(sandbox.run(["compress", recipe, "--out", sandbox.root / "run"]))
    assert "UTF-8" in line or "binary data" in line


def _special(sandbox, kind):
    path = sandbox.root / "special.yaml"
    if kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "dev-zero-link":
        path.symlink_to("/dev/zero")
    elif kind == "dev-null":
        return "/dev/null"
    elif kind == "link-loop":
        path.symlink_to(path)
    elif kind == "dangling-link":
        path.symlink_to(sandbox.root / "nowhere.yaml")
    return path


SPECIAL = {"directory": "is a directory", "missing": "no such file", "fifo": "not a regular file",
           "dev-zero-link": "not a regular file", "dev-null": "not a regular file", "link-loop": "",
           "dangling-link": "no such file"}


@pytest.mark.parametrize("kind", list(SPECIAL))
def test_recipe_that_is_not_a_file(sandbox, kind):
    recipe = _special(sandbox, kind) if kind != "missing" else sandbox.root / "missing.yaml"
    refused(sandbox.run(["compress", recipe, "--out", sandbox.root / "run"]), SPECIAL[kind])
    assert not (sandbox.root / "run").exists()


NOT_RECIPES = {"empty": ("", "a recipe is a mapping"), "blank": ("   \n\n", "a recipe is a mapping"),
               "scalar": ("42\n", "a recipe is a mapping"), "list": ("- 1\n- 2\n", "a recipe is a mapping"),
               "no-stages": ("model: {name: lenet5}\n", "stages: required key is missing")}


@pytest.mark.parametrize("name", list(NOT_RECIPES))
def test_text_that_is_not_a_recipe(sandbox, name):
    text, words = NOT_RECIPES[name]
    refused(sandbox.run(["compress", sandbox.recipe(text), "--out", sandbox.root / "run"]), words)


DUPLICATES = {
    "stages": "model: {name: lenet5}\nstages:\n  - {type: fine-tune, epochs: 3}\nstages:\n  - {type: export}\n",
    "model-name": "model:\n  name: lenet5\n  name: resnet20\nstages: [{type: export}]\n",
    "stage-key": "model: {name: lenet5}\nstages:\n  - type: fine-tune\n    epochs: 3\n    epochs: 0\n",
    "quoted": "model: {name: lenet5}\nstages: [{type: export}]\n\"stages\": [{type: fine-tune}]\n",
    "flow": "model: {name: lenet5, name: lenet5}\nstages: [{type: export}]\n",
    "int-keys": "model: {name: lenet5}\nstages: [{type: export}]\n1: a\n0x1: b\n",
}


@pytest.mark.parametrize("name", list(DUPLICATES))
def test_duplicate_keys_are_refused(sandbox, name):
    line = refused(sandbox.run(["compress", sandbox.recipe(DUPLICATES[name]), "--out", sandbox.root / "run"]),
                   "duplicate key")
    assert "line" in line


def test_merge_key_override_is_not_a_duplicate(sandbox):
    """A key after ``<<: *base`` overrides the merged one, by YAML's design: allowed."""
    from netcompress.recipe import loads_recipe

    r = loads_recipe("model: {name: lenet5}\nstages:\n  - &ft {type: fine-tune, epochs: 2}\n"
                     "  - {<<: *ft, epochs: 3, name: again}\n")
    assert [s.params.epochs for s in r.stage_list] == [2, 3]


HUGE_MODELS = [{"name": "mlp", "kwargs": {"hidden": [100_000_000]}},
               {"name": "mlp", "kwargs": {"hidden": [4096, 4096, 4096, 4096] * 200}},
               {"name": "mlp", "kwargs": {"input_size": 1_000_000}},
               {"name": "vgg_small", "kwargs": {"width": 100_000}}]


@pytest.mark.parametrize("model", HUGE_MODELS, ids=range(len(HUGE_MODELS)))
def test_model_too_big_for_memory_is_refused_before_allocating(sandbox, model):
    recipe = sandbox.recipe(with_model(model))
    refused(sandbox.run(["compress", recipe, "--out", sandbox.root / "run"]), "of memory")
    assert not (sandbox.root / "run").exists()
