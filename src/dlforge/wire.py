"""Wire formats: how one JSON instance (or uploaded file) becomes an item the Predictor takes.

Each task names its format (`Task.wire`), so the server, its OpenAPI schema and its try-it page never
branch on a task's name: a new task picks one of these, or adds its own.

Decoding is where untrusted input is checked: every failure is an `InputError` naming the field,
with 400 for malformed input and 413 for input over a limit (an image's pixel count is read from
its header before a single pixel is decoded, so a decompression bomb costs nothing).

Before any instance of a request is decoded, `Wire.cost` says what decoding it will hold (image pixels, from the
headers; bytes of texts and rows), so that a request over its budget is refused having decoded nothing.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, Protocol

import numpy as np
import torch

from dlforge.errors import InputError

if TYPE_CHECKING:
    import pandas as pd


class Limits(Protocol):
    max_pixels: int
    max_text_chars: int


class Cost(NamedTuple):
    """What decoding an instance holds in memory: image pixels, and bytes of everything else."""

    pixels: int = 0
    bytes: int = 0

    def __add__(self, other: tuple) -> Cost:
        return Cost(self.pixels + other[0], self.bytes + other[1])


class Wire:
    kind: ClassVar[str]  # what the try-it page shows: "image", "text" or "series"

    def decode(self, value: Any, field: str, limits: Limits) -> Any:
        """One JSON instance (or raw bytes of an upload) -> one Predictor item."""
        raise NotImplementedError

    def cost(self, value: Any, field: str, limits: Limits) -> Cost:
        """What decoding `value` will hold, found without decoding it. By default its size as data: UTF-8 bytes of
        strings, 8 per number."""
        return Cost(0, data_size(value))

    def encode(self, item: Any) -> Any:
        """The other way: a Predictor item (as the task's data gives it) -> its JSON instance, for clients."""
        raise NotImplementedError

    def example(self, meta: dict[str, Any]) -> Any:
        """A valid instance for this model (README and example requests, the server's warm-up)."""
        raise NotImplementedError

    def schema(self, meta: dict[str, Any]) -> dict[str, Any]:
        """JSON Schema of one instance, for /openapi.json and /metadata."""
        raise NotImplementedError

    def statistics(self, items: list[Any], meta: dict[str, Any]) -> pd.DataFrame:
        """Simple per-item input statistics, one row per item: what drift monitoring compares besides the
        model's embeddings."""
        raise NotImplementedError


class ImageWire(Wire):
    """A base64 string (a data URL prefix is allowed), {"b64": ...}, raw bytes of an upload, or an (H, W[, C])
    array of uint8 (nested lists, as KServe V2 UINT8 tensors arrive)."""

    kind = "image"

    def decode(self, value: Any, field: str, limits: Limits) -> Any:
        value, field = _image_bytes(value, field)
        if isinstance(value, bytes | bytearray):
            image = _open_image(bytes(value), field, limits.max_pixels)
            try:
                image.load()  # now decode: a truncated file fails here
            except (OSError, ValueError, SyntaxError) as e:
                raise InputError(field, f"the image cannot be decoded ({e})") from None
            return image
        if isinstance(value, list | np.ndarray):
            try:
                array = np.asarray(value)
            except (ValueError, TypeError):  # ragged nested lists
                raise InputError(field, "an image array must be (H, W) or (H, W, C) integers") from None
            if array.ndim not in (2, 3) or array.dtype.kind not in "iu" or array.size == 0:
                raise InputError(field, f"an image array must be (H, W) or (H, W, C) integers, got shape "
                                        f"{array.shape} of {array.dtype}")
            if array.shape[0] * array.shape[1] > limits.max_pixels:
                raise InputError(field, f"{array.shape[1]}x{array.shape[0]} pixels is over the limit of "
                                        f"{limits.max_pixels}", 413)
            if array.min() < 0 or array.max() > 255:
                raise InputError(field, "image array values must lie in 0..255")
            return array.astype(np.uint8)
        raise InputError(field, f"expected an image as a base64 string, got {_kind(value)}")

    def cost(self, value: Any, field: str, limits: Limits) -> Cost:
        """Pixels from the file's header (or the array's shape); what `decode` would refuse is refused here."""
        value, field = _image_bytes(value, field)
        if isinstance(value, bytes | bytearray):
            width, height = _open_image(bytes(value), field, limits.max_pixels).size
            return Cost(width * height, 0)
        if isinstance(value, np.ndarray) and value.ndim >= 2:
            return Cost(value.shape[0] * value.shape[1], 0)
        if isinstance(value, list) and value and isinstance(value[0], list):  # rows of pixels, as JSON gives them
            return Cost(len(value) * len(value[0]), 0)
        return Cost()  # not an image: `decode` says so

    def encode(self, item: Any) -> str:
        from PIL import Image

        from dlforge.data.images import to_uint8_tensor

        pixels = to_uint8_tensor(item, 3).permute(1, 2, 0).numpy()  # (H, W, 3)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "PNG")
        return base64.b64encode(buffer.getvalue()).decode()

    def example(self, meta: dict[str, Any]) -> str:
        size = meta.get("preprocessing", {}).get("image_size") or 32
        height, width = (size, size) if isinstance(size, int) else size
        return self.encode(np.full((height, width, 3), 128, np.uint8))

    def schema(self, meta: dict[str, Any]) -> dict[str, Any]:
        return {"oneOf": [{"type": "string", "contentEncoding": "base64", "description": "a PNG/JPEG/... file"},
                          {"type": "object", "properties": {"b64": {"type": "string"}}, "required": ["b64"],
                           "additionalProperties": False}]}

    def statistics(self, items: list[Any], meta: dict[str, Any]) -> pd.DataFrame:
        """width, height, brightness (mean grey level, 0-1), contrast (its std) and sharpness (the variance of
        the Laplacian of the grey image: blur lowers it)."""
        import pandas as pd
        import torch.nn.functional as F

        from dlforge.data.images import to_uint8_tensor

        rows = []
        laplacian = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])[None, None]
        for item in items:
            grey = to_uint8_tensor(item, 1).float()[None] / 255  # (1, 1, H, W)
            edges = F.conv2d(grey, laplacian) if min(grey.shape[-2:]) >= 3 else torch.zeros(1)
            rows.append({"width": grey.shape[-1], "height": grey.shape[-2], "brightness": float(grey.mean()),
                         "contrast": float(grey.std()), "sharpness": float(edges.var()) if edges.numel() > 1 else 0.0})
        return pd.DataFrame(rows)


