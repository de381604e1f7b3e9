"""The TensorFlow-free path (GPU/TPU boxes): jst imports no TensorFlow, and without TF, TFDS and clu a
run reads data with numpy and writes JSON metrics only. CI runs this file in a virtualenv without them."""

import glob
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from tests.helpers import REPO

TF_ABSENT = all(importlib.util.find_spec(m) is None for m in ('tensorflow', 'tensorflow_datasets', 'clu'))


def test_importing_jst_imports_no_tensorflow():
    root = os.path.join(REPO, 'jst')
    modules = [os.path.splitext(os.path.relpath(p, root))[0].replace(os.sep, '.')
               for p in glob.glob(os.path.join(root, '**', '*.py'), recursive=True) if not p.endswith('__init__.py')]
    assert len(modules) > 30, modules
    code = ('import sys\n' + ''.join(f'import jst.{m}\n' for m in modules) +
            "bad = [m for m in ('tensorflow', 'tensorflow_datasets', 'clu') if m in sys.modules]\n"
            'assert not bad, bad\n')
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.skipif(not TF_ABSENT, reason='TensorFlow, TFDS or clu is installed (CI runs this in a venv without)')
def test_cli_run_without_tensorflow(mnist_dir, tmp_path):
    cmd = [sys.executable, os.path.join(REPO, 'launch', 'main.py'), '--config=' + os.path.join(REPO, 'configs', 'tiny.py'),
           f'--config.manual_dir={mnist_dir}', '--config.num_rounds=1', '--config.steps_per_round=40',
           '--config.eval_every=20', f'--workdir={tmp_path}']
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.load(open(tmp_path / 'summary.json'))
    assert [r['data_backend'] for r in summary] == ['numpy', 'numpy']
    assert os.path.exists(tmp_path / 'metrics.jsonl') and not os.path.exists(tmp_path / 'tensorboard')
    assert os.path.exists(tmp_path / 'report' / 'report.md')
