"""Interrupted runs (SIGKILL at several moments, incl. during a checkpoint write) resume to the
same result; other configs are refused; corrupt checkpoints fall back; NaN keeps good state."""

import gzip
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import jst
from jst.run import checkpointing
from jst import driver
from jst.training import train_loop as train_lib
from tests.helpers import REPO

VOLATILE = ('seconds',)


def _args(mnist_dir, workdir, method='lth'):
    args = [sys.executable, os.path.join(REPO, 'launch', 'main.py'),
            '--config=' + os.path.join(REPO, 'configs', 'tiny.py'), f'--config.manual_dir={mnist_dir}',
            '--config.train_limit=1200', '--config.validation_size=1000', '--config.steps_per_round=50',
            '--config.eval_every=20', '--config.num_rounds=2', '--config.write_report=False',
            '--config.checkpoint_min_interval_s=0',
            f'--config.method={method}', f'--workdir={workdir}']
    if method == 'lth':  # (the juvenile run below keeps the diagnostics on, to resume them too)
        args += ['--config.control=random_reinit', '--config.rewind_step=10']
    else:
        args += ['--config.model.widths=(32,)', '--config.pruning=level', '--config.target_sparsity=0.8',
                 '--config.juvenility=True', '--config.learning_potential_steps=5']
    return args


def _run(args, env_extra=None, kill_after=None):
    env = {**os.environ, **(env_extra or {})}
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=REPO, text=True)
    if kill_after is not None:
        ckpt_dir, delay = kill_after
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            if os.path.isdir(ckpt_dir) and len([d for d in os.listdir(ckpt_dir) if d.isdigit()]) >= 1:
                break
            time.sleep(0.02)
        time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
    out, err = proc.communicate(timeout=600)
    return proc.returncode, out, err


def _final(workdir):
    summary = json.load(open(os.path.join(workdir, 'summary.json')))
    for r in summary:  # wall-clock timings are the only fields allowed to differ
        for k in VOLATILE:
            r.pop(k, None)
        if r.get('juvenility'):
            r['juvenility'].pop('seconds', None)
            r['juvenility'].pop('wait_seconds', None)
    metrics = open(os.path.join(workdir, 'metrics.jsonl')).read()
    ckpt = checkpointing.RunCheckpointer(workdir, None)
    meta, arrays = ckpt.restore_latest()
    ckpt.close()
    assert checkpointing.is_finished(meta)
    last_masks = sorted(k for k in arrays if k.startswith('masks_round'))
    if last_masks:  # weight reset: the last round's, per lane (seed)
        masks = arrays[last_masks[-1]]
    else:  # growth: each lane's round state
        masks = {lane: state['masks'] for lane, state in arrays['round_state'].items()}
    return summary, metrics, masks


def _assert_same(a, b):
    assert a[0] == b[0]
    assert a[1] == b[1]
    flat_a = {k: np.asarray(v) for k, v in _flatten(a[2]).items()}
    flat_b = {k: np.asarray(v) for k, v in _flatten(b[2]).items()}
    assert flat_a.keys() == flat_b.keys()
    for k in flat_a:
        np.testing.assert_array_equal(flat_a[k], flat_b[k])


def _flatten(d, prefix=''):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f'{prefix}{k}/'))
        else:
            out[prefix + k] = v
    return out


@pytest.fixture(scope='module')
def finished_lth(mnist_dir, tmp_path_factory):
    """The workdir of one uninterrupted run of ``_args`` (weight reset): tests copy it instead of retraining."""
    workdir = str(tmp_path_factory.mktemp('baseline_lth'))
    code, _, err = _run(_args(mnist_dir, workdir))
    assert code == 0, err[-2000:]
    return workdir


@pytest.fixture(scope='module')
def lth_baseline(finished_lth):
    """That run's records and final masks (``_final``): what every interrupted run must reach."""
    return _final(finished_lth)


@pytest.mark.parametrize('moment', ['save:4', 'after_save:9', 'random'])
def test_sigkill_and_resume_gives_identical_result(moment, mnist_dir, tmp_path, lth_baseline):
    workdir = str(tmp_path / 'run')
    if moment == 'random':
        delay = random.Random(0).uniform(0.0, 1.5)
        code, _, _ = _run(_args(mnist_dir, workdir), kill_after=(os.path.join(workdir, 'checkpoints'), delay))
    else:
        code, _, _ = _run(_args(mnist_dir, workdir), env_extra={'JST_CRASH_AT': moment})
        assert code == -signal.SIGKILL  # it really died there
    code, out, err = _run(_args(mnist_dir, workdir))
    assert code == 0, err[-3000:]
    if moment != 'random':
        assert 'Resuming from checkpoint' in err
    _assert_same(_final(workdir), lth_baseline)


