"""Fairness: audit a classifier's data and decisions across groups, and mitigate what the audit finds.

- `audit_run(run, sensitive, ...)`: `dlforge audit` (see `dlforge.fairness.audit`).
- `train.fairness.reweigh: [column]`: Kamiran-Calders sample weights at training (`dlforge.fairness.reweigh`).
- `GroupThresholds`: fairlearn's ThresholdOptimizer kept in a run as JSON and applied by the Predictor
  (`dlforge.fairness.thresholds`).

Only the thresholds are imported with the package: the Predictor (and so the server) loads them with every run.
"""

from __future__ import annotations

from typing import Any

from dlforge.fairness.thresholds import GroupThresholds, fit_thresholds

__all__ = ["GroupThresholds", "audit_run", "fit_thresholds"]


def audit_run(*args: Any, **kwargs: Any) -> tuple[dict, Any]:
    """See `dlforge.fairness.audit.audit_run` (imported when called: it needs fairlearn and sklearn)."""
    from dlforge.fairness.audit import audit_run as run_audit

    return run_audit(*args, **kwargs)
