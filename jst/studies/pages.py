"""Every page under docs/results/ (and the README's headline blocks) from the committed records, deterministically.

``render`` picks a study's page kind (policies x budgets, levels, juvenility) and returns its Markdown and a
function writing its figure; ``planned_page`` stands in until a study has records; ``speed_page`` collects the
committed benchmark tables. ``launch/study.py page NAME`` writes them; ``--check`` compares (``tests/test_results.py``).
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
SPEED_SECTIONS = (  # (title, command, benchmarks/results/ file)
    ('Training loop: jst vs a minimal JAX loop vs PyTorch (LeNet-300-100, one epoch)',
     'pip install torch==2.13.0 && python benchmarks/bench_lenet.py --manual_dir=../shared/datasets/mnist --full',
     'lenet_cpu.md'),
    ('Seeds as lanes of one program vs one process per seed (the paper\'s MNIST)',
     'python benchmarks/bench_seeds.py --manual_dir=../shared/datasets/mnist --seeds=1,5,16', 'seeds_cpu.md'),
    ('Seeds as lanes vs one after another for conv nets (the paper\'s CIFAR-10 ResNet)',
     'python benchmarks/bench_conv_lanes.py --manual_dir=../shared/datasets/cifar10-jpeg75 --lanes=3',
     'conv_lanes_cpu.md'),
    ('One Adam step of a conv net: jst vs a minimal JAX loop vs PyTorch (NCHW and channels_last)',
     'pip install torch==2.13.0 && python benchmarks/bench_conv.py', 'conv_cpu.md'),
    ('Which form of the same convolution XLA:CPU runs fastest (the layers of the ResNet and Conv-2)',
     'python benchmarks/bench_conv_forms.py', 'conv_forms_cpu.md'),
    ('The same six forms under the library kernels that jst uses for conv nets',
     'python benchmarks/bench_conv_forms.py --cpu_kernels=library', 'conv_forms_library_cpu.md'),
    ('Which XLA:CPU kernel flags of the pinned jaxlib make the conv step faster',
     'python benchmarks/bench_xla_flags.py', 'xla_flags_cpu.md'),
    ('One process on both cores or one process per core (throughput of campaign shards)',
     'python benchmarks/bench_threads.py', 'threads_cpu.md'),
    ('Cost of the juvenility diagnostics (the paper\'s MNIST)',
     'python benchmarks/bench_juvenility.py --manual_dir=../shared/datasets/mnist', 'juvenility_cpu.md'),
)


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
        return (level_pages.render_levels_page(study, records),
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


def dense_curve(results_dir: str, study: study_lib.Study) -> list[str]:
    """The dense network's (``dense_policy``'s round 0) validation loss and accuracy at every evaluation, mean over
    the seeds whose ``metrics.jsonl`` is committed: the curve a budget is chosen from (and, for a study that
    ``chooses_budget``, what the rule gives)."""
    by_step: dict[int, list[tuple[float, float]]] = {}
    for budget in study.budgets:
        for part in study.parts(study.dense_policy):
            folder = study_lib.records_dir(results_dir, study, budget, study.dense_policy, part)
            for row in campaign.read_metrics(folder):
                if row['round'] == 0 and row['control'] == 'none' and row['step'] > 0:
                    by_step.setdefault(row['step'], []).append((row['val_loss'], row['val_accuracy']))
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


def budget_rule_section(study: study_lib.Study, val_loss_by_step: dict[int, list[float]]) -> list[str]:
    """What the pre-registered budget rule (``compute.budget_from_curve``) gives on this curve: the budget, or why
    there is none. Only the seeds measured at every evaluation count (a partial curve chooses nothing)."""
    seeds = max(len(v) for v in val_loss_by_step.values())
    complete = {s: v for s, v in val_loss_by_step.items() if len(v) == seeds}
    means = {s: sum(v) / len(v) for s, v in complete.items()}
    best = min(means, key=lambda s: (means[s], s))
    last = max(means)
    head = ['## The budget rule\'s outcome', '', f'Mean validation loss over {seeds} seed(s): minimum '
            f'{means[best]:.4f} at step {best:,} (epoch {best / STEPS_PER_EPOCH_CIFAR:.0f}) of {last:,}.']
    if seeds < study.num_seeds:
        return head + ['', f'Only {seeds} of {study.num_seeds} seeds are committed, so the rule chooses nothing yet.']
    improving = best > study_lib.LATE_FRACTION * last
    budget = compute.budget_from_curve(complete, STEPS_PER_EPOCH_CIFAR, if_improving=study.budget_if_improving)
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


def speed_page(benchmark_results_dir: str) -> str:
    """docs/results/speed.md: the committed benchmark tables (``benchmarks/results/*.md``, written by each
    benchmark from the same measurement as its ``.json``), each with its command."""
    lines = ['# Speed', '', 'Measured by the benchmarks in `benchmarks/` on this project\'s 2-core CPU (no GPU '
             'was lent), every variant side by side in one run, reported as ratios. Regenerate this page: '
             '`python launch/study.py page speed`; the raw measurements are `benchmarks/results/*.json`.']
    for title, command, name in SPEED_SECTIONS:
        with open(os.path.join(benchmark_results_dir, name)) as f:
            table = f.read().strip().replace('\n# ', '\n### ')
        lines += ['', f'## {title}', '', f'`{command}` ([{name}](../../benchmarks/results/{name}))', '',
                  table.lstrip('# ') if table.startswith('# ') else table]
    return '\n'.join(lines + conv_target_lines(benchmark_results_dir)) + '\n'


def conv_target_lines(benchmark_results_dir: str, network: str = 'resnet') -> list[str]:
    """Issue 34's targets for the ResNet step (within 1.3x of PyTorch's best; at least 2x faster than jst before
    it), met or not in conv_cpu.json, and the convolutions alone: the sum of every conv of one step in its fastest
    form (conv_forms_cpu.json)."""
    try:
        with open(os.path.join(benchmark_results_dir, 'conv_forms_cpu.json')) as f:
            forms = json.load(f)
        with open(os.path.join(benchmark_results_dir, 'conv_cpu.json')) as f:
            steps = json.load(f)
    except FileNotFoundError:
        return []
    best_form, convs_ms = min(forms['step_sums_ms'][network].items(), key=lambda kv: kv[1])
    rows = {r['loop']: r['step_ms'] for r in steps['rows'] if r['network'] == network}
    torch_loop, torch_best = min(((k, v) for k, v in rows.items() if k.startswith('pytorch')), key=lambda kv: kv[1])
    target, before, fast = 1.3 * torch_best, rows['jst_before'], rows['jst_fast']
    met = lambda ok: 'met' if ok else 'not met'
    sums = forms['step_sums_ms'][network]
    slower = [f for f in sums if f not in ('xla_nhwc', 'xla_nchw') and sums[f] > sums['xla_nhwc']]
    return ['', f'## The {network} step against the targets of issue 34', '',
            f'jst\'s step went from {before:.1f} ms (jst_before) to {fast:.1f} ms (jst_fast, the default), '
            f'{before / fast:.2f}x faster: the 2x target is {met(before / fast >= 2)}. PyTorch\'s best step here is '
            f'{torch_best:.1f} ms ({torch_loop}), so jst_fast is {fast / torch_best:.2f}x of it: the 1.3x target '
            f'({target:.1f} ms) is {met(fast <= target)}. A minimal JAX loop (flax\'s layers, XLA\'s kernels) takes '
            f'{rows["minimal_jax"]:.1f} ms. The convolutions of one step alone (forward and backward, XLA\'s kernels '
            f'without the library kernels, the fastest of the {len(sums)} forms: {best_form}, conv_forms_cpu.json) '
            f'take {convs_ms:.1f} ms. '
            + (f'Slower than XLA\'s own NHWC convolution, summed over the step: {", ".join(slower)}. '
               if slower else '')
            + library_forms_sentence(benchmark_results_dir, network)
            + flags_sentence(benchmark_results_dir, network)
            + threads_sentence(benchmark_results_dir, network)
            + ' (The files are separate runs; their machines and dates are in their sections above.)']


def library_forms_sentence(benchmark_results_dir: str, network: str) -> str:
    """The fastest form of ``network``'s convolutions under the library kernels (conv_forms_library_cpu.json, the
    dot-based forms' dots in YNNPACK/XNNPACK) and how much slower each other form is; '' when that file is
    missing."""
    try:
        with open(os.path.join(benchmark_results_dir, 'conv_forms_library_cpu.json')) as f:
            sums = json.load(f)['step_sums_ms'][network]
    except FileNotFoundError:
        return ''
    best, best_ms = min(sums.items(), key=lambda kv: kv[1])
    others = ', '.join(f'{name} {ms / best_ms:.2f}x' for name, ms in sorted(sums.items(), key=lambda kv: kv[1])
                       if name != best)
    return (f'Under the library kernels jst uses (conv_forms_library_cpu.json), the fastest form is {best} '
            f'({best_ms:.1f} ms for the step\'s convolutions); the others take {others} of it.')


def flags_sentence(benchmark_results_dir: str, network: str) -> str:
    """Which XLA:CPU flag sets beat the default kernels for ``network`` in xla_flags_cpu.json (every round faster
    than every round of the default); '' when that file is missing."""
    try:
        with open(os.path.join(benchmark_results_dir, 'xla_flags_cpu.json')) as f:
            result = json.load(f)
    except FileNotFoundError:
        return ''
    rows = [r for r in result['rows'] if r['network'] == network and r['verdict'] != '-']
    faster = [f"{r['variant']} ({r['relative_to_default']:.2f}x)" for r in rows if r['verdict'] == 'faster']
    return (f' Of the {len(rows)} other kernel flag sets of the pinned jaxlib (xla_flags_cpu.json, '
            f"{result['rounds']} rounds, {result['machine']['processor']}, {result['date']}), "
            + (f"faster than the default in every round: {', '.join(faster)}." if faster else
               'none was faster than the default in every round.'))



def threads_sentence(benchmark_results_dir: str, network: str) -> str:
    """How much more throughput one process per core gives than one process on every core for ``network``
    (threads_cpu.json), and whether every round agreed; '' when that file is missing."""
    try:
        with open(os.path.join(benchmark_results_dir, 'threads_cpu.json')) as f:
            result = json.load(f)
    except FileNotFoundError:
        return ''
    rows = {r['layout']: r for r in result['rows'] if r['network'] == network}
    if 'process_per_core' not in rows:
        return ''
    per_core, one = rows['process_per_core'], rows['one_process_all_cores']
    agreement = {'faster': 'more in every round', 'slower': 'less in every round'}.get(
        per_core['verdict'], 'within the rounds\' noise')
    return (f" Threading (threads_cpu.json, {result['rounds']} rounds, {result['date']}): one process on all "
            f"{len(result['cores'])} cores runs {one['steps_per_s_median']:.2f} steps/s; one pinned process per core, "
            f"side by side, {per_core['steps_per_s_median']:.2f} steps/s in all "
            f"({per_core['relative_to_reference']:.2f}x, {agreement}), which is what `study.py run --shard=I/N` "
            'gets from one runner per core.')