@pytest.mark.parametrize('method,num_seeds,moment,extra', [  # the juvenile cases (1.5 min each): extended tier
    pytest.param('juvenile', 1, 'save:5', (), marks=pytest.mark.extended),
    pytest.param('juvenile', 3, 'save:4', (), marks=pytest.mark.extended),
    ('lth', 2, 'after_save:6', ('--config.prune_weights=best',))])
def test_killed_and_resumed(method, num_seeds, moment, extra, mnist_dir, tmp_path):
    """Growth (one and three seeds) and weight reset (two seeds, controls, rewinding, pruning the early-stopped
    weights, which a checkpoint inside a training carries) resume exactly; weight reset pruning its end-of-round
    weights: test_sigkill_and_resume_gives_identical_result."""
    args = lambda w: _args(mnist_dir, w, method) + [f'--config.num_seeds={num_seeds}', *extra]
    base, run = str(tmp_path / 'base'), str(tmp_path / 'run')
    assert _run(args(base))[0] == 0
    code, _, _ = _run(args(run), env_extra={'JST_CRASH_AT': moment})
    assert code == -signal.SIGKILL
    code, _, err = _run(args(run))
    assert code == 0, err[-3000:]
    assert 'Resuming from checkpoint' in err
    final = _final(run)
    assert sorted({r['seed'] for r in final[0]}) == list(range(num_seeds))
    _assert_same(final, _final(base))


def test_other_config_in_workdir_is_refused(mnist_dir, tmp_path, finished_lth, lth_baseline):
    workdir = str(tmp_path / 'run')
    shutil.copytree(finished_lth, workdir)
    code, _, err = _run(_args(mnist_dir, workdir) + ['--config.learning_rate=0.001'])
    assert code != 0
    assert 'holds a run of a different config: learning_rate: 0.0012 in the workdir, 0.001 now' in err
    assert 'Rerun with --config.learning_rate=0.0012 to resume that run' in err and '--config.overwrite=True' in err
    # The old run is untouched...
    _assert_same(_final(workdir), lth_baseline)
    # ...unless overwrite is asked for.
    code, _, err = _run(_args(mnist_dir, workdir) + ['--config.learning_rate=0.001', '--config.overwrite=True'])
    assert code == 0, err[-2000:]
    assert json.load(open(os.path.join(workdir, 'config.json')))['learning_rate'] == 0.001


def test_corrupt_newest_checkpoint_falls_back_and_is_kept(mnist_dir, tmp_path):
    workdir = str(tmp_path / 'run')
    code, _, _ = _run(_args(mnist_dir, workdir), env_extra={'JST_CRASH_AT': 'after_save:6'})
    assert code == -signal.SIGKILL
    ckpt_dir = os.path.join(workdir, 'checkpoints')
    steps = sorted(int(d) for d in os.listdir(ckpt_dir) if d.isdigit())
    assert len(steps) == 2
    newest = os.path.join(ckpt_dir, str(steps[-1]))
    copy = str(tmp_path / 'copy')
    shutil.copytree(workdir, copy)
    shutil.rmtree(os.path.join(copy, 'checkpoints', str(steps[-1])))
    ck = checkpointing.RunCheckpointer(copy, None)
    older_meta, _ = ck.restore_latest()
    ck.close()
    for root, _, files in os.walk(os.path.join(newest, 'arrays')):
        for f in files:
            with open(os.path.join(root, f), 'wb') as fh:
                fh.write(b'garbage')
    ck = checkpointing.RunCheckpointer(workdir, None)
    meta, _ = ck.restore_latest()
    ck.close()
    assert not os.path.isdir(newest)  # out of rotation, so it can never displace the good one...
    aside = os.listdir(os.path.join(workdir, 'checkpoints_unreadable'))
    assert [a.split('-')[0] for a in aside] == [str(steps[-1])]  # ...but kept on disk for inspection
    assert meta == older_meta  # fell back to the previous good checkpoint
    code, _, err = _run(_args(mnist_dir, workdir))  # and the run still completes
    assert code == 0, err[-2000:]


