import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from netcompress.core.errors import ConfigError, ModelError
from netcompress.dynamic import (EarlyExitNet, ExitLoss, MaxProb, exit_macs, exit_policy_table,
                                 freeze_backbone_)
from netcompress.measure import analyze
from netcompress.models import resnet20
from netcompress.train import TrainConfig, Trainer

X = torch.zeros(2, 1, 28, 28)


def _net(criterion=MaxProb(0.9), seed=0):
    torch.manual_seed(seed)
    backbone = resnet20(in_channels=1, input_size=28, width=8).eval()
    return EarlyExitNet(backbone, ["layer1", "layer2"], X, criterion=criterion).eval()


@torch.no_grad()
def test_everybody_confident_leaves_at_the_first_head():
    net = _net(MaxProb(1e-6))
    x = torch.randn(4, 1, 28, 28)
    torch.testing.assert_close(net(x), net.all_exits(x)[0], atol=1e-6, rtol=1e-6)
    assert net.exit_counts.tolist() == [4, 0, 0]


@torch.no_grad()
def test_dynamic_forward_matches_the_policy_on_precomputed_exits():
    net = _net()
    x = torch.randn(64, 1, 28, 28)
    exits = net.all_exits(x)
    # a threshold at the first head's median confidence: about half leave there, the rest go on
    net.criterion = MaxProb(float(exits[0].softmax(1).amax(1).median()))
    conf = [net.criterion.confident(z) for z in exits[:-1]]
    first = torch.full((64,), 2)
    for k in (1, 0):
        first[conf[k]] = k
    expected = torch.stack([exits[int(first[i])][i] for i in range(64)])
    torch.testing.assert_close(net(x), expected, atol=1e-5, rtol=1e-5)
    shares = torch.bincount(first, minlength=3)
    assert net.exit_counts.tolist() == shares.tolist() and (shares > 0).sum() >= 2
    table = exit_policy_table(exits, expected.argmax(1), net.criterion, [1, 2, 3])
    assert table["accuracy"] == 1.0
    assert table["exit_shares"] == pytest.approx((shares / 64).tolist())


def test_exit_macs_grow_and_the_last_is_the_whole_path():
    net = _net()
    macs = exit_macs(net, X)
    assert macs[0] < macs[1] < macs[2]
    heads = sum(analyze(h, torch.zeros(1, *s)).totals["macs"] for h, s in zip(net.heads, [(8, 28, 28), (16, 14, 14)]))
    assert macs[2] == analyze(net.backbone, X[:1]).totals["macs"] + heads


def test_heads_only_training_keeps_the_backbone_and_learns():
    torch.manual_seed(0)
    x = torch.randn(96, 1, 28, 28)
    y = (x.mean(dim=(1, 2, 3)) > 0).long()  # a signal the heads can pick up
    net = _net()
    before = {k: v.clone() for k, v in net.backbone.state_dict().items()}
    freeze_backbone_(net)
    net.train()
    loss0 = sum(float(nn.functional.cross_entropy(z, y).detach()) for z in net.all_exits(x)[:2])
    cfg = TrainConfig(epochs=3, batch_size=32, lr=0.05, progress=False)
    Trainer(net, TensorDataset(x, y), cfg, callbacks=[ExitLoss(net, [1.0, 1.0])]).fit()
    after = net.backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BN statistics
    net.train()
    loss1 = sum(float(nn.functional.cross_entropy(z, y).detach()) for z in net.all_exits(x)[:2])
    assert loss1 < loss0


class Skip(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.fc = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1), nn.Linear(4, 10)

    def forward(self, x):
        h = self.a(x)
        return self.fc((self.b(h) + h).mean(dim=(2, 3)))  # a skip around b


def test_bad_exit_points_are_named():
    with pytest.raises(ModelError, match="'b' is not a cut"):
        EarlyExitNet(Skip(), ["b"], X)
    with pytest.raises(ConfigError, match="not modules of the backbone; top-level modules: conv1, bn1"):
        EarlyExitNet(resnet20(in_channels=1, input_size=28), ["block9"], X)
    with pytest.raises(ConfigError, match="execution order"):
        EarlyExitNet(resnet20(in_channels=1, input_size=28), ["layer2", "layer1"], X)
    with pytest.raises(ConfigError, match="threshold"):
        MaxProb(1.5)
    with pytest.raises(ConfigError, match="one weight >= 0 per exit"):
        ExitLoss(_net(), [1.0])


@torch.no_grad()
def test_conv_heads():
    torch.manual_seed(0)
    net = EarlyExitNet(resnet20(in_channels=1, input_size=28, width=8), ["layer1"], X, head_width=12).eval()
    assert isinstance(net.heads[0][0], nn.Conv2d) and net.heads[0][0].out_channels == 12
    assert net.all_exits(torch.randn(3, 1, 28, 28))[0].shape == (3, 10)
    with pytest.raises(ConfigError, match="head_width"):
        EarlyExitNet(resnet20(in_channels=1, input_size=28, width=8), ["layer1"], X, head_width=-1)
