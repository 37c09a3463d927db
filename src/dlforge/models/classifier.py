"""The one interface every classification model shares: a backbone that embeds, a linear head.

Downstream code (freezing, transfer learning, embeddings for drift, Grad-CAM) uses
`model.backbone` and `model.head` and never branches on a model's name.
"""

from __future__ import annotations

import torch
from torch import nn


class Classifier(nn.Module):
    def __init__(self, backbone: nn.Module, num_features: int, num_classes: int, dropout: float = 0.0,
                 normalization: tuple[list[float], list[float]] | None = None) -> None:
        super().__init__()
        self.backbone = backbone  # (B, C, H, W) -> (B, num_features)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(num_features, num_classes)  # (B, num_features) -> (B, num_classes)
        self.num_features = num_features
        # The pixel mean/std the backbone's pretrained weights expect, if it has such weights.
        self.normalization = normalization

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.backbone(x)))