def test_all_checkpoints_unreadable_is_a_clear_error(tmp_path):
    ck = checkpointing.RunCheckpointer(str(tmp_path), None)
    ck.save({'phase': 'train'}, {'x': np.ones(3)})
    ck.close()
    shutil.rmtree(tmp_path / 'checkpoints' / '1' / 'meta')
    ck = checkpointing.RunCheckpointer(str(tmp_path), None)
    with pytest.raises(checkpointing.CheckpointError, match='can be read.*--config.overwrite=True'):
        ck.restore_latest()


def test_nan_stops_with_round_and_keeps_last_good_checkpoint(mnist_dir, tmp_path, monkeypatch):
    from tests.helpers import load_config
    config = load_config('tiny')
    config.manual_dir = mnist_dir
    config.write_report = False
    real = train_lib.train_lanes

    def failing(*args, label='', **kw):
        if label == 'lth round 1/2':
            raise train_lib.NonFiniteLossError('lth round 1/2: non-finite training loss at step 3 (epoch 0, seed 0).')
        return real(*args, label=label, **kw)

    monkeypatch.setattr(train_lib, 'train_lanes', failing)
    with pytest.raises(train_lib.NonFiniteLossError, match=r'lth round 1/2: non-finite training loss at step \d+ \(epoch 0'):
        driver.train_and_evaluate(config, str(tmp_path))
    monkeypatch.setattr(train_lib, 'train_lanes', real)
    records = driver.train_and_evaluate(config, str(tmp_path))  # resumes at round 1
    assert [r['round'] for r in records] == [0, 1, 2]


def test_real_nan_message(mnist_dir, tmp_path):
    from tests.helpers import load_config
    config = load_config('tiny')
    config.manual_dir = mnist_dir
    config.optimizer, config.learning_rate = 'sgd', 1e12
    with pytest.raises(train_lib.NonFiniteLossError, match=r'lth round 0/\d+: non-finite training loss at step \d+ \(epoch \d+, seed 0\)'):
        driver.train_and_evaluate(config, str(tmp_path))


def test_checkpoint_of_an_older_layout_is_refused_naming_the_fix(mnist_dir, tmp_path):
    """A workdir checkpointed by an older layout (no schema version; schema 3's phases) is not resumed: one line
    names the release that reads it and --config.overwrite=True, which then starts over."""
    from tests.helpers import load_config  # pylint: disable=g-import-not-at-top
    config = load_config('tiny')
    config.manual_dir, config.num_rounds, config.steps_per_round, config.eval_every = mnist_dir, 0, 20, 10
    config.write_report = False
    ck = checkpointing.RunCheckpointer(str(tmp_path), None)
    ck.save({'phase': 'train', 'round': 0, 'training': None, 'summary': [], 'metrics': []},
            {'theta0': {'x': np.ones(3)}})
    ck.close()
    with pytest.raises(checkpointing.CheckpointError, match=r'another layout.*--config.overwrite=True'):
        driver.train_and_evaluate(config, str(tmp_path))
    ck = checkpointing.RunCheckpointer(str(tmp_path), None)  # jst 0.1.0's phases: its release is named
    ck.save({'schema_version': 3, 'search': 'LotteryProgress', 'progress': {'phase': 'train', 'round': 0}},
            {'theta0': {'x': np.ones(3)}})
    ck.close()
    stale = (r'checkpoint schema 3, which jst 0\.1\.0 \(git checkout \w+\) reads; this jst \('
             + re.escape(jst.__version__) + r'\) reads schema 4 only.*--config.overwrite=True')
    with pytest.raises(checkpointing.CheckpointError, match=stale):
        driver.train_and_evaluate(config, str(tmp_path))
    config.overwrite = True
    records = driver.train_and_evaluate(config, str(tmp_path))
    assert [(r['round'], r['cumulative_steps']) for r in records] == [(0, 20)]


def _flip_bytes(folder):
    """Same-size corruption: every array file of the checkpoint has its bytes reversed."""
    for root, _, files in os.walk(os.path.join(folder, 'arrays')):
        for f in files:
            path = os.path.join(root, f)
            data = open(path, 'rb').read()
            if len(data) > 64 and not f.endswith('.json') and 'ocdbt' not in f and 'manifest' not in f:
                open(path, 'wb').write(data[:32] + data[32:][::-1])


def test_same_size_corruption_is_detected_and_the_good_checkpoint_survives(mnist_dir, tmp_path,
                                                                           lth_baseline):
    """Finding 3: flipped bytes in the newest checkpoint load without error on the old code; the checksums
    catch them, the run resumes from the older one, which the next saves do not rotate away."""
    _corrupt_newest_and_resume(mnist_dir, str(tmp_path / 'run'), lth_baseline, _flip_bytes, 'unreadable')