class TextWire(Wire):
    """A string, or {"text": ...}."""

    kind = "text"

    def decode(self, value: Any, field: str, limits: Limits) -> str:
        if isinstance(value, dict) and set(value) == {"text"}:
            value, field = value["text"], f"{field}.text"
        if isinstance(value, bytes):
            try:
                value = value.decode()
            except UnicodeDecodeError:
                raise InputError(field, "text is not valid UTF-8") from None
        if not isinstance(value, str):
            raise InputError(field, f"expected a text (string), got {_kind(value)}")
        if not value.strip():
            raise InputError(field, "the text is empty")
        if len(value) > limits.max_text_chars:
            raise InputError(field, f"{len(value)} characters is over the limit of {limits.max_text_chars}", 413)
        return value

    def encode(self, item: Any) -> str:
        return str(item)

    def example(self, meta: dict[str, Any]) -> str:
        return "The film was a gripping, beautiful surprise."

    def schema(self, meta: dict[str, Any]) -> dict[str, Any]:
        return {"oneOf": [{"type": "string", "minLength": 1},
                          {"type": "object", "properties": {"text": {"type": "string", "minLength": 1}},
                           "required": ["text"], "additionalProperties": False}]}

    def statistics(self, items: list[Any], meta: dict[str, Any]) -> pd.DataFrame:
        """characters, words, and the share of characters that are not ASCII letters, digits or spaces."""
        import pandas as pd

        texts = [item if isinstance(item, str) else str(item) for item in items]
        return pd.DataFrame({"characters": [len(t) for t in texts], "words": [len(t.split()) for t in texts],
                             "unusual_characters": [sum(not (c.isascii() and (c.isalnum() or c.isspace()))
                                                        for c in t) / max(len(t), 1) for t in texts]})


