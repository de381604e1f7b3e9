"""Which XLA:CPU kernel flags of the pinned jaxlib make one Adam step of a conv net faster: jst's step (its
one-pass BatchNorm, ``Trainer.train_step``) under each flag set, side by side in one run.

    python benchmarks/bench_xla_flags.py [--rounds=3] [--steps=8] [--networks=resnet,conv2]

jaxlib 0.10.2's XLA:CPU can hand work to YNNPACK, XNNPACK and oneDNN. ``jst.training.cpu_kernels`` uses the
YNNPACK/XNNPACK fusion of dots, elementwise ops and reductions (``library``, the default for conv nets); this
benchmark asks whether any other flag the library exposes (``strings libjax_common.so``: a fusion type
``individual_convolution``, oneDNN, XNNPACK's graph fusion modes) does better.

Each variant runs in a fresh child process (XLA:CPU reads its flags once, when its backend starts), in
``--rounds`` rounds, the order rotated each round so that slow spells of a shared machine hit every variant.
A variant's step time is the median of ``--steps`` timed steps after two warm-up steps; the table gives the median
over rounds and the range. Verdict: ``faster`` when its slowest round beats the default's fastest, ``slower`` the
other way round, ``within noise`` otherwise. The loss after all steps (same init, same random batch) is compared to
XLA's own kernels' as a check that a flag leaves the math alone (``tests/test_cpu_kernels.py`` bounds the default's
forward and gradients within 1e-5). Results: ``--out/xla_flags_<platform>.json`` and ``.md``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=g-import-not-at-top,wrong-import-position
import jax

import conv_steps
from jst.training import cpu_kernels
import results_files
# pylint: enable=g-import-not-at-top,wrong-import-position

_LIBRARY = ' '.join(cpu_kernels.LIBRARY_FLAGS)
_CONV_TYPES = 'dot,eltwise,reduce,individual_convolution'
VARIANTS: dict[str, str] = {  # name: the XLA_FLAGS of its child process
    'xla': '',
    'library': _LIBRARY,
    'library+ynn_convolution': f'--xla_cpu_experimental_ynn_fusion_type={_CONV_TYPES} '
                               f'{cpu_kernels.LIBRARY_FLAGS[1]}',
    'library+xnn_convolution': f'{cpu_kernels.LIBRARY_FLAGS[0]} --xla_cpu_experimental_xnn_fusion_type={_CONV_TYPES}',
    'library+onednn_convolution': f'{_LIBRARY} --xla_cpu_experimental_onednn_fusion_type=individual_convolution',
    'library+use_onednn': f'{_LIBRARY} --xla_cpu_use_onednn=true',
    'library+xnn_graph_greedy':
        f'{_LIBRARY} --xla_cpu_experimental_xnn_graph_fusion_mode=XNN_GRAPH_FUSION_MODE_GREEDY',
    'library+xnn_graph_greedy_slinky':
        f'{_LIBRARY} --xla_cpu_experimental_xnn_graph_fusion_mode=XNN_GRAPH_FUSION_MODE_GREEDY_SLINKY',
}
DEFAULT = 'library'  # what cpu_kernels='auto' runs for conv nets

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_ROUNDS = flags.DEFINE_integer('rounds', 3, 'Rounds; every variant runs once per round, the order rotated.')
_STEPS = flags.DEFINE_integer('steps', 8, 'Timed steps per child (after two warm-up steps).')
_NETWORKS = flags.DEFINE_list('networks', ['resnet', 'conv2'], 'Which networks (conv_steps.NETWORKS).')
_VARIANTS = flags.DEFINE_list('variants', list(VARIANTS), 'Which flag sets.')
_CHILD = flags.DEFINE_string('child', '', 'Internal: time one network in this process and print JSON.')
_OUT = flags.DEFINE_string('out', os.path.join(REPO, 'benchmarks', 'results'), 'Output folder.')


def time_steps(name: str, steps: int) -> dict[str, float]:
    """Median step time (s) of jst's train step for ``name`` and the loss of its last step (``steps + 2``)."""
    make_spec, batch = conv_steps.NETWORKS[name]
    step, losses = conv_steps.jst_stepper(make_spec(), batch), []
    seconds = conv_steps.median_step_s(lambda: losses.append(step()), steps)
    return {'step_s': seconds, 'loss': losses[-1]}


