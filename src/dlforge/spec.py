"""The spec: one pydantic tree per task, loaded from YAML and validated before any work starts.

The shared parts (name, task, train) live here; each task file defines its own spec class
(`data`, `model`) as a subclass of `SpecBase` and registers it with its task. A bad spec
raises `SpecError` with one line: file, YAML line, field path, bad value, what is allowed.
"""

from __future__ import annotations

import copy
import functools
import inspect
import operator
import types
import typing
import warnings
from pathlib import Path
from typing import Any, ClassVar, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from dlforge.errors import DlforgeError, SpecError
from dlforge.registry import TASKS, Registry, did_you_mean

LIBRARY = "default"  # model.pretrained: default -> the model library's own weights (timm / torchvision)


class StrictModel(BaseModel):
    """Unknown keys are errors; defaults are validated too."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


class SplitSpec(StrictModel):
    val: float = Field(0.1, ge=0.0, lt=1.0, description="fraction of the data for validation")
    test: float = Field(0.2, ge=0.0, lt=1.0, description="fraction of the data for the final test")
    seed: int = Field(0, description="seed of the (stratified) split")

    @field_validator("test")
    @classmethod
    def _fractions_leave_training_data(cls, test: float, info: ValidationInfo) -> float:
        if info.data.get("val", 0.0) + test >= 0.9:
            raise ValueError(f"val + test = {info.data.get('val', 0.0) + test:g} leaves too little to train on; "
                             "keep it below 0.9")
        return test


class DataSpec(StrictModel):
    """What the `data:` of every task that reads items (images, texts, rows) from a file, folder or built-in set
    shares: where from, how it is split, and how much of it a quick run uses. Each task subclasses it, describing
    its own `source`; `dlforge.data.split.split_data` applies `limit` / `fraction`, then the split."""

    source: str = Field(description="where the data is")
    split: SplitSpec = SplitSpec()
    limit: int | None = Field(None, ge=1, description="a quick run: at most this many items, drawn before the split "
                                                      "(seeded by split.seed; stratified by label where there are "
                                                      "labels)")
    fraction: float | None = Field(None, gt=0.0, le=1.0, description="a quick run: this share of the items, drawn as "
                                                                      "`limit` is")

    @model_validator(mode="after")
    def _one_subset(self) -> DataSpec:
        if self.limit is not None and self.fraction is not None:
            raise ValueError("give data.limit or data.fraction, not both")
        return self


class OptimizerSpec(StrictModel):
    name: Literal["adamw", "sgd"] = "adamw"
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(0.01, ge=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="sgd only")
    nesterov: bool = Field(False, description="sgd only")


class MonitorSpec(StrictModel):
    metric: str | None = Field(None, description="e.g. val/accuracy or val/loss; null = the task's default")
    mode: Literal["auto", "min", "max"] = Field("auto", description="auto: min for losses, max otherwise")


class EarlyStoppingSpec(StrictModel):
    patience: int = Field(5, ge=1, description="epochs without improvement of train.monitor before stopping")
    min_delta: float = Field(0.0, ge=0.0)


class FairnessSpec(StrictModel):
    reweigh: list[str] = Field(default_factory=list, description="Kamiran-Calders reweighing: training examples "
                               "weighted so that these columns and the label become independent")


class TrainSpec(StrictModel):
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(64, ge=1)
    optimizer: OptimizerSpec = OptimizerSpec()
    scheduler: Literal["none", "cosine", "linear", "onecycle"] = Field(
        "cosine", description="learning-rate decay over the optimizer steps, after any warm-up")
    warmup: float = Field(0.0, ge=0.0, description="linear warm-up from 0: a fraction (< 1) of all optimizer "
                                                   "steps, or a number of steps (>= 1); not with onecycle")
    accumulate_grad_batches: int = Field(1, ge=1, description="gradient accumulation: one optimizer step per N "
                                                          "batches (was `accumulate`)")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16 autocast on CUDA, fp32 elsewhere")
    device: str = Field("auto", pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$",
                        description="auto picks CUDA/ROCm, then MPS, then CPU")
    seed: int = 0
    grad_clip: float | None = Field(None, gt=0.0, description="max global gradient norm")
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0, description="classification tasks: train against (1 - a) "
                                   "one-hot + a/K uniform targets (Szegedy et al. 2016); other tasks ignore it")
    monitor: MonitorSpec = MonitorSpec()
    early_stopping: EarlyStoppingSpec | None = None
    freeze_backbone_epochs: int = Field(0, ge=0, description="train only the head for the first N epochs")
    compile: bool = Field(False, description="torch.compile the model")
    grad_flow_every: int = Field(25, ge=1, description="sample per-layer gradient norms every N steps")
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes")
    checkpoint: bool = Field(True, description="write checkpoints/last.pt each epoch (model, optimizer, RNG: what "
                                               "--resume needs); off saves the time and disk of large models")
    fairness: FairnessSpec = FairnessSpec()


class BatchingSpec(StrictModel):
    max_batch_size: int = Field(32, ge=1, description="most items in one forward pass; 1 turns batching off")
    max_wait_ms: float = Field(5.0, ge=0.0, description="how long a first request waits for others to join it")


class LimitsSpec(StrictModel):
    max_body_mb: float = Field(10.0, gt=0.0, description="request bodies above this get 413")
    max_pixels: int = Field(40_000_000, ge=1, description="images with more pixels (width x height, read from the "
                                                           "header before decoding) get 413")
    max_batch: int = Field(256, ge=1, description="most instances in one request")
    max_text_chars: int = Field(100_000, ge=1, description="longest text accepted")
    max_request_pixels: int = Field(64_000_000, ge=1, description="most image pixels in one request, all its images "
                                                                  "together (read from the headers before decoding); "
                                                                  "more gets 413")
    max_request_bytes: int = Field(32_000_000, ge=1, description="most decoded bytes of texts and rows in one request "
                                                                 "(UTF-8 characters, 8 per number); more gets 413")
    max_server_pixels: int = Field(256_000_000, ge=1, description="most image pixels all requests being decoded and "
                                                                  "predicted hold at once, per server process")
    max_server_bytes: int = Field(256_000_000, ge=1, description="the same for texts and rows")
    queue_s: float = Field(2.0, ge=0.0, description="how long a request waits for the server-wide budget before a 503 "
                                                    "with Retry-After")
    timeout_s: float = Field(30.0, gt=0.0, description="a request not answered by then gets 504")
    read_timeout_s: float = Field(30.0, gt=0.0, description="a request's headers, and then its body, not received "
                                                            "within this gets 408 and the connection is closed")
    max_connections: int = Field(1000, ge=1, description="most open connections per server process; a request "
                                                         "beyond gets 503")
    shutdown_grace_s: float = Field(20.0, gt=0.0, description="on SIGTERM, in-flight requests get this long; then the "
                                                              "process exits (Kubernetes kills at 30 s)")

    @model_validator(mode="after")
    def _budgets_fit(self) -> LimitsSpec:
        # a request the server-wide budget can never hold would wait, then get 503 forever
        for request, server in (("max_request_pixels", "max_server_pixels"), ("max_request_bytes",
                                                                             "max_server_bytes")):
            if getattr(self, request) > getattr(self, server):
                raise ValueError(f"{request} ({getattr(self, request)}) is over {server} ({getattr(self, server)})")
        return self


class RequestLogSpec(StrictModel):
    sample: float = Field(0.0, ge=0.0, le=1.0, description="share of requests whose inputs and predictions are "
                                                         "logged (0 = off), for `dlforge monitor --from-log`")
    path: str | None = Field(None, description="SQLite file; default <run>/serve/requests.sqlite, or "
                                               "$DLFORGE_REQUEST_LOG")


class DriftWindowSpec(StrictModel):
    window: int = Field(0, ge=0, description="recent inputs kept and compared with the run's reference profile; "
                                             "drift gauges on /metrics (0 = off)")
    every_s: float = Field(60.0, gt=0.0, description="seconds between comparisons (only when new inputs came)")
    min_items: int = Field(30, ge=10, description="inputs the window needs before its first comparison")


class ServeSpec(StrictModel):
    """`serve:`: how `dlforge serve` runs this model; `--set serve.<field>=...` overrides at start."""

    batching: BatchingSpec = BatchingSpec()
    limits: LimitsSpec = LimitsSpec()
    request_log: RequestLogSpec = RequestLogSpec()
    monitor: DriftWindowSpec = DriftWindowSpec()


class CardSpec(StrictModel):
    """`card:`: what the model card cannot learn from the run."""

    intended_use: str = Field("", description="who should use the model, for what")
    out_of_scope: str = Field("", description="uses the model is not made or tested for")
    ethical_considerations: str = ""
    caveats: str = ""
    authors: str = ""
    license: str | None = Field(None, description="an SPDX id, e.g. apache-2.0")


class SpecBase(StrictModel):
    """Fields every task's spec has. Task files subclass this with their own `data` and `model`."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="run name (letters, digits, _ . -)")
    task: str
    description: str = ""
    train: TrainSpec = TrainSpec()
    serve: ServeSpec = ServeSpec()
    card: CardSpec = CardSpec()


