"""Model families, created by name (timm-style registry). Importing this module imports torch.

    from engines.models import create_model, list_models
    model = create_model("efficientnet_lite0", num_classes=6, in_chans=1, pretrained=True)

Every model's forward returns (logits (N, C), cam (N, C, h, w)); for a GAP + linear head the
class activation map is exact and costs one small matmul (seed 002's Grad-CAM, for free).
"""
from __future__ import annotations

from typing import Callable

_REGISTRY: dict[str, Callable] = {}


def register_model(name: str):
    def deco(fn: Callable) -> Callable:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = fn
        return fn
    return deco


def _import_families() -> None:
    # Each family module registers itself on import; missing modules are skipped while a
    # family is being written, never silently at release (tests list the expected names).
    import importlib
    for mod in ("sononet", "sepcnn", "efficientnet_lite", "resnet"):
        try:
            importlib.import_module(f"{__name__}.{mod}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{mod}":
                raise


# Families that start from the ImageNet EfficientNet-Lite0 checkpoint (the `_e3` variant from half of
# each expanded layer); the rest have no weights on disk and train from scratch.
IMAGENET_FAMILIES = ("efficientnet_lite0", "efficientnet_lite0_e3")


def has_imagenet_weights(name: str) -> bool:
    return name in IMAGENET_FAMILIES


def list_models() -> list[str]:
    _import_families()
    return sorted(_REGISTRY)


def create_model(name: str, **kwargs):
    _import_families()
    if name not in _REGISTRY:
        raise ValueError(f"unknown model family {name!r} (known: {', '.join(sorted(_REGISTRY))})")
    return _REGISTRY[name](**kwargs)
