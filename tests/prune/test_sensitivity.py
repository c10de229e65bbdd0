import copy

import pytest
import torch

from netcompress.core.errors import ConfigError, OutputExistsError
from netcompress.prune import masked_targets
from netcompress.prune.sensitivity import (apply_levels_, levels_for_target, plot, read_csv, sensitivity_analysis,
                                           write_csv)


def _acc(data):
    x, y = data.tensors

    def metric(model):
        with torch.no_grad():
            return float((model(x).argmax(1) == y).float().mean())
    return metric


def test_sensitivity_csv_png_and_levels(tmp_path, trained_mlp, digits8):
    model = copy.deepcopy(trained_mlp)
    before = copy.deepcopy(model.state_dict())
    rows = sensitivity_analysis(model, levels=(0.5, 0.9, 0.99), metric=_acc(digits8.test))
    assert model.state_dict().keys() == before.keys()  # the analysed model is untouched
    assert {r["layer"] for r in rows} == {"net.1", "net.3", "net.5"}
    assert len(rows) == 3 * 4
    by = {(r["layer"], r["sparsity"]): r["metric"] for r in rows}
    assert by[("net.1", 0.99)] < by[("net.1", 0.0)]  # pruning 99% of a layer costs accuracy
    csv_path = write_csv(rows, tmp_path / "sens.csv")
    assert read_csv(csv_path) == rows
    png = plot(rows, tmp_path / "sens.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(OutputExistsError):
        write_csv(rows, csv_path)

    levels = levels_for_target(rows, 0.8)
    total = sum({r["layer"]: r["params"] for r in rows}.values())
    reached = sum(levels[r["layer"]] * r["params"] for r in rows if r["sparsity"] == 0) / total
    assert reached == pytest.approx(0.8, abs=1e-9)
    apply_levels_(model, levels)
    for t in masked_targets(model):
        assert float((t.effective() == 0).float().mean()) == pytest.approx(levels[t.name], abs=2e-3)


def test_levels_prefer_the_insensitive_layer():
    rows = [{"layer": "robust", "params": 1000, "sparsity": s, "metric": m}
            for s, m in [(0, 0.9), (0.5, 0.9), (0.9, 0.89)]]
    rows += [{"layer": "fragile", "params": 1000, "sparsity": s, "metric": m}
             for s, m in [(0, 0.9), (0.5, 0.6), (0.9, 0.2)]]
    assert levels_for_target(rows, 0.45) == {"robust": 0.9, "fragile": 0.0}
    with pytest.raises(ConfigError, match="cannot be reached"):
        levels_for_target(rows, 0.95)


def test_sensitivity_needs_data_or_metric(trained_mlp):
    with pytest.raises(ConfigError, match="data= .* or metric="):
        sensitivity_analysis(trained_mlp)


def test_levels_hit_the_target_exactly():
    rows = [{"layer": n, "params": p, "sparsity": s, "metric": 1 - s * k}
            for n, p, k in [("a", 1000, 0.1), ("b", 300, 0.5)] for s in (0, 0.5, 0.9, 0.99)]
    levels = levels_for_target(rows, 0.8)
    assert (levels["a"] * 1000 + levels["b"] * 300) / 1300 == pytest.approx(0.8, abs=1e-9)
