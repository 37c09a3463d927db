"""The attribution methods, each Captum's, LIME's or SHAP's own, on one item's Subject (see subject.py): each returns
one array of unit attributions per Part (an image's pixels, a text's tokens, a window's steps x features, a row's
columns). `METHODS` says which methods an input kind offers, its default first (a task may name another default,
`Task.explain_method`).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from dlforge.errors import DlforgeError
from dlforge.explain.subject import Part, Subject

IG_STEPS = (64, 256, 512)  # Gauss-Legendre points, tried in turn until completeness is within 1%
LIME_SAMPLES = 500
SHAP_EVALS = 300

Method = Callable[[Subject, Any], list[np.ndarray]]


def integrated_gradients(s: Subject, item: Any, steps: Sequence[int] = IG_STEPS) -> list[np.ndarray]:
    """Captum's Integrated Gradients from the baselines (Sundararajan et al., 2017); for ids, over their embeddings
    (LayerIntegratedGradients' path). The path integral is taken with more steps while Captum's convergence delta
    is over 1% of f(x) - f(baseline): a ReLU network's gradient jumps along the path."""
    from captum.attr import IntegratedGradients

    gap = abs(float(s.scores(*s.inputs)[0] - s.scores(*s.baselines)[0]))
    for n in steps:
        attributions, delta = IntegratedGradients(s.score).attribute(
            s.inputs, baselines=s.baselines, n_steps=n, method="gausslegendre", internal_batch_size=64,
            return_convergence_delta=True)
        s.info["ig_steps"] = n
        if abs(float(delta.sum())) <= 0.01 * gap:
            break
    return [part.units(a) for part, a in zip(s.parts, attributions, strict=True)]


def saliency(s: Subject, item: Any) -> list[np.ndarray]:
    """Captum's Saliency: |d score / d input| (Simonyan et al., 2014)."""
    from captum.attr import Saliency

    attributions = Saliency(s.score).attribute(tuple(x.clone().requires_grad_() for x in s.inputs), abs=True)
    return [part.units(a) for part, a in zip(s.parts, attributions, strict=True)]


def occlusion(s: Subject, item: Any) -> list[np.ndarray]:
    """Captum's Occlusion: the score's drop when a window is set to the baseline. Windows: k x k pixels (k = 1/8 of
    the side, half-overlapping), one token, one cell of a window, one column."""
    from captum.attr import Occlusion

    windows, strides = [], []
    for part in s.parts:
        shape = tuple(part.value.shape[1:])
        if part.value.dim() == 4:
            k = max(1, min(shape[1:]) // 8)
            windows.append((shape[0], k, k))
            strides.append((shape[0], max(1, k // 2), max(1, k // 2)))
        else:
            windows.append(tuple(n if i in part.reduce else 1 for i, n in enumerate(shape, 1)))
            strides.append(windows[-1])
    attributions = Occlusion(s.score).attribute(s.inputs, sliding_window_shapes=tuple(windows), strides=tuple(strides),
                                                baselines=s.baselines, perturbations_per_eval=16)
    return [part.units(a) for part, a in zip(s.parts, attributions, strict=True)]


def gradcam(s: Subject, item: Any) -> list[np.ndarray]:
    """Captum's LayerGradCam (Selvaraju et al., 2017) on the features that the last convolution the score depends on
    reads (its input: post-activation features; its output may be a prediction head's logits, which ReLU zeroes),
    upsampled to the input's size. On digits this doubled the inputs where deletion beats random order (14/16)."""
    from captum.attr import LayerAttribution, LayerGradCam

    x = _image(s).value
    cam = LayerGradCam(s.score, _cam_layer(s)).attribute(x, relu_attributions=True,
                                                         attribute_to_layer_input=True)  # (1, 1, h, w)
    return [LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), "bilinear")[0, 0].detach().cpu().numpy()]


def lime_image(s: Subject, item: Any, samples: int = LIME_SAMPLES) -> list[np.ndarray]:
    """LIME's image explainer (Ribeiro et al., 2016) on the model's input: superpixels (SLIC) switched to the
    baseline, a weighted linear fit of the score; each pixel gets its superpixel's weight."""
    from lime.lime_image import LimeImageExplainer

    x = _image(s).value  # (1, C, H, W)

    def classify(images: np.ndarray) -> np.ndarray:  # (N, H, W, C) -> (N, 1)
        return s.scores(torch.as_tensor(images, dtype=x.dtype, device=x.device).permute(0, 3, 1, 2))[:, None]

    with contextlib.redirect_stderr(io.StringIO()):  # its progress bar
        found = LimeImageExplainer(random_state=0).explain_instance(
            x[0].permute(1, 2, 0).double().cpu().numpy(), classify, labels=(0,), top_labels=None, hide_color=0,
            num_samples=samples, batch_size=64, segmentation_fn=_superpixels, random_seed=0)
    weights = dict(found.local_exp[0])
    return [np.vectorize(lambda segment: weights.get(segment, 0.0), otypes=[float])(found.segments)]


def lime_text(s: Subject, item: Any, samples: int = LIME_SAMPLES) -> list[np.ndarray]:
    """LIME's text explainer: words removed at random, a weighted linear fit of the score; each word's weight is
    shared by its tokens."""
    from lime.lime_text import LimeTextExplainer

    part, text = _tokens(s, item)
    found = LimeTextExplainer(bow=False, random_state=0).explain_instance(
        text, lambda texts: s.score_items(list(texts))[:, None], labels=(0,), num_features=10 ** 6,
        num_samples=samples)
    words = found.domain_mapper.indexed_string
    units = np.zeros(len(part.spans))
    for feature, weight in found.local_exp[0]:
        start = words.string_start[words.positions[feature]]
        end = start + len(words.inverse_vocab[feature])
        hit = [i for i, (a, b) in enumerate(part.spans) if a < b and a < end and b > start]
        units[hit] += weight / max(len(hit), 1)
    return [units]


def shap_text(s: Subject, item: Any, evals: int = SHAP_EVALS) -> list[np.ndarray]:
    """SHAP's partition explainer with its text masker over the model's own tokenizer: Owen values per token."""
    import shap

    part, text = _tokens(s, item)
    tokenizer = s.predictor.tokenizer
    explainer = shap.Explainer(lambda texts: s.score_items(list(texts)), shap.maskers.Text(tokenizer))
    values = explainer([text], max_evals=evals, silent=True).values[0]  # one per token of the whole text
    full = tokenizer.convert_ids_to_tokens(tokenizer(text)["input_ids"])
    return [np.array([values[i] if i < len(full) and full[i] == token else 0.0
                      for i, token in enumerate(part.labels)])]


def shap_table(s: Subject, item: Any, evals: int = SHAP_EVALS) -> list[np.ndarray]:
    """SHAP's permutation explainer over the row's raw feature columns (model-agnostic), columns switched to those of
    the background rows (`explain`'s background; default the typical row: training medians and most frequent
    categories). Each column's value goes to the unit of that name (a missing-value indicator gets none)."""
    import shap

    if not isinstance(item, dict):
        raise DlforgeError("shap explains rows given as {column: value}")
    columns = [label for part in s.parts for label in part.labels or [] if label in item]
    rows = [item, *(s.background or [s.predictor.wire.example(s.predictor.meta)])]
    # SHAP's maskers take numbers: each column's distinct values (categories, None for missing) by their index
    seen = [list(dict.fromkeys(repr(r.get(c)) for r in rows)) for c in columns]
    values = [{repr(r.get(c)): r.get(c) for r in rows} for c in columns]
    codes = np.array([[seen[j].index(repr(r.get(c))) for j, c in enumerate(columns)] for r in rows], dtype=float)

    def score(coded: np.ndarray) -> np.ndarray:
        return s.score_items([{**item, **{c: values[j][seen[j][int(k)]] for j, (c, k) in enumerate(
            zip(columns, row, strict=True))}} for row in coded])

    found = shap.PermutationExplainer(score, shap.maskers.Independent(codes[1:], max_samples=100), seed=0)(
        codes[:1], max_evals=max(evals, 2 * len(columns) + 1), silent=True)
    value = dict(zip(columns, found.values[0], strict=True))
    return [np.array([value.get(label, 0.0) for label in part.labels or []]).reshape(part.unit_shape)
            for part in s.parts]


METHODS: dict[str, dict[str, Method]] = {
    "image": {"ig": integrated_gradients, "gradcam": gradcam, "saliency": saliency, "occlusion": occlusion,
              "lime": lime_image},
    "text": {"ig": integrated_gradients, "lime": lime_text, "shap": shap_text},
    "series": {"ig": integrated_gradients, "saliency": saliency, "occlusion": occlusion},
    "table": {"shap": shap_table, "ig": integrated_gradients},
}


# ---------------------------------------------------------------- helpers


def _image(s: Subject) -> Part:
    if len(s.parts) != 1 or s.parts[0].value.dim() != 4:
        raise DlforgeError("this method needs one image input (B, C, H, W)")
    return s.parts[0]


def _tokens(s: Subject, item: Any) -> tuple[Part, str]:
    part = next((p for p in s.parts if p.spans is not None), None)
    text = item.get("text") if isinstance(item, dict) else item
    if part is None or not isinstance(text, str):
        raise DlforgeError("this method needs a text and a fast tokenizer (character offsets of the tokens)")
    return part, text


def _cam_layer(s: Subject) -> nn.Module:
    """The last Conv2d to run whose output the score depends on (for a detector: the level that found the box)."""
    ran: list[tuple[nn.Module, torch.Tensor]] = []
    hooks = [m.register_forward_hook(lambda m, args, out: ran.append((m, out)))
             for m in s.predictor.model.modules() if isinstance(m, nn.Conv2d)]
    try:
        score = s.score(_image(s).value.clone().requires_grad_(True)).sum()
    finally:
        for h in hooks:
            h.remove()
    grads = torch.autograd.grad(score, [out for _, out in ran], allow_unused=True) if ran else []
    for (layer, _), g in zip(reversed(ran), reversed(grads), strict=True):
        if g is not None and bool(g.abs().sum() > 0):
            return layer
    raise DlforgeError("Grad-CAM needs a convolution that the score depends on; this model has none (try ig)")


def _superpixels(image: np.ndarray) -> np.ndarray:
    """SLIC superpixels of a model input (any scale, 1 or 3 channels), about one per 4 pixels up to 50, from 0."""
    from skimage.segmentation import slic

    span = float(np.ptp(image)) or 1.0
    height, width = image.shape[:2]
    return slic((image - image.min()) / span, n_segments=int(np.clip(height * width // 4, 4, 50)), compactness=0.1,
                channel_axis=-1, start_label=0, convert2lab=False)
