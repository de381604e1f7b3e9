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
