"""Runs a study's cells and writes its results page from the committed records.

    python launch/study.py run paper_mnist [--policy=NAME] [--budget=STEPS] [--commit]  # runs missing cells
    python launch/study.py page paper_mnist [--check]                                   # docs/results/paper_mnist.md

``run`` advances a study part by part: each (budget, policy) cell is one
``launch/main.py`` process with all its seeds as lanes, or, for a study with
``lanes_per_run=k``, processes of k seeds one after another. A part whose
records are already under ``docs/results/<study>/records/`` is skipped; an
unfinished part resumes from the checkpoints in its workdir
(``--workdir_root/<study>/<budget>/<policy>[/seed_S]``, outside the
repository). A finished part's ``summary.json``, ``config.json`` and
``metrics.jsonl`` (every evaluation) are copied under ``records/`` with
``run.json`` (its workdir, command, seconds and the jst commit), and the
study's page is regenerated; ``--commit`` commits them at once. SIGTERM (or
Ctrl-C) pauses: the training stops, keeps its last checkpoint, and the same
command continues. ``--shard=I/N`` lets N runners share a study.
``page`` renders the page and the figure from the records only; ``--check``
exits 1 when the committed page differs (what ``tests/test_results.py`` runs).
Offline: set ``JST_MANUAL_DIR``.
"""

import glob
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from typing import Any, Optional

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=g-import-not-at-top,wrong-import-position
from jst.analysis import compute
from jst.analysis import figures
from jst.analysis import level_study
from jst.analysis import report
from jst.analysis import study as study_lib
from jst.analysis.studies import STUDIES, TEST_STUDIES, TRANSFER_SOURCE
# pylint: enable=g-import-not-at-top,wrong-import-position

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, 'docs', 'results')
README = os.path.join(REPO, 'README.md')
README_HEADLINES = ('paper_mnist', 'lenet300')  # the studies whose headline the README shows
COMPUTE_FAIR_HEADLINES = {'paper_mnist': ('grow_dense_new', 'weight_reset')}  # the paper's question, compute-fair


JUVENILITY_READING = '''
Every round records, at its start, on a fixed probe batch of 512 training examples: gradient norm and gradient SNR
across 8 mini-batches, dead-ReLU fraction and effective rank per layer, surviving-weight magnitudes, a Hutchinson
Hessian trace (8 probes), sharpness (rho = 0.05) and the learning potential (validation-accuracy gain after 50 fixed
steps from the round's start). Each cell: Pearson r of the diagnostic at a round's start with that round's
validation gain / the same within rounds (each round's mean removed from both, so the trend over rounds, common to
every diagnostic, drops out) / r with the run's final test accuracy, over (seed, round >= 1) pairs. These pool
pairs that are not independent (each run gives 5), so they describe, not test: for inference see the clustered
table below. Final test accuracy has one value per run, so its sample is the runs.
'''
JUVENILITY_CLUSTERED = '''
Clustered by run: the within-round correlation of each diagnostic with the round's gain, computed inside each run
(seed; its 5 rounds, each round's mean over the policy's runs removed) and averaged over the runs (Fisher z), with a
t-based 95% CI over the runs, the independent units. A diagnostic predicts what a round gains, beyond the round
index, only where its interval excludes 0 (uncorrected for the table's many intervals).
'''


def _study(name: str) -> study_lib.Study:
    known = {**STUDIES, **TEST_STUDIES}
    if name not in known:
        raise app.UsageError(f'unknown study {name!r}; choose one of {sorted(STUDIES)}')
    return known[name]


_POLICY = flags.DEFINE_string('policy', None, 'run: only this policy.')
_BUDGET = flags.DEFINE_integer('budget', None, 'run: only this budget (steps per round).')
_CHECK = flags.DEFINE_bool('check', False, 'page: exit 1 when the committed page differs.')
_COMMIT = flags.DEFINE_bool('commit', False, 'run: git-commit each finished part\'s records at once.')
_MAX_PARTS = flags.DEFINE_integer('max_parts', 0, 'run: stop after training this many parts (0: all).')
_WORKDIR_ROOT = flags.DEFINE_string(
    'workdir_root', os.environ.get('JST_STUDY_DIR') or os.path.join(os.path.expanduser('~'), '.cache', 'jst', 'studies'),
    'run: where the cells\' workdirs (checkpoints) live; outside the repository so a fresh checkout keeps them.')
