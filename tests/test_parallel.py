"""Data-parallel training on 8 (simulated) CPU devices, with two seeds as lanes, matches one device."""

import json
import os
import subprocess
import sys

from tests.helpers import REPO

SCRIPT = r'''
import json, sys
import jax
from jst import driver
from tests.helpers import load_config
assert jax.device_count() == 8, jax.devices()
out = {}
for n in (1, 8):
    c = load_config('tiny')
    c.manual_dir = sys.argv[1]
    c.num_devices = n
    c.num_seeds = 2  # the seed axis and the data axis compose
    c.batch_size = 64
    c.num_rounds = 1
    c.steps_per_round = 60
    c.eval_every = 30
    c.write_report = False
    out[n] = driver.train_and_evaluate(c, sys.argv[2] + f'/n{n}')
print(json.dumps(out))
'''


def test_eight_devices_two_seeds_match_one_device(mnist_dir, tmp_path):
    env = {**os.environ, 'XLA_FLAGS': '--xla_force_host_platform_device_count=8', 'PYTHONPATH': REPO}
    proc = subprocess.run([sys.executable, '-c', SCRIPT, mnist_dir, str(tmp_path)], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    one, eight = out['1'], out['8']
    assert len(one) == len(eight) == 4  # 2 seeds x 2 rounds
    assert sorted((r['seed'], r['round']) for r in eight) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    for a, b in zip(one, eight):
        assert (a['seed'], a['round']) == (b['seed'], b['round'])
        assert a['fraction_remaining'] == b['fraction_remaining']
        assert abs(a['val_loss'] - b['val_loss']) < 1e-4, (a['val_loss'], b['val_loss'])
        assert abs(a['val_accuracy'] - b['val_accuracy']) <= 2e-3
        assert abs(a['test_accuracy'] - b['test_accuracy']) <= 2e-3
