"""One Adam step of a convolutional net, side by side in one run: jst (XLA's kernels and the YNNPACK/XNNPACK
kernels of ``config.cpu_kernels``), a minimal JAX loop, PyTorch, and the roofline floor of this CPU.

    pip install torch==2.13.0   # the benchmark's own dependency (CPU build here); jst never imports it
    python benchmarks/bench_conv.py [--steps=10] [--rounds=3] [--notorch]

Every loop runs in a fresh child process (XLA:CPU reads its kernel flags once per process, glibc's malloc settings
must precede the first thread pool), one after another, so all loops see the same machine state within one run.

Networks (random inputs; the data never matters for the time of a step):

* ``resnet``: the seed paper's CIFAR-10 ResNet (7x7 stem 3->8, 7 BasicBlocks of 8 channels, BatchNorm), batch 128;
* ``conv2``: Frankle & Carbin's Conv-2 (conv 64, conv 64, max-pool, dense 256, 256, 10), batch 60.

Loops: ``jst_before`` (``Trainer.train_step``: masked Adam, what jst's training loop runs per step on CPU conv
nets, with flax's BatchNorm and XLA's own kernels: jst before issue 34, how every CIFAR-10 record before it was
made), ``jst`` (the same with jst's one-pass BatchNorm, ``jst.models.batch_norm``), ``jst_fast`` (that with
``cpu_kernels='library'``, the YNNPACK/XNNPACK kernels, ``jst.run.host_malloc.reuse_freed_memory`` and
``conv_form='auto'``, the space-to-depth convolutions of ``jst.models.convolution`` for the ResNet's few-channel
layers: jst's default for conv nets; the other jst loops and minimal_jax run XLA's convolution),
``minimal_jax`` (the same Flax module with flax's BatchNorm under a
bare ``jax.jit`` of loss, grad and ``optax.adam``; no masks), ``pytorch_nchw`` and ``pytorch_channels_last`` (eager
PyTorch, Adam, the same layers; channels_last is PyTorch's fast CPU layout), ``pytorch_compile``
(``torch.compile`` of the NCHW model, where it works offline); each PyTorch loop also as ``..._reuse``, under the
same glibc malloc settings as ``jst_fast``, so that PyTorch's best step is its best under either allocator. Each:
median wall time of ``--steps`` steps after
two warm-up (compiling) steps, once per round in ``--rounds`` rounds (every loop once a round, the order rotated, so
that slow spells of a shared machine hit every loop); the table gives the median over rounds, the range, and the
median's ratio to jst_before's. The roofline floor: the step's multiply-adds (forward,
input gradient, weight gradient of every conv and dense layer) at this CPU's measured FP32 GEMM rate, or its
bytes (each such layer's input and output read or written once by each of the three) at the measured copy
bandwidth, whichever is slower: a lower bound no implementation can beat. Results:
``--out/conv_<platform>.json`` and ``.md``; ``docs/results/speed.md`` shows the table.
"""

from __future__ import annotations

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
import jax.numpy as jnp
import numpy as np
import optax

from jst.models import networks
from jst.models import specs
from jst.run import host_malloc
from jst.training import cpu_kernels
import conv_steps
import results_files
# pylint: enable=g-import-not-at-top,wrong-import-position

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_STEPS = flags.DEFINE_integer('steps', 10, 'Timed steps per loop (after two warm-up steps).')
_ROUNDS = flags.DEFINE_integer('rounds', 3, 'Rounds; every loop runs once per round, the order rotated.')
_TORCH = flags.DEFINE_bool('torch', True, 'Include the PyTorch loops (needs torch installed).')
_NETWORKS = flags.DEFINE_list('networks', ['resnet', 'conv2'], 'Which networks.')
_CHILD = flags.DEFINE_string('child', '', 'Internal: run one loop (network:loop) and print its step time.')
_OUT = flags.DEFINE_string('out', os.path.join(REPO, 'benchmarks', 'results'), 'Output folder.')

def bench_jst(spec: specs.ModelSpec, batch: int, steps: int, conv_form: str = 'auto') -> float:
    return conv_steps.median_step_s(conv_steps.jst_stepper(spec, batch, conv_form), steps)


