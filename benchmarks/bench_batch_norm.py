"""Does the layout of BatchNorm's per-channel elementwise passes matter: a [C] vector broadcast into a map
[N, H, W, C] against the same vector tiled along the [N*H, W*C] row view (``jst.models.batch_norm.per_column``),
under XLA's own kernels and under the library kernels that ``cpu_kernels='auto'`` picks for conv nets.

    python benchmarks/bench_batch_norm.py [--rounds=3] [--calls=30] [--shape=128,32,32,8]

The two passes of ``jst.models.batch_norm`` that broadcast per-channel vectors, at the paper's ResNet's map shape:
``normalize`` (forward: ``(x - mean) * rstd_scale + bias``) and ``backward`` (``dx = k * (dy - m1 - x_hat * m2)``),
each written in both layouts (``broadcast``: [C] vectors; ``rows``: ``as_rows`` and ``per_column``, what jst runs).
XLA:CPU reads its kernel flags once per process, so each kernel set runs in a fresh child, ``--rounds`` rounds, the
order rotated; per child and pass, the median of ``--calls`` jitted calls after a compiling one. The table gives the
median over rounds, the ratio rows / broadcast within the same kernels (``faster`` when every round of rows beat
every round of broadcast), and whether both layouts gave bit-identical outputs (the same operations on the same
values). Results: ``--out/batch_norm_<platform>.json`` and ``.md``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any, Callable

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=g-import-not-at-top,wrong-import-position
import conv_steps
from jst.models import batch_norm
from jst.training import cpu_kernels
import results_files
# pylint: enable=g-import-not-at-top,wrong-import-position

KERNELS = ('xla', 'library')
LAYOUTS = ('broadcast', 'rows')
PASSES = ('normalize', 'backward')

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_ROUNDS = flags.DEFINE_integer('rounds', 3, 'Rounds; every kernel set runs once per round, the order rotated.')
_CALLS = flags.DEFINE_integer('calls', 30, 'Timed calls per pass and layout (after a compiling one).')
_SHAPE = flags.DEFINE_list('shape', ['128', '32', '32', '8'], 'The map [N, H, W, C] (the ResNet\'s, batch 128).')
_CHILD = flags.DEFINE_enum('child', None, KERNELS, 'Internal: time every pass and layout under these kernels.')
_OUT = flags.DEFINE_string('out', os.path.join(REPO, 'benchmarks', 'results'), 'Output folder.')


def passes(layout: str) -> dict[str, Callable[..., Any]]:
    """The two per-channel elementwise passes in ``layout``: maps [N, H, W, C] and vectors [C] -> a map."""
    if layout == 'broadcast':
        return {'normalize': lambda x, dy, a, b, c: (x - a) * b + c,
                'backward': lambda x, dy, a, b, c: a * (dy - b - x * c)}

    def on_rows(formula: Callable[..., Any]) -> Callable[..., Any]:
        def run(x, dy, a, b, c):
            rows, dy_rows = batch_norm.as_rows(x), batch_norm.as_rows(dy)
            return formula(rows, dy_rows, *(batch_norm.per_column(v, rows) for v in (a, b, c))).reshape(x.shape)
        return run
    return {name: on_rows(f) for name, f in passes('broadcast').items()}


def time_passes(shape: tuple[int, ...], calls: int) -> dict[str, Any]:
    """Median call time (ms) of every pass in both layouts in this process, and whether the layouts agree bit for
    bit, on fixed random inputs."""
    import jax  # pylint: disable=g-import-not-at-top
    import numpy as np  # pylint: disable=g-import-not-at-top
    rng = np.random.default_rng(0)
    args = [jax.numpy.asarray(rng.standard_normal(s), jax.numpy.float32)
            for s in (shape, shape, shape[-1:], shape[-1:], shape[-1:])]
    out: dict[str, Any] = {'ms': {}, 'identical': {}}
    for name in PASSES:
        results = {}
        for layout in LAYOUTS:
            fn = jax.jit(passes(layout)[name])
            results[layout] = np.asarray(fn(*args))
            times = []
            for _ in range(calls):
                t = time.perf_counter()
                fn(*args).block_until_ready()
                times.append(time.perf_counter() - t)
            out['ms'][f'{name}/{layout}'] = 1000 * statistics.median(times)
        out['identical'][name] = bool(np.array_equal(results['broadcast'], results['rows']))
    return out


def child_result(kernels: str, shape: list[str], calls: int) -> dict[str, Any]:
    """``time_passes`` in a fresh process under ``kernels``."""
    env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
    env['XLA_FLAGS'] = cpu_kernels.xla_flags_with_library('') if kernels == 'library' else ''
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), f'--child={kernels}', f'--calls={calls}',
                           f'--shape={",".join(shape)}'], env=env, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def summarise(runs: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per kernel set and pass: both layouts' times over rounds, their medians, rows / broadcast, the
    verdict, and whether every round's outputs were bit-identical."""
    rows = []
    for kernels, results in runs.items():
        for name in PASSES:
            ms = {layout: [r['ms'][f'{name}/{layout}'] for r in results] for layout in LAYOUTS}
            rows.append({'kernels': kernels, 'pass': name, 'ms_rounds': ms,
                         'ms_median': {k: statistics.median(v) for k, v in ms.items()},
                         'rows_relative_to_broadcast': statistics.median(ms['rows']) / statistics.median(
                             ms['broadcast']),
                         'verdict': conv_steps.verdict(ms['rows'], ms['broadcast']),
                         'identical': all(r['identical'][name] for r in results)})
    return rows


