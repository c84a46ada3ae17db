"""`sepcnn`: a small separable CNN trained from scratch (seed 000's family), and the shared CAM head.

Blocks of SeparableConv (depthwise 3x3 + pointwise 1x1) + BN + ReLU, max-pooling between stages,
dropout, then a global-average-pool + linear head. `CamHead` is used by every family here: for
GAP + linear the class activation map is exact (the linear layer applied at every position of
the last feature map) and its spatial mean equals the logits.
"""
from __future__ import annotations

import torch
from torch import nn

from . import register_model


class CamHead(nn.Module):
    """GAP + dropout + linear; also returns the class activation maps (N, classes, h, w).

    In eval mode logits == cam.mean((2, 3)) exactly (up to float rounding): the linear map
    commutes with averaging. Dropout acts on the pooled vector only while training.
    """

    def __init__(self, in_features: int, num_classes: int, dropout: float = 0.2):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cam = torch.einsum("nchw,kc->nkhw", features, self.fc.weight) + self.fc.bias[None, :, None, None]
        if self.training:
            logits = self.fc(self.dropout(features.mean(dim=(2, 3))))
        else:
            logits = cam.mean(dim=(2, 3))
        return logits, cam


class SeparableConvBNReLU(nn.Sequential):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__(
            nn.Conv2d(cin, cin, 3, stride=stride, padding=1, groups=cin, bias=False),
            nn.Conv2d(cin, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )


class SepCNN(nn.Module):
    """Stem 3x3/2 conv, then per stage two separable convs and a 2x2 max-pool (last stage: no pool)."""

    def __init__(self, num_classes: int = 9, in_chans: int = 1, widths: tuple[int, ...] = (32, 64, 128, 192, 256),
                 dropout: float = 0.3):
        super().__init__()
        stem = widths[0] // 2
        layers: list[nn.Module] = [nn.Conv2d(in_chans, stem, 3, stride=2, padding=1, bias=False),
                                   nn.BatchNorm2d(stem), nn.ReLU(inplace=True)]
        cin = stem
        for i, w in enumerate(widths):
            layers += [SeparableConvBNReLU(cin, w), SeparableConvBNReLU(w, w)]
            if i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            cin = w
        self.features = nn.Sequential(*layers)
        self.head = CamHead(cin, num_classes, dropout)
        self.num_features = cin

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(self.features(x))


@register_model("sepcnn")
def sepcnn(num_classes: int = 9, in_chans: int = 1, pretrained: bool = False, **kwargs) -> SepCNN:
    if pretrained:
        raise ValueError("sepcnn has no pretrained weights: it is trained from scratch")
    return SepCNN(num_classes=num_classes, in_chans=in_chans, **kwargs)
