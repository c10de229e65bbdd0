"""CLI: compress, export, bench, sensitivity; errors are one line naming the thing, never a traceback."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from netcompress.cli import main

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
TINY = {"model": {"name": "mlp", "kwargs": {"hidden": [16]}, "pretrain": {"epochs": 1, "lr": 0.1}},
        "data": {"name": "digits", "image_size": 8, "train_subset": 320},
        "stages": [{"type": "fine-tune", "epochs": 1}],
        "measure": {"latency_repeats": 3, "latency_warmup": 0}}


def test_compress_prints_before_after_and_report(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(TINY))
    assert main(["compress", str(recipe), "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "bytes on disk" in out and "accuracy cost" in out and str(tmp_path / "run" / "report.html") in out
    # the same directory again: refused, one line, exit code 2
    assert main(["compress", str(recipe), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "exists" in err and "--force" in err


def test_compress_bad_recipe_is_one_clear_error(tmp_path, capsys):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("model: {name: lenet5}\nstages:\n  - {type: fine-tune, epoch: 2}\n")
    assert main(["compress", str(recipe), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert f"{recipe}: stages[0].epoch: FineTune has no field 'epoch'. Did you mean 'epochs'?" in err
    assert "Traceback" not in err and not (tmp_path / "run").exists()


def test_export_bench_and_sensitivity(tmp_path, capsys):
    from netcompress.core.io import save_weights
    from netcompress.models import mlp

    weights = save_weights(mlp(input_size=8, hidden=(16,)), tmp_path / "w.safetensors")
    onnx = tmp_path / "m.onnx"
    args = ["export", "--model", "mlp", "--weights", str(weights), "--input-shape", "1,1,8,8", "--out", str(onnx)]
    with pytest.raises(SystemExit):  # mlp's hidden default differs from the weights: a clean CheckpointError
        raise SystemExit(main(args))
    assert "does not fit the model" in capsys.readouterr().err
    weights = save_weights(mlp(input_size=8), tmp_path / "w2.safetensors")
    args[4] = str(weights)
    assert main(args) == 0 and onnx.is_file()
    assert "max abs diff" in capsys.readouterr().out
    assert main(args) == 2 and "--force" in capsys.readouterr().err

    assert main(["bench", f"torch=mlp@{weights}", f"ort={onnx}", "--input-shape", "1,1,8,8", "--batch", "1,4",
                 "--repeats", "3"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("batch")]
    assert len(lines) == 4 and lines[0].rstrip().endswith("1.00x")



def test_sensitivity_writes_csv_and_png(tmp_path, capsys):
    from netcompress.core.io import save_weights
    from netcompress.models import lenet_300_100

    weights = save_weights(lenet_300_100(input_size=8), tmp_path / "w.safetensors")
    stem = tmp_path / "sens"
    assert main(["sensitivity", "--model", "lenet_300_100", "--weights", str(weights), "--data", "digits",
                 "--levels", "0.0,0.99", "--out", str(stem)]) == 0
    rows = (tmp_path / "sens.csv").read_text().splitlines()
    assert rows[0] == "layer,params,sparsity,metric" and len(rows) == 1 + 3 * 2
    assert [r.split(",")[2] for r in rows[1:3]] == ["0.0", "0.99"]  # level 0 is the unpruned row, not a second one
    assert main(["sensitivity", "--model", "lenet_300_100", "--weights", str(weights), "--data", "digits",
                 "--out", str(stem)]) == 2  # existing outputs are kept without --force
    assert (tmp_path / "sens.png").read_bytes()[:4] == b"\x89PNG"


def test_python_dash_m_works_the_same():
    out = subprocess.run([sys.executable, "-m", "netcompress", "--help"], capture_output=True, text=True,
                         env={"PYTHONPATH": str(ROOT / "src")}, check=True).stdout
    for cmd in ("compress", "analyze", "sensitivity", "bench", "export", "demo", "train"):
        assert cmd in out


def test_compress_weights_starts_from_a_trained_file(tmp_path, capsys):
    import json

    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(TINY))
    assert main(["compress", str(recipe), "--out", str(tmp_path / "a"), "--no-progress"]) == 0
    trained = tmp_path / "a" / "checkpoints" / "baseline.safetensors"
    first = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert main(["compress", str(recipe), "--out", str(tmp_path / "b"), "--no-progress", "--weights", str(trained)]) == 0
    second = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert second["baseline"]["accuracy"] == first["baseline"]["accuracy"]  # the same weights, not retrained
    events = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert not any(e["event"] == "epoch" and e.get("stage") == "baseline" for e in events)  # no pretraining
    assert str(trained.resolve()) in (tmp_path / "b" / "recipe.yaml").read_text()
    assert second["recipe"]["model"]["pretrain"] is None
    capsys.readouterr()
    assert main(["compress", str(recipe), "--out", str(tmp_path / "c"), "--weights", str(tmp_path / "nope.st")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nope.st" in err and not (tmp_path / "c").exists()
