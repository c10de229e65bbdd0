"""The model zoo, defined here (not taken from torchvision): the networks of the compression papers,
sized for 28x28 / 32x32 inputs with any number of input channels and classes."""
from __future__ import annotations

from typing import Sequence

from torch import nn

from ..core.errors import ModelError
from ..core.registry import Registry
from .builder import ModelRegistry

MODELS: Registry = ModelRegistry("model", ModelError)  # registered builders carry the model_builder mark


class MLP(nn.Module):
    """Flatten -> [Linear -> ReLU (-> Dropout)]* -> Linear."""

    def __init__(self, in_features: int = 784, hidden: Sequence[int] = (300, 100), num_classes: int = 10,
                 dropout: float = 0.0, input_dropout: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        if input_dropout:
            layers.append(nn.Dropout(input_dropout))
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(inplace=True)]
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


@MODELS.register()
def lenet_300_100(in_channels: int = 1, num_classes: int = 10, input_size: int = 28) -> MLP:
    """LeNet-300-100 (784-300-100-10 on 28x28): 266,610 params, 266,200 MACs."""
    return MLP(in_channels * input_size * input_size, (300, 100), num_classes)


@MODELS.register()
def mlp_1200_1200(in_channels: int = 1, num_classes: int = 10, input_size: int = 28,
                  dropout: float = 0.5, input_dropout: float = 0.2) -> MLP:
    """Hinton et al. 2015 distillation teacher: two hidden layers of 1200 with dropout."""
    return MLP(in_channels * input_size * input_size, (1200, 1200), num_classes, dropout, input_dropout)


@MODELS.register()
def mlp_800_800(in_channels: int = 1, num_classes: int = 10, input_size: int = 28, dropout: float = 0.0) -> MLP:
    """Hinton et al. 2015 distillation student: two hidden layers of 800."""
    return MLP(in_channels * input_size * input_size, (800, 800), num_classes, dropout)


@MODELS.register()
def mlp(in_channels: int = 1, num_classes: int = 10, input_size: int = 28,
        hidden: Sequence[int] = (30, 30), dropout: float = 0.0) -> MLP:
    """A plain MLP of any hidden widths (e.g. the tiny 30-30 distillation student)."""
    return MLP(in_channels * input_size * input_size, tuple(hidden), num_classes, dropout)


class LeNet5(nn.Module):
    """LeNet-5, Caffe variant of the pruning papers: conv 20 5x5 -> pool -> conv 50 5x5 -> pool -> fc 500 -> fc.

    On 1x28x28: 431,080 params, 2,293,000 MACs."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, input_size: int = 28):
        super().__init__()
        side = ((input_size - 4) // 2 - 4) // 2
        if side < 1:
            raise ModelError(f"LeNet-5 needs inputs of at least 16x16, got {input_size}; resize the data")
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 20, 5), nn.MaxPool2d(2),
            nn.Conv2d(20, 50, 5), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(50 * side * side, 500), nn.ReLU(inplace=True), nn.Linear(500, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x))


@MODELS.register()
def lenet5(in_channels: int = 1, num_classes: int = 10, input_size: int = 28) -> LeNet5:
    return LeNet5(in_channels, num_classes, input_size)


class BasicBlock(nn.Module):
    """CIFAR ResNet basic block; the shortcut is a 1x1 conv + BN where the shape changes (option B)."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) of He et al. for small images: 3 stages of n blocks at widths w, 2w, 4w."""

    def __init__(self, depth: int = 20, in_channels: int = 3, num_classes: int = 10, width: int = 16):
        super().__init__()
        if (depth - 2) % 6 != 0 or depth < 8:
            raise ModelError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, 110), got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        planes, layers = width, []
        for i, w in enumerate((width, 2 * width, 4 * width)):
            blocks = []
            for j in range(n):
                blocks.append(BasicBlock(planes, w, 2 if (i > 0 and j == 0) else 1))
                planes = w
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * width, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.pool(x).flatten(1))


def _resnet(depth):
    def build(in_channels: int = 3, num_classes: int = 10, input_size: int = 32, width: int = 16) -> CifarResNet:
        return CifarResNet(depth, in_channels, num_classes, width)

    build.__name__ = f"resnet{depth}"
    build.__doc__ = f"CIFAR-style ResNet-{depth} (any input channels/size; global pooling)."
    return MODELS.register()(build)


resnet20, resnet32, resnet44, resnet56 = (_resnet(d) for d in (20, 32, 44, 56))


class VGGSmall(nn.Module):
    """A small VGG with BN: [c, c, M, 2c, 2c, M, 4c, 4c, M] -> flatten -> fc 256 -> fc."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10, input_size: int = 32, width: int = 32):
        super().__init__()
        layers, c_in = [], in_channels
        for c in (width, width, "M", 2 * width, 2 * width, "M", 4 * width, 4 * width, "M"):
            if c == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
                c_in = c
        self.features = nn.Sequential(*layers)
        side = input_size // 8
        if side < 1:
            raise ModelError(f"VGG-small needs inputs of at least 8x8, got {input_size}")
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(c_in * side * side, 256), nn.ReLU(inplace=True),
                                        nn.Linear(256, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x))


@MODELS.register()
def vgg_small(in_channels: int = 3, num_classes: int = 10, input_size: int = 32, width: int = 32) -> VGGSmall:
    return VGGSmall(in_channels, num_classes, input_size, width)


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a zoo model by name; unknown names and options give a ModelError with the choices.

    >>> create_model("lenet_300_100").net[1].out_features
    300
    """
    factory = MODELS.get(name)
    try:
        return factory(**kwargs)
    except TypeError as exc:
        import inspect

        allowed = list(inspect.signature(factory).parameters)
        raise ModelError(f"model {name!r} does not take these options ({exc}); allowed: {allowed}") from None
