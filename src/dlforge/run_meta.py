"""What a run's meta.json holds: a typed, versioned record, enough to rebuild the model and read its inputs.

`RunMeta` has the fields every task writes; a task whose meta has more declares a subclass as its
`Task.meta_class`. meta.json carries `format_version`: a run written by an older dlforge is brought to
`FORMAT_VERSION` in memory, one step of `MIGRATIONS` at a time (its files are never rewritten); a run
written by a newer one is refused, as scikit-learn checks the version stamped in what it unpickles.
Code reads meta as the plain dict `RunMeta.model_dump` gives (`Run.read_meta`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dlforge.errors import RunError

FORMAT_VERSION = 1

Label = str | int | float | bool  # class names: folder names, or a table's label values


class Pretrained(BaseModel):
    """Where the first weights came from (`model.pretrained`), and how much of them fit."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(description="a run directory, a .safetensors file or hf-hub:<repo>")
    loaded: int = Field(description="tensors copied from it")
    fresh: list[str] = Field(description="the model's tensors it had none for (newly initialised)")


class RunMeta(BaseModel):
    """meta.json of every run. Keys a task does not write are absent from the file (not null)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    format_version: int = Field(FORMAT_VERSION, description="the run directory's format; see MIGRATIONS")
    task: str = Field(description="the registered task that wrote the run")
    model: str = Field(description="the registered model name (model.name)")
    model_kwargs: dict[str, Any] = Field(default_factory=dict, description="its options (model.kwargs)")
    classes: list[Label] | None = Field(None, description="the label set, in the order of the model's outputs")
    preprocessing: dict[str, Any] = Field(
        default_factory=dict, description="what turns a raw input into the model's tensors (image size, channel "
                                          "mean and std, tokenizer length, a table's encoding): the task's own")
    sizes: dict[str, int] = Field(default_factory=dict, description="examples in the train / val / test splits")
    versions: dict[str, str] = Field(default_factory=dict, description="python and library versions at training")
    data: dict[str, Any] | None = Field(None, description="how the data was handled: rows read, dropped, cut")
    skipped: list[dict[str, Any]] | None = Field(None, description="unreadable inputs left out, with the reason")
    pretrained: Pretrained | None = None
    predict: dict[str, Any] | None = Field(None, description="the spec's `predict:` defaults (thresholds, lengths)")
    fairness: dict[str, Any] | None = Field(None, description="train.fairness.reweigh: the weights' summary")
    # after training
    device: str | None = Field(None, description="where it trained: cpu, cuda:0, mps")
    world_size: int = Field(1, ge=1, description="processes that trained it (torchrun)")
    epochs: int | None = Field(None, ge=0, description="epochs run (early stopping may end before train.epochs)")
    best_epoch: int | None = Field(None, ge=0, description="the epoch whose weights were kept (train.monitor)")
    temperature: float | None = Field(None, gt=0.0, description="classifiers: the logits' temperature, fit on "
                                                                "the validation set")

    @classmethod
    def of(cls, meta: dict[str, Any] | RunMeta, source: str = "meta.json") -> RunMeta:
        """`meta` validated as this class; a RunError naming `source` and the first bad field."""
        if isinstance(meta, cls):
            return meta
        raw = meta.model_dump(by_alias=True, exclude_unset=True) if isinstance(meta, RunMeta) else meta
        try:
            return cls.model_validate(raw)
        except ValidationError as e:
            err, more = e.errors()[0], len(e.errors()) - 1
            where = ".".join(str(p) for p in err["loc"]) or "meta"
            message = "unknown field (a task declares its own in Task.meta_class)" \
                if err["type"] == "extra_forbidden" else err["msg"]
            raise RunError(f"{source}: {where}: {message}" + (f" (and {more} more)" if more else "")) from None

    def to_dict(self) -> dict[str, Any]:
        """The plain dict code reads (`meta["classes"]`): the keys that were given, under their file names."""
        return {"format_version": self.format_version,
                **self.model_dump(by_alias=True, exclude_unset=True)}


# ---------------------------------------------------------------- migrations

Migration = Callable[[dict[str, Any], Path], dict[str, Any]]


def _from_0(meta: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """0 -> 1 (dlforge 0.1, up to commit 1e29609): no `format_version`; `epochs` only in COMPLETE."""
    complete = run_dir / "COMPLETE"
    epochs = json.loads(complete.read_text()).get("epochs") if complete.exists() else None
    return {**meta, **({"epochs": epochs} if epochs is not None else {}), "format_version": 1}


# version -> the step that brings a meta of that version to the next one. Add a step (and bump FORMAT_VERSION) when
# meta.json changes in a way an older run's file would not validate, or would mean something else.
MIGRATIONS: dict[int, Migration] = {0: _from_0}


def migrate(meta: dict[str, Any], run_dir: Path, source: str = "meta.json") -> dict[str, Any]:
    """`meta` of any format this dlforge knows, brought to FORMAT_VERSION (a new dict; the file is untouched)."""
    version = meta.get("format_version", 0)  # written before format versions existed
    if not isinstance(version, int) or version > FORMAT_VERSION:
        written = meta.get("versions", {}).get("dlforge", "?")
        raise RunError(f"{source}: run format {version!r} (dlforge {written}) is newer than this dlforge reads "
                       f"({FORMAT_VERSION}): upgrade dlforge to load it")
    while version < FORMAT_VERSION:
        meta = MIGRATIONS[version](meta, run_dir)
        version = meta["format_version"]
    return meta
