"""A transformer encoder text classifier, written from scratch (Vaswani et al., 2017; pre-LN as in GPT-2).

    input_ids:      (B, T)  token ids
    attention_mask: (B, T)  1 = token, 0 = padding
    ->  logits:     (B, num_classes)

Tokens are embedded (scaled by sqrt(d_model)), positions added (sinusoidal or learned), then `layers` pre-LayerNorm
blocks, a final LayerNorm and a mean over the real tokens feed a linear head. Padding never reaches a real token:
padded keys are masked out of every attention and out of the pooling, so appending pads leaves the logits unchanged.

`MultiHeadSelfAttention` lays out its parameters like `nn.MultiheadAttention`, so `load_state_dict(mha.state_dict())`
(or `MultiHeadSelfAttention.from_torch(mha)`) copies a torch module's weights 1:1. The model knows nothing of
devices, tokenizers or loggers.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from dlforge.registry import TEXT_MODELS

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def scaled_dot_product_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
                                 dropout_p: float = 0.0, training: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q k^T / sqrt(d)) v for q, k, v of shape (B, h, T, d); returns (out (B, h, T, d), weights (B, h, T, T)).

    `mask` is boolean, broadcastable to (B, h, T, T), True = may attend (torch's SDPA convention); a key padding mask
    is (B, 1, 1, T). A query row with no key to attend to gets all-zero weights (and output) instead of NaN.
    The weights returned are those applied to v, i.e. after dropout, as `nn.MultiheadAttention` returns them.
    """
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))  # (B, h, T, T)
    if mask is not None:
        # a finite fill, not -inf: a fully masked row then softmaxes to uniform (no NaN) and is zeroed below
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    weights = scores.softmax(dim=-1)  # (B, h, T, T)
    if mask is not None:
        weights = weights.masked_fill(~mask.any(dim=-1, keepdim=True), 0.0)  # rows with nothing to attend to
    if dropout_p > 0.0 and training:
        weights = F.dropout(weights, p=dropout_p)
    return weights @ v, weights  # (B, h, T, d), (B, h, T, T)


