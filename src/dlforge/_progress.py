"""Progress for long loops outside the Trainer: a rich bar on a terminal, log lines otherwise."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.progress import track

T = TypeVar("T")
log = logging.getLogger("dlforge")


def progress(items: Iterable[T], total: int, description: str, min_total: int = 500,
             every_s: float = 10.0) -> Iterator[T]:
    """Yield `items`, showing progress when there are at least `min_total` of them."""
    if total < min_total:
        yield from items
    elif sys.stderr.isatty():
        yield from track(items, total=total, description=description, transient=True)
    else:
        last = time.monotonic()
        for i, item in enumerate(items):
            if time.monotonic() - last > every_s:
                last = time.monotonic()
                log.info("%s: %d/%d", description, i, total)
            yield item
