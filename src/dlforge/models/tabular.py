"""An MLP for tables, written here: an embedding per categorical column, concatenated with the numeric columns.

    numeric:     (B, F)  standardised numbers (missing -> 0) and 0/1 missing indicators
    categorical: (B, C)  per column, 0 = unknown or missing, i + 1 = the i-th training category
    ->  logits:  (B, num_classes)

Each categorical column gets its own `nn.Embedding` of min(50, (rows + 1) // 2) dimensions (fast.ai's rule;
rows = categories + 1 for the unknown). The unknown's row starts at zero: a category never seen in training
adds nothing until training sees missing values in that column. Then `hidden` blocks of
Linear -> ReLU -> BatchNorm (or LayerNorm) -> Dropout, and a linear head, registered last: drift monitoring
and explanations read the head's input as the item's embedding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from dlforge.registry import Registry

TABULAR_MODELS: Registry = Registry("tabular model")



class BatchNorm(nn.BatchNorm1d):
    """BatchNorm1d that normalises a training batch of one row (the last of an epoch, say) with the running
    statistics instead of failing: one row has no spread of its own."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, width)
        if self.training and x.shape[0] == 1:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        return super().forward(x)


NORMS = {"batch": BatchNorm, "layer": nn.LayerNorm, "none": lambda width: nn.Identity()}


def embedding_dim(rows: int) -> int:
    return min(50, (rows + 1) // 2)


@TABULAR_MODELS.register("mlp")
class TabularMLP(nn.Module):
    def __init__(self, numeric_features: int, cardinalities: Sequence[int], num_classes: int,
                 hidden: Sequence[int] = (128, 64), dropout: float = 0.2,
                 norm: Literal["batch", "layer", "none"] = "layer") -> None:
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"norm {norm!r}: choose batch, layer or none")
        # one table per categorical column: (rows, dim), rows = categories + 1 (index 0: unknown or missing)
        self.embeddings = nn.ModuleList(nn.Embedding(card + 1, embedding_dim(card + 1)) for card in cardinalities)
        for table in self.embeddings:
            nn.init.zeros_(table.weight[0])  # an unseen category starts as "no information"
        width = numeric_features + sum(e.embedding_dim for e in self.embeddings)
        blocks: list[nn.Module] = []
        for size in hidden:
            blocks += [nn.Linear(width, size), nn.ReLU(), NORMS[norm](size), nn.Dropout(dropout)]
            width = size
        self.backbone = nn.Sequential(*blocks)  # (B, F + sum of dims) -> (B, width)
        self.head = nn.Linear(width, num_classes)  # (B, width) -> (B, K)
        self.num_features = width

    def forward(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        embedded = [table(categorical[:, i]) for i, table in enumerate(self.embeddings)]  # C x (B, dim_i)
        x = torch.cat([numeric, *embedded], dim=1)  # (B, F + sum of dims)
        return self.head(self.backbone(x))  # (B, K)
