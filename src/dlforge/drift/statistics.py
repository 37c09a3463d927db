"""Drift statistics: is `current` drawn from the distribution of `reference`?

Per column, Evidently's documented defaults, so that results compare with its reports:

    reference rows <= 1000                         reference rows > 1000
    numeric, > 5 values  two-sample KS, p < 0.05   Wasserstein distance / reference std >= 0.1
    categorical          chi-square*,   p < 0.05   Jensen-Shannon distance >= 0.1
    binary (2 values)    z-test on proportions, p < 0.05

(a numeric column with at most 5 distinct values counts as categorical). *One departure: chi-square
is the test of homogeneity of both samples' counts (see `_chisquare`). PSI is reported beside
each test (drift would be >= 0.1). A column's method and threshold can be overridden; the dataset
drifts when the share of drifted columns reaches `share` (0.5).

For embeddings (images, texts), `mmd_test` (an RBF-kernel maximum mean discrepancy with a permutation
test) and `domain_classifier_auc` (how well a classifier tells current from reference rows).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import stats
from scipy.spatial import distance

from dlforge._progress import progress

Method = Literal["ks", "chisquare", "z", "wasserstein", "jensenshannon", "psi"]
P_VALUE_METHODS = {"ks", "chisquare", "z"}  # drift when the p-value is below the threshold; others: at or above
DEFAULT_THRESHOLDS = {"ks": 0.05, "chisquare": 0.05, "z": 0.05, "wasserstein": 0.1, "jensenshannon": 0.1, "psi": 0.1}
SMALL_REFERENCE = 1000  # Evidently: up to this many reference rows, statistical tests; above, distances


@dataclass
class ColumnDrift:
    column: str
    kind: Literal["numeric", "categorical", "binary"]
    method: str
    score: float  # the p-value (ks, chisquare, z) or the distance
    threshold: float
    drifted: bool
    psi: float
    reference_rows: int
    current_rows: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DatasetDrift:
    columns: list[ColumnDrift]
    share: float  # of drifted columns
    threshold: float
    drifted: bool
    skipped: dict[str, str] = field(default_factory=dict)  # column -> why it was not compared

    @property
    def drifted_columns(self) -> list[str]:
        return [c.column for c in self.columns if c.drifted]

    def to_dict(self) -> dict[str, Any]:
        return {"drifted": self.drifted, "share": self.share, "threshold": self.threshold,
                "drifted_columns": self.drifted_columns, "skipped": self.skipped,
                "columns": [c.to_dict() for c in sorted(self.columns, key=_severity)]}


def column_kind(reference: pd.Series, current: pd.Series) -> Literal["numeric", "categorical", "binary"]:
    both = pd.concat([reference, current]).dropna()
    if not _more_than(both, 2):
        return "binary"
    if pd.api.types.is_numeric_dtype(reference) and not pd.api.types.is_bool_dtype(reference) and \
            _more_than(both, 5):
        return "numeric"
    return "categorical"


def _more_than(column: pd.Series, n: int) -> bool:
    """Whether `column` holds more than `n` distinct values: its head usually tells, without counting them all."""
    return column.iloc[:1000].nunique() > n or column.nunique() > n


def default_method(kind: str, reference_rows: int) -> Method:
    if reference_rows <= SMALL_REFERENCE:
        return {"numeric": "ks", "categorical": "chisquare", "binary": "z"}[kind]
    return "wasserstein" if kind == "numeric" else "jensenshannon"


def column_drift(reference: pd.Series, current: pd.Series, method: Method | None = None,
                 threshold: float | None = None, name: str | None = None) -> ColumnDrift:
    """One column's drift test; missing and infinite values are left out of both samples."""
    reference, current = _present(reference), _present(current)
    kind = column_kind(reference, current)
    method = method or default_method(kind, len(reference))
    threshold = DEFAULT_THRESHOLDS[method] if threshold is None else threshold
    score = float(TESTS[method](reference, current, kind))
    drifted = score < threshold if method in P_VALUE_METHODS else score >= threshold
    return ColumnDrift(str(name if name is not None else reference.name), kind, method, score, threshold,
                       bool(drifted), float(psi(reference, current, kind)), len(reference), len(current))