def child_result(name: str, variant: str, steps: int) -> dict[str, float]:
    """``time_steps`` in a fresh process whose ``XLA_FLAGS`` are the variant's (and nothing else)."""
    env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
    env['XLA_FLAGS'] = VARIANTS[variant]
    out = subprocess.run([sys.executable, os.path.abspath(__file__), f'--child={name}', f'--steps={steps}'],
                         env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def summarise(name: str, runs: dict[str, list[dict[str, float]]]) -> list[dict[str, Any]]:
    """One row per variant: step times over rounds (ms), median, ratio to the default, verdict, loss check."""
    ms = {v: [1000 * r['step_s'] for r in rs] for v, rs in runs.items()}
    reference_loss = runs['xla'][0]['loss'] if 'xla' in runs else None
    rows = []
    for variant, times in ms.items():
        loss = runs[variant][0]['loss']
        rows.append({
            'network': name, 'variant': variant, 'xla_flags': VARIANTS[variant], 'step_ms_rounds': times,
            'step_ms_median': statistics.median(times),
            'relative_to_default': (statistics.median(times) / statistics.median(ms[DEFAULT])
                                    if DEFAULT in ms else None),
            'verdict': conv_steps.verdict(times, ms[DEFAULT]) if DEFAULT in ms and variant != DEFAULT else '-',
            'loss': loss,
            'loss_rel_diff_vs_xla': (abs(loss - reference_loss) / abs(reference_loss)
                                     if reference_loss is not None else None)})
    return rows


def run(names: list[str], variants: list[str], rounds: int, steps: int) -> list[dict[str, Any]]:
    return [row for name in names for row in summarise(
        name, conv_steps.measure_in_rounds(variants, rounds, lambda v, n=name: child_result(n, v, steps)))]


def render(result: dict[str, Any]) -> str:
    """The markdown table of a results JSON (``docs/results/speed.md`` includes it)."""
    m = result['machine']
    lines = [f"jst's Adam step under each XLA:CPU flag set, {result['rounds']} rounds of fresh processes, median of "
             f"{result['steps']} steps each ({m['backend']}, {m['cpus']} CPUs, {m['processor']}, jax {m['jax']}, "
             f"{result['date']}). Default: `{DEFAULT}` (`cpu_kernels='auto'` for conv nets). Verdict: `faster` "
             "when every round beat every round of the default, `slower` the other way round.", '',
             '| network | flag set | step (ms): median (range over rounds) | vs default | verdict '
             '| loss after the steps, relative to XLA\'s kernels |', '|---|---|---|---|---|---|']
    for r in result['rows']:
        rel = f"{r['relative_to_default']:.2f}x" if r['relative_to_default'] is not None else '-'
        diff = f"{r['loss_rel_diff_vs_xla']:.1e}" if r['loss_rel_diff_vs_xla'] is not None else '-'
        lines.append(f"| {r['network']} | {r['variant']} | {r['step_ms_median']:.1f} "
                     f"({min(r['step_ms_rounds']):.1f}-{max(r['step_ms_rounds']):.1f}) | {rel} | {r['verdict']} "
                     f"| {diff} |")
    lines += ['', 'Flags of each set: ' + '; '.join(f"`{v}`: `{VARIANTS[v] or '(none)'}`"
                                                     for v in dict.fromkeys(r['variant'] for r in result['rows']))]
    return '\n'.join(lines) + '\n'


def main(argv):
    del argv
    if _CHILD.value:
        print(json.dumps(time_steps(_CHILD.value, _STEPS.value)))
        return
    unknown = sorted(set(_VARIANTS.value) - set(VARIANTS))
    if unknown:
        raise app.UsageError(f'Unknown --variants {unknown}; choose from {list(VARIANTS)}.')
    result = {'rounds': _ROUNDS.value, 'steps': _STEPS.value, 'date': time.strftime('%Y-%m-%d'),
              'machine': conv_steps.machine_info()}
    result['rows'] = run(_NETWORKS.value, _VARIANTS.value, _ROUNDS.value, _STEPS.value)
    results_files.write_results(_OUT.value, f'xla_flags_{jax.default_backend()}', result, render(result))


if __name__ == '__main__':
    app.run(main)
