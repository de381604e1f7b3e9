"""docs/results/speed.md: the committed benchmark tables (``benchmarks/results/*.md``, each written by its benchmark
from the same measurement as its ``.json``) with their commands, and the sentences that read issue 34's speed targets
and levers (conv forms, kernel flags, threading) off those JSONs. ``launch/study.py page speed`` writes it."""

import json
import os

SPEED_SECTIONS = (  # (title, command, benchmarks/results/ file)
    ('Training loop: jst vs a minimal JAX loop vs PyTorch (LeNet-300-100, one epoch)',
     'pip install torch==2.13.0 && python benchmarks/bench_lenet.py --manual_dir=../shared/datasets/mnist --full',
     'lenet_cpu.md'),
    ('Seeds as lanes of one program vs one process per seed (the paper\'s MNIST)',
     'python benchmarks/bench_seeds.py --manual_dir=../shared/datasets/mnist --seeds=1,5,16', 'seeds_cpu.md'),
    ('Seeds as lanes vs one after another for conv nets (the paper\'s CIFAR-10 ResNet)',
     'python benchmarks/bench_conv_lanes.py --manual_dir=../shared/datasets/cifar10-jpeg75 --lanes=3',
     'conv_lanes_cpu.md'),
    ('One Adam step of a conv net: jst vs a minimal JAX loop vs PyTorch (NCHW and channels_last)',
     'pip install torch==2.13.0 && python benchmarks/bench_conv.py', 'conv_cpu.md'),
    ('Which form of the same convolution XLA:CPU runs fastest (the layers of the ResNet and Conv-2)',
     'python benchmarks/bench_conv_forms.py', 'conv_forms_cpu.md'),
    ('The same seven forms under the library kernels that jst uses for conv nets',
     'python benchmarks/bench_conv_forms.py --cpu_kernels=library', 'conv_forms_library_cpu.md'),
    ('Which XLA:CPU kernel flags of the pinned jaxlib make the conv step faster',
     'python benchmarks/bench_xla_flags.py', 'xla_flags_cpu.md'),
    ('One process on both cores or one process per core (throughput of campaign shards)',
     'python benchmarks/bench_threads.py', 'threads_cpu.md'),
    ('Host memory: glibc\'s malloc defaults or freed blocks reused (XLA:CPU\'s per-step temporaries)',
     'python benchmarks/bench_malloc.py', 'malloc_cpu.md'),
    ('BatchNorm\'s per-channel passes: a [C] broadcast or the [N*H, W*C] row view (the ResNet\'s 8-channel maps)',
     'python benchmarks/bench_batch_norm.py', 'batch_norm_cpu.md'),
    ('Cost of the juvenility diagnostics (the paper\'s MNIST)',
     'python benchmarks/bench_juvenility.py --manual_dir=../shared/datasets/mnist', 'juvenility_cpu.md'),
)


def load_result(benchmark_results_dir: str, name: str) -> dict | None:
    """A benchmark's committed results JSON (``benchmarks/results/<name>``); None when it was never measured."""
    try:
        with open(os.path.join(benchmark_results_dir, name)) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def render(benchmark_results_dir: str) -> str:
    """docs/results/speed.md: the committed benchmark tables (``benchmarks/results/*.md``, written by each
    benchmark from the same measurement as its ``.json``), each with its command."""
    lines = ['# Speed', '', 'Measured by the benchmarks in `benchmarks/` on this project\'s 2-core CPU (no GPU '
             'was lent), every variant side by side in one run, reported as ratios. Regenerate this page: '
             '`python launch/study.py page speed`; the raw measurements are `benchmarks/results/*.json`.']
    for title, command, name in SPEED_SECTIONS:
        with open(os.path.join(benchmark_results_dir, name)) as f:
            table = f.read().strip().replace('\n# ', '\n### ')
        lines += ['', f'## {title}', '', f'`{command}` ([{name}](../../benchmarks/results/{name}))', '',
                  table.lstrip('# ') if table.startswith('# ') else table]
    return '\n'.join(lines + conv_target_lines(benchmark_results_dir)) + '\n'

