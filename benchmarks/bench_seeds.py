"""Seeds in one program vs one process per seed: the seed paper's MNIST experiment, both policies.

    python benchmarks/bench_seeds.py --manual_dir=../shared/datasets/mnist [--seeds=1,5,16] \
        [--steps_per_round=0] [--out=benchmarks/results]

For each N in ``--seeds`` and each policy (``juvenile`` growth, ``lth`` weight
reset) of ``configs/mnist.py``, side by side in this one invocation:

* ``one program``: ``launch/main.py --config.num_seeds=N`` (one process, the N
  seeds as lanes of one compiled program);
* ``N processes``: ``launch/main.py --config.seed=42+i`` for i < N, one after
  another (what a per-seed sweep does; each gets the whole machine).

Every figure is the wall time of whole ``launch/main.py`` processes: Python
start-up, data loading, compilation, training, evaluation, checkpoints and
records included (no persistent compilation cache). Juvenility diagnostics and
the report are off in both. ``--steps_per_round`` > 0 shortens every round (the
paper's budget is 1,287 steps/round); the budget used is recorded. The records
of both arms are compared, so the benchmark also checks that the one-program
run computed the same thing. Results go to ``--out/seeds_<platform>.json`` and
``.md``.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from typing import Any

from absl import app
from absl import flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_MANUAL_DIR = flags.DEFINE_string('manual_dir', os.environ.get('JST_MANUAL_DIR', ''), 'Offline MNIST folder.')
_SEEDS = flags.DEFINE_list('seeds', ['1', '5', '16'], 'Numbers of seeds N.')
_POLICIES = flags.DEFINE_list('policies', ['juvenile', 'lth'], 'config.method values.')
_STEPS = flags.DEFINE_integer('steps_per_round', 0, '>0: steps per round (0: the config\'s 1,287).')
_ROUNDS = flags.DEFINE_integer('num_rounds', 0, '>0: pruning rounds (0: the config\'s 5, i.e. 6 trainings).')
_LANES_ONLY = flags.DEFINE_bool('lanes_only', False, 'Only the one-program arm; ratios against its first N '
                                '(the GPU pack: 64 seeds as lanes against 1).')
_OUT = flags.DEFINE_string('out', os.path.join(REPO, 'benchmarks', 'results'), 'Output folder.')


def _run(workdir: str, policy: str, extra: list[str]) -> float:
    """Wall seconds of one ``launch/main.py`` process."""
    args = [sys.executable, os.path.join(REPO, 'launch', 'main.py'), '--config=' + os.path.join(REPO, 'configs',
            'mnist.py'), f'--workdir={workdir}', f'--config.method={policy}', '--config.juvenility=False',
            '--config.write_report=False']
    if _MANUAL_DIR.value:
        args.append(f'--config.manual_dir={_MANUAL_DIR.value}')
    if _STEPS.value:
        args.append(f'--config.steps_per_round={_STEPS.value}')
    if _ROUNDS.value:
        args.append(f'--config.num_rounds={_ROUNDS.value}')
    env = {k: v for k, v in os.environ.items() if k != 'JAX_COMPILATION_CACHE_DIR'}
    t0 = time.time()
    proc = subprocess.run(args + extra, capture_output=True, text=True, env=env, cwd=REPO)
    seconds = time.time() - t0
    if proc.returncode:
        raise RuntimeError(f'{" ".join(args + extra)} failed:\n{proc.stderr[-3000:]}')
    return seconds


def _records(workdirs: list[str]) -> dict[tuple[int, int], float]:
    out = {}
    for w in workdirs:
        for r in json.load(open(os.path.join(w, 'summary.json'))):
            out[(r['seed'], r['round'])] = r['test_accuracy']
    return out


def _machine() -> dict[str, Any]:
    import jax  # pylint: disable=g-import-not-at-top
    return {'platform': jax.default_backend(), 'device': str(jax.devices()[0].device_kind),
            'cpu_count': os.cpu_count(), 'python': platform.python_version(), 'jax': jax.__version__,
            'machine': platform.machine(), 'date': time.strftime('%Y-%m-%d')}


def main(argv):
    del argv
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for policy in _POLICIES.value:
            for n in map(int, _SEEDS.value):
                together_dir = os.path.join(tmp, f'{policy}_n{n}')
                together = _run(together_dir, policy, [f'--config.num_seeds={n}'])
                if _LANES_ONLY.value:
                    first = next((r['one_program_s'] for r in rows if r['policy'] == policy), together)
                    row = {'policy': policy, 'seeds': n, 'one_program_s': round(together, 1),
                           'ratio_to_fewest_seeds': round(together / first, 3),
                           'records': len(_records([together_dir]))}
                    print(json.dumps(row), flush=True)
                    rows.append(row)
                    continue
                alone_dirs = [os.path.join(tmp, f'{policy}_n{n}_s{42 + i}') for i in range(n)]
                alone = sum(_run(d, policy, [f'--config.seed={42 + i}', '--config.num_seeds=1'])
                            for i, d in enumerate(alone_dirs))
                a, b = _records([together_dir]), _records(alone_dirs)
                max_diff = max(abs(a[k] - b[k]) for k in b)
                row = {'policy': policy, 'seeds': n, 'one_program_s': round(together, 1),
                       'separate_processes_s': round(alone, 1), 'ratio': round(together / alone, 3),
                       'records': len(a), 'max_test_accuracy_difference': max_diff}
                print(json.dumps(row), flush=True)
                rows.append(row)
    steps = _STEPS.value or 1287
    result = {'machine': _machine(), 'config': 'configs/mnist.py', 'steps_per_round': steps,
              'num_rounds': _ROUNDS.value or 5, 'rows': rows}
    os.makedirs(_OUT.value, exist_ok=True)
    name = f"seeds_{result['machine']['platform']}" + ('_lanes' if _LANES_ONLY.value else '')
    with open(os.path.join(_OUT.value, name + '.json'), 'w') as f:
        json.dump(result, f, indent=1)
    m = result['machine']
    title = 'Seeds as lanes of one program' if _LANES_ONLY.value else 'Seeds in one program vs one process per seed'
    lines = [f"# {title} ({m['platform']}, {m['device']}, "
             f"{m['cpu_count']} CPUs, jax {m['jax']}, {m['date']})", '',
             f'`configs/mnist.py`, {(_ROUNDS.value or 5) + 1} rounds of {steps} steps, juvenility off; wall time of '
             'whole processes (start-up, data, compilation, training, checkpoints). Command: `python '
             f'benchmarks/bench_seeds.py --seeds={",".join(_SEEDS.value)}' + (' --lanes_only' if _LANES_ONLY.value else '')
             + (f' --steps_per_round={_STEPS.value}' if _STEPS.value else '')
             + (f' --num_rounds={_ROUNDS.value}' if _ROUNDS.value else '') + '`.', '',
             '| policy | seeds N | one program (s) | N processes (s) | ratio | max test-acc difference |',
             '|---|---|---|---|---|---|']
    if _LANES_ONLY.value:
        lines[-2:] = ['| policy | seeds N | one program (s) | ratio to the fewest seeds |', '|---|---|---|---|']
        lines += [f"| {r['policy']} | {r['seeds']} | {r['one_program_s']} | {r['ratio_to_fewest_seeds']:.2f}x |"
                  for r in rows]
        rows = []
    for r in rows:
        lines.append(f"| {r['policy']} | {r['seeds']} | {r['one_program_s']} | {r['separate_processes_s']} | "
                     f"{r['ratio']:.2f}x | {r['max_test_accuracy_difference']:.1e} |")
    with open(os.path.join(_OUT.value, name + '.md'), 'w') as f:
        f.write('\n'.join(lines) + '\n')
    print('\n'.join(lines))


if __name__ == '__main__':
    app.run(main)
