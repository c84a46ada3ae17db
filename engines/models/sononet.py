"""SonoNet16 (Baumgartner et al., IEEE TMI 2017) in plain torch, loadable from the authors' npz.

Architecture (from the authors' model description, ../shared/data/sononet/README): five VGG-style
stages of 3x3 conv (pad 1, no bias) + BN + ReLU with 16,16 | 32,32 | 64,64,64 | 128,128,128 |
128,128,128 channels, 2x2 max-pool after stages 1-4, then 1x1 conv -> 64 (+BN+ReLU) and
1x1 conv -> 14 (+BN, no ReLU): 14 class maps, global average pool. Input 1 x 224 x 288.
The class maps are the model's free localisation output (our `cam`).

Weights: Apache-2.0, https://github.com/baumgach/SonoNet-weights (SonoNet16.npz).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..planes import SONONET16_LABELS
from . import register_model

STAGES = ((16, 16), (32, 32), (64, 64, 64), (128, 128, 128), (128, 128, 128))
# Lasagne's BatchNormLayer default; the npz stores inv_std = 1 / sqrt(var + eps).
LASAGNE_BN_EPS = 1e-4


class ConvBNReLU(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int, relu: bool = True):
        layers = [nn.Conv2d(cin, cout, k, padding=k // 2, bias=False),
                  nn.BatchNorm2d(cout, eps=LASAGNE_BN_EPS)]
        if relu:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class SonoNet16(nn.Module):
    def __init__(self, num_classes: int = 14, in_chans: int = 1):
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_chans
        for i, stage in enumerate(STAGES):
            for cout in stage:
                layers.append(ConvBNReLU(cin, cout, 3))
                cin = cout
            if i < len(STAGES) - 1:
                layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.adaptation = nn.Sequential(ConvBNReLU(cin, 64, 1), ConvBNReLU(64, num_classes, 1, relu=False))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cam = self.adaptation(self.features(x))   # (N, 14, h, w) class maps
        return cam.mean(dim=(2, 3)), cam

    def conv_bn_layers(self) -> list[ConvBNReLU]:
        return [m for m in self.modules() if isinstance(m, ConvBNReLU)]


def load_sononet16_npz(model: SonoNet16, npz_path: str | Path) -> SonoNet16:
    """Copy the authors' Lasagne parameters (per conv: W, beta, gamma, mean, inv_std) into `model`."""
    arrays = np.load(npz_path)
    layers = model.conv_bn_layers()
    if len(arrays.files) != 5 * len(layers):
        raise ValueError(f"{npz_path}: {len(arrays.files)} arrays, expected {5 * len(layers)}")
    for i, layer in enumerate(layers):
        w, beta, gamma, mean, inv_std = (arrays[f"arr_{5 * i + k}"] for k in range(5))
        conv, bn = layer[0], layer[1]
        if tuple(conv.weight.shape) != w.shape:
            raise ValueError(f"layer {i}: weight {w.shape} vs model {tuple(conv.weight.shape)}")
        with torch.no_grad():
            conv.weight.copy_(torch.from_numpy(w))
            bn.weight.copy_(torch.from_numpy(gamma))
            bn.bias.copy_(torch.from_numpy(beta))
            bn.running_mean.copy_(torch.from_numpy(mean))
            bn.running_var.copy_(torch.from_numpy(1.0 / inv_std.astype(np.float64) ** 2 - LASAGNE_BN_EPS))
    return model.eval()


DEFAULT_NPZ = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "sononet" / "SonoNet16.npz"


@register_model("sononet16")
def sononet16(num_classes: int = 14, in_chans: int = 1, pretrained: bool = False,
              npz_path: str | Path | None = None) -> SonoNet16:
    model = SonoNet16(num_classes=num_classes, in_chans=in_chans)
    if pretrained:
        if num_classes != len(SONONET16_LABELS) or in_chans != 1:
            raise ValueError("pretrained SonoNet16 has 14 classes and 1 input channel")
        load_sononet16_npz(model, npz_path or DEFAULT_NPZ)
    return model