def conv_target_lines(benchmark_results_dir: str, network: str = 'resnet') -> list[str]:
    """Issue 34's targets for the ResNet step (within 1.3x of PyTorch's best; at least 2x faster than jst before
    it), met or not in conv_cpu.json, and the convolutions alone: the sum of every conv of one step in its fastest
    form (conv_forms_cpu.json)."""
    forms = load_result(benchmark_results_dir, 'conv_forms_cpu.json')
    steps = load_result(benchmark_results_dir, 'conv_cpu.json')
    if forms is None or steps is None:
        return []
    best_form, convs_ms = min(forms['step_sums_ms'][network].items(), key=lambda kv: kv[1])
    rows = {r['loop']: r['step_ms'] for r in steps['rows'] if r['network'] == network}
    rounds = {r['loop']: r.get('step_ms_rounds', [r['step_ms']]) for r in steps['rows'] if r['network'] == network}
    torch_loop, torch_best = min(((k, v) for k, v in rows.items() if k.startswith('pytorch')), key=lambda kv: kv[1])
    target, before, fast = 1.3 * torch_best, rows['jst_before'], rows['jst_fast']
    torch_by_round = [min(ts) for ts in zip(*(ts for k, ts in rounds.items() if k.startswith('pytorch')))]
    met = lambda ok, by_round: (f'{"met" if ok else "not met"} (by the medians; '
                                f'met in {sum(by_round)} of {len(by_round)} rounds)' if len(by_round) > 1 else
                                'met' if ok else 'not met')
    twice = [b / f >= 2 for b, f in zip(rounds['jst_before'], rounds['jst_fast'])]
    near_torch = [f <= 1.3 * t for f, t in zip(rounds['jst_fast'], torch_by_round)]
    sums = forms['step_sums_ms'][network]
    slower = [f for f in sums if f not in ('xla_nhwc', 'xla_nchw') and sums[f] > sums['xla_nhwc']]
    return ['', f'## The {network} step against the targets of issue 34', '',
            f'jst\'s step went from {before:.1f} ms (jst_before) to {fast:.1f} ms (jst_fast, the default), '
            f'{before / fast:.2f}x faster: the 2x target is {met(before / fast >= 2, twice)}. PyTorch\'s best step '
            f'here is {torch_best:.1f} ms ({torch_loop}), so jst_fast is {fast / torch_best:.2f}x of it: the 1.3x '
            f'target ({target:.1f} ms) is {met(fast <= target, near_torch)}. A minimal JAX loop (flax\'s layers, '
            f'XLA\'s kernels) takes {rows["minimal_jax"]:.1f} ms. The convolutions of one step alone (forward and '
            f'backward, XLA\'s kernels without the library kernels, the fastest of the {len(sums)} forms: '
            f'{best_form}, conv_forms_cpu.json) take {convs_ms:.1f} ms. '
            + (f'Slower than XLA\'s own NHWC convolution, summed over the step: {", ".join(slower)}. '
               if slower else '')
            + library_forms_sentence(benchmark_results_dir, network)
            + convs_over_target_sentence(benchmark_results_dir, network, target)
            + flags_sentence(benchmark_results_dir, network)
            + threads_sentence(benchmark_results_dir, network)
            + malloc_sentence(benchmark_results_dir, network)
            + ' (The files are separate runs; their machines and dates are in their sections above.)']

def library_forms_sentence(benchmark_results_dir: str, network: str) -> str:
    """The fastest form of ``network``'s convolutions under the library kernels (conv_forms_library_cpu.json, the
    dot-based forms' dots in YNNPACK/XNNPACK) and how much slower each other form is; '' when that file is
    missing."""
    result = load_result(benchmark_results_dir, 'conv_forms_library_cpu.json')
    if result is None:
        return ''
    sums = result['step_sums_ms'][network]
    best, best_ms = min(sums.items(), key=lambda kv: kv[1])
    others = ', '.join(f'{name} {ms / best_ms:.2f}x' for name, ms in sorted(sums.items(), key=lambda kv: kv[1])
                       if name != best)
    return (f'Under the library kernels jst uses (conv_forms_library_cpu.json), the fastest form is {best} '
            f'({best_ms:.1f} ms for the step\'s convolutions); the others take {others} of it.')