class SeriesWire(Wire):
    """{"series_id": ..., "history": {"timestamp": [...], "<column>": [...]}, "future": {...}, "static": {...}}:
    columns as lists (or a list of row objects), timestamps as ISO strings. A JSON string of that object is
    accepted too (KServe V2 BYTES)."""

    kind = "series"

    def decode(self, value: Any, field: str, limits: Limits) -> dict[str, Any]:
        if isinstance(value, str | bytes):
            try:
                value = json.loads(value)
            except ValueError:
                raise InputError(field, "expected a series object (or its JSON)") from None
        if not isinstance(value, dict):
            raise InputError(field, f"expected a series object with a history, got {_kind(value)}")
        unknown = sorted(set(value) - {"series_id", "history", "future", "static"})
        if unknown:
            raise InputError(f"{field}.{unknown[0]}", "unknown key; a series has series_id, history, future, static")
        if "history" not in value:
            raise InputError(f"{field}.history", "missing: the series' past values")
        static = value.get("static") or {}
        if not isinstance(static, dict):
            raise InputError(f"{field}.static", f"expected an object, got {_kind(static)}")
        return {"series_id": str(value.get("series_id", "series")), "history": _frame(value["history"],
                f"{field}.history"), "future": None if value.get("future") is None else
                _frame(value["future"], f"{field}.future"), "static": static}

    def encode(self, item: Any) -> dict[str, Any]:
        """A SeriesInput (or a dict of its fields) -> JSON."""
        fields = item if isinstance(item, dict) else vars(item)
        out = {"series_id": fields.get("series_id", "series"), "history": _columns(fields["history"])}
        if fields.get("future") is not None:
            out["future"] = _columns(fields["future"])
        if fields.get("static"):
            out["static"] = {k: v.item() if hasattr(v, "item") else v for k, v in fields["static"].items()}
        return out

    def example(self, meta: dict[str, Any]) -> dict[str, Any]:
        """The last `lookback` steps of a flat series (zeros), and zeros for the known future."""
        import pandas as pd

        enc = meta["encoding"]
        columns = [enc["target"], *enc["past"], *enc["known_future"]]
        steps = pd.date_range(end="2024-01-01", periods=enc["lookback"], freq=enc["freq"])
        example = {"series_id": next(iter(enc.get("scales") or {}), "series"),
                   "history": _columns(pd.DataFrame(0.0, index=steps, columns=columns))}
        if enc["known_future"]:
            ahead = pd.date_range(steps[-1], periods=enc["horizon"] + 1, freq=enc["freq"])[1:]
            example["future"] = _columns(pd.DataFrame(0.0, index=ahead, columns=enc["known_future"]))
        return example

    def statistics(self, items: list[Any], meta: dict[str, Any]) -> pd.DataFrame:
        """Per series column (the target and the covariates): its value at the window's last step (over all
        windows, the distribution of its values) and its standard deviation over the window (volatility)."""
        import pandas as pd

        enc = meta["encoding"]
        columns = [enc["target"], *enc["past"], *enc["known_future"]]
        rows = []
        for item in items:
            history = (item if isinstance(item, dict) else vars(item))["history"][columns]
            last, std = history.iloc[-1], history.std()
            rows.append({**{c: float(last[c]) for c in columns}, **{f"{c}_std": float(std[c]) for c in columns}})
        return pd.DataFrame(rows)

    def schema(self, meta: dict[str, Any]) -> dict[str, Any]:
        enc = meta.get("encoding", {})
        columns = [enc.get("target", "value"), *enc.get("past", []), *enc.get("known_future", [])]
        frame = {"type": "object", "description": "columns as lists: timestamp (ISO 8601) and "
                                                  + ", ".join(columns),
                 "properties": {"timestamp": {"type": "array", "items": {"type": "string"}}},
                 "required": ["timestamp"], "additionalProperties": {"type": "array"}}
        return {"type": "object", "required": ["history"], "additionalProperties": False,
                "properties": {"series_id": {"type": "string"}, "history": frame, "future": frame,
                               "static": {"type": "object"}}}


