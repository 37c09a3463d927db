"""Self-attention: a fine-tuned transformer's attention maps, and attention from scratch equal to PyTorch's.

One head of self-attention over a sequence of T token vectors x (T, C) computes

    Q = x W_q + b_q,  K = x W_k + b_k,  V = x W_v + b_v          (T, d) each, d = C / heads
    A = softmax(Q K^T / sqrt(d))                                 (T, T), each row sums to 1
    out = A V                                                    (T, d)

and the heads' outputs, side by side (T, C), go through one more Linear (W_o). Row i of A says how
much token i takes from every token j. BERT masks padding on the key side only: a padded key gets
-inf-like scores (weight exactly 0); a padded query still has a row, which nothing downstream reads.

The lab fine-tunes hf:default (all-MiniLM-L6-v2, a 6-layer, 12-head BERT) on Rotten Tomatoes, or
takes a finished run (`run=`), draws every layer's and head's A for one sentence, and recomputes
A from each layer's input hidden states and query/key/value weights four ways (dlforge's
`scaled_dot_product_attention`, torch's fused `F.scaled_dot_product_attention`, `nn.MultiheadAttention`
loaded with the same weights, and the HF model's own eager attention), all in float64.
"""

from __future__ import annotations

import copy
import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dlforge.errors import DlforgeError
from dlforge.models.transformer import MultiHeadSelfAttention, scaled_dot_product_attention
from dlforge.registry import LABS

log = logging.getLogger("dlforge")

DEFAULT_SENTENCE = "the plot is thin, but the acting is wonderful"
SHORT_SENTENCE = "a dull film"  # the second sentence of the padded batch: shorter, so it gets the padding
QUICK_SENTENCES = 160  # the --quick fine-tuning subset of Rotten Tomatoes (train/val/test 70/10/20)
QUICK_MAX_LENGTH = 32  # and its tokens per sentence (full: 64); --quick has to stay near a minute on 2 CPU cores
PATTERN_SHARE = 0.5  # a head "is" a [CLS]/[SEP]/previous/next/self head when that share of its attention goes there
BROAD_ENTROPY = 0.8  # ... and "broad" when its entropy is over this fraction of the uniform row's, log T

# The comparisons, in float64: (key, what is compared).
COMPARISONS = {
    "ours_vs_hf_eager": "weights: dlforge scaled_dot_product_attention vs the HF model's output_attentions (eager)",
    "ours_vs_torch_mha": "weights: dlforge vs nn.MultiheadAttention (same weights, average_attn_weights=False)",
    "ours_vs_torch_sdpa": "output A·V: dlforge vs torch.nn.functional.scaled_dot_product_attention",
    "mhsa_vs_torch_mha": "output after W_o: dlforge MultiHeadSelfAttention.from_torch(mha) vs nn.MultiheadAttention",
    "torch_mha_vs_hf_dense": "output after W_o: nn.MultiheadAttention vs BERT's attention.output.dense",
    "layer_vs_hf_hidden": "whole layer rebuilt from the attention output vs HF hidden_states[l + 1]",
}