def convs_over_target_sentence(benchmark_results_dir: str, network: str, target_ms: float) -> str:
    """Why the 1.3x target is out of reach when it is: the step's convolutions alone, in their fastest measured form
    under the library kernels (conv_forms_library_cpu.json), take longer than the target allows the whole step;
    '' when they do not or that file is missing."""
    result = load_result(benchmark_results_dir, 'conv_forms_library_cpu.json')
    if result is None:
        return ''
    best_ms = min(result['step_sums_ms'][network].values())
    if best_ms <= target_ms:
        return ''
    return (f' The step\'s convolutions alone, in that fastest form, take {best_ms / target_ms:.2f}x the '
            f'{target_ms:.1f} ms the 1.3x target allows the whole step (a separate run), so no convolution form '
            'measured here can meet it.')

def flags_sentence(benchmark_results_dir: str, network: str) -> str:
    """Which XLA:CPU flag sets beat the default kernels for ``network`` in xla_flags_cpu.json (every round faster
    than every round of the default); '' when that file is missing."""
    result = load_result(benchmark_results_dir, 'xla_flags_cpu.json')
    if result is None:
        return ''
    rows = [r for r in result['rows'] if r['network'] == network and r['verdict'] != '-']
    faster = [f"{r['variant']} ({r['relative_to_default']:.2f}x)" for r in rows if r['verdict'] == 'faster']
    return (f' Of the {len(rows)} other kernel flag sets of the pinned jaxlib (xla_flags_cpu.json, '
            f"{result['rounds']} rounds, {result['machine']['processor']}, {result['date']}), "
            + (f"faster than the default in every round: {', '.join(faster)}." if faster else
               'none was faster than the default in every round.'))

def threads_sentence(benchmark_results_dir: str, network: str) -> str:
    """How much more throughput one process per core gives than one process on every core for ``network``
    (threads_cpu.json), and whether every round agreed; '' when that file is missing."""
    result = load_result(benchmark_results_dir, 'threads_cpu.json')
    if result is None:
        return ''
    rows = {r['layout']: r for r in result['rows'] if r['network'] == network}
    if 'process_per_core' not in rows:
        return ''
    per_core, one = rows['process_per_core'], rows['one_process_all_cores']
    agreement = {'faster': 'more in every round', 'slower': 'less in every round'}.get(
        per_core['verdict'], 'within the rounds\' noise')
    return (f" Threading (threads_cpu.json, {result['rounds']} rounds, {result['date']}): one process on all "
            f"{len(result['cores'])} cores runs {one['steps_per_s_median']:.2f} steps/s; one pinned process per core, "
            f"side by side, {per_core['steps_per_s_median']:.2f} steps/s in all "
            f"({per_core['relative_to_reference']:.2f}x, {agreement}), which is what `study.py run --shard=I/N` "
            'gets from one runner per core.')

def malloc_sentence(benchmark_results_dir: str, network: str) -> str:
    """What ``host_malloc.reuse_freed_memory`` (part of jst_fast) does to ``network``'s step against glibc's defaults
    in malloc_cpu.json: step time ratio, verdict over rounds, page faults per step, peak memory, loss identity;
    '' when that file is missing."""
    result = load_result(benchmark_results_dir, 'malloc_cpu.json')
    if result is None:
        return ''
    rows = {r['variant']: r for r in result['rows'] if r['network'] == network}
    if {'glibc_default', 'reuse_freed_memory'} - set(rows):
        return ''
    default, reuse = rows['glibc_default'], rows['reuse_freed_memory']
    agreement = {'faster': 'faster in every round', 'slower': 'slower in every round'}.get(
        reuse['verdict'], 'within the rounds\' noise')
    same = 'bit-identical' if reuse['loss_identical'] else 'NOT identical'
    return (f" Host memory (malloc_cpu.json, {result['rounds']} rounds, {result['date']}): with freed blocks reused "
            f"(`jst.run.host_malloc`, part of jst_fast) the step takes {reuse['relative_to_reference']:.2f}x the time "
            f"it takes under glibc's malloc defaults ({agreement}), {default['faults_per_step_median']:,.0f} page "
            f"faults per step become {reuse['faults_per_step_median']:,.0f}, the peak memory goes from "
            f"{default['peak_rss_mb_max']:,.0f} to {reuse['peak_rss_mb_max']:,.0f} MB, and the loss after the steps "
            f'is {same}.')
