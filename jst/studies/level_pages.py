"""Pages of a pruning-level study: the ticket and its controls at every sparsity level, over seeds.

Frankle & Carbin's LeNet experiment as a table per level (``round``): the
ticket (``control='none'``), the same mask with a fresh random init
(``random_reinit``) and random masks with the same per-layer counts
(``random_prune``), each as mean ± 95% CI over seeds of test accuracy and of
the early-stopping iteration (``best_step``, the step of minimum validation
loss: F&C's "learns faster" measure). Comparisons are paired over seeds at
every level (ticket - each control, ticket - the dense network), t-test and
TOST against the study's margin each Holm-corrected over every comparison of
the study (``jst.analysis.claims``); the highlighted level is chosen by the
ticket's mean *validation* accuracy, never test.
"""

from __future__ import annotations

import collections
from typing import Any, Sequence

import numpy as np

from jst.analysis import claims
from jst.analysis import statistics
from jst.studies import study as study_lib
from jst.run.records import Record

CONTROLS = ('none', 'random_reinit', 'random_prune')
NAMES = {'none': 'ticket', 'random_reinit': 'random re-init', 'random_prune': 'random pruning'}


def by_level(records: Sequence[Record]) -> dict[tuple[int, str], dict[int, Record]]:
    """{(level, control): {seed: record}}; the dense level 0 exists only as the ticket."""
    out: dict[tuple[int, str], dict[int, Record]] = collections.defaultdict(dict)
    for r in records:
        out[(r['round'], r['control'])][r['seed']] = r
    return dict(out)


def _cell(cell: dict[int, Record] | None, field: str, scale: float = 100.0, digits: int = 2) -> str:
    if not cell:
        return ''
    values = [scale * r[field] for r in cell.values()]
    if len(values) < 2:  # one seed has no interval
        return f'{values[0]:,.{digits}f}'
    return f'{np.mean(values):,.{digits}f} ± {statistics.ci95(values):,.{digits}f}'


def best_level(levels: dict[tuple[int, str], dict[int, Record]]) -> int:
    """The level whose ticket has the highest mean validation accuracy."""
    tickets = {lv: cell for (lv, c), cell in levels.items() if c == 'none'}
    return max(tickets, key=lambda lv: (np.mean([r['val_accuracy'] for r in tickets[lv].values()]), -lv))


def levels_table(levels: dict[tuple[int, str], dict[int, Record]]) -> list[str]:
    """Markdown rows, one per level: % weights, params, test accuracy and early-stop iteration of each network."""
    best = best_level(levels)
    head = ('| level | % weights | params | ticket val acc (%) | ' +
            ' | '.join(f'{NAMES[c]} test acc (%)' for c in CONTROLS) + ' | ' +
            ' | '.join(f'{NAMES[c]} early-stop iteration' for c in CONTROLS) + ' |')
    lines = [head, '|' + '---|' * (4 + 2 * len(CONTROLS))]
    for lv in sorted({lv for lv, _ in levels}):
        ticket = levels[(lv, 'none')]
        r0 = next(iter(ticket.values()))
        mark = '**' if lv == best else ''
        cells = [_cell(levels.get((lv, c)), 'test_accuracy') for c in CONTROLS]
        steps = [_cell(levels.get((lv, c)), 'best_step', 1.0, 0) for c in CONTROLS]
        lines.append(f"| {mark}{lv}{mark} | {100 * r0['fraction_remaining']:.2f} | {r0['params_remaining']:,} | "
                     f"{_cell(ticket, 'val_accuracy')} | " + ' | '.join(cells) + ' | ' + ' | '.join(steps) + ' |')
    return lines


def _paired(a: dict[int, Record], b: dict[int, Record], field: str) -> statistics.Comparison:
    seeds = sorted(set(a) & set(b))
    return statistics.paired_comparison([a[s][field] for s in seeds], [b[s][field] for s in seeds])


