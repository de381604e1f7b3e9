"""The page of a policies study (policies x per-round budgets x seeds) from its committed records.

Every table is full (every policy, every round); nothing is chosen on the test split: comparisons are fixed in code
(``Study.comparisons``; those added after a study's first records are committed before their own) at the final
round and use paired t-tests and TOSTs over seeds, each Holm-corrected over every comparison of the study. The peer of
``level_study`` (pruning levels with controls).
"""

from __future__ import annotations

import collections
from typing import Any, Sequence

import numpy as np

from jst.analysis import claims
from jst.analysis import report
from jst.analysis import statistics
from jst.studies import study as study_lib
from jst.run.records import Record


def _pct(mean: float, ci: float) -> str:
    """'mean ± CI' in percent; the mean alone for one seed (no interval; the table shows n), not '± nan'."""
    return f'{100 * mean:.2f}' if np.isnan(ci) else f'{100 * mean:.2f} ± {100 * ci:.2f}'


def final_table(study: study_lib.Study, runs: dict[tuple[int, str], list[Record]], budget: int) -> list[str]:
    """Markdown rows: each policy's last round at ``budget`` (mean ± 95% CI over seeds)."""
    lines = ['| policy | seeds | architecture | % weights | params | cumulative steps | val acc (%) | '
             'test acc (%) |', '|---|---|---|---|---|---|---|---|']
    for policy in study.policy_names:
        if (budget, policy) not in runs:
            lines.append(f'| {policy} | not run | | | | | | |')
            continue
        fin = list(study_lib.final_by_seed(runs[(budget, policy)]).values())
        val, test = [r['val_accuracy'] for r in fin], [r['test_accuracy'] for r in fin]
        archs = ' / '.join(sorted({r['architecture'] for r in fin}))
        remaining = 100 * np.mean([r['fraction_remaining'] for r in fin])
        lines.append(f"| {policy} | {len(fin)} | {archs} | {remaining:.2f} | "
                     f"{np.mean([r['params_remaining'] for r in fin]):,.0f} | "
                     f"{np.mean([r['cumulative_steps'] for r in fin]):,.0f} | "
                     f"{_pct(np.mean(val), statistics.ci95(val))} | {_pct(np.mean(test), statistics.ci95(test))} |")
    return lines


def comparison_rows(study: study_lib.Study, runs: dict[tuple[int, str], list[Record]],
                    budget: int | None = None) -> list[dict[str, Any]]:
    """The study's comparisons at each budget's final round (``budget``'s only, when given): test accuracy a - b
    over shared seeds; Holm (t-test and TOST) over every comparison of the study, all budgets together."""
    rows, values = [], []
    for b_steps in study.budgets:
        for a, b in study.comparisons:
            if (b_steps, a) not in runs or (b_steps, b) not in runs:
                continue
            fa, fb = study_lib.final_by_seed(runs[(b_steps, a)]), study_lib.final_by_seed(runs[(b_steps, b)])
            seeds = sorted(set(fa) & set(fb))
            if len(seeds) < 2:  # a paired test needs two seeds of both (a campaign in progress)
                continue
            values.append(([fa[s]['test_accuracy'] for s in seeds], [fb[s]['test_accuracy'] for s in seeds]))
            rows.append({'a': a, 'b': b, 'budget': b_steps, 'comparison': statistics.paired_comparison(*values[-1]),
                         'params': (np.mean([fa[s]['params_remaining'] for s in seeds]),
                                    np.mean([fb[s]['params_remaining'] for s in seeds])),
                         'steps': (np.mean([fa[s]['cumulative_steps'] for s in seeds]),
                                   np.mean([fb[s]['cumulative_steps'] for s in seeds]))})
    rows = claims.add_tests(rows, values, [claims.STUDY_WIDE] * len(rows), study.equivalence_margin)
    return [r for r in rows if budget is None or r['budget'] == budget]


def comparison_phrase(row: dict[str, Any]) -> str:
    """'a beats / is ahead of ... / is equivalent to ... b (difference, Holm p, Holm TOST p, params, steps)'."""
    c = row['comparison']
    return (f"{claims.claim(row)} ({100 * c.mean_difference:+.2f} ± {100 * c.ci95:.2f} points "
            f"of test accuracy, Holm p = {row['p_holm']:.2g}{claims.tost_phrase(row)}, {row['params'][0]:,.0f} vs "
            f"{row['params'][1]:,.0f} params, {row['steps'][0]:,.0f} vs {row['steps'][1]:,.0f} steps)")


