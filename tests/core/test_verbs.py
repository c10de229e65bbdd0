"""Every verb: one signature, one report; unsupported layers are skipped with a reason and a warning, and naming one
explicitly is an error that says it is unsupported; data of any accepted form feeds only inputs to the model."""
import logging

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

import netcompress as nc
from netcompress.core import ModelError, Report
from netcompress.lowrank import SVD
from netcompress.prune import Unstructured
from netcompress.quantize import PTQ, Binary, Clustered, Float16, Pow2, Ternary


class RawLinear(nn.Module):
    """A layer no family knows: a raw nn.Parameter used through F.linear."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.w = nn.Parameter(torch.randn(n_out, n_in) * 0.1)
        self.b = nn.Parameter(torch.zeros(n_out))

    def forward(self, x):
        return F.linear(x, self.w, self.b)


def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), RawLinear(32, 24), nn.ReLU(), nn.Linear(24, 10))


X, Y = torch.randn(64, 1, 8, 8), torch.randint(0, 10, (64,))
VERBS = [
    ("prune_", Unstructured(sparsity=0.5)),
    ("quantize_", PTQ()),
    ("quantize_", Clustered(bits=3)),
    ("quantize_", Binary()),
    ("quantize_", Ternary()),
    ("quantize_", Pow2()),
    ("decompose_", SVD(keep=0.5)),
]


@pytest.mark.parametrize("verb,config", VERBS, ids=[f"{v}-{type(c).__name__}" for v, c in VERBS])
def test_unsupported_layer_is_skipped_with_a_reason_and_a_warning(verb, config, caplog):
    m = model()
    with caplog.at_level(logging.WARNING, logger="netcompress"):
        report = getattr(nc, verb)(m, config, data=(X, Y))
    assert isinstance(report, Report) and report.model is m
    skipped = {s.name: s for s in report.skipped}
    assert "3" in skipped and skipped["3"].layer_type == "RawLinear"
    assert "unsupported layer type RawLinear" in skipped["3"].reason
    assert any("skips 3" in r.getMessage() and "RawLinear" in r.getMessage() for r in caplog.records)
    assert {c.name for c in report.changed} == {"1", "5"}
    assert "3" in str(report) and "skipped" in str(report)
    m(X)  # still runs


@pytest.mark.parametrize("verb,config", VERBS, ids=[f"{v}-{type(c).__name__}" for v, c in VERBS])
def test_naming_an_unsupported_layer_is_an_error_and_changes_nothing(verb, config):
    m = model()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    with pytest.raises(ModelError, match=r"layer '3' is a RawLinear, which \w+ does not support"):
        getattr(nc, verb)(m, config.replace(include=("3",)), data=(X, Y))
    after = m.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_excluded_layers_are_reported_without_a_warning(caplog):
    m = model()
    with caplog.at_level(logging.WARNING, logger="netcompress"):
        report = nc.prune_(m, Unstructured(sparsity=0.5, exclude=("5",)), data=(X, Y))
    reasons = {s.name: s.reason for s in report.skipped}
    assert reasons["5"] == "excluded by '5'"
    assert not any("skips 5" in r.getMessage() for r in caplog.records)


def test_type_patterns_select_by_layer_type():
    m = model()
    report = nc.quantize_(m, Clustered(bits=2, include=("type:Linear",), exclude=("5",)))
    assert [c.name for c in report.changed] == ["1"]


class Pairs(Dataset):
    def __len__(self):
        return len(X)

    def __getitem__(self, i):
        return X[i], Y[i]


class Dicts(Dataset):
    def __len__(self):
        return len(X)

    def __getitem__(self, i):
        return {"x": X[i], "labels": Y[i]}


@pytest.mark.parametrize("data", [(X, Y), X, TensorDataset(X, Y), Pairs(), DataLoader(Pairs(), batch_size=16),
                                  [X[:32], X[32:]], [(X[:32], Y[:32]), (X[32:], Y[32:])]],
                         ids=["tuple", "tensor", "TensorDataset", "Dataset", "DataLoader", "list", "list-of-pairs"])
def test_ptq_calibrates_on_inputs_only(data):
    """Labels never reach the model: every accepted form of data gives the ranges of the inputs alone."""
    ref = model()
    nc.quantize_(ref, PTQ(calib_batches=4, batch_size=16), data=X)
    m = model()
    nc.quantize_(m, PTQ(calib_batches=4, batch_size=16), data=data)
    assert float(m[1].input_quant.scale) == pytest.approx(float(ref[1].input_quant.scale))
    assert float(m[5].input_quant.scale) == pytest.approx(float(ref[5].input_quant.scale))


def test_dict_batches_feed_keyword_inputs():
    seen = []

    class KW(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(64, 10)

        def forward(self, x):
            seen.append(x.shape)
            return self.lin(x.flatten(1))

    m = KW()
    nc.quantize_(m, PTQ(calib_batches=2, batch_size=8), data=Dicts())
    assert seen and all(s[1:] == (1, 8, 8) for s in seen)


def test_integer_token_ids_stay_integers():
    from netcompress.core.data import iter_inputs

    ids = torch.randint(0, 100, (10, 7))
    assert all(b.dtype == torch.int64 for b in iter_inputs(ids, batch_size=4))
    mask = torch.ones(10, 7, dtype=torch.long)
    batches = list(iter_inputs({"input_ids": ids, "attention_mask": mask, "labels": torch.zeros(10)}, batch_size=4))
    assert [sorted(b) for b in batches] == [["attention_mask", "input_ids"]] * 3


def test_float16_skips_what_it_cannot_cast_layer_by_layer():
    m = model()
    report = nc.quantize_(m, Float16(exclude=("5",)))
    assert m[1].weight.dtype == torch.bfloat16 and m[5].weight.dtype == torch.float32
    assert {c.name for c in report.changed} == {"1"}
