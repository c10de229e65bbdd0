"""Dynamic computation: early exits that let confident samples leave a trained network early.

>>> import torch
>>> from netcompress.models import resnet20
>>> net = EarlyExitNet(resnet20(in_channels=1, input_size=28), ["layer1", "layer2"], torch.zeros(2, 1, 28, 28))
>>> [type(h[-1]).__name__ for h in net.heads]
['Linear', 'Linear']
>>> with torch.no_grad():
...     net.eval()(torch.randn(3, 1, 28, 28)).shape
torch.Size([3, 10])
"""
from .exits import (EXITS, EarlyExitNet, EarlyExits, Entropy, ExitCriterion, ExitLoss, ExitTraining, MaxProb, add_exits,
                    exit_macs, exit_policy_table, freeze_backbone_)

__all__ = ["EXITS", "EarlyExitNet", "EarlyExits", "Entropy", "ExitCriterion", "ExitLoss", "ExitTraining", "MaxProb",
           "add_exits", "exit_macs", "exit_policy_table", "freeze_backbone_"]
