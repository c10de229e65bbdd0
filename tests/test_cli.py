import json
import subprocess
import sys

import pytest
import torch

from netcompress.cli import main
from netcompress.core.io import save_weights
from netcompress.models import create_model


def test_analyze_json_totals(capsys):
    assert main(["analyze", "--model", "lenet5", "--input-shape", "1,1,28,28", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["totals"]["params"] == 431_080 and out["totals"]["macs"] == 2_293_000
    assert out["totals"]["bytes_fp32"] == 4 * 431_080
    assert {layer["name"] for layer in out["layers"]} >= {"features.0", "classifier.3"}


def test_analyze_table_with_weights(tmp_path, capsys):
    m = create_model("lenet_300_100")
    with torch.no_grad():
        m.net[1].weight[:150] = 0
    w = save_weights(m, tmp_path / "w.safetensors")
    assert main(["analyze", "--model", "lenet_300_100", "--weights", str(w)]) == 0
    out = capsys.readouterr().out
    assert "266,610" in out and f"{266_610 - 150 * 784:,}" in out


@pytest.mark.parametrize("argv, expected", [
    (["analyze", "--model", "lenet6"], "Did you mean 'lenet5'"),
    (["analyze", "--model", "lenet5", "--input-shape", "1,a,28"], "--input-shape"),
    (["analyze", "--model", "lenet5", "--weights", "/no/such/file.safetensors"], "does not exist"),
    (["train", "--model", "lenet5", "--data", "fashion_mnist", "--data-dir", "/no/such/dir", "--out", "x.st"],
     "apt-get install dataset-fashion-mnist"),
])
def test_bad_input_is_one_clear_line(argv, expected, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_weights_of_wrong_model_and_corrupt_file(tmp_path, capsys):
    w = save_weights(create_model("lenet5"), tmp_path / "w.safetensors")
    assert main(["analyze", "--model", "lenet_300_100", "--weights", str(w)]) == 2
    assert "does not fit the model" in capsys.readouterr().err
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x80\x02 not a checkpoint")
    assert main(["analyze", "--model", "lenet5", "--weights", str(bad)]) == 2
    assert "corrupt" in capsys.readouterr().err


def test_train_on_digits_refuses_overwrite(tmp_path, capsys):
    out = tmp_path / "w.safetensors"
    argv = ["train", "--model", "lenet_300_100", "--data", "digits", "--epochs", "1", "--out", str(out)]
    assert main(argv) == 0
    before = out.read_bytes()
    assert main(argv) == 2
    assert "--force" in capsys.readouterr().err and out.read_bytes() == before


def test_python_dash_m_entry_point():
    r = subprocess.run([sys.executable, "-m", "netcompress", "analyze", "--model", "resnet20",
                        "--input-shape", "1,3,32,32", "--json"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["totals"]["params"] > 270_000