@LABS.register("attention")
def attention(out: Path, quick: bool = False, seed: int = 0, run: str | Path | None = None,
              sentence: str = DEFAULT_SENTENCE) -> tuple[dict[str, Any], str]:
    """Self-attention: a fine-tuned transformer's attention maps per layer and head, and attention written from scratch equal to PyTorch's on the same weights."""  # noqa: E501
    if not isinstance(sentence, str) or not sentence.strip():
        raise DlforgeError("attention lab: sentence must be a non-empty string")
    predictor, model_info = _model(out, quick, seed, run)
    net = predictor.model.net.cpu().eval()
    tokenizer = predictor.tokenizer
    max_length = predictor.meta["preprocessing"]["max_length"]
    layers = _layers(net)
    config = {"seed": seed, "sentence": sentence, "padded_with": SHORT_SENTENCE, "max_length": max_length,
              "pattern_share": PATTERN_SHARE, "broad_entropy": BROAD_ENTROPY, "precision": "float64",
              **({"quick_sentences": QUICK_SENTENCES} if quick and run is None else {})}

    single = _encode(tokenizer, [sentence], max_length)
    tokens = tokenizer.convert_ids_to_tokens(single["input_ids"][0].tolist())
    with torch.no_grad():
        hf32 = _hf_forward(net, single)
    maps = torch.stack([a[0] for a in hf32.attentions]).double().numpy()  # (L, H, T, T), the model's own float32
    heads = _head_stats(maps, tokens, tokenizer)
    row_sum_error = float(np.abs(maps.sum(-1) - 1).max())

    padded = _encode(tokenizer, [sentence, SHORT_SENTENCE], max_length)
    short = _encode(tokenizer, [SHORT_SENTENCE], max_length)
    net64 = copy.deepcopy(net).double().eval()
    with torch.no_grad():
        equivalence = {"sentence": _equivalence(net64, single), "padded_batch": _equivalence(net64, padded)}
        padding = _padding(net64, padded, short)
        float32 = _float32_reference(net, layers, single, hf32)
    worst = max(case["max"][key] for case in equivalence.values() for key in COMPARISONS)

    files = ["attention_maps.png", "attention_last_layer.png", "attention_entropy.png", "summary.md", "results.json"]
    _plot_grid(maps, tokens, heads, out / files[0])
    _plot_last_layer(maps, tokens, out / files[1])
    _plot_entropy(heads, maps.shape[:2], len(tokens), out / files[2])

    results = {"config": config, "model": model_info, "tokens": tokens,
               "attention": {"shape": list(maps.shape), "row_sum_max_error": row_sum_error,
                             "uniform_entropy": math.log(len(tokens)),
                             "last_layer_mean": maps[-1].mean(0).round(8).tolist(),
                             "maps": maps.round(8).tolist()},
               "heads": heads, "equivalence": equivalence, "equivalence_max": worst, "padding": padding,
               "float32_reference": float32, "headline": _headline(model_info, heads, worst, row_sum_error),
               "files": files}
    return results, _summary(results)


# ---------------------------------------------------------------- the model: a run given, or fine-tuned here


def _model(out: Path, quick: bool, seed: int, run: str | Path | None) -> tuple[Any, dict[str, Any]]:
    """(The Predictor of the run, what it is). Without `run`, fine-tune hf:default into out/run first."""
    from dlforge.models.hf import HFModel
    from dlforge.predictor import Predictor

    trained_here = run is None
    if trained_here:
        run = _fine_tune(out, quick, seed)
    path = Path(run)
    if not path.is_dir():
        raise DlforgeError(f"attention lab: run={str(run)!r}: no such run directory; give a finished "
                           "text_classification run with an hf: model, or leave run out to fine-tune hf:default here")
    predictor = Predictor.from_run(path)  # a folder that is no finished run raises a RunError
    meta = predictor.meta
    if meta.get("task") != "text_classification" or not isinstance(predictor.model, HFModel):
        raise DlforgeError(f"attention lab: run={str(run)!r} is a {meta.get('task')} run with model "
                           f"{meta.get('model')!r}; the lab needs a text_classification run with an hf: model")
    info = {"run": str(path), "trained_here": trained_here, "name": meta["model"],
            "model_type": predictor.model.net.config.model_type, "lora": bool(meta.get("lora")),
            "layers": predictor.model.net.config.num_hidden_layers,
            "heads": predictor.model.net.config.num_attention_heads,
            "hidden_size": predictor.model.net.config.hidden_size, "classes": meta["classes"],
            "train_sentences": meta.get("sizes", {}).get("train")}
    evaluation = path / "eval.json"
    if evaluation.exists():
        headline = json.loads(evaluation.read_text()).get("headline", {})
        if headline:
            info[f"test_{headline['name']}"] = headline["value"]
    return predictor, info


