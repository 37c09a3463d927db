"""The from-scratch transformer: attention against torch's SDPA and nn.MultiheadAttention (float64), padding
invariance of the classifier, an overfit run, and gradients reaching every parameter."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dlforge.models.transformer import (
    MultiHeadSelfAttention,
    TransformerClassifier,
    scaled_dot_product_attention,
    transformer,
)
from dlforge.registry import TEXT_MODELS

LENGTHS = [7, 4, 1]  # real tokens per sequence; T = 7, so the last two sequences are padded


def key_padding(lengths: list[int], T: int) -> torch.Tensor:
    """(B, T) bool, True = padding."""
    return torch.arange(T)[None, :] >= torch.tensor(lengths)[:, None]


@pytest.mark.parametrize("padded", [False, True])
def test_attention_matches_torch_sdpa(padded: bool) -> None:
    torch.manual_seed(0)
    B, h, T, d = 3, 2, 7, 8
    q, k, v = (torch.randn(B, h, T, d, dtype=torch.float64) for _ in range(3))
    mask = ~key_padding(LENGTHS if padded else [T] * B, T)[:, None, None, :]  # (B, 1, 1, T), True = attend
    out, weights = scaled_dot_product_attention(q, k, v, mask)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert (out - expected).abs().max() <= 1e-6
    assert weights.shape == (B, h, T, T) and torch.allclose(weights.sum(-1), torch.ones(B, h, T, dtype=torch.float64))
    # a fully masked row attends to nothing: zeros, not NaN
    out, weights = scaled_dot_product_attention(q, k, v, torch.zeros(B, 1, 1, T, dtype=torch.bool))
    assert not out.isnan().any() and (weights == 0).all()


@pytest.mark.parametrize("padded", [False, True])
def test_self_attention_matches_nn_multihead_attention(padded: bool) -> None:
    torch.manual_seed(0)
    B, T, C, h = 3, 7, 16, 4
    mha = nn.MultiheadAttention(C, h, batch_first=True).double().eval()
    ours = MultiHeadSelfAttention(C, h).double().eval()
    ours.load_state_dict(mha.state_dict())  # the same parameter names and shapes
    x = torch.randn(B, T, C, dtype=torch.float64)
    kpm = key_padding(LENGTHS, T) if padded else None
    expected, expected_weights = mha(x, x, x, key_padding_mask=kpm, need_weights=True, average_attn_weights=True)
    for attn in (ours, MultiHeadSelfAttention.from_torch(mha).eval()):
        out, weights = attn(x, key_padding_mask=kpm, need_weights=True)
        assert weights.shape == (B, h, T, T)
        assert (out - expected).abs().max() <= 1e-6
        assert (weights.mean(dim=1) - expected_weights).abs().max() <= 1e-6
    assert ours(x, key_padding_mask=kpm)[1] is None  # weights only when asked


@pytest.mark.parametrize("positional", ["sinusoidal", "learned"])
def test_appending_padding_leaves_logits_unchanged(positional: str) -> None:
    torch.manual_seed(0)
    model = TransformerClassifier(vocab_size=50, num_classes=3, max_length=32, d_model=32, heads=4, layers=2,
                                  positional=positional).eval()
    assert TEXT_MODELS.get("transformer") is transformer
    ids = torch.randint(1, 50, (3, 7))
    mask = ~key_padding(LENGTHS, 7)
    ids = ids.masked_fill(~mask, 0)  # pad id 0 after each sequence's real tokens
    logits = model(ids, mask.long())
    longer = torch.cat([ids, torch.zeros(3, 5, dtype=torch.long)], dim=1)  # (3, 12): five more pads
    longer_mask = torch.cat([mask, torch.zeros(3, 5, dtype=torch.bool)], dim=1)
    assert (model(longer, longer_mask.long()) - logits).abs().max() <= 1e-5
    assert (model(longer) - logits).abs().max() <= 1e-5  # no mask given: pad_id tokens are the padding
    attentions = model.attentions(longer, longer_mask)
    assert len(attentions) == 2 and attentions[0].shape == (3, 4, 12, 12)
    assert model.features(ids, mask).shape == (3, 32)


def test_tiny_classifier_overfits_random_labels() -> None:
    torch.manual_seed(0)
    model = TransformerClassifier(vocab_size=20, num_classes=2, max_length=16, d_model=32, heads=2, layers=1,
                                  dropout=0.0)
    ids = torch.randint(1, 20, (8, 6))
    labels = torch.randint(0, 2, (8,))
    mask = torch.ones_like(ids)
    mask[4:, 4:] = 0  # half the sequences are shorter
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    accuracy = 0.0
    for _ in range(200):
        logits = model(ids, mask)
        accuracy = (logits.argmax(dim=1) == labels).float().mean().item()
        if accuracy == 1.0:
            break
        optimizer.zero_grad()
        F.cross_entropy(logits, labels).backward()
        optimizer.step()
    assert accuracy == 1.0


def test_gradients_reach_every_parameter() -> None:
    torch.manual_seed(0)
    model = TransformerClassifier(vocab_size=30, num_classes=4, max_length=16, d_model=16, heads=2, layers=2,
                                  positional="learned")
    ids = torch.randint(1, 30, (4, 9))
    mask = ~key_padding([9, 5, 3, 9], 9)
    F.cross_entropy(model(ids, mask), torch.tensor([0, 1, 2, 3])).backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None]
    assert not missing, f"no gradient for {missing}"
