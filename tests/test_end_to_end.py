"""A real, small end-to-end lottery-ticket run on MNIST through ``train_and_evaluate``."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from jst import driver
from jst.run import context as context_lib
from jst.run import records as records_lib
from jst.training import train_loop
from tests.helpers import REPO, load_config


def test_tiny_lth_run(mnist_dir, tmp_path):
    config = load_config('tiny')
    config.manual_dir = mnist_dir
    config.control = 'random_reinit'
    records = driver.train_and_evaluate(config, str(tmp_path))
    with open(tmp_path / 'summary.json') as f:
        summary = json.load(f)
    assert summary == json.loads(json.dumps(records))
    for r in summary:
        assert set(records_lib.SUMMARY_FIELDS) <= set(r)
    main = [r for r in summary if r['control'] == 'none']
    assert [r['round'] for r in main] == [0, 1, 2]
    # tiny prunes 50% of the remaining weights of every layer per level.
    np.testing.assert_allclose([r['fraction_remaining'] for r in main], [1.0, 0.5, 0.25], atol=1e-3)
    assert [r['cumulative_steps'] for r in main] == [150, 300, 450]
    assert all(r['test_accuracy'] > 0.85 for r in main), main  # real learning on real MNIST
    assert [r['round'] for r in summary if r['control'] == 'random_reinit'] == [1, 2]
    metrics = records_lib.read_metrics(str(tmp_path))
    assert {m['step'] for m in metrics} == {0, 50, 100, 150}  # 0: before training (after reset)
    assert os.path.exists(tmp_path / 'summary.md')
    assert any(f.startswith('events.out.tfevents') for f in os.listdir(tmp_path / 'tensorboard'))
    assert os.path.exists(tmp_path / 'report' / 'report.md')
    assert os.path.exists(tmp_path / 'report' / 'accuracy_vs_sparsity.png')


def test_command_line(mnist_dir, tmp_path):
    cmd = [sys.executable, os.path.join(REPO, 'launch', 'main.py'), '--config=' + os.path.join(REPO, 'configs', 'tiny.py'),
           f'--config.manual_dir={mnist_dir}', '--config.num_rounds=1', '--config.steps_per_round=60',
           f'--workdir={tmp_path}']
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    assert '| round | method |' in out.stdout
    assert len(json.load(open(tmp_path / 'summary.json'))) == 2
    assert json.load(open(tmp_path / 'run.json'))['invocations'][0]['command'][-1] == f'--workdir={tmp_path}'
    noise = [line for line in out.stderr.splitlines()  # default verbosity: no TF/TFDS/XLA start-up chatter
             if any(n in line for n in ('port.cc', 'oneDNN', 'absl::InitializeLog', 'xla_bridge', 'dataset_info',
                                         'dataset_builder', 'tensorflow_datasets', 'tf.data'))]
    assert not noise, noise


def test_sweep_script(mnist_dir, tmp_path):
    """launch/sweep.sh: one process per variant training its seeds together, a variant's overrides win over
    $JST_FLAGS, progress per variant on the terminal, one report, shared XLA cache, and a paired table at the end."""
    out = tmp_path / 'sweep'
    env = {k: v for k, v in os.environ.items() if k != 'JAX_COMPILATION_CACHE_DIR'}
    env['JST_FLAGS'] = f'--config.manual_dir={mnist_dir} --config.num_rounds=1 --config.steps_per_round=40'
    proc = subprocess.run(['bash', os.path.join(REPO, 'launch', 'sweep.sh'), str(out), 'configs/tiny.py', '1 2',
                           'one:--config.method=lth', 'zero:--config.method=lth --config.num_rounds=0'],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rounds = {}
    for name in ('one', 'zero'):
        with open(out / name / 'summary.json') as f:
            rounds[name] = sorted((r['variant'], r['seed'], r['round']) for r in json.load(f) if r['control'] == 'none')
    assert rounds == {'one': [('one', 1, 0), ('one', 1, 1), ('one', 2, 0), ('one', 2, 1)],
                      'zero': [('zero', 1, 0), ('zero', 2, 0)]}
    assert os.path.exists(out / 'report' / 'report.md')
    assert os.path.isdir(out / 'xla_cache')
    lines = proc.stdout.splitlines()
    assert lines[0].startswith('variant 1/2: one (seeds 1-2)') and any(l.startswith('done 2/2: ') for l in lines)
    assert any(l.startswith('  lth round 1/1 step 40/40 ') and 'ETA' in l for l in lines), proc.stdout
    paired = next(l for l in lines if l.startswith('- zero '))  # the last table: each variant against the first
    assert ' against one: ' in paired and '(n = 2 seeds' in paired, proc.stdout


def test_sweep_script_refuses_seeds_that_are_not_consecutive(tmp_path):
    proc = subprocess.run(['bash', os.path.join(REPO, 'launch', 'sweep.sh'), str(tmp_path), 'configs/tiny.py',
                           '1 3', 'a:'], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 2
    assert 'SEEDS must be consecutive' in proc.stderr


@pytest.mark.parametrize('seeds, variant, message', [
    ('abc', 'a:', 'usage: bash launch/sweep.sh'), ('', 'a:', 'usage: bash launch/sweep.sh'),
    ('1-2', 'a/b:--config.num_rounds=0', 'NAME of letters'), ('1-2', 'nocolon', 'NAME of letters')])
def test_sweep_script_refuses_bad_arguments_in_one_line(seeds, variant, message, tmp_path):
    """The probe's seeds 'abc' or '' gave shell errors, and a name with '/' pointed at a log that did not exist."""
    proc = subprocess.run(['bash', os.path.join(REPO, 'launch', 'sweep.sh'), str(tmp_path / 'out'), 'configs/tiny.py',
                           seeds, variant], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert 'line ' not in proc.stderr and not (tmp_path / 'out').exists()


def test_sweep_script_without_arguments_prints_usage():
    proc = subprocess.run(['bash', os.path.join(REPO, 'launch', 'sweep.sh')], capture_output=True, text=True,
                          timeout=60, cwd=REPO)
    assert proc.returncode == 2
    assert proc.stderr.startswith('usage: bash launch/sweep.sh OUT_DIR CONFIG') and 'unbound' not in proc.stderr


def test_compare_runs_the_papers_question_and_its_control_paired_by_seed(mnist_dir, tmp_path, monkeypatch):
    """method='compare' (configs/mnist.py's default): weight reset, growth and prune-and-continue in
    WORKDIR/<policy>, one table of all and the paired final-round comparisons in the pages' wording (Holm over the
    three, TOST); one seed says what is missing instead."""
    from jst.analysis import claims  # pylint: disable=g-import-not-at-top
    config = load_config('tiny')
    config.manual_dir, config.method, config.num_seeds = mnist_dir, 'compare', 2
    config.num_rounds, config.steps_per_round, config.write_report = 1, 50, False
    loads, lines, real_load = [], [], context_lib.load_run_data
    monkeypatch.setattr(context_lib, 'load_run_data', lambda c: loads.append(c.dataset) or real_load(c))
    monkeypatch.setattr(train_loop.logging, 'info', lambda fmt, *args: lines.append(fmt % args if args else fmt))
    records = driver.train_and_evaluate(config, str(tmp_path))
    assert loads == ['mnist'], 'the data loads once for all policies of a main run'
    progress = [l for l in lines if ' round ' in l and ' step ' in l]
    assert progress and all(l.startswith(('policy 1/3 weight_reset · lth round ', 'policy 2/3 grow · juvenile round ',
                                          'policy 3/3 prune_continue · juvenile round ')) for l in progress), progress
    assert any(l.startswith('policy 3/3 prune_continue · juvenile round 1/1 step 50/50') for l in progress), progress
    assert all('mean of seeds 0, 1' in l for l in progress) and 'run ETA' in progress[-2], progress
    assert {r['variant'] for r in records} == set(driver.COMPARED_POLICIES)
    for policy in driver.COMPARED_POLICIES:
        with open(tmp_path / policy / 'summary.json') as f:
            assert {r['seed'] for r in json.load(f)} == {0, 1}
    with open(tmp_path / 'prune_continue' / 'config.json') as f:
        assert json.load(f)['growth'] == 'none'
    text = (tmp_path / 'summary.md').read_text()
    final = {p: {r['seed']: r['test_accuracy'] for r in records if r['variant'] == p and r['round'] == 1}
             for p in driver.COMPARED_POLICIES}
    for a, b in driver.COMPARED_PAIRS:
        difference = 100 * np.mean([final[a][s] - final[b][s] for s in (0, 1)])
        line = next(l for l in text.splitlines() if l.startswith(f'- {a} ') and f' {b}' in l.split(':')[0])
        assert f': {difference:+.2f} ± ' in line and '(n = 2 seeds, Holm p = ' in line, text
        assert any(f'{a} {v} {b}' in line for v in claims.VERDICTS), line
    one = load_config('tiny')
    one.manual_dir, one.method, one.num_rounds, one.steps_per_round, one.write_report = mnist_dir, 'compare', 1, 50, False
    driver.train_and_evaluate(one, str(tmp_path / 'one_seed'))
    assert 'needs >= 2 seeds run by both' in (tmp_path / 'one_seed' / 'summary.md').read_text()


@pytest.mark.parametrize('method, pruning', [('lth', 'erk'), ('lth', 'gmp'), ('lth', 'rigl'), ('juvenile', 'gmp')])
def test_registry_pruners_run_from_the_config(method, pruning, mnist_dir, tmp_path):
    """Issue 36: ``--config.pruning=erk|gmp|rigl`` run through ``jst.training.pruning.PRUNERS`` (tests/test_masks.py
    and tests/test_pruners.py hold them to their definitions): every round ends at its level on the geometric
    schedule (ERK and RigL split it over layers, GMP prunes every layer to it), RigL keeps each layer's count."""
    from jst.training import pruning as pruning_lib  # pylint: disable=g-import-not-at-top
    config = load_config('tiny')
    config.manual_dir, config.method, config.pruning, config.target_sparsity = mnist_dir, method, pruning, 0.9
    config.steps_per_round, config.mask_update_every, config.write_report = 80, 20, False
    records = driver.train_and_evaluate(config, str(tmp_path))
    plan = pruning_lib.PruningPlan.from_config(config)
    for r in (r for r in records if r['control'] == 'none'):
        kept = sum(kept for kept, _ in r['layers'].values())
        total = sum(total for _, total in r['layers'].values())
        level = pruning_lib.round_sparsity(plan, r['round']) if r['round'] else 0.0
        assert abs(kept / total - (1 - level)) < 0.01, (r['round'], kept / total, level)
