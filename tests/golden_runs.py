"""Small runs whose summaries are recorded (``tests/golden/NAME.json``): a change of results is deliberate.

``tests/golden/NAME.json`` holds each run's ``summary.json`` (wall-clock fields dropped); ``test_golden.py``
reruns them and requires the same records, discrete fields exactly and floats within ``TOLERANCES`` (which
hold on any CPU and BLAS build: see there). History of deliberate changes: recorded before the module
re-layout (issue 11); ``mnist_search`` counts the probe steps of every candidate in ``cumulative_steps``
(issue 13); re-recorded for ``config.data_order='per_round'`` (issue 21: a fresh batch order in every round
after the first, so rounds >= 1 changed and rounds 0 did not); re-recorded when the search probe and the learning
potential moved onto the rounds' step runner (issue 36 item 6: the juvenility of mnist_juvenile and
cifar10_juvenile and the probe scores of mnist_search changed, every architecture and round-0 result did not; the
other runs moved only in last bits). Regenerate only when a change of results is
intended::

    python -m tests.golden_runs --write   # from the repository root
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import tempfile
from typing import Any, Optional, Sequence

from tests.helpers import PORTABLE_XLA_FLAGS, REPO, load_config, set_fields

GOLDEN_DIR = os.path.join(REPO, 'tests', 'golden')
VOLATILE = ('seconds', 'wait_seconds', 'juvenility_seconds', 'juvenility_wait_seconds')

_SHORT_MNIST = {'method': 'juvenile', 'num_seeds': 1,  # configs/mnist.py runs method='compare' on 3 seeds
                'train_limit': 4000, 'validation_size': 1000, 'steps_per_round': 60, 'eval_every': 30,
                'num_rounds': 2, 'juvenility_probe_size': 128, 'learning_potential_steps': 5,
                'juvenility_hutchinson_samples': 2}
# name -> (config file, dataset folder, overrides)
RUNS: dict[str, tuple[str, str, dict[str, Any]]] = {
    'tiny': ('tiny', 'mnist', {}),
    # every round replays round 0's batch order (the behaviour before data_order): the records made then
    'tiny_replay': ('tiny', 'mnist', {'data_order': 'replay'}),
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


# Golden runs run in a process of their own, compiled for AVX (``helpers.PORTABLE_XLA_FLAGS``: why there) and with
# XLA's own kernels (``cpu_kernels='xla'``: the library kernels' numerics are tested against XLA's in
# test_cpu_kernels.py), whatever flags the calling process has.


def make_config(name: str, datasets_dir: str):
    config_file, dataset_dir, overrides = RUNS[name]
    config = load_config(config_file)
    config.manual_dir = os.path.join(datasets_dir, dataset_dir)
    config.data_backend = 'numpy'
    config.write_report = False
    config.cpu_kernels = 'xla'
    return set_fields(config, overrides)


def strip_volatile(value: Any) -> Any:
    """The records without wall-clock timings (which differ between any two runs)."""
    if isinstance(value, dict):
        return {k: strip_volatile(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [strip_volatile(v) for v in value]
    return value


# How close two runs of the same code must be, by field (first matching pattern wins; other floats, e.g.
# fraction_remaining, and everything discrete -- architectures, counts, steps, seeds -- compare exactly).
# Measured (issue 20) by rerunning these goldens under OPENBLAS_CORETYPE=Haswell/SkylakeX/Sandybridge/unset on a
# Zen 5 CPU against records made on another CPU: training losses moved by at most 3.5e-6 relative (XLA's CPU
# code differs by instruction set), accuracies not at all, the juvenility diagnostics by up to 1.7e-3 relative
# (effective rank: eigenvalues of a float32 Gram matrix from the BLAS/LAPACK build, with a cut-off that a
# last-bit change moves). The tolerances keep a margin of >= 10x; a code change that alters training moves
# losses by far more than 1e-4. The diagnostics' formulas have their own exact tests (test_diagnostics.py).
TOLERANCES: tuple[tuple[str, float, float], ...] = (  # (path regex, rel, abs)
    (r'/juvenility', 2e-2, 1e-4),
    (r'loss$', 1e-4, 1e-6),
    (r'accuracy$', 0.0, 2e-3),  # <= 2 of 1,000 validation/test examples flipped by last-bit logit changes
)


# Two *programs* that compute the same training (seeds as vmap lanes vs one-seed runs) differ by more than one program
# on two CPUs: batched and plain dots accumulate in other orders. Measured on an AVX2 AMD EPYC (2026-12-06): after
# three LTH trainings, val_loss 1.07e-4 relative apart and 2 of 1,000 validation examples flipped. A lane given
# another seed's keys or data is off by more (test_seeds asserts that seeds 3 and 4 differ beyond these).
LANE_TOLERANCES: tuple[tuple[str, float, float], ...] = (
    (r'/juvenility', 2e-2, 1e-4),
    (r'loss$', 1e-3, 1e-6),
    (r'accuracy$', 0.0, 5e-3),
)


def tolerance(path: str, tolerances: Sequence[tuple[str, float, float]] = TOLERANCES) -> tuple[float, float]:
    """(rel, abs) for the float at ``path`` (``/round/val_loss``-style); (0, 0) when it must be exact."""
    for pattern, rel, abs_ in tolerances:
        if re.search(pattern, path):
            return rel, abs_
    return 0.0, 0.0


def differences(expected: Any, actual: Any, path: str = '', rel: Optional[float] = None,
                abs_: Optional[float] = None,
                tolerances: Sequence[tuple[str, float, float]] = TOLERANCES) -> list[str]:
    """Where two JSON values differ: floats within ``rel``/``abs_`` (default: ``tolerance(path, tolerances)``),
    everything else exactly."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        out = [f'{path}/{k}: missing' for k in expected if k not in actual]
        out += [f'{path}/{k}: unexpected' for k in actual if k not in expected]
        for k in expected:
            if k in actual:
                out += differences(expected[k], actual[k], f'{path}/{k}', rel, abs_, tolerances)
        return out
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return [f'{path}: length {len(expected)} != {len(actual)}']
        return [d for i, (a, b) in enumerate(zip(expected, actual))
                for d in differences(a, b, f'{path}[{i}]', rel, abs_, tolerances)]
    if isinstance(expected, float) and isinstance(actual, (int, float)) and not isinstance(actual, bool):
        if math.isnan(expected) and math.isnan(actual):
            return []
        default_rel, default_abs = tolerance(re.sub(r'\[\d+\]', '', path), tolerances)
        r = default_rel if rel is None else rel
        a = default_abs if abs_ is None else abs_
        return [] if math.isclose(expected, actual, rel_tol=r, abs_tol=a) else [
            f'{path}: {expected} != {actual} (tolerance rel {r:g}, abs {a:g})']
    return [] if expected == actual else [f'{path}: {expected!r} != {actual!r}']


