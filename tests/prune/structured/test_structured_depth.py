"""Depth pruning: whole residual blocks removed through the traced graph."""
import copy

import pytest
import torch

import netcompress as nc
from netcompress.core.errors import ConfigError
from netcompress.prune.structured import (BlockPruning, ChannelPruning, LatencyAware, Local, MACs, find_blocks,
                                          prune_blocks, zero_branches_)

X = torch.randn(4, 1, 16, 16)


def resnet():
    m = nc.models.create_model("resnet20", in_channels=1, input_size=16)
    m.train()
    with torch.no_grad():
        m(X)  # non-trivial BN statistics
    return m.eval()


def test_finds_identity_blocks_only():
    blocks = find_blocks(resnet(), X)
    # the first block of stages 2 and 3 changes shape (stride 2, 1x1 shortcut): not removable
    assert sorted(blocks) == ["layer1.0", "layer1.1", "layer1.2", "layer2.1", "layer2.2", "layer3.1", "layer3.2"]
    assert {b[1] for b in blocks.values()} == {"ReLU"}


def test_removed_equals_zeroed_branch():
    model = resnet()
    dense = copy.deepcopy(model)
    r = prune_blocks(model, BlockPruning(blocks=2), X)
    chosen = sorted(r.plan.replace)
    assert len(chosen) == 2 and all(isinstance(model.get_submodule(n), torch.nn.ReLU) for n in chosen)
    twin = zero_branches_(copy.deepcopy(dense), find_blocks(dense, X), chosen)
    assert (twin(X) - dense(X)).abs().max() > 1e-3
    assert (twin(X) - model(X)).abs().max() <= 1e-5
    assert r.after["macs"] < r.before["macs"]


def test_picks_the_smallest_contribution():
    model = resnet()
    with torch.no_grad():
        model.layer2[2].bn2.weight.mul_(1e-4)
        model.layer2[2].bn2.bias.zero_()
    r = prune_blocks(model, BlockPruning(epsilon=1e-2), X)
    assert list(r.plan.replace) == ["layer2.2"]


def test_then_channel_pruning_still_works():
    model = resnet()
    nc.prune_(model, BlockPruning(blocks=3), example_inputs=X)
    nc.prune_(model, ChannelPruning(ratio=0.5), example_inputs=X)
    assert model(X).shape == (4, 10)


def test_errors_leave_model_untouched():
    model = resnet()
    ref = copy.deepcopy(model.state_dict())
    with pytest.raises(ConfigError, match=r"only 7 blocks can be removed.*best reachable is blocks=7"):
        prune_blocks(model, BlockPruning(blocks=9), X)
    with pytest.raises(ConfigError, match=r"'layer9' matches no module"):
        prune_blocks(model, BlockPruning(blocks=1, exclude=("layer9",)), X)
    with pytest.raises(ConfigError, match=r"exactly one of blocks"):
        BlockPruning()
    assert list(model.state_dict()) == list(ref)
    with pytest.raises(ConfigError, match=r"no removable residual block"):
        prune_blocks(nc.models.create_model("lenet5"), BlockPruning(blocks=1), torch.randn(2, 1, 28, 28))


def test_macs_budget_removes_blocks_until_it_fits_and_equals_zeroed_twin():
    model = resnet()
    dense = copy.deepcopy(model)
    r = prune_blocks(model, BlockPruning(budget=MACs(0.75)), X)
    assert r.after["macs"] <= 0.75 * r.before["macs"]
    # the shortest prefix: putting the last removed block back would break the budget
    assert len(r.plan.replace) >= 2
    twin = zero_branches_(copy.deepcopy(dense), find_blocks(dense, X), list(r.plan.replace))
    assert (twin(X) - dense(X)).abs().max() > 1e-3
    assert (twin(X) - model(X)).abs().max() <= 1e-5


@pytest.mark.parametrize("runtime", ["eager", "both"])
def test_latency_aware_ranks_by_contribution_per_ms(runtime):
    model = resnet()
    r = prune_blocks(model, BlockPruning(blocks=2, scope=LatencyAware(batch_size=4, repeats=3, runtime=runtime)), X)
    ms, contrib = r.latency["block_ms"], r.latency["contributions"]
    key = {n: contrib[n] / ms[n] for n in ms}
    assert sorted(r.plan.replace) == sorted(sorted(key, key=key.__getitem__)[:2])
    # blocks of one shape are timed once
    assert ms["layer1.0"] == ms["layer1.1"] == ms["layer1.2"]


def test_unreachable_block_budget_names_best():
    model = resnet()
    with pytest.raises(ConfigError, match=r"cannot be met by removing blocks.*best reachable is MACs\("):
        prune_blocks(model, BlockPruning(budget=MACs(0.05)), X)
    assert isinstance(model.layer1[0], torch.nn.Module) and hasattr(model.layer1[0], "conv1")
    with pytest.raises(ConfigError, match=r"exactly one of blocks"):
        BlockPruning(blocks=2, budget=MACs(0.5))
    with pytest.raises(ConfigError, match=r"BlockPruning.scope"):
        BlockPruning(blocks=2, scope=Local())