def _fine_tune(out: Path, quick: bool, seed: int) -> Path:
    """Fine-tune hf:default on Rotten Tomatoes for 1 epoch (quick: a CSV of QUICK_SENTENCES of them, cut
    to QUICK_MAX_LENGTH tokens, word embeddings frozen)."""
    from dlforge.pipeline import train
    from dlforge.spec import validate_spec

    source = "builtin:rotten_tomatoes"
    if quick:
        source = str(_quick_subset(out / "quick_sentences.csv", QUICK_SENTENCES, seed))
    spec = {"name": "attention-lab", "task": "text_classification",
            "description": "fine-tuned by the attention lab",
            "data": {"source": source, "max_length": QUICK_MAX_LENGTH if quick else 64,
                     "split": {"val": 0.1, "test": 0.2, "seed": seed}},
            # quick: the 11.7M-weight word-embedding table stays as pretrained; its dense gradient and AdamW
            # state cost as much as the encoder's on a 2-core CPU.
            "model": {"name": "hf:default", "freeze": ["*word_embeddings*"] if quick else []},
            "train": {"checkpoint": False, "epochs": 1, "batch_size": 32, "scheduler": "linear", "warmup": 0.1,
                      "optimizer": {"name": "adamw", "lr": 1e-4 if quick else 5e-5, "weight_decay": 0.01},
                      "monitor": {"metric": "val/accuracy"}, "seed": seed}}
    log.info("attention: fine-tuning hf:default on %s (1 epoch) into %s", source, out / "run")
    return train(validate_spec(spec), runs_dir=out / "run", progress=False).path


def _quick_subset(path: Path, n: int, seed: int) -> Path:
    """n Rotten Tomatoes sentences, half fresh and half rotten, drawn with `seed`, as a text,label CSV."""
    import pandas as pd

    from dlforge.data.texts import read_texts

    table = read_texts("builtin:rotten_tomatoes")
    labels = np.array(table.labels)
    rng = np.random.default_rng(seed)
    pick = np.concatenate([rng.choice(np.flatnonzero(labels == c), n // 2, replace=False)
                           for c in sorted(set(table.labels))])
    pick = np.sort(pick)
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"text": [table.texts[i] for i in pick], "label": labels[pick]}).to_csv(path, index=False)
    return path


def _layers(net: nn.Module) -> list[nn.Module]:
    """The encoder layers of a BERT-style model (`attention.self.query/key/value`, `attention.output.dense`)."""
    encoder = getattr(net.base_model, "encoder", None)
    layers = list(getattr(encoder, "layer", []))
    needed = ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
              "attention.output.LayerNorm", "intermediate", "output")
    if not layers or not all(_has(layer, name) for layer in layers for name in needed):
        raise DlforgeError(f"attention lab: the {net.config.model_type} model has no BERT-style encoder layers "
                           "(encoder.layer[i].attention.self.query/key/value); use a BERT-family model such as "
                           "hf:default")
    return layers


def _has(module: nn.Module, dotted: str) -> bool:
    for part in dotted.split("."):
        module = getattr(module, part, None)
        if module is None:
            return False
    return True