def comparisons_sentence(study: study_lib.Study, runs: dict[tuple[int, str], list[Record]], question: str,
                         pairs: Sequence[tuple[str, str]]) -> str:
    """'**question** At B steps per round, a beats b (...); c loses to d (...).': ``pairs`` (of
    ``Study.comparisons``, Holm-corrected over the study) at each budget."""
    parts = []
    for budget in study.budgets:
        rows = {(r['a'], r['b']): r for r in comparison_rows(study, runs, budget)}
        found = [comparison_phrase(rows[pair]) for pair in pairs if pair in rows]
        parts += [f'at {budget:,} steps per round, ' + '; '.join(found)] if found else []
    text = '; '.join(parts) or 'not run yet (a paired test needs >= 2 seeds of both)'
    return f'**{question}** {text[0].upper()}{text[1:]}.'


def headline_sentence(study: study_lib.Study, runs: dict[tuple[int, str], list[Record]]) -> str:
    """The page's first sentence: the answer to ``study.headline_question`` (``study.headline``) at each budget."""
    return comparisons_sentence(study, runs, study.headline_question, [study.headline])


def headline_table(study: study_lib.Study, runs: dict[tuple[int, str], list[Record]]) -> list[str]:
    """Markdown rows: each policy's final-round test accuracy at every budget (mean ± 95% CI) and params."""
    lines = ['| policy | params at the end | ' + ' | '.join(f'{b:,} steps/round' for b in study.budgets) + ' |',
             '|---|---|' + '---|' * len(study.budgets)]
    for policy in study.policy_names:
        cells, params = [], []
        for budget in study.budgets:
            fin = list(study_lib.final_by_seed(runs.get((budget, policy), [])).values())
            test = [r['test_accuracy'] for r in fin]
            cells.append(f'{_pct(np.mean(test), statistics.ci95(test))} (n={len(fin)})' if fin else 'not run')
            params.append(f"{np.mean([r['params_remaining'] for r in fin]):,.0f}" if fin else '-')
        shown = params[0] if len(set(params)) == 1 else ' / '.join(params)
        lines.append(f'| {policy} | {shown} | ' + ' | '.join(cells) + ' |')
    return lines


def convergence_sentence(study: study_lib.Study, runs: dict[tuple[int, str], list[Record]]) -> str:
    """Where the dense network (``dense_policy``'s round 0) reaches its minimum validation loss, per budget, and
    where each policy trained once (one round, e.g. the dense network for the cumulative steps) reaches its own."""
    def where(best_steps: list[int], budget: int) -> str:
        if len(best_steps) > 1:
            return f'step {np.mean(best_steps):,.0f} ± {statistics.ci95(best_steps):,.0f} of {budget:,}'
        return f'step {best_steps[0]:,} of {budget:,} (one seed so far)'
    parts, once = [], []
    for budget in study.budgets:
        dense = [r['best_step'] for r in runs.get((budget, study.dense_policy), []) if r['round'] == 0]
        parts += [where(dense, budget)] if dense else []
        for policy in study.policy_names:
            records = runs.get((budget, policy), [])
            if policy != study.dense_policy and records and all(r['round'] == 0 for r in records):
                once.append(f'{policy} at {budget:,} steps per round, '
                            f'{where([r["best_step"] for r in records], records[0]["steps"])}')
    if not parts:
        return ''
    return (f'Where the dense network ({study.dense_policy}, round 0) reaches its minimum validation loss: '
            + '; '.join(parts) + '.' + (f' Trained once: {"; ".join(once)}.' if once else '')
            + ' A budget whose minimum lies well before its end has converged.')


def truncation_sentence(study: study_lib.Study, runs: dict[tuple[int, str], list[Record]], budget: int) -> str:
    """How many trainings of each policy at ``budget`` are still improving at their end (``study.still_improving``:
    their accuracy and early-stop step are bounds). A round ends at ``budget``
    (rewound rounds start later but end there); a one-round policy's training ends at its own ``steps``."""
    parts = []
    for policy in study.policy_names:
        cell = runs.get((budget, policy), [])
        if cell:
            at_end = sum(study_lib.still_improving(r, budget) for r in cell)
            parts.append(f'{policy} {at_end} of {len(cell)}')
    return (f'Trainings {study_lib.TRUNCATION_RULE}: ' + ', '.join(parts) + '.') if parts else ''


def comparison_table(rows: Sequence[dict[str, Any]]) -> list[str]:
    lines = ['| a | b | params a / b | steps a / b | test acc a - b (points) | 95% CI | p (paired t) | '
             'p (Holm) | effect size d_z | TOST p / Holm (90% CI) | verdict |',
             '|---|---|---|---|---|---|---|---|---|---|---|']
    for r in rows:
        c = r['comparison']
        lines.append(f"| {r['a']} | {r['b']} | {r['params'][0]:,.0f} / {r['params'][1]:,.0f} | "
                     f"{r['steps'][0]:,.0f} / {r['steps'][1]:,.0f} | {100 * c.mean_difference:+.2f} | "
                     f"± {100 * c.ci95:.2f} | {c.p_value:.3g} | {r['p_holm']:.3g} | {c.effect_size:+.2f} | "
                     f"{claims.equivalence_cell(r)} | {claims.claim(r, 'a', 'b')} |")
    return lines