def run_here(name: str, datasets_dir: str, workdir: str) -> list[dict[str, Any]]:
    """Golden run ``name`` in this process, whatever its XLA flags (use ``run``)."""
    from jst import driver  # pylint: disable=g-import-not-at-top
    records = driver.train_and_evaluate(make_config(name, datasets_dir), workdir)
    return strip_volatile(json.loads(json.dumps(records)))


def run(name: str, datasets_dir: str, workdir: str) -> list[dict[str, Any]]:
    """Golden run ``name``'s records, from a fresh process under ``PORTABLE_XLA_FLAGS``."""
    out = os.path.join(workdir, 'golden_records.json')
    env = {**os.environ, 'XLA_FLAGS': PORTABLE_XLA_FLAGS, 'PYTHONPATH': REPO}  # no flag of this process's
    done = subprocess.run([sys.executable, '-m', 'tests.golden_runs', '--run', name, datasets_dir,
                           os.path.join(workdir, 'run'), out], cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f'golden run {name} failed:\n{done.stderr[-4000:]}')
    with open(out) as f:
        return json.load(f)


def golden_path(name: str) -> str:
    return os.path.join(GOLDEN_DIR, f'{name}.json')


if __name__ == '__main__':
    if sys.argv[1:2] == ['--run'] and len(sys.argv) == 6:  # one run, by ``run``
        records = run_here(*sys.argv[2:5])
        with open(sys.argv[5], 'w') as f:
            json.dump(records, f)
        raise SystemExit(0)
    if sys.argv[1:] != ['--write']:
        raise SystemExit(__doc__)
    datasets = os.environ.get('JST_SHARED_DATASETS', os.path.join(REPO, '..', 'shared', 'datasets'))
    for run_name in RUNS:
        with tempfile.TemporaryDirectory() as tmp:
            result = run(run_name, datasets, tmp)
        with open(golden_path(run_name), 'w') as f:
            json.dump(result, f, indent=1)
        print('wrote', golden_path(run_name), len(result), 'records', flush=True)