def bench_minimal_jax(spec: specs.ModelSpec, batch: int, steps: int) -> float:
    model = networks.build_model(spec, 'xla')  # flax's own nn.Conv
    variables = networks.init_variables(spec, jax.random.key(0), (32, 32, 3))
    tx = optax.adam(conv_steps.LR)
    x, y = (jnp.asarray(a) for a in conv_steps.random_batch(batch))
    has_bn = 'batch_stats' in variables

    def loss_fn(params, batch_stats):
        inputs = x.astype(jnp.float32) / 255.0
        if has_bn:
            logits, updates = model.apply({'params': params, 'batch_stats': batch_stats}, inputs, train=True,
                                          mutable=['batch_stats'])
            new_stats = updates['batch_stats']
        else:
            logits, new_stats = model.apply({'params': params}, inputs, train=True), batch_stats
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), new_stats

    @jax.jit
    def update(params, batch_stats, opt):
        (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch_stats)
        u, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, u), batch_stats, opt, loss

    box = {'p': variables['params'], 'b': variables.get('batch_stats', {}), 'o': tx.init(variables['params'])}

    def step():
        box['p'], box['b'], box['o'], loss = update(box['p'], box['b'], box['o'])
        jax.block_until_ready(loss)

    return conv_steps.median_step_s(step, steps)


def _torch_model(name: str) -> Any:
    from torch import nn  # pylint: disable=g-import-not-at-top

    if name == 'conv2':
        return nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
                             nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16 * 16 * 64, 256), nn.ReLU(),
                             nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))

    class Block(nn.Module):
        def __init__(self, c: int):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(),
                                      nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))

        def forward(self, x):
            return nn.functional.relu(x + self.body(x))

    return nn.Sequential(nn.Conv2d(3, 8, 7, padding=3, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                         *[Block(8) for _ in range(7)], nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))


def bench_pytorch(name: str, batch: int, steps: int, channels_last: bool,
                  compile_model: bool = False) -> float | None:
    """PyTorch's step time; None where ``torch.compile`` fails (no compiler reachable, say)."""
    import torch  # pylint: disable=g-import-not-at-top
    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count() or 1)
    images, labels = conv_steps.random_batch(batch)
    x = torch.from_numpy(images.transpose(0, 3, 1, 2).astype(np.float32) / 255.0)
    y = torch.from_numpy(labels.astype(np.int64))
    model = _torch_model(name)
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=conv_steps.LR)
    forward = torch.compile(model) if compile_model else model
    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()

    def step():
        opt.zero_grad()
        loss_fn(forward(x), y).backward()
        opt.step()

    try:
        return conv_steps.median_step_s(step, steps)
    except Exception as e:  # pylint: disable=broad-except
        if not compile_model:
            raise
        print(f'torch.compile failed ({type(e).__name__}: {str(e).splitlines()[0][:120]}); row left out')
        return None


# loop: (its cpu_kernels, whether it reuses freed memory: host_malloc, its conv_form). jst_before is jst as every
# CIFAR-10 record before issue 34 was made (flax's BatchNorm, XLA's kernels and convolution, glibc's malloc
# defaults); jst has its one-pass BatchNorm (jst.models.batch_norm); jst_fast adds the library kernels, the malloc
# settings and conv_form='auto' (space-to-depth for the ResNet's 3- and 8-channel convolutions): jst's default for conv nets.
JAX_LOOPS = {'jst_before': ('xla', False, 'xla'), 'jst': ('xla', False, 'xla'), 'jst_fast': ('library', True, 'auto'),
             'minimal_jax': ('xla', False, 'xla')}
TORCH_LOOPS = {'pytorch_nchw': {'channels_last': False}, 'pytorch_channels_last': {'channels_last': True},
               'pytorch_compile': {'channels_last': False, 'compile_model': True}}
REUSE_SUFFIX = '_reuse'  # a PyTorch loop under host_malloc's settings
BASELINE = 'jst_before'


def reuses_freed_memory(loop: str) -> bool:
    return JAX_LOOPS[loop][1] if loop in JAX_LOOPS else loop.endswith(REUSE_SUFFIX)


