"""`resnet18` / `resnet34` (seed 002's family) in plain torch, with the CAM head.

No ImageNet weights exist on this machine (no torchvision downloads), so these are trained from
scratch on FETAL_PLANES_DB. Standard layout: 7x7/2 stem + 3x3/2 max-pool, four stages of
BasicBlocks (64, 128, 256, 512 channels), GAP + linear (engines.models.sepcnn.CamHead).
"""
from __future__ import annotations

import torch
from torch import nn

from . import register_model
from .sepcnn import CamHead


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    def __init__(self, blocks: tuple[int, int, int, int], num_classes: int = 9, in_chans: int = 1,
                 dropout: float = 0.2):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_chans, 64, 7, stride=2, padding=3, bias=False),
                                  nn.BatchNorm2d(64), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        stages, cin = [], 64
        for i, (n, cout) in enumerate(zip(blocks, (64, 128, 256, 512))):
            layer = [BasicBlock(cin, cout, stride=1 if i == 0 else 2)]
            layer += [BasicBlock(cout, cout) for _ in range(n - 1)]
            stages.append(nn.Sequential(*layer))
            cin = cout
        self.stages = nn.Sequential(*stages)
        self.head = CamHead(cin, num_classes, dropout)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        for m in self.modules():
            # Zero-init the last BN of each residual branch: blocks start as identities (trains faster).
            if isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(self.stages(self.stem(x)))


def _no_pretrained(name: str, pretrained: bool) -> None:
    if pretrained:
        raise ValueError(f"{name}: no ImageNet weights available here; train from scratch (pretrained=False)")


@register_model("resnet18")
def resnet18(num_classes: int = 9, in_chans: int = 1, pretrained: bool = False, **kwargs) -> ResNet:
    _no_pretrained("resnet18", pretrained)
    return ResNet((2, 2, 2, 2), num_classes, in_chans, **kwargs)


@register_model("resnet34")
def resnet34(num_classes: int = 9, in_chans: int = 1, pretrained: bool = False, **kwargs) -> ResNet:
    _no_pretrained("resnet34", pretrained)
    return ResNet((3, 4, 6, 3), num_classes, in_chans, **kwargs)
