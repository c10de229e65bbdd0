"""CLI honesty: --help says what the tool does and documents every option with its default, --version,
the data set named truthfully (CLI output, metrics.json), compress --data-dir, a recipe's relative
data_dir taken from the recipe's folder, and the ONNX file's opset equal to the one asked for."""
import argparse
import json

import pytest
import yaml

from netcompress.cli import DESCRIPTION, main, make_parser
from tests.data.test_data import _fake_mnist_folder

TINY = {"model": {"name": "mlp", "kwargs": {"hidden": [16]}, "pretrain": {"epochs": 1, "lr": 0.1}},
        "data": {"name": "auto"},
        "stages": [{"type": "fine-tune", "epochs": 1, "lr": 0.05}],
        "measure": {"latency_repeats": 3, "latency_warmup": 0}}


def test_help_says_what_the_tool_does(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    first_paragraph = out.split("\n\n")[1]  # after the usage line
    assert " ".join(first_paragraph.split()) == DESCRIPTION
    assert first_paragraph.startswith("Make a trained PyTorch network smaller and faster")


def test_version(capsys):
    from netcompress import __version__

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"netcompress {__version__}"


def _options():
    parser = make_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, p in sub.choices.items():
        for action in p._actions:
            if action.option_strings and not isinstance(action, argparse._HelpAction):
                yield name, p, action


@pytest.mark.parametrize("command, parser, action", list(_options()),
                         ids=[f"{c}{a.option_strings[-1]}" for c, _, a in _options()])
def test_every_option_has_help_and_shows_its_default(command, parser, action):
    assert action.help and len(action.help) > 10, (command, action.option_strings)
    text = parser.format_help()
    if action.default is not None and action.default is not False and action.default != []:
        assert f"(default: {action.default})" in " ".join(text.split()), (command, action.option_strings)
    elif action.default is None and not action.required:
        assert "default" in action.help, (command, action.option_strings)  # says in words what happens without it


@pytest.fixture
def idx_folder(tmp_path):
    folder = tmp_path / "my-mnist"
    folder.mkdir()
    _fake_mnist_folder(folder, 96, 48)
    return folder


@pytest.mark.parametrize("data", ["mnist_idx", "auto", "fashion_mnist"])
def test_train_names_the_folder_it_read(tmp_path, capsys, idx_folder, data):
    """Another folder is never called Fashion-MNIST, whatever --data said."""
    out = tmp_path / "w.safetensors"
    assert main(["train", "--model", "mlp", "--epochs", "0", "--data", data, "--data-dir", str(idx_folder),
                 "--out", str(out)]) == 0
    line = capsys.readouterr().out
    assert f"on mnist_idx ({idx_folder})" in line and "fashion" not in line


def test_mnist_idx_without_a_folder_is_an_error(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("NETCOMPRESS_DATA_DIR", raising=False)
    assert main(["train", "--model", "mlp", "--data", "mnist_idx", "--out", str(tmp_path / "w.st")]) == 2
    err = capsys.readouterr().err
    assert "needs a folder" in err and "--data-dir" in err and len(err.strip().splitlines()) == 1


def test_compress_data_dir_flows_into_output_and_metrics(tmp_path, capsys, idx_folder):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "run"
    assert main(["compress", str(recipe), "--out", str(out), "--data-dir", str(idx_folder), "--no-progress"]) == 0
    assert f"data: mnist_idx ({idx_folder})" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data"] == "mnist_idx" and metrics["data_source"] == str(idx_folder)
    assert str(idx_folder) in (out / "recipe.yaml").read_text()  # the effective recipe: a resume reads the same data


def test_recipe_data_dir_is_relative_to_the_recipe(tmp_path, capsys, monkeypatch):
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    _fake_mnist_folder(project / "data", 96, 48)
    recipe = project / "r.yaml"
    recipe.write_text(yaml.safe_dump({**TINY, "data": {"name": "mnist_idx", "data_dir": "data"}}))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["compress", str(recipe), "--out", "run", "--no-progress"]) == 0
    metrics = json.loads((elsewhere / "run" / "metrics.json").read_text())
    assert metrics["data_source"] == str(project / "data")


@pytest.mark.parametrize("opset", [18, 23])
def test_export_writes_the_opset_asked_for(tmp_path, capsys, opset):
    from netcompress.export.onnx import file_opset

    out = tmp_path / "m.onnx"
    assert main(["export", "--model", "mlp", "--input-shape", "1,1,8,8", "--opset", str(opset), "--out", str(out)]) == 0
    assert file_opset(out) == opset and f"opset {opset}" in capsys.readouterr().out