def _child_step_s(name: str, loop: str, steps: int) -> float | None:
    """The median step time of one loop, measured in a fresh process with that loop's kernels and malloc settings
    (None: a torch.compile that failed)."""
    env = {k: v for k, v in os.environ.items() if k not in ('XLA_FLAGS', host_malloc.OPT_OUT_VARIABLE)}
    if loop in JAX_LOOPS and cpu_kernels.wants_library_kernels(JAX_LOOPS[loop][0], True):
        env['XLA_FLAGS'] = cpu_kernels.xla_flags_with_library('')
    out = subprocess.run([sys.executable, os.path.abspath(__file__), f'--child={name}:{loop}', f'--steps={steps}'],
                         env=env, capture_output=True, text=True, check=True)
    last = out.stdout.strip().splitlines()[-1]
    return None if last == 'None' else float(last)


def _layer_sizes(spec: specs.ModelSpec, batch: int) -> list[tuple[int, int, int, bool]]:
    """(multiply-adds, input elements, output elements, is the first layer) per conv/dense layer, one batch."""
    variables = networks.abstract_variables(spec, (32, 32, 3))
    rows, first = [], True
    for path, (weights, positions) in networks.kernel_positions(spec, (32, 32, 3)).items():
        node = variables['intermediates']
        for part in path.split('/')[:-1]:
            node = node[part]
        out_elems = int(np.prod(node['__call__'][0].shape[1:]))
        kernel = variables['params']
        for part in path.split('/'):
            kernel = kernel[part]
        in_elems = out_elems // kernel.shape[-1] * kernel.shape[-2] if len(kernel.shape) == 4 else kernel.shape[0]
        rows.append((batch * weights * positions, batch * in_elems, batch * out_elems, first))
        first = False
    return rows


def step_counts(spec: specs.ModelSpec, batch: int) -> dict[str, float]:
    """Multiply-adds (forward, input gradient, weight gradient) and bytes of one training step's conv and dense
    layers; the first layer's input gradient is not needed and not counted."""
    layers = _layer_sizes(spec, batch)
    fwd = sum(m for m, _, _, _ in layers)
    dx = sum(m for m, _, _, first in layers if not first)
    io = sum(i + o for _, i, o, _ in layers)
    return {'macs_forward': fwd, 'macs_input_grad': dx, 'macs_weight_grad': fwd, 'bytes': 4 * 3 * io}


def machine_limits() -> dict[str, float]:
    """This CPU's attainable FP32 GEMM GFLOP/s (a 2048^3 jitted matmul) and copy bandwidth (GB/s, read +
    write of a 256 MB NumPy copy), medians of 5."""
    a = jnp.ones((2048, 2048), jnp.float32)
    matmul = jax.jit(lambda a: a @ a)
    gemm = conv_steps.median_step_s(lambda: matmul(a).block_until_ready(), 5)
    src = np.ones(64 * 2 ** 20, np.float32)
    dst = np.empty_like(src)
    copy = conv_steps.median_step_s(lambda: np.copyto(dst, src), 5)
    return {'gemm_gflops': 2 * 2048 ** 3 / gemm / 1e9, 'copy_gbs': 2 * src.nbytes / copy / 1e9}


def roofline_s(counts: dict[str, float], limits: dict[str, float]) -> float:
    """The step's lower bound: its multiply-adds at the GEMM rate or its bytes at the copy bandwidth."""
    macs = counts['macs_forward'] + counts['macs_input_grad'] + counts['macs_weight_grad']
    return max(2 * macs / (limits['gemm_gflops'] * 1e9), counts['bytes'] / (limits['copy_gbs'] * 1e9))


def run(names: list[str], steps: int, rounds: int, with_torch: bool,
        limits: dict[str, float]) -> list[dict[str, Any]]:
    """Per network, every loop once per round (order rotated), and the roofline floor: rows with the step time of
    each round (ms), their median, and the median's ratio to jst_before's."""
    rows = []
    for name in names:
        make_spec, batch = conv_steps.NETWORKS[name]
        counts = step_counts(make_spec(), batch)
        loops = list(JAX_LOOPS) + ([t + r for r in ('', REUSE_SUFFIX) for t in TORCH_LOOPS] if with_torch else [])
        runs = conv_steps.measure_in_rounds(loops, rounds, lambda loop, n=name: _child_step_s(n, loop, steps))
        times = {loop: ts for loop, ts in runs.items() if None not in ts}  # a torch.compile that failed: left out
        times['roofline_floor'] = [roofline_s(counts, limits)] * rounds
        for loop, seconds in times.items():
            ms = [round(1000 * t, 2) for t in seconds]
            rows.append({'network': name, 'batch': batch, 'loop': loop, 'step_ms': statistics.median(ms),
                         'step_ms_rounds': ms,
                         'reuses_freed_memory': loop != 'roofline_floor' and reuses_freed_memory(loop),
                         'relative_to_jst_before': round(statistics.median(seconds) /
                                                         statistics.median(times[BASELINE]), 3), **counts})
    return rows