def full_table(runs: dict[tuple[int, str], list[Record]], budget: int, policies: Sequence[str]) -> list[str]:
    """Every round of every policy at ``budget`` (``report.aggregate_table``)."""
    records = [{**r, 'name': p, 'variant': p} for p in policies for r in runs.get((budget, p), [])]
    return report.aggregate_table(records).splitlines() if records else []


def render_page(study: study_lib.Study, runs: dict[tuple[int, str], list[Record]], headline: str = '',
                extra: Sequence[str] = ()) -> str:
    """The study's Markdown page (deterministic in the records); ``extra`` lines go before the commands."""
    seeds = f'{study.first_seed}-{study.first_seed + study.num_seeds - 1}'
    measured = sorted({r['seed'] for rs in runs.values() for r in rs})
    planned = sorted({study.first_seed + i for p in study.policy_names for i in range(study.seeds_of(p))})
    if measured != planned:
        seeds += f' planned, {", ".join(map(str, measured)) or "none"} measured so far'
    more = ''.join(f'; {p}: {study.first_seed}-{study.first_seed + n - 1}' for p, n in study.policy_seeds)
    lines = [f'# {study.title}', '', study.notes.strip(), '',
             f'Seeds {seeds}{more} ({study_lib.lanes_phrase(study)}), per-round budgets '
             f'{", ".join(f"{b:,}" for b in study.budgets)} steps. Accuracies: mean ± t-based 95% CI over seeds, '
             'at each round\'s early-stopping point (minimum validation loss). Regenerate this page from the '
             f'committed records: `python launch/study.py page {study.name}`; rerun a cell: '
             f'`python launch/study.py run {study.name} --policy=NAME --budget=STEPS`.', '']
    if study.preregistration:
        lines += [study_lib.preregistration_sentence(study), '']
    if headline or study.headline[0]:
        lines += [headline or headline_sentence(study, runs), '']
    if study.dense_policy:
        lines += [convergence_sentence(study, runs), '']
    if study.equivalence_margin > 0:
        lines += [claims.margin_sentence(study.equivalence_margin, study.margin_fixed, study.margin_why,
                                         f'all {len(comparison_rows(study, runs))} comparisons of this page, every '
                                         'budget (one family)'), '']
    lines += ['## Policies', '', '| policy | what it does | flags (besides the budget) |', '|---|---|---|']
    lines += [f'| {p.name} | {p.description} | `{p.flags}` |' for p in study.policies]
    if study.base_flags:
        lines += ['', f'Every policy also runs with `{study.base_flags}`.']
    lines += ['', f'![accuracy vs steps and multiply-adds]({study.name}/accuracy_vs_steps.png)', '', 'The figure: '
              'test accuracy per round against cumulative steps, sparse and dense-equivalent training multiply-adds '
              '(rows; `jst/studies/compute.py`), one column per budget.']
    for budget in study.budgets:
        lines += ['', f'## {budget:,} steps per round', '', '### Final round', '']
        lines += final_table(study, runs, budget)
        truncated = truncation_sentence(study, runs, budget)
        lines += ['', truncated] if truncated else []
        rows = comparison_rows(study, runs, budget)
        if rows:
            lines += ['', '### Comparisons at the final round (test accuracy, paired over seeds, Holm over every '
                      'comparison of this page)', '']
            lines += comparison_table(rows)
        lines += ['', '### Every round', '']
        lines += full_table(runs, budget, study.policy_names)
    lines += ['', *extra, '', '## Commands', '']
    lines += [f'- `{study.command(p, b, "STUDY_DIR/" + study.workdir(p, b, part), part)}`'
              for b in study.budgets for p in study.policy_names for part in study.parts(p)]
    lines += ['', '`STUDY_DIR`: `launch/study.py --workdir_root` (default `$JST_STUDY_DIR`, else '
              '`~/.cache/jst/studies`), outside the repository.']
    return '\n'.join(lines).replace('\n\n\n', '\n\n') + '\n'


def steps_curve(runs: dict[tuple[int, str], list[Record]], policy: str, budget: int) -> dict[str, list[float]]:
    """Mean cumulative steps, test accuracy and its CI per round of one policy (for the figure)."""
    by_round = collections.defaultdict(list)
    for r in runs.get((budget, policy), []):
        by_round[r['round']].append(r)
    out = {'steps': [], 'test': [], 'ci': []}
    for _, rs in sorted(by_round.items()):
        out['steps'].append(float(np.mean([r['cumulative_steps'] for r in rs])))
        out['test'].append(float(np.mean([r['test_accuracy'] for r in rs])))
        out['ci'].append(float(np.nan_to_num(statistics.ci95([r['test_accuracy'] for r in rs]))))
    return out
