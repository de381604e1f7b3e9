"""Runs a study's cells and writes its results page from the committed records.

    python launch/study.py run paper_mnist [--policy=NAME] [--budget=STEPS]   # runs missing cells
    python launch/study.py page paper_mnist [--check]                         # docs/results/paper_mnist.md

``run`` trains each (budget, policy) cell as one ``launch/main.py`` process
with ``num_seeds`` (in ``runs/<study>/<budget>/<policy>``, resumable) and
copies its ``summary.json`` and ``config.json`` under
``docs/results/<study>/records/``. ``page`` renders the page and the figure
from those records only; ``--check`` exits 1 when the committed page differs
(what ``tests/test_results.py`` runs). Offline: set ``JST_MANUAL_DIR``.
"""

import os
import shutil
import subprocess
import sys

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=g-import-not-at-top,wrong-import-position
from jst import study as study_lib
# pylint: enable=g-import-not-at-top,wrong-import-position

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, 'docs', 'results')
FINAL_ARCH = '--config.model.widths=(128,128,128,128,128,128)'

STUDIES = {
    'paper_mnist': study_lib.Study(
        name='paper_mnist',
        title="The seed paper's MNIST experiment: growth against its controls",
        config='configs/mnist.py', first_seed=42, num_seeds=5, budgets=(429, 1287, 3861),
        policies=(
            ('weight_reset', '--config.method=lth', 'classic lottery ticket: 5 hidden layers from the start, '
             'level pruning each round, survivors reset to theta_0'),
            ('weight_rewind', '--config.method=lth --config.rewind_step=100',
             'as weight_reset, survivors rewound to step 100 of round 0 (late rewinding)'),
            ('prune_continue', f'--config.method=juvenile --config.growth=none {FINAL_ARCH}',
             'the final architecture from the start, pruned each round, trained weights kept (no reset, '
             'no growth): the control for growth'),
            ('grow_no_prune', '--config.method=juvenile --config.target_sparsity=0.0',
             'paper growth (one identity layer per round) without pruning'),
            ('grow_dense_new', '--config.method=juvenile',
             'the paper: prune, then insert a dense identity layer, weights kept'),
            ('grow_sparse_new', '--config.method=juvenile --config.new_layer_mask=sparse',
             'as the paper, the new layer starts at the network\'s current density'),
            ('dense_same_steps', '--config.method=lth --config.num_rounds=0 '
             '--config.steps_per_round={total}', 'the dense final architecture trained once for the '
             'cumulative steps of the 6 rounds'),
        ),
        comparisons=(('grow_dense_new', 'prune_continue'), ('grow_sparse_new', 'prune_continue'),
                     ('grow_dense_new', 'weight_reset'), ('prune_continue', 'weight_reset'),
                     ('weight_rewind', 'weight_reset'), ('grow_dense_new', 'grow_no_prune'),
                     ('grow_dense_new', 'dense_same_steps')),
        headline=('grow_sparse_new', 'prune_continue'),
        headline_question='Does growth beat prune-and-continue at matched weights and steps?',
        notes='''
`configs/mnist.py` (arXiv 2109.03862's setting): MLP with 128-unit hidden layers, PyTorch default init, Adam 1e-3,
batch 128, level pruning of every Dense kernel to 95% sparsity at the last of 5 pruning rounds (6 trainings),
5,000 training images held out for validation, juvenility diagnostics off. The question a skeptic asks first:
does growth beat *keeping the trained weights* (prune and continue on the final architecture), at matched steps?
`grow_sparse_new` and `prune_continue` end with the same architecture, the same number of weights and the same
cumulative steps. In the flags, `{total}` stands for 6 x the per-round budget.
''',
    ),
}


def _study(name: str) -> study_lib.Study:
    if name not in STUDIES:
        raise app.UsageError(f'unknown study {name!r}; choose one of {sorted(STUDIES)}')
    return STUDIES[name]


_POLICY = flags.DEFINE_string('policy', None, 'run: only this policy.')
_BUDGET = flags.DEFINE_integer('budget', None, 'run: only this budget (steps per round).')
_CHECK = flags.DEFINE_bool('check', False, 'page: exit 1 when the committed page differs.')


def run_cell(study: study_lib.Study, policy: str, budget: int) -> None:
    workdir = os.path.join(REPO, 'runs', study.name, str(budget), policy)
    flags_ = study.flags(policy, budget)
    args = [sys.executable, os.path.join(REPO, 'launch', 'main.py'), f'--config={study.config}',
            f'--config.seed={study.first_seed}', f'--config.num_seeds={study.num_seeds}',
            '--config.juvenility=False', '--config.write_report=False', *flags_.split(), f'--workdir={workdir}']
    print(' '.join(args[1:]), flush=True)
    subprocess.run(args, check=True, cwd=REPO)
    out = study_lib.records_dir(RESULTS, study, budget, policy)
    os.makedirs(out, exist_ok=True)
    for name in ('summary.json', 'config.json'):
        shutil.copy(os.path.join(workdir, name), os.path.join(out, name))


def write_figure(study: study_lib.Study, runs, path: str) -> None:
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
    fig, axes = plt.subplots(1, len(study.budgets), figsize=(6 * len(study.budgets), 4.5), squeeze=False)
    for ax, budget in zip(axes[0], study.budgets):
        for policy, _, _ in study.policies:
            c = study_lib.steps_curve(runs, policy, budget)
            if c['steps']:
                y, e = [100 * v for v in c['test']], [100 * v for v in c['ci']]
                ax.errorbar(c['steps'], y, yerr=e, marker='o', capsize=3, label=policy)
        ax.set(xlabel='cumulative training steps', ylabel='test accuracy (%), mean ± 95% CI',
               title=f'{budget:,} steps per round')
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv):
    if len(argv) != 3 or argv[1] not in ('run', 'page'):
        raise app.UsageError('usage: python launch/study.py run|page STUDY [--policy=..] [--budget=..] [--check]')
    study = _study(argv[2])
    if argv[1] == 'run':
        for budget in study.budgets:
            for policy, _, _ in study.policies:
                if (_POLICY.value or policy) == policy and (_BUDGET.value or budget) == budget:
                    run_cell(study, policy, budget)
        return
    runs = study_lib.load_records(RESULTS, study)
    page = study_lib.render_page(study, runs)
    path = os.path.join(RESULTS, f'{study.name}.md')
    if _CHECK.value:
        with open(path) as f:
            if f.read() != page:
                print(f'{path} differs from the page regenerated from its records: rerun '
                      f'`python launch/study.py page {study.name}` and commit it.', file=sys.stderr)
                sys.exit(1)
        print(f'{path}: every number matches its records.')
        return
    with open(path, 'w') as f:
        f.write(page)
    write_figure(study, runs, os.path.join(RESULTS, study.name, 'accuracy_vs_steps.png'))
    print(f'wrote {path}')


if __name__ == '__main__':
    app.run(main)
