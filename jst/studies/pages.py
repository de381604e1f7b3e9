"""Every page under docs/results/ (and the README's headline blocks) from the committed records, deterministically.

``render`` picks a study's page kind (policies x budgets, levels, juvenility) and returns its Markdown and a
function writing its figure; ``planned_page`` stands in until a study has records (the speed page has its own module,
``jst.studies.speed_page``). ``launch/study.py page NAME`` writes them; ``--check`` compares
(``tests/test_results.py``).
"""

import glob
import json
import os
from typing import Callable

from jst import errors
from jst.studies import campaign
from jst.studies import compute
from jst.analysis import figures
from jst.studies import level_pages
from jst.studies import policy_pages
from jst.analysis import report
from jst.studies import study as study_lib
from jst.run.records import Record
from jst.run import workdir as workdir_lib

# The studies whose headline the README shows.
README_HEADLINES = ('paper_mnist', 'lenet300_fc', 'cifar10_paper', 'conv2')
CHOSEN_BUDGET_HEADLINES = {'paper_mnist': ('grow_dense_new', 'weight_reset')}  # each at its validation-chosen budget
# More comparisons a README block states (from the study's own table): where the paper's growth stands against the
# controls that keep the trained weights.
README_COMPARISONS = {'cifar10_paper': ('Is it the growth, or the trained weights it keeps?', (
    ('grow_dense_new', 'prune_continue'), ('grow_sparse_new', 'prune_continue'),
    ('grow_dense_new', 'dense_same_steps')))}
STEPS_PER_EPOCH_CIFAR = 351  # the dense curve's epochs column: 45,000 training images / batch 128

JUVENILITY_READING = '''
Every round records, at its start, on a fixed probe batch of 512 training examples: gradient norm and gradient SNR
across 8 mini-batches, dead-ReLU fraction and effective rank per layer, surviving-weight magnitudes, a Hutchinson
Hessian trace (8 probes), sharpness (rho = 0.05) and the learning potential (validation-accuracy gain after 50 steps
from the round's start on one batch order fixed for every round and method: these records drew it with numpy, as jst
did until the rounds' own step runner took it over; a rerun draws it with the rounds' sampler). Each cell: Pearson r
of the diagnostic at a round's start with that round's validation gain / the same within rounds (each round's mean
removed from both, so the trend over rounds, common to every diagnostic, drops out) / r with the run's final test
accuracy, over (seed, round >= 1) pairs. These pool pairs that are not independent (each run gives 5), so they
describe, not test: for inference see the clustered table below. Final test accuracy has one value per run, so its
sample is the runs.
'''
JUVENILITY_CLUSTERED = '''
Clustered by run: the within-round correlation of each diagnostic with the round's gain, computed inside each run
(seed; its 5 rounds, each round's mean over the policy's runs removed) and averaged over the runs (Fisher z), with a
t-based 95% CI over the runs, the independent units. A diagnostic predicts what a round gains, beyond the round
index, only where its interval excludes 0 (uncorrected for the table's many intervals).
'''
class PageError(errors.UserError, ValueError):
    """The records or the README cannot give a page (mixed batch sizes, missing headline markers)."""


def batch_size(results_dir: str, study: study_lib.Study) -> int:
    """The batch size of the study's committed runs (their ``config.json``; one for the whole study)."""
    sizes = set()
    for path in glob.glob(os.path.join(results_dir, study.name, 'records', '**', 'config.json'), recursive=True):
        with open(path) as f:
            sizes.add(json.load(f)['batch_size'])
    if len(sizes) != 1:
        raise PageError(f'{study.name}: its records hold batch sizes {sorted(sizes)}; one was expected.')
    return sizes.pop()


def all_records(results_dir: str, study: study_lib.Study) -> list[Record]:
    """Every committed record of ``study``, controls included, in one list (a levels study has one cell)."""
    return [r for rs in study_lib.load_records(results_dir, study, controls=True).values() for r in rs]