def _encode(tokenizer: Any, texts: list[str], max_length: int) -> dict[str, torch.Tensor]:
    tokenizer.padding_side = "right"
    batch = tokenizer(texts, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


def _hf_forward(net: nn.Module, batch: dict[str, torch.Tensor]) -> Any:
    """The HF model's outputs with its eager attention weights and every layer's hidden states."""
    implementation = net.config._attn_implementation
    net.set_attn_implementation("eager")  # fused kernels never form the weights
    try:
        return net(**batch, output_attentions=True, output_hidden_states=True)
    finally:
        net.set_attn_implementation(implementation)


# ---------------------------------------------------------------- equivalence on the same weights


def _as_linear(module: nn.Module, width: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight (out, in), bias (out,)) of a Linear, or of what acts as one (a LoRA-wrapped Linear in eval
    mode: its effective W + B·A·scale, read off by applying it to the identity)."""
    if type(module) is nn.Linear:
        return module.weight, module.bias
    bias = module(torch.zeros(1, width, dtype=like.dtype, device=like.device))[0]
    weight = (module(torch.eye(width, dtype=like.dtype, device=like.device)) - bias).T
    return weight, bias


def _projections(layer: nn.Module, x: torch.Tensor, heads: int) -> dict[str, torch.Tensor]:
    """The layer's query/key/value weights and, for input x (B, T, C), q, k, v as (B, heads, T, d)."""
    B, T, C = x.shape
    sa = layer.attention.self
    w = {name: _as_linear(getattr(sa, name), C, x) for name in ("query", "key", "value")}
    q, k, v = (F.linear(x, *w[name]).view(B, T, heads, C // heads).transpose(1, 2) for name in w)
    return {"w": w, "q": q, "k": k, "v": v}


def _mha(w: dict[str, tuple[torch.Tensor, torch.Tensor]], dense: tuple[torch.Tensor, torch.Tensor], heads: int
         ) -> nn.MultiheadAttention:
    """An nn.MultiheadAttention with BERT's weights: in_proj stacks query, key, value; out_proj is the dense."""
    weight = dense[0]
    C = weight.shape[0]
    mha = nn.MultiheadAttention(C, heads, bias=True, batch_first=True, dtype=weight.dtype, device=weight.device)
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.cat([w[n][0] for n in ("query", "key", "value")]))
        mha.in_proj_bias.copy_(torch.cat([w[n][1] for n in ("query", "key", "value")]))
        mha.out_proj.weight.copy_(dense[0])
        mha.out_proj.bias.copy_(dense[1])
    return mha.eval()


def _maxdiff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


def _equivalence(net64: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Per layer, the max |difference| of each comparison in COMPARISONS, with the float64 copy of the model."""
    hf = _hf_forward(net64, batch)
    layers64 = _layers(net64)
    heads = net64.config.num_attention_heads
    keep = batch["attention_mask"].bool()  # (B, T), True = a real token
    mask = keep[:, None, None, :]  # (B, 1, 1, T): every query may attend to every real key
    per_layer = []
    for i, layer in enumerate(layers64):
        x = hf.hidden_states[i]  # (B, T, C): the layer's input
        B, T, C = x.shape
        p = _projections(layer, x, heads)
        out, weights = scaled_dot_product_attention(p["q"], p["k"], p["v"], mask)  # (B, h, T, d), (B, h, T, T)
        fused = F.scaled_dot_product_attention(p["q"], p["k"], p["v"], attn_mask=mask)  # (B, h, T, d)
        dense = _as_linear(layer.attention.output.dense, C, x)
        mha = _mha(p["w"], dense, heads)
        mha_out, mha_weights = mha(x, x, x, key_padding_mask=~keep, need_weights=True, average_attn_weights=False)
        mhsa_out, _ = MultiHeadSelfAttention.from_torch(mha).eval()(x, ~keep)
        context = out.transpose(1, 2).reshape(B, T, C)  # (B, T, C): heads side by side
        hf_dense = layer.attention.output.dense(context)  # BERT's own W_o on our context
        attended = layer.attention.output.LayerNorm(hf_dense + x)  # residual + LayerNorm (dropout off)
        rebuilt = layer.output(layer.intermediate(attended), attended)  # the feed-forward half
        real = keep[:, :, None]  # compare the layer output at real tokens: padded rows are never read
        padded_keys = ~mask.expand_as(weights)  # (B, h, T, T): True where the key is padding
        on_padding = max((float(w[padded_keys].abs().max()) if padded_keys.any() else 0.0)
                         for w in (weights, mha_weights, hf.attentions[i]))
        per_layer.append({
            "layer": i,
            "ours_vs_hf_eager": _maxdiff(weights, hf.attentions[i]),
            "ours_vs_torch_mha": _maxdiff(weights, mha_weights),
            "ours_vs_torch_sdpa": _maxdiff(out, fused),
            "mhsa_vs_torch_mha": _maxdiff(mhsa_out, mha_out),
            "torch_mha_vs_hf_dense": _maxdiff(mha_out, hf_dense),
            "layer_vs_hf_hidden": _maxdiff(rebuilt * real, hf.hidden_states[i + 1] * real),
            "row_sum_max_error": float((weights.sum(-1) - 1).abs().max()),
            "max_weight_on_padded_keys": on_padding,  # dlforge's, torch's and HF's
        })
    keys = [*COMPARISONS, "row_sum_max_error", "max_weight_on_padded_keys"]
    return {"batch_shape": list(batch["input_ids"].shape), "padded_tokens": int((~keep).sum()),
            "per_layer": per_layer, "max": {k: max(row[k] for row in per_layer) for k in keys}}


def _padding(net64: nn.Module, padded: dict[str, torch.Tensor], short: dict[str, torch.Tensor]) -> dict[str, Any]:
    """BERT's padding semantics, measured: the real tokens of the padded sentence attend exactly as when the
    sentence is alone (that padded keys get weight 0 is measured in `_equivalence`)."""
    both, alone = _hf_forward(net64, padded), _hf_forward(net64, short)
    keep = padded["attention_mask"].bool()  # (2, T)
    n = int(keep[1].sum())  # the short sentence's tokens
    real = max(_maxdiff(a[1, :, :n, :n], b[0]) for a, b in zip(both.attentions, alone.attentions, strict=True))
    logits = _maxdiff(both.logits[1], alone.logits[0])
    return {"short_sentence_tokens": n, "padded_length": int(keep.shape[1]),
            "short_alone_vs_padded_weights": real,
            "short_alone_vs_padded_logits": logits}


def _float32_reference(net: nn.Module, layers: list[nn.Module], single: dict[str, torch.Tensor], hf32: Any
                       ) -> dict[str, float]:
    """For scale: the same from-scratch attention in the model's own float32 against its eager weights."""
    heads = net.config.num_attention_heads
    diffs = []
    for i, layer in enumerate(layers):
        p = _projections(layer, hf32.hidden_states[i], heads)
        _, weights = scaled_dot_product_attention(p["q"], p["k"], p["v"])
        diffs.append(_maxdiff(weights, hf32.attentions[i]))
    return {"ours_vs_hf_eager_max": max(diffs), "per_layer": diffs, "float32_eps": torch.finfo(torch.float32).eps}


# ---------------------------------------------------------------- what each head does


def _head_stats(maps: np.ndarray, tokens: list[str], tokenizer: Any) -> list[dict[str, Any]]:
    """Per head: entropy of its rows (mean over query tokens, nats), the token it attends to most on
    average, and its shares of attention to [CLS], [SEP], the previous, the next and the same token."""
    L, H, T, _ = maps.shape
    cls = [j for j, t in enumerate(tokens) if t == tokenizer.cls_token]
    sep = [j for j, t in enumerate(tokens) if t == tokenizer.sep_token]
    rows = np.arange(T)
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(maps > 0, maps * np.log(maps), 0.0)
    entropy = -plogp.sum(-1).mean(-1)  # (L, H)
    uniform = math.log(T)
    heads = []
    for layer in range(L):
        for head in range(H):
            a = maps[layer, head]  # (T, T)
            received = a.mean(0)  # (T,): the attention each key gets, averaged over the queries
            top = int(received.argmax())
            shares = {"cls": float(a[:, cls].sum(-1).mean()) if cls else 0.0,
                      "sep": float(a[:, sep].sum(-1).mean()) if sep else 0.0,
                      "previous": float(a[rows[1:], rows[1:] - 1].mean()) if T > 1 else 0.0,
                      "next": float(a[rows[:-1], rows[:-1] + 1].mean()) if T > 1 else 0.0,
                      "self": float(np.diag(a).mean())}
            name, share = max(shares.items(), key=lambda kv: kv[1])
            ratio = float(entropy[layer, head] / uniform) if T > 1 else 0.0
            pattern = name if share > PATTERN_SHARE else ("broad" if ratio > BROAD_ENTROPY else "mixed")
            heads.append({"layer": layer, "head": head, "entropy": float(entropy[layer, head]),
                          "entropy_ratio": ratio, "top_token": tokens[top], "top_position": top,
                          "top_share": float(received[top]), "shares": shares, "pattern": pattern})
    return heads


# ---------------------------------------------------------------- figures


def _tick_size(T: int) -> float:
    return max(2.5, min(7.0, 110 / T))


def _plot_grid(maps: np.ndarray, tokens: list[str], heads: list[dict[str, Any]], path: Path) -> None:
    """Every layer (rows) × head (columns) as one mosaic image on one Axes (72 separate Axes take 10 s to
    draw); each panel's query tokens label it on the left, its key tokens at the bottom."""
    from dlforge.plots import plt, save

    L, H, T, _ = maps.shape
    gap_rows, gap_cols = 2, 1  # room above each panel for its title, and between panels
    mosaic = np.full((L * (T + gap_rows), H * (T + gap_cols)), np.nan)
    for layer in range(L):
        for head in range(H):
            r, c = layer * (T + gap_rows) + gap_rows, head * (T + gap_cols)
            mosaic[r:r + T, c:c + T] = maps[layer, head]
    inch = max(0.11, min(0.16, 2.2 / T))  # per token cell
    fig, ax = plt.subplots(figsize=(mosaic.shape[1] * inch + 2.0, mosaic.shape[0] * inch + 1.6))
    cmap = plt.get_cmap("viridis").with_extremes(bad="white")
    image = ax.imshow(mosaic, cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest", aspect="equal")
    size = _tick_size(T)
    ax.set_yticks([layer * (T + gap_rows) + gap_rows + i for layer in range(L) for i in range(T)], tokens * L,
                  fontsize=size)
    ax.set_xticks([head * (T + gap_cols) + j for head in range(H) for j in range(T)], tokens * H, fontsize=size,
                  rotation=90)
    ax.tick_params(length=0, pad=1)
    for side in ax.spines.values():
        side.set_visible(False)
    for h in heads:
        ax.text(h["head"] * (T + gap_cols) + (T - 1) / 2, h["layer"] * (T + gap_rows) + gap_rows - 0.8,
                f"L{h['layer']} H{h['head']}  {h['entropy']:.2f} nats", ha="center", va="bottom", fontsize=7)
    ax.set_title("attention weights per layer (rows) and head (columns): row = query token, column = key token "
                 "(colour 0 → 1; entropy in nats)", fontsize=11)
    fig.colorbar(image, ax=ax, fraction=0.012, pad=0.01)
    save(fig, path)


def _plot_last_layer(maps: np.ndarray, tokens: list[str], path: Path) -> None:
    from dlforge.plots import plt, save

    L, H, T, _ = maps.shape
    mean = maps[-1].mean(0)  # (T, T)
    side = max(6.0, 0.42 * T)
    fig, ax = plt.subplots(figsize=(side + 1.2, side))
    image = ax.imshow(mean, cmap="viridis", vmin=0.0)
    ax.set_xticks(range(T), tokens, rotation=90)
    ax.set_yticks(range(T), tokens)
    ax.set_xlabel("key token (attended to)")
    ax.set_ylabel("query token (attending)")
    if T <= 24:
        for i in range(T):
            for j in range(T):
                ax.text(j, i, f"{mean[i, j]:.2f}", ha="center", va="center", fontsize=6,
                        color="black" if mean[i, j] > 0.6 * mean.max() else "white")
    ax.set_title(f"last layer (L{L - 1}): attention averaged over its {H} heads")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    save(fig, path)


def _plot_entropy(heads: list[dict[str, Any]], shape: tuple[int, int], T: int, path: Path) -> None:
    from dlforge.plots import plt, save

    L, H = shape
    entropy = np.array([h["entropy"] for h in heads]).reshape(L, H)
    fig, ax = plt.subplots(figsize=(0.6 * H + 2, 0.6 * L + 1.2))
    image = ax.imshow(entropy, cmap="magma", vmin=0.0, vmax=math.log(T))
    for h in heads:
        ax.text(h["head"], h["layer"], f"{h['entropy']:.2f}\n{_short(h['pattern'])}", ha="center", va="center",
                fontsize=6, color="white" if h["entropy"] < 0.6 * math.log(T) else "black")
    ax.set_xticks(range(H), [f"H{i}" for i in range(H)])
    ax.set_yticks(range(L), [f"L{i}" for i in range(L)])
    ax.set_title(f"attention entropy per head (nats; uniform over {T} tokens = {math.log(T):.2f})")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    save(fig, path)


def _focus(h: dict[str, Any]) -> str:
    """Where a head's attention goes: a positional pattern (previous, next, self) by its share, else its top token."""
    if h["pattern"] in ("previous", "next", "self"):
        return f"{h['shares'][h['pattern']]:.0%} on the {'same' if h['pattern'] == 'self' else h['pattern']} token"
    return f"{h['top_share']:.0%} on {h['top_token']}"


def _short(pattern: str) -> str:
    return {"cls": "[CLS]", "sep": "[SEP]", "previous": "prev", "next": "next", "self": "self"}.get(pattern, pattern)


# ---------------------------------------------------------------- headline and summary


def _headline(model: dict[str, Any], heads: list[dict[str, Any]], worst: float, row_sum: float) -> dict[str, Any]:
    low, high = min(heads, key=lambda h: h["entropy"]), max(heads, key=lambda h: h["entropy"])
    counts: dict[str, int] = {}
    for h in heads:
        counts[h["pattern"]] = counts.get(h["pattern"], 0) + 1
    rows: dict[str, Any] = {"max |Δ| float64, all comparisons": worst, "max |row sum − 1|": row_sum,
                            "heads by pattern": ", ".join(f"{_short(k)} {v}" for k, v in sorted(counts.items())),
                            "lowest-entropy head": f"L{low['layer']} H{low['head']}: {low['entropy']:.3f} nats, "
                                                   f"{_focus(low)}",
                            "highest-entropy head": f"L{high['layer']} H{high['head']}: {high['entropy']:.3f} nats"}
    for key in ("test_accuracy",):
        if key in model:
            rows["fine-tuned model's test accuracy"] = model[key]
    return rows


def _summary(results: dict[str, Any]) -> str:
    model, config, tokens = results["model"], results["config"], results["tokens"]
    L, H, T, _ = results["attention"]["shape"]
    C = model["hidden_size"]
    d = C // H
    heads = results["heads"]
    trained = (f"fine-tuned here from hf:default for 1 epoch on {model['train_sentences']} Rotten Tomatoes "
               "sentences" if model["trained_here"] else f"the run {model['run']} ({model['name']})")
    accuracy = f", test accuracy {model['test_accuracy']:.3f}" if "test_accuracy" in model else ""
    lines = ["# Self-attention", "",
             f"Model: {trained}{accuracy}; a {model['model_type']} encoder with {L} layers of {H} heads over "
             f"{C} dimensions (d = {C}/{H} = {d} per head). Sentence: “{config['sentence']}”, "
             f"{T} tokens: {' '.join(tokens)}.", "",
             "## What one head computes", "",
             f"For the layer's input x (T × C = {T} × {C}), each head projects queries, keys and values, "
             f"Q = x W_q + b_q, K = x W_k + b_k, V = x W_v + b_v (T × d = {T} × {d} each), and mixes the values:",
             "", "    A = softmax(Q Kᵀ / √d)      (T × T; row i: how much token i takes from each token j; rows sum "
             "to 1)", "    out = A V                   (T × d)", "",
             f"The {H} heads' outputs side by side (T × {C}) go through W_o, then BERT adds the residual and "
             "applies LayerNorm, then the feed-forward half. Dividing by √d keeps the scores' variance near 1 "
             "whatever d (for q and k with unit-variance components), so the softmax does not saturate. Padding "
             "is masked on the key side only: a padded key's score gets the dtype's minimum added (HF) or put in "
             "its place (dlforge), so its weight is exactly 0; a padded query still gets a row, which nothing "
             "real reads.", "",
             "## The same attention, four ways (float64)", "",
             "Every layer's input hidden states (HF `output_hidden_states`) and its query/key/value weights, "
             "cast to float64, give A through dlforge's from-scratch `scaled_dot_product_attention`; it is "
             "compared with torch's fused `F.scaled_dot_product_attention` (outputs), with an "
             "`nn.MultiheadAttention` loaded with the same weights (in_proj = [W_q; W_k; W_v], out_proj = BERT's "
             "attention.output.dense; per-head weights), and with the HF model's own eager attention "
             "probabilities. Max |difference| over all layers, for the sentence alone and for a padded batch of "
             f"it and “{config['padded_with']}”:", "",
             "| comparison | sentence | padded batch |", "|---|---|---|"]
    eq = results["equivalence"]
    for key, text in COMPARISONS.items():
        lines.append(f"| {text} | {eq['sentence']['max'][key]:.1e} | {eq['padded_batch']['max'][key]:.1e} |")
    lines.append(f"| max \\|row sum − 1\\| of dlforge's A | {eq['sentence']['max']['row_sum_max_error']:.1e} | "
                 f"{eq['padded_batch']['max']['row_sum_max_error']:.1e} |")
    lines += ["", "Per layer (max over the comparisons above; sentence / padded batch): "
              + ", ".join(f"L{a['layer']} {max(a[k] for k in COMPARISONS):.1e} / {max(b[k] for k in COMPARISONS):.1e}"
                          for a, b in zip(eq["sentence"]["per_layer"], eq["padded_batch"]["per_layer"], strict=True))
              + ".", ""]
    pad, f32 = results["padding"], results["float32_reference"]
    lines += [f"Padding: in the batch the short sentence ({pad['short_sentence_tokens']} tokens) is padded to "
              f"{pad['padded_length']}; the largest weight any query puts on a padded key is "
              f"{eq['padded_batch']['max']['max_weight_on_padded_keys']:.1e} (dlforge, nn.MultiheadAttention and "
              "HF alike), and its real tokens' attention differs from the sentence "
              f"alone by at most {pad['short_alone_vs_padded_weights']:.1e} "
              f"(logits {pad['short_alone_vs_padded_logits']:.1e}).",
              f"For scale, the same comparison with the HF model in its own float32: "
              f"{f32['ours_vs_hf_eager_max']:.1e} (float32 ε = {f32['float32_eps']:.1e}).", "",
              "## What the heads attend to", "",
              f"Entropy of a head's rows, in nats, averaged over the {T} query tokens (0: every token attends to "
              f"a single token; log {T} = {math.log(T):.2f}: uniform). A head is labelled [CLS], [SEP], prev, "
              f"next or self when over {PATTERN_SHARE:.0%} of its attention goes there on average, broad when its "
              f"entropy is over {BROAD_ENTROPY:.0%} of uniform, mixed otherwise.", "",
              "| layer | " + " | ".join(f"H{h}" for h in range(H)) + " | mean |", "|---|" + "---|" * (H + 1)]
    for layer in range(L):
        row = heads[layer * H:(layer + 1) * H]
        lines.append(f"| L{layer} | " + " | ".join(f"{h['entropy']:.2f} {_short(h['pattern'])}" for h in row)
                     + f" | {np.mean([h['entropy'] for h in row]):.2f} |")
    ranked = sorted(heads, key=lambda h: h["entropy"])
    counts: dict[str, list[str]] = {}
    for h in heads:
        counts.setdefault(h["pattern"], []).append(f"L{h['layer']}H{h['head']}")
    lines += ["", "Heads by pattern: " + "; ".join(f"{_short(k)} ({len(v)}): {', '.join(v)}"
                                                   for k, v in sorted(counts.items())) + ".",
              "Most focused heads: " + ", ".join(
                  f"L{h['layer']} H{h['head']} ({h['entropy']:.2f} nats, {_focus(h)})"
                  for h in ranked[:5]) + ".",
              "Most diffuse heads: " + ", ".join(
                  f"L{h['layer']} H{h['head']} ({h['entropy']:.2f} nats)" for h in ranked[-3:][::-1]) + ".",
              "Mean entropy per layer: " + ", ".join(
                  f"L{layer} {np.mean([h['entropy'] for h in heads[layer * H:(layer + 1) * H]]):.2f}"
                  for layer in range(L)) + ".", "",
              "Figures: attention_maps.png (every layer × head; rows layers, columns heads), "
              "attention_last_layer.png (the last layer averaged over its heads, values in the cells), "
              "attention_entropy.png (the entropy table above, coloured).", ""]
    return "\n".join(lines)
