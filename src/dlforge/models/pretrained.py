"""Start a model from pretrained weights: a run directory, a .safetensors file or a hub id.

Only safetensors are read: nothing a user hands in is ever unpickled.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from safetensors.torch import load_file
from torch import nn

from dlforge.errors import DlforgeError
from dlforge.spec import LIBRARY

log = logging.getLogger("dlforge")



def resolve_weights(source: str) -> tuple[Path, list[str] | None]:
    """The safetensors file behind `source`, and the labels its head was trained on when known."""
    path = Path(source)
    if path.is_dir():
        if not (path / "COMPLETE").exists():
            raise DlforgeError(f"{source}: model.pretrained is a run directory that did not finish "
                               "(no COMPLETE marker)")
        meta = json.loads((path / "meta.json").read_text())
        return path / "model.safetensors", meta.get("classes")
    if path.suffix == ".safetensors":
        if not path.is_file():
            raise DlforgeError(f"{source}: model.pretrained file not found")
        return path, None
    if source.startswith("hf-hub:"):
        from huggingface_hub import hf_hub_download

        repo, _, revision = source.removeprefix("hf-hub:").partition("@")
        try:
            return Path(hf_hub_download(repo, "model.safetensors", revision=revision or None)), None
        except Exception as e:  # offline, unknown repo, no such file: all end here
            raise DlforgeError(f"model.pretrained {source!r}: cannot download model.safetensors: {e}") from None
    raise DlforgeError(f"model.pretrained {source!r}: expected a run directory, a .safetensors file, "
                       f"'hf-hub:<repo>[@revision]' or {LIBRARY!r} (the backbone library's own weights)")


def load_pretrained(model: nn.Module, source: str, classes: list[str]) -> dict:
    """Copy every tensor of `source` whose name and shape fit `model`; returns what was loaded.

    The head is kept only when the source was trained on exactly `classes`:
    a head for other labels (even as many of them) would predict the wrong names.
    """
    path, source_classes = resolve_weights(source)
    state = load_file(path)
    own = model.state_dict()
    keep_head = source_classes == list(classes)
    # Parameters tied to the label set (the head); `class_specific` lists their name prefixes.
    head = tuple(getattr(model, "class_specific", ("head.",)))
    loaded = {k: v for k, v in state.items()
              if k in own and own[k].shape == v.shape and (keep_head or not k.startswith(head))}
    if not loaded:
        raise DlforgeError(f"{source}: none of its {len(state)} tensors fits this model "
                           "(a different architecture?)")
    model.load_state_dict(loaded, strict=False)
    fresh = sorted(k for k in own if k not in loaded)
    log.info("pretrained: loaded %d of %d tensors from %s; newly initialised: %s", len(loaded), len(own), path,
             ", ".join(fresh) or "none")
    return {"source": source, "loaded": len(loaded), "fresh": fresh}