def dataset_drift(reference: pd.DataFrame, current: pd.DataFrame, columns: list[str] | None = None,
                  overrides: dict[str, dict[str, Any]] | None = None, share: float = 0.5) -> DatasetDrift:
    """Drift of every shared column (or `columns`); `overrides` maps a column to {method, threshold}."""
    overrides = overrides or {}
    unknown = sorted(set(overrides) - set(reference.columns))
    if unknown:
        raise ValueError(f"drift overrides name columns the reference lacks: {', '.join(unknown)}")
    skipped, pairs = {}, {}
    for name in columns or list(reference.columns):
        if name not in current.columns:
            skipped[name] = "not in the current data"
            continue
        ref, cur = _present(reference[name]), _present(current[name])
        if len(ref) == 0 or len(cur) == 0:
            skipped[name] = "no values in the reference" if len(ref) == 0 else "no values in the current data"
            continue
        pairs[name] = ref, cur
    # Columns in threads: sorting and histograms (most of the time) run in numpy and scipy without the GIL.
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        futures = [pool.submit(column_drift, ref, cur, name=name, **overrides.get(name, {}))
                   for name, (ref, cur) in pairs.items()]
        for _ in progress(as_completed(futures), len(futures), "drift per column", min_total=50):
            pass
    results = [f.result() for f in futures]
    drifted_share = sum(c.drifted for c in results) / len(results) if results else 0.0
    return DatasetDrift(results, drifted_share, share, bool(results) and drifted_share >= share, skipped)


# ---------------------------------------------------------------- the tests, Evidently's way


def _ks(reference: pd.Series, current: pd.Series, kind: str) -> float:
    return stats.ks_2samp(reference.to_numpy(np.float64), current.to_numpy(np.float64)).pvalue


def _chisquare(reference: pd.Series, current: pd.Series, kind: str) -> float:
    # Pearson's chi-square test of homogeneity on the (2, categories) table of counts. Evidently instead tests
    # the current counts against the reference proportions taken as exact; that ignores the reference's own
    # sampling noise, and on two equal samples of one distribution it alarms about a third of the time.
    table = np.stack(_counts(reference, current))
    return stats.chi2_contingency(table, correction=False).pvalue


def _z(reference: pd.Series, current: pd.Series, kind: str) -> float:
    """Two-sided z-test of a difference in the proportion of one value (the binary column's first)."""
    value = sorted(reference.value_counts().index.union(current.value_counts().index, sort=False), key=str)[0]
    n1, n2 = len(reference), len(current)
    p1, p2 = float((reference == value).mean()), float((current == value).mean())
    pooled = (p1 * n1 + p2 * n2) / (n1 + n2)
    se = np.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return 1.0 if p1 == p2 else 0.0
    return float(2 * stats.norm.sf(abs(p1 - p2) / se))


def _wasserstein(reference: pd.Series, current: pd.Series, kind: str) -> float:
    ref = reference.to_numpy(np.float64)
    return stats.wasserstein_distance(ref, current.to_numpy(np.float64)) / max(np.std(ref), 0.001)


def _jensenshannon(reference: pd.Series, current: pd.Series, kind: str) -> float:
    return float(distance.jensenshannon(*binned(reference, current, kind, fill=False)))  # as Evidently: no filling


def psi(reference: pd.Series, current: pd.Series, kind: str) -> float:
    """Population stability index over the shared bins: sum (ref - cur) * ln(ref / cur)."""
    ref, cur = binned(reference, current, kind)
    return float(np.sum((ref - cur) * np.log(ref / cur)))