def level_comparisons(levels: dict[tuple[int, str], dict[int, Record]], margin: float = 0.0) -> list[dict[str, Any]]:
    """Ticket - random re-init, ticket - random pruning and ticket - dense, test accuracy, every level >= 1 where
    the two share >= 2 seeds (none while a campaign has one); t-test and TOST against ``margin``, each Holm-corrected
    over all of them (``claims.add_tests``)."""
    rows, values = [], []
    dense = levels[(0, 'none')]
    for lv in sorted({lv for lv, _ in levels if lv > 0}):
        ticket = levels[(lv, 'none')]
        for other, cell in (('random re-init', levels.get((lv, 'random_reinit'))),
                            ('random pruning', levels.get((lv, 'random_prune'))), ('dense', dense)):
            seeds = sorted(set(ticket) & set(cell or {}))
            if len(seeds) >= 2:
                values.append(([ticket[s]['test_accuracy'] for s in seeds], [cell[s]['test_accuracy'] for s in seeds]))
                rows.append({'level': lv, 'b': other, 'comparison': _paired(ticket, cell, 'test_accuracy'),
                             'steps': _paired(ticket, cell, 'best_step')})
    return claims.add_tests(rows, values, [claims.STUDY_WIDE] * len(rows), margin)


def comparisons_table(rows: Sequence[dict[str, Any]]) -> list[str]:
    lines = ['| level | ticket vs | test acc difference (points) | p (Holm) | d_z | TOST p / Holm (90% CI) | verdict | '
             'early-stop iteration difference |', '|---|---|---|---|---|---|---|---|']
    for r in rows:
        c, s = r['comparison'], r['steps']
        lines.append(f"| {r['level']} | {r['b']} | {100 * c.mean_difference:+.2f} ± {100 * c.ci95:.2f} | "
                     f"{r['p_holm']:.2g} | {c.effect_size:+.2f} | {claims.equivalence_cell(r)} | "
                     f"{claims.claim(r, 'ticket')} | "
                     f"{s.mean_difference:+,.0f} ± {s.ci95:,.0f} |")
    return lines


def verdicts_by_level(rows: Sequence[dict[str, Any]], b: str) -> str:
    """'beats it at levels 7-15, is ahead of it (within ±0.2 points) at level 4, is inconclusive at levels 1-3':
    the ticket's verdict against ``b`` at each level, grouped (``jst.analysis.claims``)."""
    parts = []
    for word in claims.VERDICTS:
        levels = [r['level'] for r in rows if r['b'] == b and claims.verdict(r) == word]
        if levels:
            short = {'is inconclusive against': 'is inconclusive'}.get(word, f'{word} it')
            margin = next(claims.margin_clause(r) for r in rows if r['b'] == b and claims.verdict(r) == word)
            parts.append(f'{short}{margin} {at_levels(levels)}')
    return ', '.join(parts) if parts else 'is not compared at any level'


def summary_sentence(levels: dict[tuple[int, str], dict[int, Record]], rows: Sequence[dict[str, Any]]) -> str:
    """The ticket's verdicts against both controls and the dense network at every level, and its validation-best
    level."""
    best = best_level(levels)
    r0 = next(iter(levels[(best, 'none')].values()))
    sparsest = max(lv for lv, _ in levels)
    f_min = 100 * next(iter(levels[(sparsest, 'none')].values()))['fraction_remaining']
    tests = (f"Against random re-initialisation the ticket {verdicts_by_level(rows, 'random re-init')}; against "
             f"random pruning it {verdicts_by_level(rows, 'random pruning')}; against the dense network it "
             f"{verdicts_by_level(rows, 'dense')} (test accuracy, paired over seeds; t-test and TOST each "
             f"Holm-corrected over all {len(rows)} comparisons of the study)." if rows else
             f"{_seed_count(levels)} so far: the paired comparisons need at least 2, so nothing is tested yet.")
    return (f"Levels 0-{sparsest} (down to {f_min:.2f}% of weights). {tests} Chosen on validation accuracy, the best "
            f"ticket is level {best} ({100 * r0['fraction_remaining']:.2f}% of weights): test "
            f"{_cell(levels[(best, 'none')], 'test_accuracy')}% against the dense network's "
            f"{_cell(levels[(0, 'none')], 'test_accuracy')}%. {truncation_sentence(levels)}")


