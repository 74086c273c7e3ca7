"""Per-feature drift statistics against a reference sample.

Numeric features use PSI on the reference's quantile bins by default (KS, Wasserstein and
Jensen-Shannon are available); categorical features use Jensen-Shannon distance (or chi-square).
Binned statistics are computed from counts, so partial counts from any worker merge by addition.
Jensen-Shannon distance uses the natural logarithm (scipy's default), for which 0.1 is the usual cut-off.

:func:`drift_report` compares two whole frames column by column (no sampling), for a one-off report.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> ref = Reference.numeric(rng.normal(0, 1, 2000))
>>> round(drift_score(ref, rng.normal(0, 1, 500), "psi").value, 3)
0.011
>>> shifted = drift_score(ref, rng.normal(1, 1, 500), "psi")
>>> round(shifted.value, 2), shifted.drifted
(0.94, True)
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats
from scipy.spatial.distance import jensenshannon

from ..data.numbers import check_numbers, number_cells

__all__ = ["DEFAULT_THRESHOLDS", "DriftScore", "Reference", "drift_report", "drift_score", "psi"]

# Conventional cut-offs: PSI 0.2 ("significant shift" in credit-risk practice), KS/chi-square p < 0.05,
# Jensen-Shannon and normalised Wasserstein 0.1 (the defaults Evidently uses on large samples).
DEFAULT_THRESHOLDS = {"psi": 0.2, "ks": 0.05, "chi2": 0.05, "jensen_shannon": 0.1, "wasserstein": 0.1}
_BINS = 10
_EPS = 1e-4


@dataclass(frozen=True)
class DriftScore:
    statistic: str
    value: float
    threshold: float
    drifted: bool
    p_value: float | None = None


@dataclass
class Reference:
    """What drift is measured against: bins and counts (and a sample for KS/Wasserstein)."""

    kind: str
    edges: np.ndarray | None = None
    counts: np.ndarray | None = None
    categories: tuple[str, ...] = ()
    sample: np.ndarray | None = None
    scale: float = 1.0

    @classmethod
    def numeric(cls, values: np.ndarray, max_sample: int | None = 5000) -> Reference:
        """Quantile bins and counts, the standard deviation, and a sample (all values if ``max_sample`` is None)."""
        v = np.asarray(values, dtype=float)
        v = v[np.isfinite(v)]
        edges = np.unique(np.quantile(v, np.linspace(0, 1, _BINS + 1)[1:-1])) if len(v) else np.array([])
        counts = np.bincount(np.searchsorted(edges, v, side="right"), minlength=len(edges) + 1)
        sample = v if max_sample is None or len(v) <= max_sample else \
            np.random.default_rng(0).choice(v, max_sample, replace=False)
        return cls("numeric", edges=edges, counts=counts, sample=np.sort(sample), scale=float(np.std(v)) or 1.0)

    @classmethod
    def categorical(cls, values: np.ndarray) -> Reference:
        cats, counts = np.unique(np.asarray(values, dtype=str), return_counts=True)
        return cls("categorical", categories=tuple(cats), counts=counts)

    def bin_counts(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(reference counts, current counts) on the same bins; unseen categories get their own bin."""
        assert self.counts is not None
        if self.kind == "numeric":
            assert self.edges is not None
            v = np.asarray(values, dtype=float)
            v = v[np.isfinite(v)]
            cur = np.bincount(np.searchsorted(self.edges, v, side="right"), minlength=len(self.edges) + 1)
            return self.counts, cur
        lookup = {c: i for i, c in enumerate(self.categories)}
        idx = np.array([lookup.get(x, len(self.categories)) for x in np.asarray(values, dtype=str)], dtype=int)
        cur = np.bincount(idx, minlength=len(self.categories) + 1)
        return np.append(self.counts, 0), cur


def wasserstein_sorted(u: np.ndarray, v: np.ndarray) -> float:
    """First Wasserstein distance between two sorted samples: scipy's ``wasserstein_distance`` formula, with
    the merge done on sorted runs (a linear merge) and sorted lookups, which is several times faster.

    >>> rng = np.random.default_rng(0)
    >>> u, v = np.sort(rng.normal(0, 1, 1000)), np.sort(rng.normal(0.5, 2, 700))
    >>> bool(abs(wasserstein_sorted(u, v) - stats.wasserstein_distance(u, v)) < 1e-12)
    True
    """
    if not len(u) or not len(v):
        return float("nan")
    merged = np.concatenate([u, v])
    merged.sort(kind="stable")  # two sorted runs: timsort merges them in linear time
    cu = np.searchsorted(u, merged[:-1], side="right") / len(u)
    cv = np.searchsorted(v, merged[:-1], side="right") / len(v)
    return float(np.sum(np.multiply(np.abs(cu - cv), np.diff(merged))))


def psi(ref_counts: np.ndarray, cur_counts: np.ndarray) -> float:
    """Population stability index over matching bins.

    >>> psi(np.array([50, 50]), np.array([50, 50]))
    0.0
    """
    p = ref_counts / max(ref_counts.sum(), 1)
    q = cur_counts / max(cur_counts.sum(), 1)
    p, q = np.clip(p, _EPS, None), np.clip(q, _EPS, None)
    return float(np.sum((q - p) * np.log(q / p)))


