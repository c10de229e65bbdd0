"""Small architectures that exercise every coupling the channel graph must follow, and helpers to prune them."""
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def conv_bn(cin, cout, k=3, stride=1, groups=1):
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class DenseBlockNet(nn.Module):
    """DenseNet-style: each layer sees the concatenation of all earlier feature maps."""

    def __init__(self, growth=6, layers=3):
        super().__init__()
        self.stem = conv_bn(1, 8)
        width, self.layers = 8, nn.ModuleList()
        for _ in range(layers):
            self.layers.append(nn.Sequential(nn.BatchNorm2d(width), nn.ReLU(), nn.Conv2d(width, growth, 3, 1, 1)))
            width += growth
        self.transition = nn.Sequential(nn.BatchNorm2d(width), nn.ReLU(), nn.Conv2d(width, 10, 1), nn.AvgPool2d(2))
        self.head = nn.Linear(10 * 4 * 4, 5)

    def forward(self, x):
        feats = [self.stem(x)]
        for layer in self.layers:
            feats.append(layer(torch.cat(feats, 1)))
        return self.head(self.transition(torch.cat(feats, 1)).flatten(1))


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, expand=4, stride=1):
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        self.block = nn.Sequential(conv_bn(cin, hidden, 1), conv_bn(hidden, hidden, 3, stride, groups=hidden),
                                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        return x + self.block(x) if self.use_res else self.block(x)


class MobileNetV2ish(nn.Module):
    """MobileNetV2-style: depthwise convs inside inverted residuals (add of narrow tensors)."""

    def __init__(self):
        super().__init__()
        self.stem = conv_bn(1, 8, stride=2)
        self.blocks = nn.Sequential(InvertedResidual(8, 8), InvertedResidual(8, 12, stride=2), InvertedResidual(12, 12))
        self.head = nn.Sequential(conv_bn(12, 32, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 5))

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)))


class UNet(nn.Module):
    """U-Net-style encoder-decoder: concatenation skips, a transposed-conv and an upsample decoder."""

    def __init__(self):
        super().__init__()
        self.enc1, self.enc2 = conv_bn(1, 8), conv_bn(8, 16)
        self.mid = conv_bn(16, 16)
        self.up = nn.ConvTranspose2d(16, 8, 2, stride=2)
        self.dec1 = conv_bn(8 + 16, 8)
        self.up2 = nn.Upsample(scale_factor=2)
        self.dec0 = conv_bn(8 + 8, 8)
        self.out = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        e1 = self.enc1(x)                                   # (B, 8, H, W)
        e2 = self.enc2(F.max_pool2d(e1, 2))                 # (B, 16, H/2, W/2)
        m = self.mid(F.max_pool2d(e2, 2))                   # (B, 16, H/4, W/4)
        d1 = self.dec1(torch.cat([self.up(m), e2], 1))      # (B, 8, H/2, W/2)
        return self.out(self.dec0(torch.cat([self.up2(d1), e1], dim=1)))


class Functional(nn.Module):
    """Functional ops only between the layers: torch.cat, view, flatten, F.relu, torch.add, x.mean."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 6, 3, padding=1)
        self.b = nn.Conv2d(1, 6, 5, padding=2)
        self.c = nn.Conv2d(12, 8, 3, stride=2, padding=1)
        self.d = nn.Conv2d(8, 8, 3, padding=1)
        self.fc1 = nn.Linear(8 * 7 * 7, 20)
        self.fc2 = nn.Linear(20, 4)

    def forward(self, x):
        y = torch.cat([F.relu(self.a(x)), torch.sigmoid(self.b(x))], dim=1)
        y = F.max_pool2d(F.relu(self.c(y)), 1)
        y = torch.add(y, F.relu(self.d(y))) * 0.5
        y = F.adaptive_avg_pool2d(y, 7)
        h = F.relu(self.fc1(y.view(y.size(0), -1)))
        return self.fc2(h) + h.mean(dim=1, keepdim=True)


class Unsupported(nn.Module):
    """Splits channels with torch.chunk: the graph must refuse, not guess."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 8, 3, padding=1)
        self.b = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        left, right = torch.chunk(self.a(x), 2, dim=1)
        return self.b(left) + right


def warm_bn(model, x):
    """Give BatchNorm non-trivial running statistics, so that BN bias matters in eval."""
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(x * 2 + 0.5)
    return model.eval()


def random_units(graph, frac=0.4, seed=0):
    """The channel ids of a random ``frac`` of every group's units (each group keeps at least one)."""
    rng = np.random.default_rng(seed)
    picked = []
    for grp in graph.groups:
        n = max(1, int(len(grp) * frac))
        if len(grp) - n >= 1:
            picked += [grp.units[i] for i in rng.choice(len(grp), n, replace=False)]
    return np.concatenate(picked)