_RESULTS_DIR = flags.DEFINE_string('results_dir', None, 'Where records and pages live (default: docs/results).')
_SHARD = flags.DEFINE_string('shard', '0/1', 'run: I/N trains only every N-th part from the I-th (N runners side by '
                             'side, e.g. one per core: they never share a part).')


class Paused(Exception):
    """SIGTERM or Ctrl-C reached the runner: the training was stopped and keeps its checkpoints."""


def _main_args(study: study_lib.Study, policy: str, budget: int, workdir: str, part: tuple[int, int]) -> list[str]:
    first, n = part
    return [sys.executable, os.path.join(REPO, 'launch', 'main.py'), f'--config={study.config}',
            f'--config.seed={first}', f'--config.num_seeds={n}', '--config.juvenility=False',
            '--config.write_report=False', *study.flags(policy, budget).split(), f'--workdir={workdir}']


def _run_child(args: list[str]) -> None:
    """Runs ``args`` from the repository; SIGTERM/SIGINT to this process stop the child and raise ``Paused``."""
    print(' '.join(args[1:]), flush=True)
    child = subprocess.Popen(args, cwd=REPO)
    stop = {'signal': None}

    def forward(signum, _frame):
        stop['signal'] = signum
        child.send_signal(signal.SIGTERM)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        code = child.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if stop['signal'] is not None:
        raise Paused()
    if code != 0:
        raise subprocess.CalledProcessError(code, args)


def train(study: study_lib.Study, policy: str, budget: int, workdir: str, num_seeds: int) -> None:
    """One ``launch/main.py`` process: ``policy`` at ``budget`` with ``num_seeds`` lanes in ``workdir``."""
    _run_child(_main_args(study, policy, budget, workdir, (study.first_seed, num_seeds)))


def _git(*args: str) -> None:
    subprocess.run(['git', *args], cwd=REPO, check=True)


def run_part(study: study_lib.Study, policy: str, budget: int, part: tuple[int, int], results_dir: str,
             workdir_root: str, commit: bool = False) -> bool:
    """Trains (or resumes) one part of a cell and copies its records under ``records/``; False when its
    records were already there (nothing trained)."""
    out = study_lib.records_dir(results_dir, study, budget, policy, part)
    if os.path.exists(os.path.join(out, 'summary.json')):
        return False
    workdir = os.path.join(workdir_root, study.workdir(policy, budget, part))
    args = _main_args(study, policy, budget, workdir, part)
    t0 = time.time()
    _run_child(args)
    os.makedirs(out, exist_ok=True)
    for name in ('config.json', 'metrics.jsonl', 'summary.json'):  # every evaluation: the curves, for a part
        shutil.copy(os.path.join(workdir, name), os.path.join(out, f'.{name}.tmp'))
    with open(os.path.join(out, '.run.json.tmp'), 'w') as f:
        json.dump({'workdir': workdir, 'command': ' '.join(args[1:]), 'seconds_this_process': round(time.time() - t0, 1),
                   'finished': time.strftime('%Y-%m-%d %H:%M:%S %Z'), 'jst_commit': _head_commit(),
                   'machine': _machine_name()}, f, indent=1)
    for name in ('config.json', 'metrics.jsonl', 'run.json', 'summary.json'):  # summary.json last: marks it finished
        os.replace(os.path.join(out, f'.{name}.tmp'), os.path.join(out, name))
    paths = [out]
    if os.path.abspath(results_dir) == RESULTS:  # a published study: its page follows its records
        paths += write_pages(study)
    if commit:
        first, n = part
        message = (f'{study.name}: records of {policy} at {budget} steps/round, seeds {first}-{first + n - 1}; '
                   'page regenerated')
        try:
            _git('add', *paths)
            _git('commit', '-q', '-m', message, '--', *paths)
        except subprocess.CalledProcessError:  # e.g. another git command held the index: the records stay
            print(f'study.py: could not commit {out}; commit it by hand ({message!r}).', file=sys.stderr)
    return True