def drift_score(ref: Reference, values: np.ndarray, statistic: str = "auto",
                threshold: float | None = None) -> DriftScore:
    if statistic == "auto":
        statistic = "psi" if ref.kind == "numeric" else "jensen_shannon"
    thr = threshold if threshold is not None else DEFAULT_THRESHOLDS[statistic]
    if statistic in ("ks", "wasserstein"):
        if ref.kind != "numeric":
            statistic, thr = "jensen_shannon", DEFAULT_THRESHOLDS["jensen_shannon"]
        else:
            v = np.asarray(values, dtype=float)
            v = v[np.isfinite(v)]
            assert ref.sample is not None
            if statistic == "ks":
                res = stats.ks_2samp(ref.sample, v)
                p = float(res.pvalue)
                return DriftScore("ks", float(res.statistic), thr, p < thr, p)
            w = wasserstein_sorted(ref.sample, np.sort(v)) / ref.scale
            return DriftScore("wasserstein", w, thr, w > thr)
    r, c = ref.bin_counts(values)
    if statistic == "psi":
        value = psi(r, c)
        return DriftScore("psi", value, thr, value > thr)
    if statistic == "chi2":
        keep = (r + c) > 0
        res = stats.chi2_contingency(np.vstack([r[keep], c[keep]]))
        p = float(res.pvalue)
        return DriftScore("chi2", float(res.statistic), thr, p < thr, p)
    js = _js_distance(r, c)
    return DriftScore("jensen_shannon", js, thr, js > thr)


def drift_report(reference: pd.DataFrame, current: pd.DataFrame, *, columns: list[str] | None = None,
                 numeric: str = "wasserstein", categorical: str = "jensen_shannon",
                 threshold: float | None = None) -> dict[str, DriftScore]:
    """Drift of every column of ``current`` against ``reference``, on all rows (nothing sampled).

    Numeric columns (by :mod:`freshloop.data.numbers`: numbers or numeric text, not booleans) use ``numeric``;
    the others ``categorical``. Missing values are left out of both sides.

    >>> rng = np.random.default_rng(1)
    >>> ref = pd.DataFrame({"x": rng.normal(0, 1, 5000), "c": rng.choice(["a", "b"], 5000)})
    >>> cur = pd.DataFrame({"x": rng.normal(0.5, 1, 5000), "c": rng.choice(["a", "b"], 5000, p=[0.9, 0.1])})
    >>> {k: (s.statistic, round(s.value, 2), s.drifted) for k, s in drift_report(ref, cur).items()}
    {'x': ('wasserstein', 0.5, True), 'c': ('jensen_shannon', 0.33, True)}
    """
    names = columns if columns is not None else [c for c in current.columns if c in reference.columns]

    def one(name: str) -> DriftScore:
        return _column_drift(reference[name], current[name], numeric, categorical, threshold)

    # columns in parallel threads: the sorts and counts run in numpy and pandas, outside the GIL
    with ThreadPoolExecutor(max_workers=max(1, min(len(names), os.cpu_count() or 1))) as pool:
        return dict(zip(names, pool.map(one, names), strict=True))


def _column_drift(ref: pd.Series, cur: pd.Series, numeric: str, categorical: str,
                  threshold: float | None) -> DriftScore:
    # numeric by the rule ingest and init use (text of numbers with blanks is numeric); cells of the current
    # side that are not numbers are left out with the missing ones
    chk = check_numbers(ref)
    if chk.numeric:
        r, c = chk.values, number_cells(cur)[0]
        r, c = r[np.isfinite(r)], c[np.isfinite(c)]
        if numeric == "wasserstein":  # straight from the sorted columns: no bins, no sample
            thr = threshold if threshold is not None else DEFAULT_THRESHOLDS["wasserstein"]
            scale = float(np.std(r)) or 1.0
            w = wasserstein_sorted(np.sort(r), np.sort(c)) / scale
            return DriftScore("wasserstein", w, thr, w > thr)
        return drift_score(Reference.numeric(r, max_sample=None), c, numeric, threshold)
    if categorical == "jensen_shannon":  # counted by hashing, over the union of categories
        thr = threshold if threshold is not None else DEFAULT_THRESHOLDS["jensen_shannon"]
        rc, cc = (_text_counts(x) for x in (ref, cur))
        keys = rc.index.union(cc.index)
        p = rc.reindex(keys, fill_value=0).to_numpy(dtype=float)
        q = cc.reindex(keys, fill_value=0).to_numpy(dtype=float)
        js = _js_distance(p, q) if len(keys) else 0.0
        return DriftScore("jensen_shannon", js, thr, js > thr)
    return drift_score(Reference.categorical(ref.dropna().astype(str).to_numpy()),
                       cur.dropna().astype(str).to_numpy(), categorical, threshold)


def _js_distance(ref_counts: np.ndarray, cur_counts: np.ndarray) -> float:
    """Jensen-Shannon distance (natural log) between two count vectors on the same bins; 0 when either is empty."""
    js = float(jensenshannon(ref_counts / max(ref_counts.sum(), 1), cur_counts / max(cur_counts.sum(), 1)))
    return 0.0 if np.isnan(js) else js


def _text_counts(s: pd.Series) -> pd.Series:
    """Counts per category as text (1 and "1" are one category), missing values left out."""
    counts = s.value_counts(dropna=True)
    counts.index = counts.index.map(str)
    return counts.groupby(level=0).sum() if counts.index.has_duplicates else counts