def resolve_path(value: str, info: ValidationInfo) -> str:
    """Relative file paths in a spec are relative to the spec file's folder."""
    base = (info.context or {}).get("base_dir")
    if base is None or ":" in value.split("/")[0] or Path(value).is_absolute():
        return value
    return str((Path(base) / value).resolve())


# ---------------------------------------------------------------- loading


class ModelSpec(StrictModel):
    """`model:`: a registered architecture, its options, and where its first weights come from.

    Each task subclasses it with its registry and the factory arguments it sets itself.
    """

    registry: ClassVar[Registry]
    reserved: ClassVar[tuple[str, ...]]  # factory arguments the task fills in (num_classes, ...)

    name: str
    pretrained: str | None = Field(
        None, description="a run directory, a .safetensors file, hf-hub:<repo>, or 'default' (library weights)")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="architecture options, e.g. {width: 64}")

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        try:
            cls.registry.check(name)
        except DlforgeError as e:
            raise ValueError(str(e)) from None
        return name

    @field_validator("pretrained")
    @classmethod
    def _path(cls, value: str | None, info: ValidationInfo) -> str | None:
        return value if value in (None, LIBRARY) or value.startswith("hf-hub:") else resolve_path(value, info)

    @model_validator(mode="after")
    def _kwargs_fit(self) -> ModelSpec:
        params = inspect.signature(self.registry.get(self.name)).parameters
        if any(p.kind is p.VAR_KEYWORD for p in params.values()):
            return self  # a library model: checked when built
        allowed = [n for n in params if n not in self.reserved]
        for key in self.kwargs:
            if key not in allowed:
                raise ValueError(f"kwargs: {self.name} takes no option {key!r}; it takes: {', '.join(allowed)}")
        return self

    @classmethod
    def build(cls, name: str, kwargs: dict[str, Any], **fixed: Any) -> Any:
        """The model `name` with the task's `fixed` arguments and the user's `kwargs`."""
        try:
            return cls.registry.get(name)(**fixed, **kwargs)
        except TypeError as e:  # a library model rejected an option of model.kwargs
            raise DlforgeError(f"model.kwargs: {name} does not take {kwargs}: {e}") from None


