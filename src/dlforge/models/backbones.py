"""Thin adapters: timm and torchvision classification models as `Classifier`s.

The library's own classifier is removed and a new head sized to the labels takes its place.
"""

from __future__ import annotations

from functools import cache

import torch
from torch import nn

from dlforge.models.classifier import Classifier
from dlforge.registry import MODELS

IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


# timm and torchvision take seconds to import: only specs that name them pay for it.


@cache
def _torchvision_names() -> list[str]:
    import torchvision

    return torchvision.models.list_models(module=torchvision.models)


@cache
def _timm_names() -> list[str]:
    import timm

    return timm.list_models()


@MODELS.register_family("timm", names=_timm_names)
def timm_model(name: str, num_classes: int, in_channels: int = 3, dropout: float = 0.0,
               library_weights: bool = False, **kwargs) -> Classifier:
    """`timm:<name>`; `library_weights` downloads timm's pretrained weights (needs the hub)."""
    import timm

    backbone = timm.create_model(name, pretrained=library_weights, num_classes=0, in_chans=in_channels, **kwargs)
    cfg = backbone.pretrained_cfg
    normalization = (list(cfg["mean"]), list(cfg["std"])) if library_weights and "mean" in cfg else None
    return Classifier(backbone, backbone.num_features, num_classes, dropout, normalization)


class _GrayToRGB(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.expand(-1, 3, -1, -1)  # (B, 1, H, W) -> (B, 3, H, W), no copy


@MODELS.register_family("torchvision", names=_torchvision_names)
def torchvision_model(name: str, num_classes: int, in_channels: int = 3, dropout: float = 0.0,
                      library_weights: bool = False, **kwargs) -> Classifier:
    """`torchvision:<name>`; the last Linear layer is the library's classifier and is replaced."""
    import torchvision

    model = torchvision.models.get_model(name, weights="DEFAULT" if library_weights else None, **kwargs)
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"torchvision model {name!r} has no Linear classifier to replace")
    last_name, last = linears[-1]
    model.set_submodule(last_name, nn.Identity())
    backbone = model if in_channels == 3 else nn.Sequential(_GrayToRGB(), model)
    normalization = (IMAGENET_MEAN, IMAGENET_STD) if library_weights else None
    return Classifier(backbone, last.in_features, num_classes, dropout, normalization)
