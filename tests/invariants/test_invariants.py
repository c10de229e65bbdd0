"""The invariants every technique must keep, in one table (DESIGN.md 3.5). Each row: a name, a function
returning the measured error (it may assert what makes the measurement meaningful), and the tolerance.
(config -> YAML -> config is the identity: tests/core/test_config.py, one case per registered config.)"""
import copy
import os
import tempfile

import pytest
import torch
import torch.nn.functional as F
from graph_archs import DenseBlockNet, Functional, MobileNetV2ish, UNet, random_units, warm_bn
from torch import nn

from netcompress.dynamic import EarlyExitNet, Entropy
from netcompress.export import (check_onnx, effective_state_dict, load_compressed, ort_session, run_onnx,
                                save_compressed, to_onnx)
from netcompress.graph import ChannelGraph, LinearHandler, PrunePlan, register_handler
from netcompress.lowrank.factor import _svd_module, _svd_plan, _tucker_module
from netcompress.lowrank import SVD
from netcompress.measure import count_nonzero
from netcompress.models import create_model, resnet20
from netcompress.prune import Global, Unstructured, bake_, masked_targets, prune_, select, set_mask
from netcompress.prune.structured import BlockPruning, find_blocks, prune_blocks, zero_branches_
from netcompress.quantize import (PTQ, TTQ, TWN, Binary, Clustered, PerChannel, Pow2, QuantSpec, Ternary, dequantize,
                                  dequantize_, fold_bn_, qparams, quantize, quantize_, set_quant_enabled)


def diff(a, b) -> float:
    return float((a - b).detach().abs().max())


# ----- masks: parametrizations that keep the optimizer's parameters
def _lenet5():
    torch.manual_seed(0)
    return create_model("lenet5", in_channels=1, input_size=28)


def _out_and_grads(model, x, y):
    model.zero_grad()
    out = model(x)
    F.cross_entropy(out, y).backward()
    grads = {n.replace("parametrizations.weight.original", "weight"): p.grad.clone() for n, p in model.named_parameters()}
    return out.detach(), grads


def ones_mask_changes_nothing():
    x, y = torch.randn(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])
    a = _lenet5()
    b = copy.deepcopy(a)
    for t in select(b):
        set_mask(t.module, "weight", torch.ones_like(t.original()))
    (out_a, g_a), (out_b, g_b) = _out_and_grads(a, x, y), _out_and_grads(b, x, y)
    assert g_a.keys() == g_b.keys()
    return max([diff(out_a, out_b)] + [diff(g, g_b[n]) for n, g in g_a.items()])


def param_ids_stable_under_sgd():
    """Masking keeps every parameter object (the optimizer's), and masked weights stay exactly 0 while the
    kept ones train."""
    m = _lenet5()
    before = {id(p) for p in m.parameters()}
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    prune_(m, Unstructured(sparsity=0.7))
    assert {id(p) for p in m.parameters()} == before
    masks = {t.fqn: t.mask().clone() for t in masked_targets(m)}
    start = copy.deepcopy(m.state_dict())
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    for _ in range(3):
        opt.zero_grad()
        F.cross_entropy(m(x), y).backward()
        opt.step()
    assert any(not torch.equal(v, m.state_dict()[k]) for k, v in start.items() if "original" in k)
    return max(float(t.effective()[~masks[t.fqn]].abs().max()) for t in masked_targets(m))


def masked_weights_get_no_gradient():
    m = _lenet5()
    prune_(m, Unstructured(sparsity=0.5))
    F.cross_entropy(m(torch.randn(4, 1, 28, 28)), torch.tensor([1, 2, 3, 4])).backward()
    return max(float(t.original().grad[~t.mask()].abs().max()) for t in masked_targets(m))


def bake_changes_nothing():
    m = _lenet5()
    prune_(m, Unstructured(sparsity=0.8, scope=Global()))
    x = torch.randn(3, 1, 28, 28)
    before, nnz = m(x).detach(), count_nonzero(m)
    bake_(m)
    assert not list(masked_targets(m)) and all(type(p) is nn.Parameter for p in m.parameters())
    assert not any("parametrizations" in k for k in m.state_dict()) and count_nonzero(m) == nnz
    return diff(m(x), before)


def count_nonzero_sees_masks():
    m = create_model("lenet_300_100")
    dense = count_nonzero(m)
    prune_(m, Unstructured(sparsity=0.9, include=("net.1",)))
    return abs(dense - count_nonzero(m) - round(0.9 * 784 * 300))


