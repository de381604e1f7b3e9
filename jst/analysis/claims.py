"""How a page words a comparison: a difference only under Holm's correction, a tie only under an equivalence test.

A comparison row (``a - b`` over paired seeds) carries its ``statistics.Comparison``, its Holm-adjusted p-value
(``p_holm``, within a family the page names) and its ``statistics.Equivalence`` (TOST against the study's margin,
fixed in code before it is applied). ``verdict`` turns the row into the words every table and sentence uses:

* ``beats`` / ``loses to``: Holm-adjusted p < 0.05;
* ``is equivalent to``: no difference, and the TOST rejects a difference of the margin or more (p < 0.05): the
  90% CI of the difference lies inside (-margin, +margin);
* ``is inconclusive against``: neither; the data cannot tell a difference of the margin from none (what used to
  be written "does not differ significantly from").

Pure functions of plain values; imports only ``jst.analysis.statistics``.
"""

from __future__ import annotations

from typing import Any, Sequence

from jst.analysis import statistics

ALPHA = 0.05
VERDICTS = ('beats', 'loses to', 'is equivalent to', 'is inconclusive against')


def verdict(row: dict[str, Any]) -> str:
    """One of ``VERDICTS`` for a comparison row (see the module docstring)."""
    if row['p_holm'] < ALPHA:
        return 'beats' if row['comparison'].mean_difference > 0 else 'loses to'
    equivalence = row.get('equivalence')
    return 'is equivalent to' if equivalence is not None and equivalence.p_value < ALPHA else 'is inconclusive against'


def equivalence_cell(row: dict[str, Any]) -> str:
    """'0.012 (90% CI -0.21, +0.15)': the TOST p-value and the 90% CI of the difference, in points."""
    e = row.get('equivalence')
    if e is None:
        return '-'
    return f'{e.p_value:.2g} (90% CI {100 * e.ci90[0]:+.2f}, {100 * e.ci90[1]:+.2f})'


def tost_phrase(row: dict[str, Any]) -> str:
    """', TOST p = 0.01 against ±0.5 points' where the pair does not differ (and a margin was given)."""
    e = row.get('equivalence')
    return '' if e is None or row['p_holm'] < ALPHA else (
        f', TOST p = {e.p_value:.2g} against ±{100 * e.margin:.2g} points')


def add_tests(rows: list[dict[str, Any]], values: Sequence[tuple[Sequence[float], Sequence[float]]],
              families: Sequence[str], margin: float) -> list[dict[str, Any]]:
    """Sets each row's ``p_holm`` (Holm within its family) and ``equivalence`` (TOST of its ``values`` pair
    against ``margin``); returns the rows."""
    adjusted = statistics.holm_by_family([r['comparison'].p_value for r in rows], families)
    for row, p, (a, b) in zip(rows, adjusted, values):
        row['p_holm'] = p
        row['equivalence'] = statistics.tost(a, b, margin) if margin > 0 else None
    return rows


def margin_sentence(margin: float, when: str) -> str:
    """The page's statement of the equivalence margin and when it was fixed."""
    return (f'Equivalence: a pair that does not differ (Holm p >= {ALPHA:g}) is called equivalent only when a '
            f'paired TOST rejects a difference of ±{100 * margin:.2g} points of test accuracy or more (p < {ALPHA:g}, '
            f'i.e. the 90% CI inside the margin); otherwise inconclusive. The margin was fixed {when}.')