def render(results_dir: str, study: study_lib.Study) -> tuple[str, Callable[[], None]]:
    """The study's page and a function writing its figure (under ``results_dir/<study>/``), from the records."""
    if study.page == 'levels':
        records = all_records(results_dir, study)
        if not records:
            return planned_page(study), lambda: None
        settings = differing_settings_section(results_dir, study)
        page = level_pages.render_levels_page(study, records)
        return (page.rstrip('\n') + '\n\n' + '\n'.join(settings) + '\n' if settings else page,
                lambda: figures.plot_level_curves(
                    {level_pages.NAMES[c]: level_pages.level_curves(records, c) for c in level_pages.CONTROLS},
                    os.path.join(results_dir, study.name, 'levels.png')))
    runs = study_lib.load_records(results_dir, study)
    if not runs:
        return planned_page(study), lambda: None
    extra = []
    if study.page == 'juvenility':
        records = [{**r, 'variant': policy, 'workdir': f'{budget}/{policy}'} for (budget, policy), rs in runs.items()
                   for r in rs]
        extra = ['## Juvenility diagnostics against the next round\'s gain', '', JUVENILITY_READING.strip(), '',
                 report.juvenility_table(records), '', '### Clustered by run', '', JUVENILITY_CLUSTERED.strip(), '',
                 report.juvenility_clustered_table(records)]
    if study.dense_policy and study.lanes_per_run:
        extra += dense_curve(results_dir, study)
    settings = differing_settings_section(results_dir, study)
    extra += ([''] if extra and settings else []) + settings
    batch = batch_size(results_dir, study)
    extra += compute.budget_choice_section(runs, study.comparisons, batch)
    return (policy_pages.render_page(study, runs, extra=extra),
            lambda: figures.plot_budget_curves(compute.budget_curves(study, runs, batch),
                                              os.path.join(results_dir, study.name, 'accuracy_vs_steps.png')))


def planned_page(study: study_lib.Study) -> str:
    """The page of a study with no committed records yet: its setup and the command that runs it."""
    policies = [f'- `{name}`: {description} (`{study.command(name, budget)}`)' for budget in study.budgets
                for name, _, description in study.policies]
    prereg = [study_lib.preregistration_sentence(study), ''] if study.preregistration else []
    return '\n'.join([f'# {study.title}', '', study.notes.strip(), '', *prereg, '**No records are committed yet.** '
                      f'`python launch/study.py run {study.name}` trains its cells ({study.num_seeds} seeds, '
                      f'{", ".join(f"{b:,}" for b in study.budgets)} steps per round):', '', *policies]) + '\n'


# Config fields that may differ between the seeds of one cell without making them different experiments.
PER_SEED_FIELDS = frozenset({'seed', 'num_seeds', 'manual_dir', 'data_dir', 'overwrite'})
PRE_KNOB = ' (recorded before the knob existed)'


def part_settings(results_dir: str, study: study_lib.Study, budget: int,
                  policy: str) -> dict[str, dict[str, tuple[str, str]]]:
    """{part's seeds ('seed 42', 'seeds 42-44'): {config field: (its value as JSON, a note)}} of a cell's committed
    parts; a field a record predates (``workdir.ADDED_KNOBS``) holds the value that reproduces it, noted as such."""
    out = {}
    for first, n in study.parts(policy):
        path = os.path.join(study_lib.records_dir(results_dir, study, budget, policy, (first, n)), 'config.json')
        if os.path.exists(path):
            with open(path) as f:
                config = json.load(f)
            values = {k: (json.dumps(v, sort_keys=True), '') for k, v in config.items() if k not in PER_SEED_FIELDS}
            for knob, old in workdir_lib.ADDED_KNOBS.items():
                values.setdefault(knob, (json.dumps(old), PRE_KNOB))
            out[study.part_name((first, n)).replace('_', ' ')] = values
    return out