def _machine_name() -> str:
    """The GPU's name (nvidia-smi) or the CPU's, and the core count: where a part's records were made."""
    try:
        gpu = subprocess.run(['nvidia-smi', '--query-gpu=name', '--format=csv,noheader'], capture_output=True,
                             text=True, timeout=30).stdout.strip().splitlines()
    except (OSError, subprocess.SubprocessError):
        gpu = []
    return gpu[0] if gpu else f'{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs'


def _head_commit() -> str:
    proc = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=REPO, capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else ''


def parse_shard(text: str) -> tuple[int, int]:
    """'I/N' -> (I, N) with 0 <= I < N."""
    try:
        index, count = (int(x) for x in text.split('/'))
    except ValueError:
        index, count = -1, 0
    if not 0 <= index < count:
        raise app.UsageError(f'--shard={text!r} must be I/N with 0 <= I < N (e.g. 0/2 and 1/2 for two runners).')
    return index, count


def run_study(study: study_lib.Study, results_dir: str, workdir_root: str, policy: Optional[str] = None,
              budget: Optional[int] = None, commit: bool = False, max_parts: int = 0,
              shard: tuple[int, int] = (0, 1)) -> int:
    """Advances ``study`` part by part (seed parts outermost, then budgets and policies); returns the parts
    trained. ``shard=(i, n)``: only parts i, i + n, i + 2n, ... of that order."""
    policies = [p for p, _, _ in study.policies]
    if policy is not None and policy not in policies:
        raise app.UsageError(f'--policy={policy!r} is not a policy of {study.name}; choose one of {policies}')
    if budget is not None and budget not in study.budgets:
        raise app.UsageError(f'--budget={budget} is not a budget of {study.name}; choose one of {list(study.budgets)}')
    trained = 0
    for b, p, part in _part_order(study)[shard[0]::shard[1]]:
        if (policy or p) != p or (budget or b) != b:
            continue
        if max_parts and trained >= max_parts:
            return trained
        trained += run_part(study, p, b, part, results_dir, workdir_root, commit)
    return trained


def _part_order(study: study_lib.Study) -> list[tuple[int, str, tuple[int, int]]]:
    """(budget, policy, part) in the order ``run`` trains them: seed parts outermost, so that a campaign cut short
    holds every policy for its first seeds (paired comparisons need both sides)."""
    cells = [(b, p, study.parts(p)) for b in study.budgets for p, _, _ in study.policies]
    depth = max(len(parts) for _, _, parts in cells)
    return [(b, p, parts[i]) for i in range(depth) for b, p, parts in cells if i < len(parts)]


def batch_size(study: study_lib.Study) -> int:
    """The batch size of the study's committed runs (their ``config.json``; one for the whole study)."""
    sizes = set()
    for path in glob.glob(os.path.join(RESULTS, study.name, 'records', '**', 'config.json'), recursive=True):
        with open(path) as f:
            sizes.add(json.load(f)['batch_size'])
    if len(sizes) != 1:
        raise ValueError(f'{study.name}: its records hold batch sizes {sorted(sizes)}; one was expected.')
    return sizes.pop()


def all_records(study: study_lib.Study) -> list[dict[str, Any]]:
    """Every committed record of ``study``, controls included, in one list (a levels study has one cell)."""
    return [r for rs in study_lib.load_records(RESULTS, study, controls=True).values() for r in rs]