def render(result: dict[str, Any]) -> str:
    """The markdown table of a results JSON (``docs/results/speed.md`` includes it)."""
    m = result['machine']
    lines = [f"BatchNorm's per-channel elementwise passes on a [{', '.join(map(str, result['shape']))}] map, "
             f"[C] broadcast vs the [N*H, W*C] row view, {result['rounds']} rounds of fresh processes, median of "
             f"{result['calls']} calls each ({m['backend']}, {m['cpus']} CPUs, {m['processor']}, jax {m['jax']}, "
             f"{result['date']}). Verdict: `faster` when every round of rows beat every round of broadcast.", '',
             '| kernels | pass | broadcast (ms): median (range) | rows (ms): median (range) | rows / broadcast '
             '| verdict | bit-identical |', '|---|---|---|---|---|---|---|']
    for r in result['rows']:
        cells = [f"{r['ms_median'][k]:.2f} ({min(r['ms_rounds'][k]):.2f}-{max(r['ms_rounds'][k]):.2f})"
                 for k in LAYOUTS]
        lines.append(f"| {r['kernels']} | {r['pass']} | {cells[0]} | {cells[1]} "
                     f"| {r['rows_relative_to_broadcast']:.2f}x | {r['verdict']} | {'yes' if r['identical'] else 'no'} |")
    return '\n'.join(lines) + '\n'


def main(argv):
    del argv
    shape = [int(s) for s in _SHAPE.value]
    if len(shape) != 4:
        raise app.UsageError(f'--shape needs four sizes N,H,W,C, not {_SHAPE.value}.')
    if _CHILD.value:
        print(json.dumps(time_passes(tuple(shape), _CALLS.value)))
        return
    result = {'rounds': _ROUNDS.value, 'calls': _CALLS.value, 'shape': shape, 'date': time.strftime('%Y-%m-%d'),
              'machine': conv_steps.machine_info()}
    result['rows'] = summarise(conv_steps.measure_in_rounds(
        list(KERNELS), _ROUNDS.value, lambda k: child_result(k, _SHAPE.value, _CALLS.value)))
    results_files.write_results(_OUT.value, f'batch_norm_{conv_steps.jax.default_backend()}', result, render(result))


if __name__ == '__main__':
    app.run(main)