class MultiHeadSelfAttention(nn.Module):
    """Self-attention with `heads` heads over d_model = C channels; `dropout` drops attention weights.

    Parameters as in `nn.MultiheadAttention`: `in_proj_weight` (3C, C) stacks the query, key and value projections,
    `in_proj_bias` (3C,), and `out_proj` is a Linear(C, C).
    """

    def __init__(self, d_model: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if d_model % heads:
            raise ValueError(f"d_model={d_model} is not divisible by heads={heads}")
        self.d_model, self.heads, self.dropout = d_model, heads, dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * d_model, d_model))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * d_model))
        self.out_proj = nn.Linear(d_model, d_model)
        nn.init.xavier_uniform_(self.in_proj_weight)  # torch's initialisation
        nn.init.zeros_(self.out_proj.bias)

    @classmethod
    def from_torch(cls, mha: nn.MultiheadAttention) -> MultiHeadSelfAttention:
        """A copy of a torch `nn.MultiheadAttention` (same embedding size for q, k, v; with biases)."""
        if not mha._qkv_same_embed_dim or mha.in_proj_bias is None or mha.bias_k is not None:
            raise ValueError("only an nn.MultiheadAttention with kdim = vdim = embed_dim and bias=True can be copied")
        attn = cls(mha.embed_dim, mha.num_heads, mha.dropout).to(mha.in_proj_weight)  # dtype and device first
        attn.load_state_dict(mha.state_dict())
        return attn

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None, need_weights: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, T, C); key_padding_mask (B, T) bool, True = padding (nn.MultiheadAttention's convention).
        Returns (out (B, T, C), per-head weights (B, h, T, T) if need_weights else None)."""
        B, T, C = x.shape
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).split(C, dim=2)  # 3 x (B, T, C)
        q, k, v = (t.view(B, T, self.heads, C // self.heads).transpose(1, 2) for t in (q, k, v))  # (B, h, T, d)
        mask = None if key_padding_mask is None else ~key_padding_mask[:, None, None, :]  # (B, 1, 1, T)
        y, weights = scaled_dot_product_attention(q, k, v, mask, self.dropout, self.training)  # (B, h, T, d)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C): heads side by side
        return self.out_proj(y), (weights if need_weights else None)


class Block(nn.Module):
    """A pre-LayerNorm encoder block: x + attn(ln1(x)), then x + mlp(ln2(x)), the MLP d_model -> ff -> d_model."""

    def __init__(self, d_model: int, heads: int, ff: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = MultiHeadSelfAttention(d_model, heads, dropout)
        self.drop = nn.Dropout(dropout)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, ff), nn.GELU(), nn.Linear(ff, d_model), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None, need_weights: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        a, weights = self.attn(self.ln1(x), key_padding_mask, need_weights)  # (B, T, C), (B, h, T, T) | None
        x = x + self.drop(a)
        x = x + self.mlp(self.ln2(x))  # (B, T, C)
        return x, weights


class PositionalEncoding(nn.Module):
    """The sinusoidal encoding of Vaswani et al.: PE[p, 2i] = sin(p / 10000^(2i/C)), PE[p, 2i+1] = cos(same).

    Called like an nn.Embedding on positions: (T,) long -> (T, C). Not a parameter and not saved in state dicts.
    """

    def __init__(self, d_model: int, max_length: int) -> None:
        super().__init__()
        position = torch.arange(max_length, dtype=torch.float32)[:, None]  # (L, 1)
        frequency = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
        pe = torch.zeros(max_length, d_model)  # (L, C)
        pe[:, 0::2] = torch.sin(position * frequency)
        pe[:, 1::2] = torch.cos(position * frequency[: d_model // 2])  # an odd C has one cosine fewer
        self.register_buffer("pe", pe, persistent=False)

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        return self.pe[positions]  # (T, C)


class TransformerClassifier(nn.Module):
    """A transformer encoder over token ids, mean-pooled over the real tokens, then a linear head.

    `positional` is "sinusoidal" (fixed, `PositionalEncoding`) or "learned" (an nn.Embedding over positions);
    either way sequences are at most `max_length` long. `ff` defaults to 4 * d_model. If `attention_mask` is not
    given, the tokens equal to `pad_id` are taken as padding.
    """

    class_specific = ("head.",)  # parameters tied to the label set

    def __init__(self, vocab_size: int, num_classes: int, max_length: int = 512, pad_id: int = 0, d_model: int = 128,
                 heads: int = 4, layers: int = 2, ff: int | None = None, dropout: float = 0.1,
                 positional: str = "sinusoidal") -> None:
        super().__init__()
        if positional not in ("sinusoidal", "learned"):
            raise ValueError(f"positional must be 'sinusoidal' or 'learned', not {positional!r}")
        self.max_length, self.pad_id, self.d_model = max_length, pad_id, d_model
        self.tok = nn.Embedding(vocab_size, d_model)
        self.pos = PositionalEncoding(d_model, max_length) if positional == "sinusoidal" else nn.Embedding(
            max_length, d_model)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(d_model, heads, ff or 4 * d_model, dropout) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, num_classes)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        """GPT-2 style: normal(0, 0.02) for Linear, Embedding and attention input projection weights; zero biases."""
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, MultiHeadSelfAttention):
            nn.init.normal_(module.in_proj_weight, mean=0.0, std=0.02)
            nn.init.zeros_(module.in_proj_bias)

    def _encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, need_weights: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """(hidden states (B, T, C) after the final LayerNorm, real-token mask (B, T) bool, per-layer weights)."""
        length = input_ids.size(1)  # T
        if length > self.max_length:
            raise ValueError(f"sequence length {length} exceeds max_length={self.max_length}")
        keep = input_ids != self.pad_id if attention_mask is None else attention_mask.bool()  # (B, T)
        positions = torch.arange(length, device=input_ids.device)  # (T,)
        x = self.tok(input_ids) * math.sqrt(self.d_model) + self.pos(positions)  # (B, T, C)
        x = self.drop(x)
        attentions = []
        for block in self.blocks:
            x, weights = block(x, ~keep, need_weights)  # (B, T, C), (B, h, T, T) | None
            if weights is not None:
                attentions.append(weights)
        return self.ln_f(x), keep, attentions

    def features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The pooled representation fed to the head: the mean over real tokens, (B, d_model)."""
        h, keep, _ = self._encode(input_ids, attention_mask)  # (B, T, C), (B, T)
        m = keep.unsqueeze(-1).to(h.dtype)  # (B, T, 1)
        return (h * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)  # (B, C)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.features(input_ids, attention_mask))  # (B, num_classes)

    @torch.no_grad()
    def attentions(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Per-layer attention weights, each (B, h, T, T), computed in eval mode (the mode is restored after)."""
        was_training = self.training
        self.eval()
        try:
            return self._encode(input_ids, attention_mask, need_weights=True)[2]
        finally:
            self.train(was_training)


@TEXT_MODELS.register("transformer")
def transformer(num_classes: int, tokenizer: PreTrainedTokenizerBase, config: dict[str, Any] | None = None,
                weights: bool = False, max_length: int = 512, d_model: int = 128, heads: int = 4, layers: int = 2,
                ff: int | None = None, dropout: float = 0.1, positional: str = "sinusoidal") -> TransformerClassifier:
    """`transformer`: the encoder above over `tokenizer`'s vocabulary, always from fresh weights (`config` and
    `weights` are for pretrained families; start from a finished run with `model.pretrained`)."""
    return TransformerClassifier(len(tokenizer), num_classes, max_length, tokenizer.pad_token_id, d_model, heads,
                                 layers, ff, dropout, positional)