def render(study: study_lib.Study) -> tuple[str, Any]:
    """The study's page and a function writing its figure (into a path), from the committed records."""
    if study.page == 'levels':
        records = all_records(study)
        if not records:
            return planned_page(study), lambda: None
        return (level_study.render_levels_page(study, records),
                lambda: figures.plot_level_curves(
                    {level_study.NAMES[c]: level_study.level_curves(records, c) for c in level_study.CONTROLS},
                    os.path.join(RESULTS, study.name, 'levels.png')))
    runs = study_lib.load_records(RESULTS, study)
    extra = []
    if study.page == 'juvenility':
        records = [{**r, 'variant': policy, 'workdir': f'{budget}/{policy}'} for (budget, policy), rs in runs.items()
                   for r in rs]
        extra = ['## Juvenility diagnostics against the next round\'s gain', '', JUVENILITY_READING.strip(), '',
                 report.juvenility_table(records), '', '### Clustered by run', '', JUVENILITY_CLUSTERED.strip(), '',
                 report.juvenility_clustered_table(records)]
    if study.dense_policy and study.lanes_per_run:
        extra += dense_curve(study)
    extra += compute.budget_choice_section(runs, study.comparisons, batch_size(study))
    return (study_lib.render_page(study, runs, extra=extra),
            lambda: figures.plot_budget_curves(compute.budget_curves(study, runs, batch_size(study)),
                                              os.path.join(RESULTS, study.name, 'accuracy_vs_steps.png')))


def planned_page(study: study_lib.Study) -> str:
    """The page of a study with no committed records yet: its setup and the command that runs it."""
    policies = [f'- `{name}`: {description} (`{study.command(name, budget)}`)' for budget in study.budgets
                for name, _, description in study.policies]
    return '\n'.join([f'# {study.title}', '', study.notes.strip(), '', '**No records are committed yet.** '
                      f'`python launch/study.py run {study.name}` trains its cells ({study.num_seeds} seeds, '
                      f'{", ".join(f"{b:,}" for b in study.budgets)} steps per round):', '', *policies]) + '\n'


def dense_curve(study: study_lib.Study) -> list[str]:
    """The dense network's (``dense_policy``'s round 0) validation loss and accuracy at every evaluation, mean over
    the seeds whose ``metrics.jsonl`` is committed: the curve a budget is chosen from."""
    by_step: dict[int, list[tuple[float, float]]] = {}
    for budget in study.budgets:
        for part in study.parts(study.dense_policy):
            path = os.path.join(study_lib.records_dir(RESULTS, study, budget, study.dense_policy, part), 'metrics.jsonl')
            if not os.path.exists(path):
                continue
            with open(path) as f:
                for row in map(json.loads, f):
                    if row['round'] == 0 and row['control'] == 'none' and row['step'] > 0:
                        by_step.setdefault(row['step'], []).append((row['val_loss'], row['val_accuracy']))
    if not by_step:
        return []
    lines = ['## The dense network\'s validation curve', '', '| step | epochs | val loss | val acc (%) | seeds |',
             '|---|---|---|---|---|']
    for step, values in sorted(by_step.items()):
        loss, acc = (sum(v[i] for v in values) / len(values) for i in (0, 1))
        lines.append(f'| {step:,} | {step / 351:.2f} | {loss:.4f} | {100 * acc:.2f} | {len(values)} |')
    return lines


def readme_with_headline(readme: str, study: study_lib.Study) -> str:
    """``readme`` with the block between the study's headline markers regenerated from its records."""
    begin = f'<!-- {study.name} headline: generated by `python launch/study.py page {study.name}` -->'
    end = f'<!-- end of {study.name} headline -->'
    if begin not in readme or end not in readme:
        raise app.UsageError(f'README.md lacks the markers {begin!r} ... {end!r} around the headline table')
    if study.page == 'levels':
        levels = level_study.by_level(all_records(study))
        block = level_study.summary_sentence(levels, level_study.level_comparisons(levels))
    else:
        runs = study_lib.load_records(RESULTS, study)
        block = '\n'.join(study_lib.headline_table(study, runs) + ['', study_lib.headline_sentence(study, runs)])
        if study.name in COMPUTE_FAIR_HEADLINES:
            block += '\n\n' + compute.chosen_budget_sentence(runs, *COMPUTE_FAIR_HEADLINES[study.name])
    head, rest = readme.split(begin, 1)
    return f'{head}{begin}\n{block}\n{end}{rest.split(end, 1)[1]}'


