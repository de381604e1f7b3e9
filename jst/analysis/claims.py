"""How a page words a comparison: the words the statistics allow, and no stronger.

A comparison row (``a - b`` over paired seeds) carries its ``statistics.Comparison``, its Holm-adjusted t-test
p-value (``p_holm``), its ``statistics.Equivalence`` (a paired TOST against the study's margin, fixed in code) and
that TOST's Holm-adjusted p-value (``p_tost_holm``). Both corrections run over the same family: every comparison
of the study (one family across budgets and levels) unless a pre-registration names smaller ones.
``verdict`` turns the row into the words every table and sentence uses:

============================  =========================  ==============================================
Holm t-test p < 0.05          Holm TOST p < 0.05         words (``a ... b``)
============================  =========================  ==============================================
yes, a - b > 0 / < 0          no                         ``beats`` / ``loses to``
yes, a - b > 0 / < 0          yes                        ``is ahead of`` / ``is behind`` ... "within ±m"
no                            yes                        ``is equivalent to`` ... "within ±m"
no                            no (or no margin)          ``is inconclusive against``
============================  =========================  ==============================================

A significant difference whose interval lies inside the margin is real but smaller than the smallest difference
the study calls meaningful: it is "ahead, within the margin", never "beats". Pure functions of plain values;
imports only ``jst.analysis.statistics``.
"""

from __future__ import annotations

from typing import Any, Sequence

from jst.analysis import statistics

ALPHA = 0.05
VERDICTS = ('beats', 'loses to', 'is ahead of', 'is behind', 'is equivalent to', 'is inconclusive against')
STUDY_WIDE = 'study'  # the family name of a study-wide correction

# The TOST margins of the results pages, by dataset (fraction of test accuracy); the study catalogs
# (jst.studies.catalog_mnist, catalog_cifar) give each its reasons and the date it was fixed.
MNIST_MARGIN = 0.002
CIFAR_MARGIN = 0.01


def differs(row: dict[str, Any]) -> bool:
    """Holm-adjusted t-test p < ALPHA."""
    return row['p_holm'] < ALPHA


def within_margin(row: dict[str, Any]) -> bool:
    """Holm-adjusted TOST p < ALPHA (the difference is inside the margin); False without a margin."""
    return row.get('equivalence') is not None and row.get('p_tost_holm', 1.0) < ALPHA


def verdict(row: dict[str, Any]) -> str:
    """One of ``VERDICTS`` for a comparison row (see the module docstring)."""
    ahead = row['comparison'].mean_difference > 0
    if differs(row):
        if within_margin(row):
            return 'is ahead of' if ahead else 'is behind'
        return 'beats' if ahead else 'loses to'
    return 'is equivalent to' if within_margin(row) else 'is inconclusive against'


def margin_clause(row: dict[str, Any]) -> str:
    """', within ±0.2 points' for the verdicts that say the difference is inside the margin; else ''."""
    return f', within ±{100 * row["equivalence"].margin:.2g} points' if within_margin(row) else ''


def claim(row: dict[str, Any], a: str = '', b: str = '') -> str:
    """'a is ahead of b, within ±0.2 points' / 'a beats b': the row's verdict as a phrase (``a``, ``b``: the
    names, default the row's)."""
    return f"{a or row['a']} {verdict(row)} {b or row['b']}{margin_clause(row)}"


def equivalence_cell(row: dict[str, Any]) -> str:
    """'0.012 / Holm 0.036 (90% CI -0.21, +0.15)': the TOST p-value, Holm-adjusted, and the 90% CI, in points."""
    e = row.get('equivalence')
    if e is None:
        return '-'
    return f'{e.p_value:.2g} / Holm {row["p_tost_holm"]:.2g} (90% CI {100 * e.ci90[0]:+.2f}, {100 * e.ci90[1]:+.2f})'


def tost_phrase(row: dict[str, Any]) -> str:
    """', Holm TOST p = 0.01 against ±0.5 points' (where a margin was given)."""
    e = row.get('equivalence')
    return '' if e is None else f', Holm TOST p = {row["p_tost_holm"]:.2g} against ±{100 * e.margin:.2g} points'


def add_tests(rows: list[dict[str, Any]], values: Sequence[tuple[Sequence[float], Sequence[float]]],
              families: Sequence[str], margin: float) -> list[dict[str, Any]]:
    """Sets each row's ``p_holm`` (t-test, Holm within its family), ``equivalence`` (TOST of its ``values`` pair
    against ``margin``) and ``p_tost_holm`` (the TOST p-values, Holm within the same family); returns the rows."""
    adjusted = statistics.holm_by_family([r['comparison'].p_value for r in rows], families)
    tests = [statistics.tost(a, b, margin) if margin > 0 else None for a, b in values]
    tost_adjusted = statistics.holm_by_family([1.0 if t is None else t.p_value for t in tests], families)
    for row, p, test, p_tost in zip(rows, adjusted, tests, tost_adjusted):
        row.update(p_holm=p, equivalence=test, p_tost_holm=p_tost)
    return rows


def margin_sentence(margin: float, when: str, why: str = '', family: str = '') -> str:
    """The page's statement of the wording rules, the equivalence margin, why it is that size and when it was
    fixed, and the family both corrections run over."""
    return (f'Wording (`jst/analysis/claims.py`): "beats" / "loses to" needs a Holm-adjusted paired t-test p < '
            f'{ALPHA:g}; a pair whose paired TOST against ±{100 * margin:.2g} points of test accuracy also rejects '
            f'(Holm-adjusted p < {ALPHA:g}, i.e. the 90% CI inside the margin) is "ahead" / "behind" but "within '
            f'±{100 * margin:.2g} points"; a pair that does not differ is "equivalent" only under that TOST, else '
            f'"inconclusive". Both corrections run over {family or "every comparison of this page (one family)"}. '
            + (f'The margin: {why} ' if why else '') + f'It was fixed {when}.')