def _seed_count(levels: dict[tuple[int, str], dict[int, Record]]) -> str:
    """'1 seed' / 'N seeds': how many seeds the dense level has."""
    n = len(levels[(0, 'none')])
    return f'{n} seed' if n == 1 else f'{n} seeds'


def truncation_sentence(levels: dict[tuple[int, str], dict[int, Record]]) -> str:
    """How many trainings of each network had their minimum validation loss at their last step."""
    parts = []
    for control in CONTROLS:
        cells = [r for (_, c), cell in levels.items() if c == control for r in cell.values()]
        at_end = sum(study_lib.still_improving(r) for r in cells)
        parts.append(f'{NAMES[control]} {at_end} of {len(cells)}')
    return (f'Trainings {study_lib.TRUNCATION_RULE}: ' + ', '.join(parts) + '.')


def at_levels(levels: Sequence[int]) -> str:
    """'at levels 1-9 and 12-15' (runs of consecutive levels joined), 'at level 3', or 'at no level'."""
    runs: list[list[int]] = []
    for lv in sorted(levels):
        if runs and lv == runs[-1][-1] + 1:
            runs[-1].append(lv)
        else:
            runs.append([lv])
    if not runs:
        return 'at no level'
    names = [str(r[0]) if len(r) == 1 else f'{r[0]}, {r[1]}' if len(r) == 2 else f'{r[0]}-{r[-1]}' for r in runs]
    joined = names[0] if len(names) == 1 else ', '.join(names[:-1]) + ' and ' + names[-1]
    return f'at level {joined}' if len(levels) == 1 else f'at levels {joined}'


def render_levels_page(study: study_lib.Study, records: Sequence[Record]) -> str:
    """The study's Markdown page from all its records (ticket and controls), deterministic."""
    levels = by_level(records)
    rows = level_comparisons(levels, study.equivalence_margin)
    budget, policy = study.budgets[0], study.policies[0]
    seeds = f'{study.first_seed}-{study.first_seed + study.num_seeds - 1} ({study_lib.lanes_phrase(study)})'
    lines = [f'# {study.title}', '', study.notes.strip(), '',
             f'{policy.description}. Seeds {seeds}, {budget:,} iterations per level; accuracies and early-stop '
             'iterations: mean ± t-based 95% CI over seeds, at each training\'s minimum validation '
             f'loss. Regenerate this page from the committed records: `python launch/study.py page {study.name}`; '
             f'rerun: `python launch/study.py run {study.name}` (`{study.command(policy.name, budget)}`).', '',
             summary_sentence(levels, rows), '',
             *([claims.margin_sentence(study.equivalence_margin, study.margin_fixed, study.margin_why,
                                       f'all {len(rows)} comparisons of this page (one family)'), '']
               if study.equivalence_margin > 0 else []),
             f'![accuracy and early-stop iteration vs weights remaining]({study.name}/levels.png)', '',
             '## Every level', '', 'Bold: the level chosen by the ticket\'s validation accuracy.', '']
    lines += levels_table(levels)
    lines += ['', '## Comparisons (paired over seeds; t-test and TOST each Holm-corrected over every row of this '
              'table)', '']
    lines += comparisons_table(rows) if rows else [f'None yet: {_seed_count(levels)}; a paired comparison needs at '
                                                   'least 2.']
    return '\n'.join(lines) + '\n'


def level_curves(records: Sequence[Record], control: str) -> dict[str, list[float]]:
    """Per level of ``control`` (the dense level 0 included): % weights, test accuracy, early-stop iteration, CIs."""
    levels = by_level(records)
    out: dict[str, list[float]] = collections.defaultdict(list)
    for lv in sorted(lv for lv, c in levels if c == control or lv == 0):
        cell = levels[(lv, control if (lv, control) in levels else 'none')]
        acc, steps = [100 * r['test_accuracy'] for r in cell.values()], [r['best_step'] for r in cell.values()]
        out['percent'].append(100 * next(iter(cell.values()))['fraction_remaining'])
        out['test'].append(float(np.mean(acc)))
        out['test_ci'].append(float(np.nan_to_num(statistics.ci95(acc))))
        out['steps'].append(float(np.mean(steps)))
        out['steps_ci'].append(float(np.nan_to_num(statistics.ci95(steps))))
    return dict(out)
