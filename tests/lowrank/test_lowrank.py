import copy

import pytest
import torch
from torch import nn

from netcompress.core.errors import ConfigError, ModelError
from netcompress.lowrank import SVD, Tucker2, decompose_
from netcompress.lowrank.factor import _rank_from_energy, _svd_module, _svd_plan, _tucker_module
from netcompress.measure import analyze
from netcompress.prune import Unstructured, prune_


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same_state(model, state):
    now = model.state_dict()
    return now.keys() == state.keys() and all(torch.equal(now[k], state[k]) for k in state)


# layer, input shape: full-rank factors must reproduce the layer exactly
EXACT_CASES = [
    (lambda: nn.Linear(12, 7), (5, 12)),
    (lambda: nn.Conv2d(3, 6, 3, padding=1), (2, 3, 9, 9)),
    (lambda: nn.Conv2d(4, 5, (3, 2), stride=2, padding=(1, 0), dilation=(1, 2), bias=False), (2, 4, 11, 10)),
    (lambda: nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"), (2, 3, 8, 8)),
]


@pytest.mark.parametrize("make, shape", EXACT_CASES)
def test_full_rank_svd_reproduces_the_layer(make, shape):
    torch.manual_seed(0)
    layer, x = make(), torch.randn(shape)
    w = layer.weight.detach().reshape(layer.weight.shape[0], -1).double()
    r, first, second = _svd_plan(w, SVD(rank=min(w.shape)), None)
    assert r == min(w.shape)
    torch.testing.assert_close(_svd_module(layer, first, second)(x), layer(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("make, shape", EXACT_CASES[1:])
def test_full_rank_tucker2_reproduces_the_conv(make, shape):
    torch.manual_seed(0)
    layer, x = make(), torch.randn(shape)
    w = layer.weight.detach().double()
    out, inp = w.shape[:2]
    u_out = torch.linalg.svd(w.reshape(out, -1), full_matrices=False)[0]
    u_in = torch.linalg.svd(w.transpose(0, 1).reshape(inp, -1), full_matrices=False)[0]
    core = torch.einsum("oikl,or,is->rskl", w, u_out, u_in)
    torch.testing.assert_close(_tucker_module(layer, u_in, core, u_out)(x), layer(x), atol=1e-5, rtol=1e-5)


def test_truncated_svd_error_is_the_eckart_young_bound():
    torch.manual_seed(0)
    w = torch.randn(30, 20, dtype=torch.float64)
    s = torch.linalg.svdvals(w)
    r, first, second = _svd_plan(w, SVD(rank=6), None)
    err = ((w - second @ first) ** 2).sum()
    torch.testing.assert_close(err, (s[6:] ** 2).sum())


def test_energy_picks_the_smallest_sufficient_rank():
    s = torch.tensor([4.0, 2.0, 1.0, 1.0], dtype=torch.float64)  # energies 16, 4, 1, 1 of 22
    assert _rank_from_energy(s, 16 / 22) == 1
    assert _rank_from_energy(s, 0.75) == 2
    assert _rank_from_energy(s, 1.0) == 4


def test_data_aware_svd_has_lower_output_error_on_its_data():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 16))
    # correlated inputs: most energy in a few directions the plain SVD does not know about
    x = torch.randn(512, 4) @ torch.randn(4, 16) + 0.05 * torch.randn(512, 16)
    ref = model(x).detach()
    plain, aware = copy.deepcopy(model), copy.deepcopy(model)
    decompose_(plain, SVD(rank=3))
    decompose_(aware, SVD(rank=3, data_aware=True), data=x)
    err = lambda m: float(((m(x) - ref) ** 2).mean().detach())  # noqa: E731
    assert err(aware) < 0.5 * err(plain)


def test_keep_halves_weights_and_macs_of_a_real_model():
    from netcompress.models import lenet5

    model = lenet5()
    x = torch.zeros(1, 1, 28, 28)
    before = analyze(model, x)
    records = decompose_(model, SVD(keep=0.5, include=("*",))).details["factored"]
    after = analyze(model, x)
    assert records and all(r.params_after <= 0.5 * r.params_before for r in records)
    assert after.totals["macs"] < 0.6 * before.totals["macs"]
    assert model(x).shape == (1, 10)


def test_tucker2_keep_and_min_saving():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 1))
    records = decompose_(model, Tucker2(keep=0.3)).details["factored"]
    assert [r.name for r in records] == ["0"]  # the 1x1 conv is left to SVD
    assert records[0].params_after <= 0.3 * records[0].params_before * 1.05
    with pytest.raises(ConfigError, match="no selected layer gets smaller"):
        decompose_(nn.Sequential(nn.Conv2d(4, 4, 3)), Tucker2(rank=4))


def test_decomposed_model_exports_to_onnx(tmp_path):
    from netcompress.export import to_onnx
    from netcompress.models import lenet_300_100

    model = lenet_300_100().eval()
    decompose_(model, SVD(keep=0.4))
    to_onnx(model, torch.randn(2, 1, 28, 28), tmp_path / "m.onnx", verify=True)


@pytest.mark.parametrize("kwargs, match", [
    (dict(), "exactly one of"),
    (dict(rank=2, keep=0.5), "exactly one of"),
    (dict(keep=1.0), "keep must be"),
    (dict(energy=0.0), "energy must be"),
    (dict(rank=0), "rank must be"),
    (dict(keep=0.5, include=3), "include must be a list of strings"),
    (dict(keep=0.5, min_saving=1.5), "min_saving"),
])
def test_bad_configs_name_the_field(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        SVD(**kwargs)


def test_bad_input_leaves_the_model_untouched():
    from netcompress.models import lenet_300_100

    model = lenet_300_100()
    state = _state(model)
    with pytest.raises(ConfigError, match="matches no layer. Layers: net.1, net.3, net.5"):
        decompose_(model, SVD(keep=0.5, include=("fc1",)))
    with pytest.raises(ConfigError, match="needs data"):
        decompose_(model, SVD(keep=0.5, data_aware=True))
    with pytest.raises(ConfigError, match="Unstructured is not a config decompose_ takes"):
        decompose_(model, Unstructured(sparsity=0.5))
    assert _same_state(model, state) and isinstance(model.net[1], nn.Linear)
    prune_(model, Unstructured(sparsity=0.5))
    state = _state(model)
    with pytest.raises(ModelError, match="carries a parametrization"):
        decompose_(model, SVD(keep=0.5))
    assert _same_state(model, state)