def differing_settings_section(results_dir: str, study: study_lib.Study) -> list[str]:
    """A page section naming every setting that differs between the seeds of one cell (their ``config.json``), so a
    reader sees where replicates did not run the same code path; none when they all agree."""
    lines = []
    for budget in study.budgets:
        for policy in study.policy_names:
            parts = part_settings(results_dir, study, budget, policy)
            for field in sorted(set().union(*parts.values())) if parts else []:
                seeds_by_value: dict[tuple[str, str], list[str]] = {}
                for seeds, values in parts.items():
                    seeds_by_value.setdefault(values.get(field, ('absent', '')), []).append(seeds)
                if len({value for value, _ in seeds_by_value}) > 1:
                    lines.append(f'- {budget:,} steps, `{policy}`: `{field}` = ' + '; '.join(
                        f'{value}{note} in {", ".join(seeds)}' for (value, note), seeds in seeds_by_value.items()))
    if not lines:
        return []
    return ['## Settings that differ between seeds', '', 'The records\' `config.json` of one cell (one policy at one '
            'budget) differ in these fields; every other setting is the same. What each means for the numbers is in '
            'the study\'s notes above.', '', *lines]


def dense_evaluations(results_dir: str, study: study_lib.Study) -> dict[int, list[tuple[float, float]]]:
    """{step: [(validation loss, validation accuracy), one per seed]} of the dense network (``dense_policy``'s round
    0) at every evaluation, over the seeds whose ``metrics.jsonl`` is committed."""
    by_step: dict[int, list[tuple[float, float]]] = {}
    for budget in study.budgets:
        for part in study.parts(study.dense_policy):
            folder = study_lib.records_dir(results_dir, study, budget, study.dense_policy, part)
            for row in campaign.read_metrics(folder):
                if row['round'] == 0 and row['control'] == 'none' and row['step'] > 0:
                    by_step.setdefault(row['step'], []).append((row['val_loss'], row['val_accuracy']))
    return by_step


def dense_curve(results_dir: str, study: study_lib.Study) -> list[str]:
    """The dense network's validation loss and accuracy at every evaluation, mean over the committed seeds: the curve
    a budget is chosen from (and, for a study that ``chooses_budget``, what the rule gives)."""
    by_step = dense_evaluations(results_dir, study)
    if not by_step:
        return []
    lines = ['## The dense network\'s validation curve', '', '| step | epochs | val loss | val acc (%) | seeds |',
             '|---|---|---|---|---|']
    for step, values in sorted(by_step.items()):
        loss, acc = (sum(v[i] for v in values) / len(values) for i in (0, 1))
        lines.append(f'| {step:,} | {step / STEPS_PER_EPOCH_CIFAR:.2f} | {loss:.4f} | {100 * acc:.2f} | '
                     f'{len(values)} |')
    if study.chooses_budget:
        lines += ['', *budget_rule_section(study, {s: [v[0] for v in vs] for s, vs in by_step.items()})]
    return lines


def complete_curve(val_loss_by_step: dict[int, list[float]]) -> dict[int, list[float]]:
    """The evaluations measured on every seed that has any (a seed still running has fewer)."""
    seeds = max(len(v) for v in val_loss_by_step.values())
    return {s: v for s, v in val_loss_by_step.items() if len(v) == seeds}


def chosen_budget(results_dir: str, study: study_lib.Study) -> int | None:
    """The per-round budget the pre-registered rule (``compute.budget_from_curve``) gives on a curve study's committed
    records: None until all ``num_seeds`` seeds are committed (a partial curve chooses nothing), or when the rule
    chooses nothing. What ``budget_rule_section`` prints and what a budget constant must equal."""
    losses = {s: [v[0] for v in vs] for s, vs in dense_evaluations(results_dir, study).items()}
    return curve_budget(study, losses) if losses else None