def render(result: dict[str, Any]) -> str:
    """The markdown tables of a results JSON (``docs/results/speed.md`` includes them)."""
    m, lim = result['machine'], result['limits']
    lines = [f"One Adam step, median of {result['steps']} steps in each of {result.get('rounds', 1)} round(s) of fresh "
             f"processes ({m['backend']}, {m['cpus']} CPUs, jax {m['jax']}"
             + (f", torch {m['torch']}" if m.get('torch') else '') + f", {result['date']}). This CPU: FP32 GEMM "
             f"{lim['gemm_gflops']:.0f} GFLOP/s, copy {lim['copy_gbs']:.1f} GB/s (measured in the same run).", '',
             '| network, batch | forward / input-grad / weight-grad multiply-adds (M) | bytes (MB) |', '|---|---|---|']
    seen = set()
    for r in result['rows']:
        if r['network'] not in seen:
            seen.add(r['network'])
            lines.append(f"| {r['network']}, {r['batch']} | {r['macs_forward'] / 1e6:,.0f} / "
                         f"{r['macs_input_grad'] / 1e6:,.0f} / {r['macs_weight_grad'] / 1e6:,.0f} | "
                         f"{r['bytes'] / 1e6:,.0f} |")
    lines += ['', '| network, batch | loop | step (ms): median (range over rounds) | relative to jst_before | GFLOP/s |',
              '|---|---|---|---|---|']
    for r in result['rows']:
        flops = 2 * (r['macs_forward'] + r['macs_input_grad'] + r['macs_weight_grad'])
        spread = r.get('step_ms_rounds', [r['step_ms']])
        spread_text = f' ({min(spread):.1f}-{max(spread):.1f})' if len(set(spread)) > 1 else ''
        lines.append(f"| {r['network']}, {r['batch']} | {r['loop']} | {r['step_ms']:.1f}{spread_text} | "
                     f"{r['relative_to_jst_before']:.2f}x | {flops / r['step_ms'] / 1e6:.0f} |")
    return '\n'.join(lines) + '\n'


def child(which: str, steps: int) -> None:
    """``--child=network:loop``: one loop's median step time (s) on stdout's last line."""
    name, loop = which.split(':')
    make_spec, batch = conv_steps.NETWORKS[name]
    if reuses_freed_memory(loop) and not host_malloc.reuse_freed_memory():
        raise RuntimeError('glibc refused the malloc settings (or this is not glibc).')
    if loop.removesuffix(REUSE_SUFFIX) in TORCH_LOOPS:
        print(bench_pytorch(name, batch, steps, **TORCH_LOOPS[loop.removesuffix(REUSE_SUFFIX)]))
        return
    if loop in ('jst_before', 'minimal_jax'):  # flax's BatchNorm in place of jst's (the same variables)
        from flax import linen as nn  # pylint: disable=g-import-not-at-top
        networks.batch_norm.BatchNorm = nn.BatchNorm
    if loop == 'minimal_jax':
        print(bench_minimal_jax(make_spec(), batch, steps))
    else:
        print(bench_jst(make_spec(), batch, steps, JAX_LOOPS[loop][2]))


def main(argv):
    del argv
    if _CHILD.value:
        child(_CHILD.value, _STEPS.value)
        return
    torch_version = None
    if _TORCH.value:
        import torch  # pylint: disable=g-import-not-at-top
        torch_version = torch.__version__
    result = {'steps': _STEPS.value, 'rounds': _ROUNDS.value, 'date': time.strftime('%Y-%m-%d'),
              'machine': {**conv_steps.machine_info(), 'torch': torch_version}, 'limits': machine_limits()}
    result['rows'] = run(_NETWORKS.value, _STEPS.value, _ROUNDS.value, _TORCH.value, result['limits'])
    results_files.write_results(_OUT.value, f'conv_{jax.default_backend()}', result, render(result))


if __name__ == '__main__':
    app.run(main)