def _corrupt_newest_and_resume(mnist_dir, workdir, reference, corrupt, message):
    """Kills a run right after its 6th checkpoint, ``corrupt``s that checkpoint's folder, reruns: the run must say
    ``message``, set the checkpoint aside and resume from the older one to the ``reference`` records."""
    code, _, _ = _run(_args(mnist_dir, workdir), env_extra={'JST_CRASH_AT': 'after_save:6'})
    assert code == -signal.SIGKILL
    corrupt(os.path.join(workdir, 'checkpoints', '6'))
    code, _, err = _run(_args(mnist_dir, workdir))
    assert code == 0, err[-3000:]
    assert message in err
    _assert_same(_final(workdir), reference)
    assert os.listdir(os.path.join(workdir, 'checkpoints_unreadable'))


def test_checkpoint_knows_its_config_whatever_config_json_says(mnist_dir, tmp_path):
    """Finding 2: config.json deleted, rerun with another seed: the checkpoint of seed 0 is not resumed."""
    workdir = str(tmp_path / 'run')
    code, _, _ = _run(_args(mnist_dir, workdir), env_extra={'JST_CRASH_AT': 'after_save:3'})
    assert code == -signal.SIGKILL
    os.remove(os.path.join(workdir, 'config.json'))
    code, _, err = _run(_args(mnist_dir, workdir) + ['--config.seed=5'])
    assert code == 2, err[-2000:]
    assert 'belong to a run of another config (seed: 0 in the workdir, 5 now)' in err
    assert '--config.overwrite=True' in err and 'Traceback' not in err
    # Issue 20: the refused run wrote nothing (no config.json of seed 5), and the advice first names how to resume.
    assert not os.path.exists(os.path.join(workdir, 'config.json'))
    assert 'Rerun with --config.seed=0 to resume that run' in err
    open(os.path.join(workdir, 'config.json'), 'w').write('{"seed": 0, "learn')  # truncated: the checkpoint decides
    code, _, err = _run(_args(mnist_dir, workdir) + ['--config.seed=0'])
    assert code == 0, err[-2000:]
    assert json.load(open(os.path.join(workdir, 'config.json')))['seed'] == 0
    code, _, err = _run(_args(mnist_dir, workdir) + ['--config.seed=5', '--config.overwrite=True'])
    assert code == 0, err[-2000:]
    assert {r['seed'] for r in json.load(open(os.path.join(workdir, 'summary.json')))} == {5}


def test_deleted_records_of_a_finished_run_are_rebuilt(mnist_dir, tmp_path, finished_lth, lth_baseline):
    """Finding 4: summary.json and metrics.jsonl deleted after the run ended come back on a rerun."""
    reference = lth_baseline
    workdir = str(tmp_path / 'run')
    shutil.copytree(finished_lth, workdir)
    metrics = open(os.path.join(workdir, 'metrics.jsonl')).read()
    os.remove(os.path.join(workdir, 'summary.json'))
    os.remove(os.path.join(workdir, 'metrics.jsonl'))
    code, _, err = _run(_args(mnist_dir, workdir))
    assert code == 0, err[-2000:]
    _assert_same(_final(workdir), reference)
    assert open(os.path.join(workdir, 'metrics.jsonl')).read() == metrics


