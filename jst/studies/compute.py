"""Budget-chosen views of a study (not compute-matched): each policy at the budget its validation accuracy
chooses, with its steps and its training compute, and paired comparisons there; training multiply-adds per round
for the figures.

A study with several per-round budgets measures every policy at each; a reviewer asks what each policy reaches at
its own best budget (chosen on validation, never test) and at what cost. Compute is counted two ways:

* *weight-steps*: the sum over rounds of (steps trained) x (weights kept: ``params_remaining``, biases included);
* *training multiply-adds* (``training_macs``): 3 x batch x steps x the forward pass's multiply-adds per example
  (forward, and two products backward), where the forward pass counts each kernel weight once per output position
  it is used at (1 for Dense, H x W for Conv: ``networks.kernel_positions``); *sparse* counts only the weights kept
  (what a sparse kernel would execute), *dense-equivalent* every weight of the architecture (what dense kernels,
  which jst runs, execute). Biases, norms and pooling are left out (under 1% here).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from jst.studies import policy_pages
from jst.analysis import statistics
from jst.studies import study as study_lib
from jst.data import readers
from jst.models import networks
from jst.models import specs
from jst.run.records import Record



def weight_steps(records: Sequence[Record]) -> float:
    """Σ over one run's rounds of steps trained x weights kept (records of one seed, control 'none')."""
    total, previous = 0.0, 0
    for r in sorted(records, key=lambda r: r['round']):
        total += (r['cumulative_steps'] - previous) * r['params_remaining']
        previous = r['cumulative_steps']
    return total


def forward_macs(record: Record) -> tuple[float, float]:
    """(sparse, dense-equivalent) forward multiply-adds per example of a round's network (its record's ``spec``,
    ``layers`` [kept, total] and ``dataset``)."""
    spec = specs.spec_from_config(record['spec'])
    shape = readers.dataset_info(record['dataset']).image_shape
    positions = networks.kernel_positions(spec, shape)
    kept = {path: counts[0] for path, counts in record['layers'].items()}  # unprunable kernels: all kept
    return (float(sum(kept.get(p, n) * k for p, (n, k) in positions.items())),
            float(sum(n * k for n, k in positions.values())))


def training_macs(records: Sequence[Record], batch_size: int) -> list[tuple[float, float]]:
    """Cumulative (sparse, dense-equivalent) training multiply-adds at the end of each round of one run (records
    of one seed), in round order: Σ 3 x batch x the round's steps x ``forward_macs``."""
    out, previous, sparse, dense = [], 0, 0.0, 0.0
    for r in sorted(records, key=lambda r: r['round']):
        per_example = forward_macs(r)
        steps, previous = r['cumulative_steps'] - previous, r['cumulative_steps']
        sparse += 3 * batch_size * steps * per_example[0]
        dense += 3 * batch_size * steps * per_example[1]
        out.append((sparse, dense))
    return out


def macs_curve(records: Sequence[Record], batch_size: int) -> dict[str, list[float]]:
    """Per round (over seeds): mean cumulative sparse and dense-equivalent training multiply-adds, mean test
    accuracy and its 95% CI half-width (for the figures)."""
    runs = {s: [r for r in records if r['seed'] == s] for s in sorted({r['seed'] for r in records})}
    per_run = {s: training_macs(rs, batch_size) for s, rs in runs.items()}
    rounds = sorted({r['round'] for r in records})
    out: dict[str, list[float]] = {'sparse': [], 'dense': [], 'test': [], 'ci': []}
    for i, rnd in enumerate(rounds):
        tests = [r['test_accuracy'] for rs in runs.values() for r in rs if r['round'] == rnd]
        out['sparse'].append(float(np.mean([m[i][0] for m in per_run.values() if len(m) > i])))
        out['dense'].append(float(np.mean([m[i][1] for m in per_run.values() if len(m) > i])))
        out['test'].append(float(np.mean(tests)))
        out['ci'].append(float(np.nan_to_num(statistics.ci95(tests))))
    return out


