"""Cost of the juvenility diagnostics on the paper's MNIST runs: off vs on, side by side.

    python benchmarks/bench_juvenility.py --manual_dir=../shared/datasets/mnist [--repeats=2]

Runs ``configs/mnist.py`` (both policies, 6 rounds x 3 epochs) as fresh
subprocesses (so every variant pays its own compilations), interleaved
``--repeats`` times, in three variants:

* ``off``: ``--config.juvenility=False``;
* ``on``: the default (start-of-round diagnostics on a background thread,
  overlapping the round's training; end-of-round diagnostics after it);
* ``on_foreground``: ``--config.juvenility_background=False`` (everything
  before/after the training, on the main thread);
* ``off_warm_cache``, ``on_warm_cache``: ``off`` and ``on`` with JAX's
  persistent compilation cache (``JAX_COMPILATION_CACHE_DIR``) warmed by an
  untimed run of the same command, as the second and later seeds of a sweep
  find it.

Reported per (policy, variant): median wall time of the whole process, its
ratio to ``off``, and from ``summary.json`` the seconds spent computing
diagnostics and the seconds the training loop waited for them (summed over
rounds; in ``on_foreground`` all of it). Results go to ``--out/juvenility_<platform>.{json,md}``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags

_MANUAL_DIR = flags.DEFINE_string('manual_dir', os.environ.get('JST_MANUAL_DIR', ''), 'MNIST files.')
_OUT = flags.DEFINE_string('out', os.path.join(os.path.dirname(__file__), 'results'), 'Output folder.')
_REPEATS = flags.DEFINE_integer('repeats', 2, 'Runs per (policy, variant); the median is reported.')
_OVERRIDES = flags.DEFINE_list('overrides', [], 'Extra --config.* flags for every run (the toy-scale test: '
                               '--overrides=--config.steps_per_round=20,--config.num_rounds=1).')

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
POLICIES = {'juvenile': ['--config.method=juvenile'], 'lth': ['--config.method=lth']}
VARIANTS = {'off': ['--config.juvenility=False'], 'on': [],
            'on_foreground': ['--config.juvenility_background=False'],
            'off_warm_cache': ['--config.juvenility=False'], 'on_warm_cache': []}


def one_run(policy: str, variant: str, manual_dir: str, cache_dir: str) -> dict[str, float]:
    """Wall time of one run in a fresh process, and its recorded diagnostics seconds."""
    env = dict(os.environ)
    env.pop('JAX_COMPILATION_CACHE_DIR', None)
    if variant.endswith('_warm_cache'):
        env['JAX_COMPILATION_CACHE_DIR'] = os.path.join(cache_dir, policy, variant)
    with tempfile.TemporaryDirectory() as workdir:
        args = [sys.executable, 'launch/main.py', '--config=configs/mnist.py', '--config.num_seeds=1', *POLICIES[policy],
                *VARIANTS[variant], f'--config.manual_dir={manual_dir}', '--config.write_report=False',
                f'--workdir={workdir}', *_OVERRIDES.value]
        t = time.perf_counter()
        subprocess.run(args, check=True, cwd=REPO, capture_output=True, env=env)
        wall = time.perf_counter() - t
        with open(os.path.join(workdir, 'summary.json')) as f:
            summary = json.load(f)
    juv = [r['juvenility'] for r in summary if r.get('juvenility')]
    return {'wall_s': wall,
            'diagnostics_s': sum(j['seconds'] or 0.0 for j in juv),
            'waited_s': sum(j['wait_seconds'] or 0.0 for j in juv),
            'training_s': sum(r['seconds'] for r in summary),
            'test_accuracy_last': summary[-1]['test_accuracy']}


def run_all(manual_dir: str, repeats: int) -> dict[str, dict[str, dict[str, float]]]:
    runs: dict[tuple[str, str], list[dict[str, float]]] = {}
    cache_dir = tempfile.mkdtemp(prefix='jst-xla-cache-')
    for policy in POLICIES:  # warms the persistent compilation caches (untimed)
        for variant in ('off_warm_cache', 'on_warm_cache'):
            one_run(policy, variant, manual_dir, cache_dir)
    for _ in range(repeats):  # interleaved, so drifts in machine load hit every variant alike
        for policy in POLICIES:
            for variant in VARIANTS:
                result = one_run(policy, variant, manual_dir, cache_dir)
                print(policy, variant, {k: round(v, 3) for k, v in result.items()}, flush=True)
                runs.setdefault((policy, variant), []).append(result)
    table: dict[str, dict[str, dict[str, float]]] = {}
    for (policy, variant), results in runs.items():
        table.setdefault(policy, {})[variant] = {
            k: statistics.median(r[k] for r in results) for k in results[0]}
    for policy, variants in table.items():
        for stats in variants.values():
            stats['ratio_to_off'] = stats['wall_s'] / variants['off']['wall_s']
    return table


def to_markdown(table: dict[str, dict[str, dict[str, float]]], repeats: int) -> str:
    lines = [f'Paper MNIST runs (configs/mnist.py, 6 rounds x 3 epochs), median of {repeats} fresh processes.',
             '', '| policy | diagnostics | wall (s) | vs off | diagnostics computed (s) | training waited (s) |',
             '|---|---|---|---|---|---|']
    for policy, variants in table.items():
        for variant, s in variants.items():
            lines.append(f"| {policy} | {variant} | {s['wall_s']:.1f} | {s['ratio_to_off']:.2f}x | "
                         f"{s['diagnostics_s']:.1f} | {s['waited_s']:.1f} |")
    return '\n'.join(lines) + '\n'


def main(argv):
    del argv
    if not _MANUAL_DIR.value:
        raise app.UsageError('Give --manual_dir (the MNIST files) or set JST_MANUAL_DIR.')
    manual_dir = os.path.abspath(_MANUAL_DIR.value)
    table = run_all(manual_dir, _REPEATS.value)
    os.makedirs(_OUT.value, exist_ok=True)
    import jax  # pylint: disable=g-import-not-at-top
    name = f'juvenility_{jax.default_backend()}'
    with open(os.path.join(_OUT.value, name + '.json'), 'w') as f:
        json.dump({'repeats': _REPEATS.value, 'cpu_count': os.cpu_count(), 'results': table}, f, indent=1)
    markdown = to_markdown(table, _REPEATS.value)
    with open(os.path.join(_OUT.value, name + '.md'), 'w') as f:
        f.write(markdown)
    print(markdown)


if __name__ == '__main__':
    app.run(main)