SPEED_SECTIONS = (
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
    ('Cost of the juvenility diagnostics (the paper\'s MNIST)',
     'python benchmarks/bench_juvenility.py --manual_dir=../shared/datasets/mnist', 'juvenility_cpu.md'),
)


def speed_page() -> str:
    """docs/results/speed.md: the committed benchmark tables (``benchmarks/results/*.md``, written by each
    benchmark from the same measurement as its ``.json``), each with its command."""
    lines = ['# Speed', '', 'Measured by the benchmarks in `benchmarks/` on this project\'s 2-core CPU (no GPU '
             'was lent), every variant side by side in one run, reported as ratios. Regenerate this page: '
             '`python launch/study.py page speed`; the raw measurements are `benchmarks/results/*.json`.']
    for title, command, name in SPEED_SECTIONS:
        with open(os.path.join(REPO, 'benchmarks', 'results', name)) as f:
            table = f.read().strip().replace('\n# ', '\n### ')
        lines += ['', f'## {title}', '', f'`{command}` ([{name}](../../benchmarks/results/{name}))', '',
                  table.lstrip('# ') if table.startswith('# ') else table]
    return '\n'.join(lines) + '\n'


def main(argv):
    if len(argv) != 3 or argv[1] not in ('run', 'page'):
        raise app.UsageError('usage: python launch/study.py run|page STUDY [--policy=..] [--budget=..] [--check]')
    if argv[1:] == ['page', 'speed']:
        return write_or_check({os.path.join(RESULTS, 'speed.md'): speed_page()}, 'speed', _CHECK.value)
    study = _study(argv[2])
    if argv[1] == 'run' and study.name == 'transfer_mnist' and not os.path.exists(
            os.path.join(REPO, TRANSFER_SOURCE, 'summary.json')):
        # the paper's growth at 1,287 steps per round, seeds 42-46 (a source only: no records are copied)
        train(STUDIES['paper_mnist'], 'grow_dense_new', 1287, os.path.join(REPO, TRANSFER_SOURCE), 5)
    if argv[1] == 'run':
        try:
            n = run_study(study, _RESULTS_DIR.value or RESULTS, _WORKDIR_ROOT.value, _POLICY.value, _BUDGET.value,
                          _COMMIT.value, _MAX_PARTS.value, parse_shard(_SHARD.value))
        except Paused:
            print(f'study.py: paused; the same command continues {study.name} from its checkpoints.', file=sys.stderr)
            sys.exit(143)
        except subprocess.CalledProcessError as e:
            print(f'study.py: a training failed (exit {e.returncode}); its message is above. Rerunning the same '
                  'command resumes it.', file=sys.stderr)
            sys.exit(1)
        print(f'{study.name}: {n} part(s) trained; every selected part has records.', flush=True)
        return
    write_pages(study, check=_CHECK.value)


def write_pages(study: study_lib.Study, check: bool = False) -> list[str]:
    """Writes (or, with ``check``, compares) the study's page, its figure and its README block; returns the paths."""
    page, write_figure_ = render(study)
    outputs = {os.path.join(RESULTS, f'{study.name}.md'): page}
    if study.name in README_HEADLINES:
        with open(README) as f:
            outputs[README] = readme_with_headline(f.read(), study)
    write_or_check(outputs, study.name, check)
    if check:
        return list(outputs)
    write_figure_()
    return list(outputs) + [os.path.join(RESULTS, study.name)]


def write_or_check(outputs: dict[str, str], page: str, check: bool = False) -> None:
    """Writes each {path: text} of ``python launch/study.py page PAGE``; with ``check``, exits 1 naming the first
    file that differs."""
    for path, text in outputs.items():
        if check:
            with open(path) as f:
                if f.read() != text:
                    print(f'{path} differs from what the records of {page} give: rerun '
                          f'`python launch/study.py page {page}` and commit it.', file=sys.stderr)
                    sys.exit(1)
            print(f'{path}: every number of {page} matches its records.')
        else:
            with open(path, 'w') as f:
                f.write(text)
            print(f'wrote {path}')

if __name__ == '__main__':
    app.run(main)