# ----- structured pruning: the model with removed channels zeroed == the physically pruned model
def masked_equals_removed(factory, shape):
    def run():
        torch.manual_seed(0)
        x = torch.randn(*shape)
        model = warm_bn(factory(), x)
        before = model(x)
        graph = ChannelGraph(model, x)
        plan = graph.plan(random_units(graph))
        masked, pruned = plan.zero_(copy.deepcopy(model)), plan.apply(copy.deepcopy(model))
        with torch.no_grad():
            out_masked, out_pruned = masked(x), pruned(x)
        assert out_pruned.shape == before.shape
        assert diff(out_masked, before) > 1e-3, "zeroing changed nothing: the row would prove nothing"
        n_dense, n_pruned = (sum(p.numel() for p in m.parameters()) for m in (model, pruned))
        assert n_pruned < 0.8 * n_dense and graph.cost(None)["params"] <= n_dense
        # replay: the plan's JSON and the state_dict rebuild the pruned model from a fresh dense one
        with tempfile.TemporaryDirectory() as tmp:
            path = plan.save(os.path.join(tmp, "plan.json"))
            rebuilt = PrunePlan.load(path).apply(factory()).eval()
        rebuilt.load_state_dict(pruned.state_dict())
        with torch.no_grad():
            assert torch.equal(rebuilt(x), out_pruned)
        return diff(out_masked, out_pruned)
    return run


class RawLinear(nn.Module):
    """A user's layer (raw parameters through F.linear), pruned through the handler registered for it."""

    def __init__(self, n_in, n_out):
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.randn(n_out, n_in) / n_in ** 0.5), nn.Parameter(torch.randn(n_out))

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)


register_handler(RawLinear, LinearHandler())


def custom_layer_net():
    return nn.Sequential(nn.Flatten(), RawLinear(64, 32), nn.BatchNorm1d(32), nn.PReLU(32), RawLinear(32, 24),
                         nn.Tanh(), RawLinear(24, 5))


def removed_blocks_equal_zeroed_branches():
    x = torch.randn(4, 1, 16, 16)
    model = warm_bn(create_model("resnet20", in_channels=1, input_size=16), x)
    dense = copy.deepcopy(model)
    r = prune_blocks(model, BlockPruning(blocks=2), x)
    twin = zero_branches_(copy.deepcopy(dense), find_blocks(dense, x), sorted(r.plan.replace))
    assert diff(twin(x), dense(x)) > 1e-3 and r.after["macs"] < r.before["macs"]
    return diff(twin(x), model(x))


# ----- quantization
def _qnet():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 6 * 6, 5))
    with torch.no_grad():
        m[1].running_mean.normal_()
        m[1].running_var.uniform_(0.5, 2.0)
        m[0].weight[:, :, 0, :] = 0.0  # "pruned" weights
        m[4].weight[:, ::3] = 0.0
    return m.eval()


XQ = torch.randn(4, 1, 8, 8)


def half_step_error():
    x = torch.randn(1000) * 3
    spec = QuantSpec(5, False)
    s, z = qparams(x.min(), x.max(), spec)
    return float(((dequantize(quantize(x, s, z, spec), s, z) - x).abs() / s).max())  # in steps


def zero_stays_zero(config):
    def run():
        m = _qnet()
        zeros = [(mod, mod.weight == 0) for mod in (m[0], m[4])]
        quantize_(m, config, data=[XQ])
        return max(float(mod.weight.detach()[z].abs().max()) for mod, z in zeros)
    return run


def compressed_round_trip():
    m = _qnet()
    quantize_(m, Clustered(bits=3))
    with tempfile.TemporaryDirectory() as tmp:
        p = os.path.join(tmp, "m.ncz")
        save_compressed(m, p)
        back, ref = load_compressed(p), effective_state_dict(m)
    return max(float((back[k].double() - ref[k].double()).abs().max()) if back[k].numel() else 0.0 for k in ref)


def quant_off_is_identity():
    m = _qnet()
    y = m(XQ)
    quantize_(m, PTQ(fold_bn=False), data=[XQ])
    set_quant_enabled(m, False)
    return diff(m(XQ), y)


def bn_fold_equal():
    m = _qnet()
    y = m(XQ)
    fold_bn_(m)
    return diff(m(XQ), y)


def bake_quant_is_identity():
    m = _qnet()
    quantize_(m, PTQ(weight=QuantSpec(4, True, PerChannel(0)), activation=None))
    y = m(XQ)
    dequantize_(m)
    return diff(m(XQ), y)


# ----- low rank, early exits, deployment
def full_rank_svd(make, shape):
    def run():
        torch.manual_seed(0)
        layer, x = make(), torch.randn(shape)
        w = layer.weight.detach().reshape(layer.weight.shape[0], -1).double()
        r, first, second = _svd_plan(w, SVD(rank=min(w.shape)), None)
        assert r == min(w.shape)
        return diff(_svd_module(layer, first, second)(x), layer(x))
    return run


def full_rank_tucker2(make, shape):
    def run():
        torch.manual_seed(0)
        layer, x = make(), torch.randn(shape)
        w = layer.weight.detach().double()
        out, inp = w.shape[:2]
        u_out = torch.linalg.svd(w.reshape(out, -1), full_matrices=False)[0]
        u_in = torch.linalg.svd(w.transpose(0, 1).reshape(inp, -1), full_matrices=False)[0]
        core = torch.einsum("oikl,or,is->rskl", w, u_out, u_in)
        return diff(_tucker_module(layer, u_in, core, u_out)(x), layer(x))
    return run