def curve_budget(study: study_lib.Study, val_loss_by_step: dict[int, list[float]]) -> int | None:
    """The rule's budget on ``val_loss_by_step`` ({step: one value per seed}) for ``study``: None while fewer than its
    ``num_seeds`` seeds are measured at every evaluation, or when the rule chooses nothing."""
    complete = complete_curve(val_loss_by_step)
    if len(next(iter(complete.values()))) < study.num_seeds:
        return None
    return compute.budget_from_curve(complete, STEPS_PER_EPOCH_CIFAR, if_improving=study.budget_if_improving)


def budget_rule_section(study: study_lib.Study, val_loss_by_step: dict[int, list[float]]) -> list[str]:
    """What the pre-registered budget rule (``compute.budget_from_curve``) gives on this curve: the budget, or why
    there is none. Only the seeds measured at every evaluation count (a partial curve chooses nothing)."""
    complete = complete_curve(val_loss_by_step)
    seeds = len(next(iter(complete.values())))
    means = {s: sum(v) / len(v) for s, v in complete.items()}
    best = min(means, key=lambda s: (means[s], s))
    last = max(means)
    head = ['## The budget rule\'s outcome', '', f'Mean validation loss over {seeds} seed(s): minimum '
            f'{means[best]:.4f} at step {best:,} (epoch {best / STEPS_PER_EPOCH_CIFAR:.0f}) of {last:,}.']
    if seeds < study.num_seeds:
        return head + ['', f'Only {seeds} of {study.num_seeds} seeds are committed, so the rule chooses nothing yet.']
    improving = best > study_lib.LATE_FRACTION * last
    budget = curve_budget(study, val_loss_by_step)
    late = (f'The minimum lies in the curve\'s last tenth (after step {study_lib.LATE_FRACTION * last:,.0f}): the '
            'dense network is still improving on validation')
    if budget is None:
        return head + ['', f'{late}, so the rule chooses **no budget**; by the pre-registration the curve is extended '
                       'by a new study with a longer schedule, under the same rule.']
    bound = [f'{late}; by the pre-registration the budget below holds anyway, and every claim of the study run at '
             'it is worded as a bound.', ''] if improving else []
    return head + ['', *bound, f'The first whole epoch within {100 * compute.BUDGET_WITHIN:.0f}% of that minimum: '
                   f'**{budget:,} steps per round** ({budget // STEPS_PER_EPOCH_CIFAR} epochs). Validation only; '
                   'test never entered the choice.']


def headline_markers(study: study_lib.Study) -> tuple[str, str]:
    """The README comments around a study's generated headline block."""
    return (f'<!-- {study.name} headline: generated by `python launch/study.py page {study.name}` -->',
            f'<!-- end of {study.name} headline -->')


def headline_block(results_dir: str, study: study_lib.Study) -> str:
    """The README's block for ``study``: its headline table and sentence (a levels study: its summary sentence,
    with the study's equivalence margin, exactly as its page states it)."""
    if study.page == 'levels':
        levels = level_pages.by_level(all_records(results_dir, study))
        return level_pages.summary_sentence(levels, level_pages.level_comparisons(levels, study.equivalence_margin))
    runs = study_lib.load_records(results_dir, study)
    block = '\n'.join(policy_pages.headline_table(study, runs) + ['', policy_pages.headline_sentence(study, runs)])
    if study.name in CHOSEN_BUDGET_HEADLINES:
        block += '\n\n' + compute.chosen_budget_sentence(runs, *CHOSEN_BUDGET_HEADLINES[study.name])
    if study.name in README_COMPARISONS:
        block += '\n\n' + policy_pages.comparisons_sentence(study, runs, *README_COMPARISONS[study.name])
    return block


def readme_with_headline(readme: str, results_dir: str, study: study_lib.Study) -> str:
    """``readme`` with the block between the study's headline markers regenerated from its records."""
    begin, end = headline_markers(study)
    if begin not in readme or end not in readme:
        raise PageError(f'README.md lacks the markers {begin!r} ... {end!r} around the headline table')
    head, rest = readme.split(begin, 1)
    return f'{head}{begin}\n{headline_block(results_dir, study)}\n{end}{rest.split(end, 1)[1]}'