def spec_class(task: str) -> type[SpecBase]:
    return TASKS.get(task).spec_class


# A spec is a page of YAML; a bigger file is a mistake (a data file given as the spec), and PyYAML parses a 1 GB
# line for minutes before saying so.
MAX_SPEC_BYTES = 1 << 20


def load_spec(path: str | Path, overrides: typing.Sequence[str] = ()) -> SpecBase:
    """Read, override (`a.b=value`, value parsed as YAML) and validate a spec file (at most MAX_SPEC_BYTES)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:  # read to one byte past the limit, never whole: also a pipe or /dev/zero
            data = f.read(MAX_SPEC_BYTES + 1)
    except OSError as e:
        raise SpecError(f"{path}: cannot read spec: {e.strerror or e}") from None
    if len(data) > MAX_SPEC_BYTES:
        raise SpecError(f"{path}: not a spec: larger than {MAX_SPEC_BYTES // 2**20} MB (a spec is a page of YAML)")
    try:
        text = data.decode()
    except UnicodeDecodeError as e:
        raise SpecError(f"{path}: not UTF-8 text (byte {e.start}): a spec is a YAML file") from None
    try:
        raw = yaml.safe_load(text)
        root = yaml.compose(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise SpecError(f"{where}: not valid YAML: {getattr(e, 'problem', e)}") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: a spec is a YAML mapping (name:, task:, data:, model:, train:)")
    set_at = {}
    for item in overrides:
        loc = apply_override(raw, item)
        set_at[loc] = item
    return validate_spec(raw, source=str(path), root=root, set_at=set_at, base_dir=path.parent)


def validate_spec(raw: dict, source: str = "<spec>", root: yaml.Node | None = None,
                  set_at: dict[tuple, str] | None = None, base_dir: Path | None = None) -> SpecBase:
    """Validate a spec dict; errors name `source`, the YAML line (from `root`) or the --set item."""
    set_at = set_at or {}
    task = raw.get("task")
    if not isinstance(task, str):
        raise SpecError(_where(source, root, set_at, ("task",)) + "task: required, one of "
                        + ", ".join(repr(n) for n in TASKS.names()))
    if task not in TASKS.names():
        raise SpecError(_where(source, root, set_at, ("task",)) +
                        f"task: {task!r} is not a known task{did_you_mean(task, TASKS.names())}; "
                        f"known: {', '.join(TASKS.names())}")
    cls = spec_class(task)
    raw = copy.deepcopy(raw)  # the caller's dict stays as it was
    renamed = apply_deprecations(raw, source)
    try:
        return cls.model_validate(raw, context={"base_dir": base_dir})
    except ValidationError as e:
        errors = e.errors()
        first = errors[0]
        more = f" (and {len(errors) - 1} more error{'s' * (len(errors) > 2)})" if len(errors) > 1 else ""
        loc = next((renamed[new] + first["loc"][len(new):] for new in renamed if first["loc"][:len(new)] == new),
                   first["loc"])  # an error under a renamed field: its line is the old name's
        raise SpecError(_where(source, root, set_at, loc) + _describe(cls, first) + more) from None


# ---------------------------------------------------------------- deprecations

# Renamed spec fields (dotted paths) and model names (per task), old -> new. A spec or a run's spec.yaml with an old
# name still validates, with a FutureWarning: runs written by an older dlforge keep loading. Add a line when renaming.
RENAMED_FIELDS: dict[str, str] = {
    "train.accumulate": "train.accumulate_grad_batches",  # accumulate what? (Lightning's name)
}
RENAMED_MODELS: dict[tuple[str, str], str] = {}  # (task, old model name) -> new model name


def apply_deprecations(raw: dict, source: str = "<spec>") -> dict[tuple, tuple]:
    """Rename old field paths and model names in `raw` (in place), warning for each; returns new loc -> old loc.

    Where a spec has both names (an old file with a `--set` of the new one), the new one wins."""
    renamed = {}
    for old, new in RENAMED_FIELDS.items():
        *parents, key = old.split(".")
        node = _mapping_at(raw, parents)
        if node is None or key not in node:
            continue
        *new_parents, new_key = new.split(".")
        target = _mapping_at(raw, new_parents, create=True)
        if target is None:  # something else where the new field's parent goes: validation says what
            continue
        target.setdefault(new_key, node.pop(key))
        _deprecated(f"{source}: {old} was renamed {new}")
        renamed[tuple(new.split("."))] = tuple(old.split("."))
    model = raw.get("model")
    if isinstance(model, dict) and isinstance(model.get("name"), str):
        model["name"] = renamed_model(str(raw.get("task")), model["name"], source)
    return renamed


def renamed_model(task: str, name: str, source: str = "<spec>") -> str:
    """The current name of the `task` model called `name` (itself unless renamed, with a warning)."""
    new = RENAMED_MODELS.get((task, name))
    if new is None:
        return name
    _deprecated(f"{source}: model {name!r} was renamed {new!r}")
    return new


def _deprecated(message: str) -> None:
    warnings.warn(f"{message}; the old name still loads, but is deprecated", FutureWarning, stacklevel=4)


def _mapping_at(raw: dict, keys: list[str], create: bool = False) -> dict | None:
    """The mapping at `keys` in `raw` (made, with `create`), or None where something else is there."""
    node: Any = raw
    for key in keys:
        if create and key not in node:
            node[key] = {}
        node = node.get(key)
        if not isinstance(node, dict):
            return None
    return node


def apply_override(raw: dict, item: str) -> tuple:
    """Apply `a.b.c=value` to the nested dict in place; returns the loc it set."""
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise SpecError(f"--set {item}: expected KEY=VALUE, e.g. --set train.epochs=3")
    parts = key.split(".")
    node = raw
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise SpecError(f"--set {item}: {'.'.join(parts[:i + 1])} is {child!r}, not a mapping")
        node = child
    try:
        node[parts[-1]] = yaml.safe_load(value)
    except yaml.YAMLError:
        node[parts[-1]] = value
    return tuple(parts)


def _where(source: str, root: yaml.Node | None, set_at: dict[tuple, str], loc: tuple) -> str:
    for n in range(len(loc), 0, -1):
        if tuple(loc[:n]) in set_at:
            return f"--set {set_at[tuple(loc[:n])]}: "
    line = _yaml_line(root, loc)
    return f"{source}:{line}: " if line else f"{source}: "


def _yaml_line(node: yaml.Node | None, loc: tuple) -> int | None:
    """The 1-based line of the deepest YAML node found along `loc`."""
    line = None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            match = [(k, v) for k, v in node.value if k.value == str(key)]
            if not match:
                break
            key_node, node = match[0]
            line = key_node.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _describe(cls: type[BaseModel], err: dict) -> str:
    loc = err["loc"]
    path = ".".join(str(p) for p in loc)
    kind, value = err["type"], err.get("input")
    if kind == "extra_forbidden":
        allowed = list(_model_at(cls, loc[:-1]).model_fields)
        return (f"{path}: unknown field{did_you_mean(str(loc[-1]), allowed)}; "
                f"allowed here: {', '.join(allowed)}")
    if kind == "missing":
        return f"{path}: required field is missing"
    if kind == "literal_error":
        expected = err["ctx"]["expected"]
        options = [o.strip(" '\"") for o in expected.replace(" or ", ",").split(",")]
        return f"{path}: {value!r} is not allowed; expected {expected}{did_you_mean(str(value), options)}"
    message = err["msg"].removeprefix("Value error, ")
    # Name the bad value unless the message already does (or it is a whole mapping).
    if isinstance(value, dict) or repr(value) in message:
        return f"{path}: {message}"
    return f"{path}: {value!r}: {message}"


def _model_at(cls: type[BaseModel], loc: tuple) -> type[BaseModel]:
    """The pydantic model class that validates the mapping at `loc`."""
    for key in loc:
        field = cls.model_fields.get(str(key))
        if field is None:
            break
        for candidate in _flatten(field.annotation):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                cls = candidate
                break
    return cls


def _flatten(annotation: Any) -> list:
    if typing.get_origin(annotation) in (Union, types.UnionType):
        return [a for arg in typing.get_args(annotation) for a in _flatten(arg)]
    return [annotation]


def spec_to_yaml(spec: SpecBase) -> str:
    return yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)


def json_schema() -> dict:
    """The JSON Schema of every task's spec, dispatched on `task` (for editor completion)."""
    classes = tuple(TASKS.get(name).spec_class for name in TASKS.names())
    if len(classes) == 1:
        schema = TypeAdapter(classes[0]).json_schema()
    else:
        union = functools.reduce(operator.or_, classes)  # A | B | ...
        schema = TypeAdapter(typing.Annotated[union, Field(discriminator="task")]).json_schema()
    schema["title"] = "dlforge spec"
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


__all__ = ["SpecBase", "SpecError", "TrainSpec", "json_schema", "load_spec", "validate_spec"]
