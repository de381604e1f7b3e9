"""Small runs whose summaries were recorded before the module re-layout (issue 11).

``tests/golden/NAME.json`` holds each run's ``summary.json`` as the code
before the re-layout wrote it (wall-clock fields dropped); ``test_golden.py``
reruns them and requires the same records. One intended change since, applied
to the file by hand: ``mnist_search`` counts the probe steps of every
candidate in ``cumulative_steps`` (issue 13: the search's budget). Regenerate only when a change of
results is intended::

    python -m tests.golden_runs --write   # from the repository root
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from typing import Any

from tests.helpers import REPO, load_config, set_fields

GOLDEN_DIR = os.path.join(REPO, 'tests', 'golden')
VOLATILE = ('seconds', 'wait_seconds', 'juvenility_seconds', 'juvenility_wait_seconds')

_SHORT_MNIST = {'train_limit': 4000, 'validation_size': 1000, 'steps_per_round': 60, 'eval_every': 30,
                'num_rounds': 2, 'juvenility_probe_size': 128, 'learning_potential_steps': 5,
                'juvenility_hutchinson_samples': 2}
# name -> (config file, dataset folder, overrides)
RUNS: dict[str, tuple[str, str, dict[str, Any]]] = {
    'tiny': ('tiny', 'mnist', {}),
    'tiny_controls_rewind_global': ('tiny', 'mnist', {
        'control': 'random_reinit,random_prune', 'rewind_step': 30, 'prune_scope': 'global'}),
    'mnist_juvenile': ('mnist', 'mnist', dict(_SHORT_MNIST)),
    'mnist_lth': ('mnist', 'mnist', {**_SHORT_MNIST, 'method': 'lth', 'juvenility': False}),
    'mnist_search': ('mnist', 'mnist', {**_SHORT_MNIST, 'growth': 'search', 'juvenility': False,
                                        'search.probe_steps': 20, 'search.widen_by': (16,)}),
    'cifar10_juvenile': ('cifar10', 'cifar10-jpeg75', {
        'train_limit': 512, 'validation_size': 1000, 'steps_per_round': 8, 'eval_every': 4,
        'batch_size': 64, 'num_rounds': 2, 'juvenility': True, 'juvenility_probe_size': 64,
        'learning_potential_steps': 2, 'juvenility_hutchinson_samples': 2}),
}


def make_config(name: str, datasets_dir: str):
    config_file, dataset_dir, overrides = RUNS[name]
    config = load_config(config_file)
    config.manual_dir = os.path.join(datasets_dir, dataset_dir)
    config.data_backend = 'numpy'
    config.write_report = False
    return set_fields(config, overrides)


def strip_volatile(value: Any) -> Any:
    """The records without wall-clock timings (which differ between any two runs)."""
    if isinstance(value, dict):
        return {k: strip_volatile(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [strip_volatile(v) for v in value]
    return value


def differences(expected: Any, actual: Any, path: str = '', rel: float = 1e-5, abs_: float = 1e-6) -> list[str]:
    """Where two JSON values differ (floats to a tolerance, everything else exactly)."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        out = [f'{path}/{k}: missing' for k in expected if k not in actual]
        out += [f'{path}/{k}: unexpected' for k in actual if k not in expected]
        for k in expected:
            if k in actual:
                out += differences(expected[k], actual[k], f'{path}/{k}', rel, abs_)
        return out
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return [f'{path}: length {len(expected)} != {len(actual)}']
        return [d for i, (a, b) in enumerate(zip(expected, actual)) for d in differences(a, b, f'{path}[{i}]', rel, abs_)]
    if isinstance(expected, float) and isinstance(actual, (int, float)) and not isinstance(actual, bool):
        if math.isnan(expected) and math.isnan(actual):
            return []
        return [] if math.isclose(expected, actual, rel_tol=rel, abs_tol=abs_) else [f'{path}: {expected} != {actual}']
    return [] if expected == actual else [f'{path}: {expected!r} != {actual!r}']


def run(name: str, datasets_dir: str, workdir: str) -> list[dict[str, Any]]:
    from jst import driver  # pylint: disable=g-import-not-at-top
    records = driver.train_and_evaluate(make_config(name, datasets_dir), workdir)
    return strip_volatile(json.loads(json.dumps(records)))


def golden_path(name: str) -> str:
    return os.path.join(GOLDEN_DIR, f'{name}.json')


if __name__ == '__main__':
    if sys.argv[1:] != ['--write']:
        raise SystemExit(__doc__)
    datasets = os.environ.get('JST_SHARED_DATASETS', os.path.join(REPO, '..', 'shared', 'datasets'))
    for run_name in RUNS:
        with tempfile.TemporaryDirectory() as tmp:
            result = run(run_name, datasets, tmp)
        with open(golden_path(run_name), 'w') as f:
            json.dump(result, f, indent=1)
        print('wrote', golden_path(run_name), len(result), 'records', flush=True)