# ---------------------------------------------------------------- helpers


def _kind(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def data_size(value: Any) -> int:
    """Bytes a JSON value holds as data: strings by their UTF-8 length, numbers (and true, false, null) 8 each.
    Walked with a stack, not recursion: a client controls how deep the value is nested."""
    size, stack = 0, [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            size += len(v) if v.isascii() else len(v.encode("utf-8", "surrogatepass"))  # a lone surrogate is data too
        elif isinstance(v, bytes | bytearray):
            size += len(v)
        elif isinstance(v, np.ndarray):
            size += v.nbytes
        elif isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list | tuple):
            stack.extend(v)
        else:
            size += 8
    return size


def _image_bytes(value: Any, field: str) -> tuple[Any, str]:
    """An image instance as its file's bytes (base64 decoded, `{"b64": ...}` unwrapped), or as it came when it is
    not a string; and the field that names it."""
    if isinstance(value, dict) and set(value) == {"b64"}:
        value, field = value["b64"], f"{field}.b64"
    if isinstance(value, str):
        value = _b64(value, field)
    return value, field


def _b64(text: str, field: str) -> bytes:
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]  # data:image/png;base64,....
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InputError(field, "invalid base64") from None


def _open_image(data: bytes, field: str, max_pixels: int) -> Any:
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise InputError(field, "the image is empty")
    try:
        image = Image.open(io.BytesIO(data))  # reads the header only
    except Image.DecompressionBombError as e:  # PIL's own limit, when ours is set higher
        raise InputError(field, f"over the limit of {max_pixels} pixels ({e})", 413) from None
    except (UnidentifiedImageError, OSError, ValueError):
        raise InputError(field, "not an image file PIL can read (PNG, JPEG, ...)") from None
    width, height = image.size
    if width * height > max_pixels:
        raise InputError(field, f"{width}x{height} pixels is over the limit of {max_pixels}", 413)
    return image  # not decoded yet


def _columns(frame: Any) -> dict[str, list]:
    """A DataFrame on a DatetimeIndex -> {"timestamp": [ISO 8601, ...], column: [values, ...]} (NaN -> null)."""
    out = {"timestamp": [t.isoformat() for t in frame.index]}
    for name in frame.columns:
        out[str(name)] = [None if v != v else float(v) for v in frame[name].to_numpy(np.float64)]
    return out


def _frame(value: Any, field: str) -> Any:
    """Columns as lists, or a list of row objects -> a DataFrame on a DatetimeIndex."""
    import pandas as pd

    if isinstance(value, list) and all(isinstance(row, dict) for row in value):
        columns = {k for row in value for k in row}
        value = {k: [row.get(k) for row in value] for k in sorted(columns)}
    if not isinstance(value, dict):
        raise InputError(field, f"expected columns as an object of lists, got {_kind(value)}")
    if "timestamp" not in value:
        raise InputError(f"{field}.timestamp", "missing: one ISO 8601 time per step")
    lengths = {k: len(v) if isinstance(v, list) else -1 for k, v in value.items()}
    bad = next((k for k, n in lengths.items() if n < 0), None)
    if bad is not None:
        raise InputError(f"{field}.{bad}", f"expected a list, got {_kind(value[bad])}")
    if len(set(lengths.values())) > 1:
        raise InputError(field, f"columns differ in length: {lengths}")
    try:
        index = pd.DatetimeIndex(pd.to_datetime(value["timestamp"]))
    except (ValueError, TypeError, OverflowError):
        raise InputError(f"{field}.timestamp", "not ISO 8601 times") from None
    columns = {}
    for name, values in value.items():
        if name == "timestamp":
            continue
        try:
            columns[name] = np.asarray(values, dtype=np.float64)
        except (ValueError, TypeError):
            raise InputError(f"{field}.{name}", "expected numbers (null for missing)") from None
    return pd.DataFrame(columns, index=index)
