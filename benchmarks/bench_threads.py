"""How to spend this machine's cores on conv-net training: one process on all of them (XLA:CPU's intra-op threads),
or one process per core running side by side (what ``launch/study.py run --shard=I/N`` does for a campaign).

    python benchmarks/bench_threads.py [--rounds=3] [--steps=16] [--networks=resnet,conv2]

Layouts, each as fresh child processes timing jst's Adam step (``Trainer.train_step``, the library kernels that
``cpu_kernels='auto'`` picks for conv nets) on one random batch:

- ``one_process_all_cores``: one process, affinity = every core (what ``launch/main.py`` does by default);
- ``one_process_one_core``: one process pinned to core 0 (the step time of a shard);
- ``process_per_core``: one process pinned to each core, their timed steps started together (a barrier after
  warm-up), so that they compete for memory bandwidth and caches as shards do;
- ``process_per_core_unpinned``: as many processes as cores, no pinning (the OS schedules them).

A child pins itself (``os.sched_setaffinity``) before its first JAX computation, so XLA:CPU sizes its thread pools
to the cores it may use, as under ``taskset``: a per-core layout is not oversubscribed. A layout's throughput is the
sum over its processes of 1 / (median step time), in steps per second; the table gives the median over ``--rounds``
rounds (the layout order rotated each round) and the range, and the ratio to ``one_process_all_cores``. Verdict as
in bench_xla_flags: ``faster`` when every round beat every round of the reference. Results:
``--out/threads_<platform>.json`` and ``.md``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=g-import-not-at-top,wrong-import-position
import conv_steps
from jst.training import cpu_kernels
import results_files
# pylint: enable=g-import-not-at-top,wrong-import-position

REFERENCE = 'one_process_all_cores'
LAYOUTS = (REFERENCE, 'one_process_one_core', 'process_per_core', 'process_per_core_unpinned')

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_ROUNDS = flags.DEFINE_integer('rounds', 3, 'Rounds; every layout runs once per round, the order rotated.')
_STEPS = flags.DEFINE_integer('steps', 16, 'Timed steps per process (after two warm-up steps).')
_NETWORKS = flags.DEFINE_list('networks', ['resnet', 'conv2'], 'Which networks (conv_steps.NETWORKS).')
_CHILD = flags.DEFINE_string('child', '', 'Internal: time one network in this process and print JSON.')
_BARRIER = flags.DEFINE_string('barrier', '', 'Internal: a folder; after warm-up, write ready_<pid>, wait for go.')
_PIN = flags.DEFINE_list('pin', [], 'Internal: the cores this child pins itself to before JAX starts its backend.')
_OUT = flags.DEFINE_string('out', os.path.join(REPO, 'benchmarks', 'results'), 'Output folder.')


def available_cores() -> list[int]:
    """The cores this process may run on, sorted."""
    return sorted(os.sched_getaffinity(0))


def process_affinities(layout: str, cores: list[int]) -> list[list[int] | None]:
    """Per child process of ``layout``: the cores it is pinned to (``None``: inherit every core)."""
    if layout == REFERENCE:
        return [None]
    if layout == 'one_process_one_core':
        return [[cores[0]]]
    if layout == 'process_per_core':
        return [[c] for c in cores]
    if layout == 'process_per_core_unpinned':
        return [None] * len(cores)
    raise ValueError(f'Unknown layout {layout!r}; choose from {LAYOUTS}.')


def wait_at_barrier(folder: str, timeout_s: float = 600.0) -> None:
    """Announce this process is warm (``ready_<pid>``) and block until the parent writes ``go``."""
    open(os.path.join(folder, f'ready_{os.getpid()}'), 'w').close()
    deadline = time.monotonic() + timeout_s
    while not os.path.exists(os.path.join(folder, 'go')):
        if time.monotonic() > deadline:
            raise TimeoutError(f'No go signal in {folder} after {timeout_s:.0f} s.')
        time.sleep(0.01)


def time_steps(name: str, steps: int, barrier: str) -> dict[str, Any]:
    """Median time (s) of ``steps`` steps of jst's train step for ``name``, after two warm-up steps (compilation)
    and the barrier, when given."""
    make_spec, batch = conv_steps.NETWORKS[name]
    step = conv_steps.jst_stepper(make_spec(), batch)
    release = (lambda: wait_at_barrier(barrier)) if barrier else (lambda: None)
    step_s = conv_steps.median_step_s(step, steps, after_warm_up=release)
    return {'step_s': step_s, 'cores': available_cores()}


def run_layout(name: str, layout: str, steps: int) -> list[dict[str, Any]]:
    """Start every process of ``layout`` at once, release them together after warm-up, return their results."""
    env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
    env['XLA_FLAGS'] = cpu_kernels.xla_flags_with_library('')
    with tempfile.TemporaryDirectory() as barrier:
        procs = []
        for cores in process_affinities(layout, available_cores()):
            pin = [f'--pin={",".join(map(str, cores))}'] if cores is not None else []
            procs.append(subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), f'--child={name}', f'--steps={steps}',
                 f'--barrier={barrier}', *pin], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True))
        while sum(f.startswith('ready_') for f in os.listdir(barrier)) < len(procs):
            if any(p.poll() not in (None, 0) for p in procs):
                break
            time.sleep(0.05)
        open(os.path.join(barrier, 'go'), 'w').close()
        outputs = [p.communicate() for p in procs]
    for p, (out, err) in zip(procs, outputs):
        if p.returncode:
            raise RuntimeError(f'{layout} child failed ({p.returncode}): {err[-3000:]}')
    return [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]


def throughput(results: list[dict[str, Any]]) -> float:
    """Steps per second of a layout: the sum over its processes of 1 / median step time."""
    return sum(1.0 / r['step_s'] for r in results)


def summarise(name: str, runs: dict[str, list[list[dict[str, Any]]]]) -> list[dict[str, Any]]:
    """One row per layout: throughput per round, median, ratio to the reference, per-process step times."""
    tput = {layout: [throughput(r) for r in rounds] for layout, rounds in runs.items()}
    rows = []
    for layout, values in tput.items():
        rows.append({
            'network': name, 'layout': layout, 'processes': len(runs[layout][0]),
            'steps_per_s_rounds': values, 'steps_per_s_median': statistics.median(values),
            'relative_to_reference': (statistics.median(values) / statistics.median(tput[REFERENCE])
                                      if REFERENCE in tput else None),
            'verdict': (conv_steps.verdict(values, tput[REFERENCE], higher_is_better=True)
                        if REFERENCE in tput and layout != REFERENCE else '-'),
            'step_ms_per_process': [[1000 * p['step_s'] for p in r] for r in runs[layout]],
            'cores_per_process': [p['cores'] for p in runs[layout][0]]})
    return rows


def run(names: list[str], rounds: int, steps: int) -> list[dict[str, Any]]:
    return [row for name in names for row in summarise(
        name, conv_steps.measure_in_rounds(list(LAYOUTS), rounds, lambda l, n=name: run_layout(n, l, steps)))]


def render(result: dict[str, Any]) -> str:
    """The markdown table of a results JSON (``docs/results/speed.md`` includes it)."""
    m = result['machine']
    lines = [f"Throughput of jst's Adam step (library kernels) by how the cores are used, {result['rounds']} rounds "
             f"of fresh processes, median of {result['steps']} steps each ({m['backend']}, {m['cpus']} CPUs, "
             f"{m['processor']}, jax {m['jax']}, {result['date']}). Throughput: the sum over a layout's processes of "
             f"1 / step time. Verdict: `faster` when every round beat every round of `{REFERENCE}`.", '',
             '| network | layout | processes | steps/s: median (range over rounds) | vs one process on all cores '
             '| verdict | step (ms) per process, median round |', '|---|---|---|---|---|---|---|']
    for r in result['rows']:
        rel = f"{r['relative_to_reference']:.2f}x" if r['relative_to_reference'] is not None else '-'
        per_round = r['step_ms_per_process']
        middle = sorted(per_round, key=lambda ms: sum(1 / t for t in ms))[len(per_round) // 2]
        lines.append(f"| {r['network']} | {r['layout']} | {r['processes']} | {r['steps_per_s_median']:.2f} "
                     f"({min(r['steps_per_s_rounds']):.2f}-{max(r['steps_per_s_rounds']):.2f}) | {rel} "
                     f"| {r['verdict']} | {', '.join(f'{t:.0f}' for t in middle)} |")
    return '\n'.join(lines) + '\n'


def main(argv):
    del argv
    if _CHILD.value:
        if _PIN.value:  # before the first JAX computation starts XLA:CPU's thread pool
            os.sched_setaffinity(0, {int(c) for c in _PIN.value})
        print(json.dumps(time_steps(_CHILD.value, _STEPS.value, _BARRIER.value)))
        return
    result = {'rounds': _ROUNDS.value, 'steps': _STEPS.value, 'date': time.strftime('%Y-%m-%d'),
              'machine': conv_steps.machine_info(), 'cores': available_cores()}
    result['rows'] = run(_NETWORKS.value, _ROUNDS.value, _STEPS.value)
    results_files.write_results(_OUT.value, f'threads_{conv_steps.jax.default_backend()}', result, render(result))


if __name__ == '__main__':
    app.run(main)
