"""Many hosts, proven on one machine: two real processes joined by ``jax.distributed.initialize``
(coordinator on 127.0.0.1, CPU collectives through gloo), two CPU devices each, run a two-seed search
over all four devices; they give the summary of one process on four devices, write each checkpoint
once, and resume when both are killed and restarted."""

import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from tests import golden_runs
from tests.helpers import REPO



def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _args(mnist_dir, workdir):
    return [sys.executable, os.path.join(REPO, 'launch', 'main.py'),
            '--config=' + os.path.join(REPO, 'configs', 'tiny.py'), f'--config.manual_dir={mnist_dir}',
            '--config.train_limit=1200', '--config.validation_size=1000', '--config.steps_per_round=40',
            '--config.eval_every=20', '--config.num_rounds=2', '--config.batch_size=64',
            '--config.num_devices=-1', '--config.num_seeds=2', '--config.write_report=False',
            '--config.checkpoint_every_epochs=1', '--config.checkpoint_min_interval_s=0',
            f'--workdir={workdir}']


def _env(devices, extra=None):
    return {**os.environ, 'XLA_FLAGS': f'--xla_force_host_platform_device_count={devices}',
            'JAX_PLATFORMS': 'cpu', **(extra or {})}


def _two_processes(mnist_dir, workdir, extra=None):
    """Runs the search as two processes of one distributed job; returns their (returncode, stderr)."""
    port = _free_port()
    procs = [subprocess.Popen(_args(mnist_dir, workdir), cwd=REPO, text=True, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE,
                              env=_env(2, {'JST_DISTRIBUTED': '1', 'JST_COORDINATOR': f'127.0.0.1:{port}',
                                           'JST_NUM_PROCESSES': '2', 'JST_PROCESS_ID': str(i), **(extra or {})}))
             for i in range(2)]
    out = []
    for p in procs:
        try:
            _, err = p.communicate(timeout=400)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        out.append((p.returncode, err))
    return out


def _summary(workdir):
    return golden_runs.strip_volatile(json.load(open(os.path.join(workdir, 'summary.json'))))


def _assert_close(a, b):
    assert [(r['seed'], r['round']) for r in a] == [(r['seed'], r['round']) for r in b]
    for x, y in zip(a, b):
        assert x['fraction_remaining'] == y['fraction_remaining']
        assert x['val_loss'] == pytest.approx(y['val_loss'], abs=1e-4)
        assert x['test_accuracy'] == pytest.approx(y['test_accuracy'], abs=2e-3)


@pytest.mark.extended  # 2-3 minutes: two processes; the extended tier (python -m pytest -m extended tests) runs it
def test_two_processes_match_one_and_resume(mnist_dir, tmp_path):
    one = str(tmp_path / 'one')
    proc = subprocess.run(_args(mnist_dir, one), cwd=REPO, text=True, capture_output=True, env=_env(4))
    assert proc.returncode == 0, proc.stderr[-3000:]

    two = str(tmp_path / 'two')
    results = _two_processes(mnist_dir, two)
    for code, err in results:
        assert code == 0, err[-3000:]
    _assert_close(_summary(two), _summary(one))
    assert sorted({r['seed'] for r in _summary(two)}) == [0, 1]
    # Checkpoints are written once (not once per process): the same numbered folders as one process.
    assert sorted(os.listdir(os.path.join(two, 'checkpoints'))) == sorted(os.listdir(os.path.join(one, 'checkpoints')))

    # Both processes killed right after their 3rd checkpoint, then both restarted: same summary.
    killed = str(tmp_path / 'killed')
    results = _two_processes(mnist_dir, killed, {'JST_CRASH_AT': 'after_save:3'})
    assert [code for code, _ in results] == [-signal.SIGKILL] * 2
    results = _two_processes(mnist_dir, killed)
    for code, err in results:
        assert code == 0, err[-3000:]
        assert 'Resuming from checkpoint' in err
    assert _summary(killed) == _summary(two)