def test_one_writer_per_workdir(mnist_dir, tmp_path):
    """Finding 5: a second process on a busy workdir is refused with the holder's pid and host; a lock
    left by a killed process does not block the rerun."""
    workdir = str(tmp_path / 'run')
    first = subprocess.Popen(_args(mnist_dir, workdir), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             cwd=REPO, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not os.path.exists(os.path.join(workdir, 'config.json')):
        time.sleep(0.05)
    code, _, err = _run(_args(mnist_dir, workdir))
    assert code == 2, err[-2000:]
    assert f'is in use by pid {first.pid} on host' in err
    first.send_signal(signal.SIGKILL)
    first.communicate()
    code, _, err = _run(_args(mnist_dir, workdir))  # the dead holder's lock is free
    assert code == 0, err[-2000:]


def test_disk_full_names_the_workdir_and_the_fix(tmp_path, monkeypatch):
    """Finding 8: a full disk is a clear error naming the folder and what to do, not orbax's text."""
    ck = checkpointing.RunCheckpointer(str(tmp_path), None)

    def full(*args, **kwargs):
        raise ValueError('RESOURCE_EXHAUSTED: write failed: No space left on device')

    monkeypatch.setattr(ck._manager, 'save', full)  # pylint: disable=protected-access
    with pytest.raises(checkpointing.CheckpointError, match=r'disk of .*checkpoints is full.*Free space'):
        ck.save({'phase': 'train'}, {'x': np.ones(3)})


def test_nothing_readable_then_overwrite_really_starts_over(mnist_dir, tmp_path):
    """Finding 3: when no checkpoint can be read, the advice (--config.overwrite=True) works even though the
    config is unchanged."""
    from tests.helpers import load_config  # pylint: disable=g-import-not-at-top
    config = load_config('tiny')
    config.manual_dir, config.num_rounds, config.steps_per_round, config.eval_every = mnist_dir, 0, 20, 10
    config.write_report = False
    first = driver.train_and_evaluate(config, str(tmp_path))
    for step in os.listdir(tmp_path / 'checkpoints'):
        shutil.rmtree(tmp_path / 'checkpoints' / step / 'meta', ignore_errors=True)
    with pytest.raises(checkpointing.CheckpointError, match=r'can be read.*--config.overwrite=True'):
        driver.train_and_evaluate(config, str(tmp_path))
    config.overwrite = True
    again = driver.train_and_evaluate(config, str(tmp_path))
    assert [r['val_loss'] for r in again] == [r['val_loss'] for r in first]


def test_tampered_meta_is_detected_and_the_good_checkpoint_survives(mnist_dir, tmp_path, lth_baseline):
    """Issue 20 (a): the meta item (progress, records) is checksummed too. A renamed completed stage or a changed
    stored accuracy in the newest checkpoint's meta is caught: that checkpoint is set aside and the run resumes
    from the older one to the same records, instead of rebuilding summary.json from the tampered values."""
    reference = lth_baseline
    tampers = (lambda text: re.sub(r'"stages": ?\{"start"', '"stages": {"begin"', text, count=1),
               lambda text: re.sub(r'("test_accuracy": ?0\.)(\d)', lambda m: m.group(1) + str(
                   (int(m.group(2)) + 1) % 10), text, count=1))
    for i, tamper in enumerate(tampers):
        def corrupt(folder, tamper=tamper):
            meta = os.path.join(folder, 'meta', 'metadata')
            text = open(meta).read()
            changed = tamper(text)
            assert changed != text
            open(meta, 'w').write(changed)

        _corrupt_newest_and_resume(mnist_dir, str(tmp_path / f'run{i}'), reference, corrupt,
                                   'meta (progress, records) differ from the checksum')


def _mnist_with_shuffled_train_labels(mnist_dir, folder):
    """A copy of the MNIST files whose training labels are permuted (same file names and sizes)."""
    os.makedirs(folder)
    for name in os.listdir(mnist_dir):
        if name.endswith('.gz'):
            shutil.copy(os.path.join(mnist_dir, name), os.path.join(folder, name))
    path = os.path.join(folder, 'train-labels-idx1-ubyte.gz')
    raw = gzip.open(path).read()
    labels = np.frombuffer(raw[8:], np.uint8).copy()
    np.random.default_rng(0).shuffle(labels)
    with gzip.open(path, 'wb') as f:
        f.write(raw[:8] + labels.tobytes())
    return folder


def test_resume_on_other_data_is_refused_naming_it(mnist_dir, tmp_path):
    """Issue 20 (b): the checkpoint records the data's identity; resuming with --config.manual_dir pointing at
    other files (training labels shuffled) is refused in one line naming the data, and the original data resume
    the run to the uninterrupted result."""
    other = _mnist_with_shuffled_train_labels(mnist_dir, str(tmp_path / 'other_mnist'))
    code, _, err = _run(_args(mnist_dir, str(tmp_path / 'reference')) + ['--config.data_backend=numpy'])
    assert code == 0, err[-2000:]
    reference = _final(str(tmp_path / 'reference'))
    workdir = str(tmp_path / 'run')
    args = _args(mnist_dir, workdir) + ['--config.data_backend=numpy']
    code, _, _ = _run(args, env_extra={'JST_CRASH_AT': 'after_save:3'})
    assert code == -signal.SIGKILL
    code, _, err = _run([a.replace(mnist_dir, other) for a in args])
    assert code == 2, err[-2000:]
    assert 'were trained on other data (' in err and 'data.train: ' in err and 'Traceback' not in err
    assert '--config.manual_dir' in err
    code, _, err = _run(args)
    assert code == 0, err[-2000:]
    _assert_same(_final(workdir), reference)
