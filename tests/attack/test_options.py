"""Bad option values: huge and overflowing shapes (refused against memory before anything is allocated),
negative counts, opsets out of range, malformed lists. One line each, never a traceback."""
from __future__ import annotations

import pytest

from tests.attack.harness import refused

SHAPES = {
    "overflowing-int64": ("lenet5", "1,1,99999999999999999999,2", "at most"),
    "62-terabyte-weights": ("lenet5", "1,1,100000,100000", "of memory"),
    "huge-activations": ("resnet20", "1,3,60000,60000", "of memory"),
    "huge-batch": ("lenet5", "1000000,1,28,28", "of memory"),
    "zero": ("lenet5", "0,1,28,28", "positive"),
    "negative": ("lenet5", "-1,1,28,28", "positive"),
    "one-dim": ("lenet5", "1", "2 to 6"),
    "seven-dims": ("lenet5", "1,1,1,1,1,1,1", "2 to 6"),
    "letters": ("lenet5", "1,a,28,28", "integers"),
    "float": ("lenet5", "1e3,1,28,28", "integers"),
    "empty": ("lenet5", "", "integers"),
    "too-small-for-model": ("lenet5", "1,1,8,8", "16x16"),
}


@pytest.mark.parametrize("name", list(SHAPES))
def test_input_shapes(sandbox, name):
    model, shape, words = SHAPES[name]
    refused(sandbox.run(["analyze", "--model", model, f"--input-shape={shape}"]), words)


@pytest.mark.parametrize("command", ["export", "bench"])
def test_huge_shape_on_other_commands(sandbox, command):
    argv = [command, "--model", "lenet5"] if command == "export" else [command, "lenet5"]
    if command == "export":
        argv += ["--out", "m.onnx"]
    refused(sandbox.run(argv + ["--input-shape", "1,1,100000,100000"]), "of memory")
    assert not (sandbox.root / "m.onnx").exists()


OPTIONS = {
    "num-classes-negative": (["analyze", "--model", "lenet5", "--num-classes", "-3"], "--num-classes"),
    "num-classes-zero": (["analyze", "--model", "lenet5", "--num-classes", "0"], "--num-classes"),
    "num-classes-billion": (["analyze", "--model", "lenet5", "--num-classes", "1000000000"], "--num-classes"),
    "num-classes-word": (["analyze", "--model", "lenet5", "--num-classes", "ten"], "--num-classes"),
    "opset-3": (["export", "--model", "lenet5", "--out", "m.onnx", "--opset", "3"], "18..23"),
    "opset-17": (["export", "--model", "lenet5", "--out", "m.onnx", "--opset", "17"], "18..23"),
    "opset-24": (["export", "--model", "lenet5", "--out", "m.onnx", "--opset", "24"], "18..23"),
    "opset-word": (["export", "--model", "lenet5", "--out", "m.onnx", "--opset", "latest"], "--opset"),
    "levels-letters": (["sensitivity", "--model", "mlp", "--weights", "w", "--out", "s", "--levels", "a,b"],
                       "--levels"),
    "levels-above-one": (["sensitivity", "--model", "mlp", "--weights", "w", "--out", "s", "--levels", "1.5"],
                         "--levels"),
    "levels-negative": (["sensitivity", "--model", "mlp", "--weights", "w", "--out", "s", "--levels=-0.1"],
                        "--levels"),
    "levels-nan": (["sensitivity", "--model", "mlp", "--weights", "w", "--out", "s", "--levels", "nan"], "--levels"),
    "levels-empty": (["sensitivity", "--model", "mlp", "--weights", "w", "--out", "s", "--levels", ","], "--levels"),
    "bench-batch-zero": (["bench", "lenet5", "--batch", "0"], "--batch"),
    "bench-batch-huge": (["bench", "lenet5", "--batch", "100000000"], "--batch"),
    "bench-repeats-zero": (["bench", "lenet5", "--repeats", "0"], "--repeats"),
    "bench-threads-zero": (["bench", "lenet5", "--threads", "0"], "--threads"),
    "train-epochs-negative": (["train", "--model", "mlp", "--out", "w.st", "--epochs", "-1"], "--epochs"),
    "train-lr-zero": (["train", "--model", "mlp", "--out", "w.st", "--lr", "0"], "--lr"),
    "train-lr-nan": (["train", "--model", "mlp", "--out", "w.st", "--lr", "nan"], "--lr"),
    "train-batch-zero": (["train", "--model", "mlp", "--out", "w.st", "--batch-size", "0"], "--batch-size"),
    "train-optimizer": (["train", "--model", "mlp", "--out", "w.st", "--optimizer", "rmsprop"], "--optimizer"),
    "train-weight-decay": (["train", "--model", "mlp", "--out", "w.st", "--weight-decay", "2"], "--weight-decay"),
    "train-seed-negative": (["train", "--model", "mlp", "--out", "w.st", "--seed=-1"], "--seed"),
    "train-resume-without-dir": (["train", "--model", "mlp", "--out", "w.st", "--resume", "--data", "digits"],
                                 "--checkpoint-dir"),
    "digits-with-a-folder": (["train", "--model", "mlp", "--out", "w.st", "--data", "digits", "--data-dir", "."],
                             "reads no folder"),
    "missing-required": (["analyze"], "--model"),
    "unknown-option": (["analyze", "--model", "lenet5", "--frobnicate"], "--frobnicate"),
    "unknown-command": (["frobnicate"], "frobnicate"),
    "unknown-model": (["analyze", "--model", "lenet6"], "Did you mean 'lenet5'"),
}


@pytest.mark.parametrize("name", list(OPTIONS))
def test_option_values(sandbox, name):
    argv, words = OPTIONS[name]
    refused(sandbox.run(argv), words)
    assert not (sandbox.root / "m.onnx").exists() and not (sandbox.root / "w.st").exists()
