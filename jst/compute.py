"""Compute-fair views of a study: each policy at the budget its validation accuracy chooses, with its steps and
its training compute, and paired comparisons there.

A study with several per-round budgets measures every policy at each; a reviewer asks what each policy reaches at
its own best budget (chosen on validation, never test) and at what cost. Compute is counted as *weight-steps*:
the sum over rounds of (steps trained) x (weights kept: ``params_remaining``, biases included). For a dense
or sparse MLP, training multiply-adds are about 3 x batch x weight-steps (forward, and two products backward),
the same batch for every policy of a study; for convolutions each weight is reused at every position, so there
weight-steps rank policies of one network but are not FLOPs.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from jst import statistics
from jst import study as study_lib

Record = dict[str, Any]


def weight_steps(records: Sequence[Record]) -> float:
    """Σ over one run's rounds of steps trained x weights kept (records of one seed, control 'none')."""
    total, previous = 0.0, 0
    for r in sorted(records, key=lambda r: r['round']):
        total += (r['cumulative_steps'] - previous) * r['params_remaining']
        previous = r['cumulative_steps']
    return total


def chosen_budgets(runs: dict[tuple[int, str], list[Record]]) -> dict[str, int]:
    """{policy: the budget whose final round has the highest mean validation accuracy}."""
    best: dict[str, tuple[float, int]] = {}
    for (budget, policy), records in sorted(runs.items()):
        val = float(np.mean([r['val_accuracy'] for r in study_lib.final_by_seed(records).values()]))
        if policy not in best or val > best[policy][0]:
            best[policy] = (val, budget)
    return {p: b for p, (_, b) in best.items()}


def chosen_budget_sentence(runs: dict[tuple[int, str], list[Record]], a: str, b: str) -> str:
    """One sentence: ``a`` and ``b`` each at its validation-chosen budget, paired by seed (test accuracy), with
    the steps and weight-steps each used; '' when they are not both measured on >= 2 shared seeds."""
    chosen = chosen_budgets(runs)
    if a not in chosen or b not in chosen:
        return ''
    finals = {p: study_lib.final_by_seed(runs[(chosen[p], p)]) for p in (a, b)}
    seeds = sorted(set(finals[a]) & set(finals[b]))
    if len(seeds) < 2:
        return ''
    c = statistics.paired_comparison([finals[a][s]['test_accuracy'] for s in seeds],
                                     [finals[b][s]['test_accuracy'] for s in seeds])
    cost = {p: (np.mean([finals[p][s]['cumulative_steps'] for s in seeds]),
                np.mean([weight_steps([r for r in runs[(chosen[p], p)] if r['seed'] == s]) for s in seeds]) / 1e9)
            for p in (a, b)}
    return (f'**Compute-fair**: each at the budget its validation accuracy chooses, {a} ({chosen[a]:,} steps/round: '
            f'{cost[a][0]:,.0f} steps, {cost[a][1]:.2f}e9 weight-steps) against {b} ({chosen[b]:,} steps/round: '
            f'{cost[b][0]:,.0f} steps, {cost[b][1]:.2f}e9 weight-steps): {100 * c.mean_difference:+.2f} ± '
            f'{100 * c.ci95:.2f} points of test accuracy (paired t-test over {c.n} seeds, p = {c.p_value:.2g}).')


def budget_choice_section(runs: dict[tuple[int, str], list[Record]],
                          comparisons: Sequence[tuple[str, str]]) -> list[str]:
    """Markdown: every policy at its validation-chosen budget (steps, weight-steps, test accuracy) and the
    study's comparisons there, paired by seed with Holm's correction; [] for a one-budget study."""
    if len({b for b, _ in runs}) < 2:
        return []
    chosen = chosen_budgets(runs)
    lines = ['## Each policy at its own budget, chosen on validation', '',
             'For each policy, the per-round budget whose final round has the highest mean validation accuracy '
             '(test accuracy is only reported). Weight-steps: Σ over rounds of steps x weights kept (for an MLP, '
             'training multiply-adds ≈ 3 x batch x weight-steps).', '',
             '| policy | budget chosen (steps/round) | seeds | cumulative steps | weight-steps (10^9) | val acc (%) | '
             'test acc (%) |', '|---|---|---|---|---|---|---|']
    finals = {}
    for policy, budget in chosen.items():
        records = runs[(budget, policy)]
        by_seed = {s: [r for r in records if r['seed'] == s] for s in {r['seed'] for r in records}}
        finals[policy] = study_lib.final_by_seed(records)
        val = [r['val_accuracy'] for r in finals[policy].values()]
        test = [r['test_accuracy'] for r in finals[policy].values()]
        steps = float(np.mean([r['cumulative_steps'] for r in finals[policy].values()]))
        compute = float(np.mean([weight_steps(rs) for rs in by_seed.values()])) / 1e9
        lines.append(f'| {policy} | {budget:,} | {len(val)} | {steps:,.0f} | {compute:.2f} | '
                     f'{100 * np.mean(val):.2f} ± {100 * statistics.ci95(val):.2f} | '
                     f'{100 * np.mean(test):.2f} ± {100 * statistics.ci95(test):.2f} |')
    pairs = [(a, b) for a, b in comparisons if a in finals and b in finals
             and len(set(finals[a]) & set(finals[b])) >= 2]
    if not pairs:
        return lines
    results = []
    for a, b in pairs:
        seeds = sorted(set(finals[a]) & set(finals[b]))
        results.append(statistics.paired_comparison([finals[a][s]['test_accuracy'] for s in seeds],
                                                    [finals[b][s]['test_accuracy'] for s in seeds]))
    adjusted = statistics.holm([c.p_value for c in results])
    lines += ['', '| comparison, each at its chosen budget | budgets | seeds | test acc difference (points) | '
              'Holm p |', '|---|---|---|---|---|']
    for (a, b), c, p in zip(pairs, results, adjusted):
        lines.append(f'| {a} - {b} | {chosen[a]:,} vs {chosen[b]:,} | {c.n} | {100 * c.mean_difference:+.2f} ± '
                     f'{100 * c.ci95:.2f} | {p:.2g} |')
    return lines