def binned(reference: pd.Series, current: pd.Series, kind: str, bins: str | int = "sturges", fill: bool = True
           ) -> tuple[np.ndarray, np.ndarray]:
    """Both samples as shares of shared bins (numeric: histogram edges of both together; otherwise one bin per
    value); with `fill`, empty bins get a small share so that ratios and logarithms stay finite."""
    if kind == "numeric" and _more_than(reference, 20):
        edges = np.histogram_bin_edges(np.concatenate([reference.to_numpy(np.float64),
                                                       current.to_numpy(np.float64)]), bins=bins)
        ref = np.histogram(reference.to_numpy(np.float64), edges)[0] / len(reference)
        cur = np.histogram(current.to_numpy(np.float64), edges)[0] / len(current)
    else:
        ref, cur = (counts / total for counts, total in zip(_counts(reference, current),
                                                             (len(reference), len(current)), strict=True))
    for shares in (ref, cur) if fill else ():
        smallest = shares[shares > 0].min() if (shares > 0).any() else 1.0
        shares[shares == 0] = smallest / 1e6 if smallest <= 1e-4 else 1e-4
    return ref, cur


def _counts(reference: pd.Series, current: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Both samples' counts of every value either holds, aligned. Counted by pandas, never value by value in
    Python (pandas 3 keeps strings in Arrow: a Python set over them is slow)."""
    ref, cur = reference.value_counts(), current.value_counts()
    keys = ref.index.union(cur.index, sort=False)
    return (ref.reindex(keys, fill_value=0).to_numpy(np.float64), cur.reindex(keys, fill_value=0).to_numpy(np.float64))


def _present(column: pd.Series) -> pd.Series:
    """Without missing values, nor infinite ones in a numeric column."""
    column = column.dropna()
    if pd.api.types.is_float_dtype(column):
        column = column[np.isfinite(column.to_numpy(np.float64))]
    return column


TESTS = {"ks": _ks, "chisquare": _chisquare, "z": _z, "wasserstein": _wasserstein, "jensenshannon": _jensenshannon,
         "psi": psi}


def _severity(c: ColumnDrift) -> tuple[bool, float]:
    """Drifted first, then by how far past the threshold (p-values: smaller is worse)."""
    margin = (c.threshold - c.score) if c.method in P_VALUE_METHODS else (c.score - c.threshold)
    return (not c.drifted, -margin)


# ---------------------------------------------------------------- embeddings


def mmd_test(x: np.ndarray, y: np.ndarray, permutations: int = 200, seed: int = 0) -> tuple[float, float]:
    """(MMD², p-value) of samples x (n, d) and y (m, d) under an RBF kernel whose bandwidth is the median
    pairwise distance; the p-value is the share of label permutations with an MMD² at least as large."""
    z = np.concatenate([x, y]).astype(np.float64)  # (n + m, d)
    sq = np.sum(z * z, 1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * z @ z.T, 0.0)  # squared distances
    bandwidth = np.median(d2[np.triu_indices(len(z), 1)]) or 1.0
    k = np.exp(-d2 / bandwidth)
    n = len(x)
    rng = np.random.default_rng(seed)

    def mmd2(order: np.ndarray) -> float:
        a, b = order[:n], order[n:]
        kxx, kyy, kxy = k[np.ix_(a, a)], k[np.ix_(b, b)], k[np.ix_(a, b)]
        m = len(b)
        return float((kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                     - 2 * kxy.mean())

    observed = mmd2(np.arange(len(z)))
    null = np.array([mmd2(rng.permutation(len(z))) for _ in range(permutations)])
    return observed, float((1 + np.sum(null >= observed)) / (1 + permutations))


def domain_classifier_auc(x: np.ndarray, y: np.ndarray, seed: int = 0) -> float:
    """Cross-validated ROC-AUC of a logistic regression telling y's rows (1) from x's (0): 0.5 = the same."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    features = np.concatenate([x, y])
    labels = np.r_[np.zeros(len(x)), np.ones(len(y))]
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    folds = StratifiedKFold(5, shuffle=True, random_state=seed)
    scores = cross_val_predict(model, features, labels, cv=folds, method="predict_proba")[:, 1]
    return float(roc_auc_score(labels, scores))