def budget_curves(study: study_lib.Study, runs: dict[tuple[int, str], list[Record]],
                  batch_size: int) -> dict[int, list[tuple[str, dict[str, list[float]]]]]:
    """{budget: [(policy, curve)]} for ``figures.plot_budget_curves``: per round, mean cumulative steps, sparse and
    dense-equivalent multiply-adds, test accuracy and its 95% CI (in %), for each policy with records."""
    out: dict[int, list[tuple[str, dict[str, list[float]]]]] = {}
    for budget in study.budgets:
        out[budget] = []
        for policy in study.policy_names:
            if (budget, policy) in runs:
                steps = policy_pages.steps_curve(runs, policy, budget)
                macs = macs_curve(runs[(budget, policy)], batch_size)
                out[budget].append((policy, {'steps': steps['steps'], 'sparse': macs['sparse'],
                                             'dense': macs['dense'], 'test': [100 * v for v in steps['test']],
                                             'ci': [100 * v for v in steps['ci']]}))
    return out


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
    ratio = max(cost[a][1], cost[b][1]) / min(cost[a][1], cost[b][1])
    return (f'**Each at its validation-chosen budget** (not compute-matched: {ratio:.1f}x apart in weight-steps): '
            f'{a} ({chosen[a]:,} steps/round: {cost[a][0]:,.0f} steps, {cost[a][1]:.2f}e9 weight-steps) against {b} '
            f'({chosen[b]:,} steps/round: {cost[b][0]:,.0f} steps, {cost[b][1]:.2f}e9 weight-steps): '
            f'{100 * c.mean_difference:+.2f} ± {100 * c.ci95:.2f} points of test accuracy (paired t-test over {c.n} '
            f'seeds, p = {c.p_value:.2g}, uncorrected: descriptive).')


def budget_choice_section(runs: dict[tuple[int, str], list[Record]], comparisons: Sequence[tuple[str, str]],
                          batch_size: int) -> list[str]:
    """Markdown: every policy at its validation-chosen budget (steps, weight-steps, test accuracy) and the
    study's comparisons there, paired by seed with Holm's correction; [] for a one-budget study."""
    if len({b for b, _ in runs}) < 2:
        return []
    chosen = chosen_budgets(runs)
    lines = ['## Each policy at its own budget, chosen on validation', '',
             'For each policy, the per-round budget whose final round has the highest mean validation accuracy '
             '(test accuracy is only reported). Weight-steps: Σ over rounds of steps x weights kept (for an MLP, '
             'training multiply-adds ≈ 3 x batch x weight-steps); training multiply-adds, sparse and '
             'dense-equivalent: see the module docstring of `jst/studies/compute.py`.', '',
             '| policy | budget chosen (steps/round) | seeds | cumulative steps | weight-steps (10^9) | training '
             'multiply-adds, sparse / dense-equivalent (10^12) | val acc (%) | test acc (%) |',
             '|---|---|---|---|---|---|---|---|']
    finals = {}
    for policy, budget in chosen.items():
        records = runs[(budget, policy)]
        by_seed = {s: [r for r in records if r['seed'] == s] for s in {r['seed'] for r in records}}
        finals[policy] = study_lib.final_by_seed(records)
        val = [r['val_accuracy'] for r in finals[policy].values()]
        test = [r['test_accuracy'] for r in finals[policy].values()]
        steps = float(np.mean([r['cumulative_steps'] for r in finals[policy].values()]))
        compute = float(np.mean([weight_steps(rs) for rs in by_seed.values()])) / 1e9
        macs = np.mean([training_macs(rs, batch_size)[-1] for rs in by_seed.values()], axis=0) / 1e12
        lines.append(f'| {policy} | {budget:,} | {len(val)} | {steps:,.0f} | {compute:.2f} | '
                     f'{macs[0]:.2f} / {macs[1]:.2f} | '
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


BUDGET_WITHIN = 0.02  # the chosen budget: the first whole epoch with a mean validation loss within 2% of its minimum


def budget_from_curve(val_loss_by_step: dict[int, Sequence[float]], steps_per_epoch: int,
                      within: float = BUDGET_WITHIN, if_improving: bool = False) -> int | None:
    """The per-round budget a dense validation curve gives (pre-registered for the converged CIFAR-10 study): the
    first evaluation step, rounded up to whole epochs, at which the mean over seeds of the validation loss is within
    ``within`` (relative) of the curve's minimum; None while the minimum lies in the curve's last tenth (still
    improving: extend the curve, choose nothing), unless ``if_improving`` (the pre-registered fallback of a curve
    that is not extended again). ``val_loss_by_step``: {step: one value per seed}; validation only, test never
    enters."""
    means = {step: float(np.mean(v)) for step, v in sorted(val_loss_by_step.items()) if len(v)}
    if not means:
        return None
    best_step = min(means, key=lambda s: (means[s], s))
    if best_step > study_lib.LATE_FRACTION * max(means) and not if_improving:
        return None
    first = min(s for s, v in means.items() if v <= (1 + within) * means[best_step])
    return -(-first // steps_per_epoch) * steps_per_epoch
