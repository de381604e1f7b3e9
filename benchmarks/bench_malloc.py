"""Does glibc's allocator cost XLA:CPU conv nets time: jst's Adam step with glibc's default malloc settings against
``jst.run.host_malloc.reuse_freed_memory`` (one arena, no mmap, no trimming), side by side in one run.

    python benchmarks/bench_malloc.py [--rounds=3] [--steps=16] [--networks=resnet,conv2]

Each variant runs in a fresh child process (glibc's arenas are made as threads first allocate, so the settings must
come before JAX starts its thread pools), with the library kernels ``cpu_kernels='auto'`` picks for conv nets, in
``--rounds`` rounds, the order rotated each round. Per child: the median of ``--steps`` timed steps after two warm-up
steps, the minor page faults per timed step (``getrusage``), the peak resident memory, and the loss after all steps:
the settings move buffers, not arithmetic, so the loss must be bit-identical to the default's (the table says so).
Verdict as in bench_xla_flags: ``faster`` when every round beat every round of ``glibc_default``. Results:
``--out/malloc_<platform>.json`` and ``.md``.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=g-import-not-at-top,wrong-import-position
import conv_steps
from jst.run import host_malloc
from jst.training import cpu_kernels
import results_files
# pylint: enable=g-import-not-at-top,wrong-import-position

REFERENCE = 'glibc_default'
VARIANTS = (REFERENCE, 'reuse_freed_memory')

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_ROUNDS = flags.DEFINE_integer('rounds', 3, 'Rounds; every variant runs once per round, the order rotated.')
_STEPS = flags.DEFINE_integer('steps', 16, 'Timed steps per child (after two warm-up steps).')
_NETWORKS = flags.DEFINE_list('networks', ['resnet', 'conv2'], 'Which networks (conv_steps.NETWORKS).')
_CHILD = flags.DEFINE_string('child', '', 'Internal: time one network in this process and print JSON.')
_VARIANT = flags.DEFINE_enum('variant', REFERENCE, VARIANTS, 'Internal: the child\'s allocator settings.')
_OUT = flags.DEFINE_string('out', os.path.join(REPO, 'benchmarks', 'results'), 'Output folder.')


def time_steps(name: str, steps: int) -> dict[str, Any]:
    """Median step time (s), minor faults per timed step, peak resident memory (MB) and the last loss of jst's train
    step for ``name`` in this process."""
    make_spec, batch = conv_steps.NETWORKS[name]
    step, losses, faults = conv_steps.jst_stepper(make_spec(), batch), [], []
    step_s = conv_steps.median_step_s(lambda: losses.append(step()), steps,
                                      after_warm_up=lambda: faults.append(resource.getrusage(
                                          resource.RUSAGE_SELF).ru_minflt))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {'step_s': step_s, 'faults_per_step': (usage.ru_minflt - faults[0]) / steps,
            'peak_rss_mb': usage.ru_maxrss / 1024, 'loss': losses[-1]}


def child_result(name: str, variant: str, steps: int) -> dict[str, Any]:
    """``time_steps`` in a fresh process with the library kernels and ``variant``'s allocator settings."""
    env = {k: v for k, v in os.environ.items() if k not in ('XLA_FLAGS', host_malloc.OPT_OUT_VARIABLE)}
    env['XLA_FLAGS'] = cpu_kernels.xla_flags_with_library('')
    out = subprocess.run([sys.executable, os.path.abspath(__file__), f'--child={name}', f'--variant={variant}',
                          f'--steps={steps}'], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def summarise(name: str, runs: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per variant: step times over rounds (ms), median, ratio to the reference, verdict, faults, memory,
    and whether every round's loss equals the reference's first."""
    ms = {v: [1000 * r['step_s'] for r in rs] for v, rs in runs.items()}
    reference_loss = runs[REFERENCE][0]['loss'] if REFERENCE in runs else None
    rows = []
    for variant, times in ms.items():
        rows.append({
            'network': name, 'variant': variant, 'step_ms_rounds': times, 'step_ms_median': statistics.median(times),
            'relative_to_reference': (statistics.median(times) / statistics.median(ms[REFERENCE])
                                      if REFERENCE in ms else None),
            'verdict': conv_steps.verdict(times, ms[REFERENCE]) if REFERENCE in ms and variant != REFERENCE else '-',
            'faults_per_step_median': statistics.median(r['faults_per_step'] for r in runs[variant]),
            'peak_rss_mb_max': max(r['peak_rss_mb'] for r in runs[variant]),
            'losses': [r['loss'] for r in runs[variant]],
            'loss_identical': reference_loss is not None and all(r['loss'] == reference_loss for r in runs[variant])})
    return rows


def run(names: list[str], rounds: int, steps: int) -> list[dict[str, Any]]:
    return [row for name in names for row in summarise(
        name, conv_steps.measure_in_rounds(list(VARIANTS), rounds, lambda v, n=name: child_result(n, v, steps)))]


def render(result: dict[str, Any]) -> str:
    """The markdown table of a results JSON (``docs/results/speed.md`` includes it)."""
    m = result['machine']
    lines = [f"jst's Adam step (library kernels) under glibc's default malloc settings and under "
             f"`host_malloc.reuse_freed_memory`, {result['rounds']} rounds of fresh processes, median of "
             f"{result['steps']} steps each ({m['backend']}, {m['cpus']} CPUs, {m['processor']}, jax {m['jax']}, "
             f"{result['date']}). Verdict: `faster` when every round beat every round of `{REFERENCE}`.", '',
             f'| network | allocator | step (ms): median (range over rounds) | vs {REFERENCE} | verdict '
             '| minor page faults per step | peak memory (MB) | loss bit-identical to the default |',
             '|---|---|---|---|---|---|---|---|']
    for r in result['rows']:
        rel = f"{r['relative_to_reference']:.2f}x" if r['relative_to_reference'] is not None else '-'
        lines.append(f"| {r['network']} | {r['variant']} | {r['step_ms_median']:.1f} "
                     f"({min(r['step_ms_rounds']):.1f}-{max(r['step_ms_rounds']):.1f}) | {rel} | {r['verdict']} "
                     f"| {r['faults_per_step_median']:,.0f} | {r['peak_rss_mb_max']:,.0f} "
                     f"| {'yes' if r['loss_identical'] else 'no'} |")
    return '\n'.join(lines) + '\n'


def main(argv):
    del argv
    if _CHILD.value:
        if _VARIANT.value != REFERENCE and not host_malloc.reuse_freed_memory():
            raise RuntimeError('glibc refused the settings (or this is not glibc): nothing to compare.')
        print(json.dumps(time_steps(_CHILD.value, _STEPS.value)))
        return
    result = {'rounds': _ROUNDS.value, 'steps': _STEPS.value, 'date': time.strftime('%Y-%m-%d'),
              'machine': conv_steps.machine_info()}
    result['rows'] = run(_NETWORKS.value, _ROUNDS.value, _STEPS.value)
    results_files.write_results(_OUT.value, f'malloc_{conv_steps.jax.default_backend()}', result, render(result))


if __name__ == '__main__':
    app.run(main)
