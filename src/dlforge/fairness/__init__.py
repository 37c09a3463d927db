"""Fairness: audit a classifier's data and decisions across groups, and mitigate what the audit finds.

- `audit_run(run, sensitive, ...)`: `dlforge audit` (see `dlforge.fairness.audit`).
- `train.fairness.reweigh: [column]`: Kamiran-Calders sample weights at training (`dlforge.training.reweigh`).
- `GroupThresholds`: fairlearn's ThresholdOptimizer kept in a run as JSON and applied by the Predictor
  (`dlforge.tasks.thresholds`).

Importing the package imports neither fairlearn nor sklearn.
"""

from __future__ import annotations

from typing import Any

from dlforge.fairness.thresholds import fit_thresholds
from dlforge.tasks.thresholds import GroupThresholds

__all__ = ["GroupThresholds", "audit_run", "fit_thresholds"]


def audit_run(*args: Any, **kwargs: Any) -> tuple[dict, Any]:
    """See `dlforge.fairness.audit.audit_run` (imported when called: it needs fairlearn and sklearn)."""
    from dlforge.fairness.audit import audit_run as run_audit

    return run_audit(*args, **kwargs)