@torch.no_grad()
def exit_never_taken_is_the_backbone():
    torch.manual_seed(0)
    backbone = resnet20(in_channels=1, input_size=28, width=8).eval()
    net = EarlyExitNet(backbone, ["layer1", "layer2"], torch.zeros(2, 1, 28, 28), criterion=Entropy(0.0)).eval()
    x = torch.randn(5, 1, 28, 28)
    out = net(x)
    assert net.exit_counts.tolist() == [0, 0, 5]
    return diff(out, net.backbone(x))


def onnxruntime_equals_torch(name):
    def run():
        m = create_model(name, in_channels=1, input_size=28).eval()
        with tempfile.TemporaryDirectory() as tmp:
            path = to_onnx(m, torch.randn(2, 1, 28, 28), os.path.join(tmp, "m.onnx"))
            x = torch.randn(7, 1, 28, 28)  # another batch size than exported: the batch dim is dynamic
            assert run_onnx(ort_session(path), x).shape == (7, 10)
            return check_onnx(m, path, x)
    return run


ARCHS = [
    ("resnet20 (add)", lambda: create_model("resnet20", in_channels=1, input_size=16), (3, 1, 16, 16)),
    ("densenet block (concat)", DenseBlockNet, (3, 1, 8, 8)),
    ("mobilenetv2 block (depthwise + inverted residual)", MobileNetV2ish, (3, 1, 16, 16)),
    ("unet (concat skips, transposed conv)", UNet, (3, 1, 16, 16)),
    ("functional ops (cat, view, F.relu, add)", Functional, (3, 1, 14, 14)),
    ("mlp", lambda: create_model("mlp", hidden=(40, 30)), (3, 1, 28, 28)),
    ("vgg_small (flatten -> linear)", lambda: create_model("vgg_small", in_channels=1, input_size=16, width=8),
     (3, 1, 16, 16)),
    ("user layer with a registered handler, BN1d, PReLU(C)", custom_layer_net, (6, 1, 8, 8)),
]
EXACT = [
    (lambda: nn.Linear(12, 7), (5, 12)),
    (lambda: nn.Conv2d(3, 6, 3, padding=1), (2, 3, 9, 9)),
    (lambda: nn.Conv2d(4, 5, (3, 2), stride=2, padding=(1, 0), dilation=(1, 2), bias=False), (2, 4, 11, 10)),
    (lambda: nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"), (2, 3, 8, 8)),
]

INVARIANTS = [
    ("mask of ones: outputs and gradients unchanged", ones_mask_changes_nothing, 1e-6),
    ("parameter ids stable after masking; masked stay 0 under SGD + momentum + wd", param_ids_stable_under_sgd, 0.0),
    ("masked weights get zero gradient", masked_weights_get_no_gradient, 0.0),
    ("bake_: plain Parameters, same outputs, same nonzeros", bake_changes_nothing, 1e-6),
    ("measure.count_nonzero counts masked weights", count_nonzero_sees_masks, 0),
    *[(f"masked == removed: {name}", masked_equals_removed(f, s), 1e-5) for name, f, s in ARCHS],
    ("masked == removed: residual blocks (zeroed branch == block replaced)", removed_blocks_equal_zeroed_branches, 1e-5),
    ("quantize -> dequantize error within half a step (in steps)", half_step_error, 0.5 + 1e-5),
    ("zero stays zero: PTQ int8", zero_stays_zero(PTQ()), 0.0),
    ("zero stays zero: clustering", zero_stays_zero(Clustered(bits=2)), 0.0),
    ("zero stays zero: binary", zero_stays_zero(Binary(scale=PerChannel(0))), 0.0),
    ("zero stays zero: TWN", zero_stays_zero(Ternary(TWN())), 0.0),
    ("zero stays zero: TTQ", zero_stays_zero(Ternary(TTQ())), 0.0),
    ("zero stays zero: pow2", zero_stays_zero(Pow2(bits=4)), 0.0),
    ("load_compressed(save_compressed(m)) == m bit for bit", compressed_round_trip, 0.0),
    ("fake-quant disabled == fp32 model", quant_off_is_identity, 0.0),
    ("BN folded == BN model", bn_fold_equal, 1e-5),
    ("baking fake-quant weights changes nothing", bake_quant_is_identity, 0.0),
    *[(f"full-rank SVD == the layer: {make()}", full_rank_svd(make, s), 1e-5) for make, s in EXACT],
    *[(f"full-rank Tucker-2 == the conv: {make()}", full_rank_tucker2(make, s), 1e-5) for make, s in EXACT[1:]],
    ("an exit threshold never met == the base model", exit_never_taken_is_the_backbone, 1e-6),
    ("onnxruntime == torch: lenet5", onnxruntime_equals_torch("lenet5"), 1e-4),
    ("onnxruntime == torch: resnet20", onnxruntime_equals_torch("resnet20"), 1e-4),
]


@pytest.mark.parametrize("name,measure,tol", INVARIANTS, ids=[r[0] for r in INVARIANTS])
def test_invariant(name, measure, tol):
    assert measure() <= tol
