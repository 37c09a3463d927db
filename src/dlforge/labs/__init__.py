"""Labs: runnable, measured experiments on the maths behind the models.

A lab is a function `lab(out, quick=False, **options) -> (results, summary_markdown)` registered
under its name; its docstring's first line is its description. It writes its figures into `out`;
`run_lab` then writes `summary.md` and, last, `results.json`: a folder with a results.json holds a
finished lab, so a stale one is removed before the lab starts.
"""

from __future__ import annotations

import inspect
import logging
import time
from pathlib import Path
from typing import Any

from dlforge._io import atomic_write_json, atomic_write_text
from dlforge.errors import DlforgeError
from dlforge.registry import LABS

log = logging.getLogger("dlforge")


def _load() -> None:
    """Import the lab modules (they register themselves); lazily, so `dlforge --help` stays fast."""
    import dlforge.labs.attention
    import dlforge.labs.autodiff
    import dlforge.labs.entropy
    import dlforge.labs.gradient_descent
    import dlforge.labs.hessian
    import dlforge.labs.transfer_learning
    import dlforge.labs.vanishing_gradients  # noqa: F401


def describe() -> dict[str, str]:
    """Lab name -> its one-line description."""
    _load()
    return {name: (LABS.get(name).__doc__ or "").strip().splitlines()[0] for name in LABS.names()}


def run_lab(name: str, out: Path, quick: bool = False, **options: Any) -> dict[str, Any]:
    """Run lab `name` into folder `out`; return its results (also in out/results.json)."""
    _load()
    lab = LABS.get(name)  # an unknown name raises a DlforgeError with "did you mean"
    params = inspect.signature(lab).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(options) - set(params))
        if unknown:
            known = [p for p in params if p not in ("out", "quick")]
            raise DlforgeError(f"lab {name} takes no option {', '.join(unknown)}; its options: {', '.join(known)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").unlink(missing_ok=True)
    started = time.perf_counter()
    log.info("lab %s: writing into %s%s", name, out, " (quick)" if quick else "")
    results, summary = lab(out, quick=quick, **options)
    results = {"lab": name, "quick": quick, "time_s": round(time.perf_counter() - started, 1), **results}
    atomic_write_text(out / "summary.md", summary)
    atomic_write_json(out / "results.json", results)
    return results
