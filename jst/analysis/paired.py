"""The main command's answer: its policies compared at their final rounds, paired by seed, in the wording of the
results pages (``jst.analysis.claims``: Holm over the comparisons, TOST against the dataset's margin).
"""

from __future__ import annotations

from typing import Sequence

from jst.analysis import claims
from jst.analysis import figures
from jst.analysis import statistics
from jst.run.records import Record

# The TOST margin of the main command's paired lines: the results pages' margin for the dataset.
MAIN_COMMAND_MARGINS = {'mnist': claims.MNIST_MARGIN, 'cifar10': claims.CIFAR_MARGIN}


def margin_for(datasets: Sequence[str]) -> float:
    """The TOST margin of runs on ``datasets``: the widest of their pages' margins (the widest known for others)."""
    widest = max(MAIN_COMMAND_MARGINS.values())
    return max((MAIN_COMMAND_MARGINS.get(d, widest) for d in datasets), default=widest)


def _final_rounds(summary: Sequence[Record], name: str) -> dict[int, Record]:
    """{seed: record} of variant ``name``'s last round (the ticket, not a control)."""
    rs = [r for r in summary if figures.variant(r) == name and r['control'] == 'none']
    last = max((r['round'] for r in rs), default=None)
    return {r['seed']: r for r in rs if r['round'] == last}


def paired_claims(summary: Sequence[Record], pairs: Sequence[tuple[str, str]], margin: float) -> str:
    """One line per pair (a, b): a minus b in test accuracy at each one's final round, paired by seed, worded by
    ``jst.analysis.claims`` (Holm over the pairs, TOST against ``margin``), with the params and steps of both."""
    family = f'Holm over these {len(pairs)} comparisons' if len(pairs) > 1 else 'one comparison, no correction'
    head = (f'**Paired over seeds, final rounds, test accuracy** ({family}; '
            f'TOST margin ±{100 * margin:g} points; wording of the results pages, `jst/analysis/claims.py`):')
    rows, values, notes = [], [], []
    for a, b in pairs:
        fa, fb = _final_rounds(summary, a), _final_rounds(summary, b)
        seeds = sorted(set(fa) & set(fb))
        if len(seeds) < 2:
            notes.append(f'- {a} vs {b}: needs >= 2 seeds run by both for an interval (--config.num_seeds=3); '
                         f'{len(seeds)} here.')
            continue
        x, y = [fa[s]['test_accuracy'] for s in seeds], [fb[s]['test_accuracy'] for s in seeds]
        rows.append({'a': a, 'b': b, 'comparison': statistics.paired_comparison(x, y), 'seeds': seeds,
                     'sizes': [(fa[seeds[0]]['params_remaining'], fa[seeds[0]]['cumulative_steps']),
                               (fb[seeds[0]]['params_remaining'], fb[seeds[0]]['cumulative_steps'])]})
        values.append((x, y))
    claims.add_tests(rows, values, ['main'] * len(rows), margin)
    lines = [head]
    for r in rows:
        c, (pa, sa), (pb, sb) = r['comparison'], *r['sizes']
        lines.append(f"- {claims.claim(r)}: {100 * c.mean_difference:+.2f} ± {100 * c.ci95:.2f} points (n = "
                     f"{len(r['seeds'])} seeds, Holm p = {r['p_holm']:.2g}{claims.tost_phrase(r)}; "
                     f"{pa:,.0f} vs {pb:,.0f} params, {sa:,} vs {sb:,} steps)")
    return '\n'.join(lines + notes)


def variants_in_order(summary: Sequence[Record]) -> list[str]:
    """The ticket variants of ``summary`` in the order their records come (a report's workdirs in the order given)."""
    return list(dict.fromkeys(figures.variant(r) for r in summary if r['control'] == 'none'))


def paired_against_first(summary: Sequence[Record]) -> str:
    """``paired_claims`` of every later variant against the first one given (a sweep's reference variant), at
    the datasets' margin; '' when there is one variant."""
    variants = variants_in_order(summary)
    if len(variants) < 2:
        return ''
    return paired_claims(summary, [(v, variants[0]) for v in variants[1:]],
                         margin_for(sorted({r['dataset'] for r in summary})))
