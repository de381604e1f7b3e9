"""Statistics over seeds for results pages: confidence intervals, paired comparisons, Holm correction.

* ``ci95``: half-width of the t-based 95% confidence interval of a mean.
* ``paired_comparison``: two policies on the same seeds: mean difference,
  its 95% CI, the paired t-test's two-sided p-value and the effect size
  (Cohen's d_z = mean difference / sd of the differences).
* ``holm``: Holm-Bonferroni adjusted p-values for the comparisons of one table;
  ``holm_by_family``: the same within each named family (e.g. ticket vs
  dense apart from ticket vs controls).
* ``tost``: paired equivalence test (two one-sided t-tests) against a margin
  stated in advance: what "ties" and "does not differ" must rest on.
* ``pearson``, ``pearson_within`` (each group's mean removed first) and
  ``clustered_correlation``: the within-group correlation computed per
  cluster (a run: several rounds of one seed are not independent) and
  averaged over clusters (Fisher z), with a t interval over the clusters.

Pure functions of plain sequences; imports no other jst module.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np
from scipy import stats as scipy_stats


def ci95(values: Sequence[float]) -> float:
    """Half-width of the t-based 95% confidence interval of the mean (NaN for fewer than two values)."""
    a = np.asarray(values, float)
    if a.size < 2:
        return float('nan')
    return float(scipy_stats.t.ppf(0.975, a.size - 1) * a.std(ddof=1) / math.sqrt(a.size))


@dataclasses.dataclass(frozen=True)
class Comparison:
    """``a - b`` over paired seeds."""

    n: int
    mean_difference: float
    ci95: float           # half-width of the 95% CI of the mean difference
    p_value: float        # paired t-test, two-sided
    effect_size: float    # Cohen's d_z: mean difference / sd of the differences


def paired_comparison(a: Sequence[float], b: Sequence[float]) -> Comparison:
    """Compares ``a[i]`` with ``b[i]`` (the same seed i); needs at least two pairs."""
    x, y = np.asarray(a, float), np.asarray(b, float)
    if x.shape != y.shape or x.size < 2:
        raise ValueError(f'paired_comparison needs two equally long sequences of >= 2 values; got {x.size} and '
                         f'{y.size}.')
    d = x - y
    sd = float(d.std(ddof=1))
    if sd == 0.0:
        p = 1.0 if d.mean() == 0 else 0.0
    else:
        p = float(scipy_stats.ttest_rel(x, y).pvalue)
    return Comparison(n=int(d.size), mean_difference=float(d.mean()), ci95=ci95(d), p_value=p,
                      effect_size=float(d.mean() / sd) if sd > 0 else _signed_inf(float(d.mean())))


def _signed_inf(mean: float) -> float:
    """The effect size of differences that are all equal: 0 when they are 0, else +-inf."""
    return 0.0 if mean == 0 else float(np.copysign(np.inf, mean))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (same order as given; monotone, capped at 1)."""
    p = np.asarray(p_values, float)
    order = np.argsort(p, kind='stable')
    adjusted = np.empty_like(p)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (p.size - rank) * p[i]))
        adjusted[i] = running
    return [float(v) for v in adjusted]


def holm_by_family(p_values: Sequence[float], families: Sequence[str]) -> list[float]:
    """Holm-adjusted p-values within each family (``families[i]`` names the family of ``p_values[i]``)."""
    out = [float('nan')] * len(p_values)
    for family in dict.fromkeys(families):
        index = [i for i, f in enumerate(families) if f == family]
        for i, p in zip(index, holm([p_values[i] for i in index])):
            out[i] = p
    return out


@dataclasses.dataclass(frozen=True)
class Equivalence:
    """TOST of ``a - b`` over paired seeds against ``(-margin, margin)``."""

    n: int
    mean_difference: float
    margin: float
    p_value: float        # max of the two one-sided p-values: equivalent at level alpha when p < alpha
    ci90: tuple[float, float]  # the 90% CI of the mean difference (inside the margins <=> p < 0.05)


def tost(a: Sequence[float], b: Sequence[float], margin: float) -> Equivalence:
    """Paired two one-sided t-tests (Schuirmann 1987): H0 |mean(a - b)| >= margin; needs >= 2 pairs and a margin
    > 0 fixed before seeing the data."""
    x, y = np.asarray(a, float), np.asarray(b, float)
    if x.shape != y.shape or x.size < 2 or not margin > 0:
        raise ValueError(f'tost needs two equally long sequences of >= 2 values and a margin > 0; got {x.size}, '
                         f'{y.size} values and margin={margin}.')
    d = x - y
    mean, df = float(d.mean()), d.size - 1
    se = float(d.std(ddof=1)) / math.sqrt(d.size)
    if se == 0.0:
        p = 0.0 if abs(mean) < margin else 1.0
        return Equivalence(int(d.size), mean, float(margin), p, (mean, mean))
    p_lower = float(scipy_stats.t.sf((mean + margin) / se, df))   # H0: mean <= -margin
    p_upper = float(scipy_stats.t.cdf((mean - margin) / se, df))  # H0: mean >= +margin
    half = float(scipy_stats.t.ppf(0.95, df)) * se
    return Equivalence(int(d.size), mean, float(margin), max(p_lower, p_upper), (mean - half, mean + half))


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson r over the pairs where both are finite; NaN for fewer than 3 or no spread."""
    a, b = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    if a.size < 3 or a.std() == 0 or b.std() == 0:
        return float('nan')
    return float(np.corrcoef(a, b)[0, 1])


def demeaned(x: Sequence[float], groups: Sequence[object]) -> np.ndarray:
    """``x`` minus the mean of its group (finite values only; NaN stays NaN)."""
    a, g = np.asarray(x, float).copy(), np.asarray([str(v) for v in groups])
    for value in np.unique(g):
        sel = (g == value) & np.isfinite(a)
        a[sel] -= a[sel].mean() if sel.any() else 0.0
    return a


def pearson_within(x: Sequence[float], y: Sequence[float], groups: Sequence[object]) -> float:
    """Pearson r after removing each group's mean from x and y (e.g. within the same round index)."""
    a, b = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(a) & np.isfinite(b)
    g = np.asarray([str(v) for v in groups])[ok]
    return pearson(demeaned(a[ok], g), demeaned(b[ok], g))


@dataclasses.dataclass(frozen=True)
class ClusteredCorrelation:
    """Mean within-cluster r (back from the mean Fisher z) and its 95% CI over ``clusters`` clusters."""

    r: float
    ci_low: float
    ci_high: float
    clusters: int


def clustered_correlation(x: Sequence[float], y: Sequence[float], clusters: Sequence[object],
                          groups: Sequence[object]) -> ClusteredCorrelation:
    """Each cluster's Pearson r of x and y after removing each group's mean (over all clusters), Fisher-z averaged
    over the clusters with >= 3 pairs; 95% CI t-based over those clusters (NaN with fewer than 2)."""
    a, b = demeaned(x, groups), demeaned(y, groups)
    c = np.asarray([str(v) for v in clusters])
    rs = [pearson(a[c == k], b[c == k]) for k in dict.fromkeys(c)]
    z = np.arctanh(np.clip([r for r in rs if np.isfinite(r)], -0.999, 0.999))
    if z.size < 2:
        nan = float('nan')
        return ClusteredCorrelation(float(np.tanh(z[0])) if z.size else nan, nan, nan, int(z.size))
    mean, half = float(z.mean()), ci95(z)
    return ClusteredCorrelation(float(np.tanh(mean)), float(np.tanh(mean - half)), float(np.tanh(mean + half)),
                                int(z.size))
