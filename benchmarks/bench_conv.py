"""One Adam step of a convolutional net, side by side in one process: jst vs a minimal JAX loop vs PyTorch.

    pip install torch==2.13.0   # the benchmark's own dependency (CPU build here); jst never imports it
    python benchmarks/bench_conv.py [--steps=10] [--notorch]

Networks (random inputs; the data never matters for the time of a step):

* ``resnet``: the seed paper's CIFAR-10 ResNet (7x7 stem 3->8, 7 BasicBlocks of 8 channels, BatchNorm), batch 128;
* ``conv2``: Frankle & Carbin's Conv-2 (conv 64, conv 64, max-pool, dense 256, 256, 10), batch 60.

Loops: ``jst`` (``Trainer.train_step``: masked Adam, what jst's training loop runs per step on CPU conv nets),
``minimal_jax`` (the same Flax module under a bare ``jax.jit`` of loss, grad and ``optax.adam``; no masks),
``pytorch_nchw`` and ``pytorch_channels_last`` (eager PyTorch, Adam, the same layers; channels_last is PyTorch's
fast CPU layout). Each: median wall time of ``--steps`` steps after two warm-up (compiling) steps, and the
ratio to jst. Results: ``--out/conv_<platform>.json`` and ``.md``; ``docs/results/speed.md`` shows the table.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jst.data import datasets
from jst.models import networks
from jst.models import specs
from jst.ops import masks as masks_lib
from jst.training import train as train_lib
# pylint: enable=g-import-not-at-top,wrong-import-position

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_STEPS = flags.DEFINE_integer('steps', 10, 'Timed steps per loop (after two warm-up steps).')
_TORCH = flags.DEFINE_bool('torch', True, 'Include the PyTorch loops (needs torch installed).')
_NETWORKS = flags.DEFINE_list('networks', ['resnet', 'conv2'], 'Which networks.')
_OUT = flags.DEFINE_string('out', os.path.join(REPO, 'benchmarks', 'results'), 'Output folder.')

LR = 1e-3
NETWORKS = {  # name: (spec, batch size)
    'resnet': (lambda: specs.ResNetSpec(block_widths=(8,) * 7, stem_channels=8), 128),
    'conv2': (lambda: specs.ConvSpec(conv_channels=(64, 64), pool_after=(False, True), dense_widths=(256, 256)), 60),
}


def _median_step_s(step: Callable[[], Any], steps: int) -> float:
    for _ in range(2):  # warm-up: compilation (JAX), allocator and kernel choice (PyTorch)
        step()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _batch(batch: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return (rng.integers(0, 256, (batch, 32, 32, 3), dtype=np.uint8),
            rng.integers(0, 10, batch).astype(np.int32))


def bench_jst(spec: specs.ModelSpec, batch: int, steps: int) -> float:
    trainer = train_lib.Trainer(networks.build_model(spec), optax.adam(LR), batch,
                                functools.partial(datasets.preprocess, dataset='cifar10'))
    variables = networks.init_variables(spec, jax.random.key(0), (32, 32, 3))
    box = {'s': train_lib.create_train_state(variables, masks_lib.create_masks(variables['params']), trainer.tx)}
    x, y = (jnp.asarray(a) for a in _batch(batch))
    train_step = jax.jit(trainer.train_step)

    def step():
        box['s'], metrics = train_step(box['s'], x, y)
        jax.block_until_ready(metrics['loss'])

    return _median_step_s(step, steps)


def bench_minimal_jax(spec: specs.ModelSpec, batch: int, steps: int) -> float:
    model = networks.build_model(spec)
    variables = networks.init_variables(spec, jax.random.key(0), (32, 32, 3))
    tx = optax.adam(LR)
    x, y = (jnp.asarray(a) for a in _batch(batch))
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

    return _median_step_s(step, steps)


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


def bench_pytorch(name: str, batch: int, steps: int, channels_last: bool) -> float:
    import torch  # pylint: disable=g-import-not-at-top
    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count() or 1)
    images, labels = _batch(batch)
    x = torch.from_numpy(images.transpose(0, 3, 1, 2).astype(np.float32) / 255.0)
    y = torch.from_numpy(labels.astype(np.int64))
    model = _torch_model(name)
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()

    def step():
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()

    return _median_step_s(step, steps)


def run(names: list[str], steps: int, with_torch: bool) -> list[dict[str, Any]]:
    rows = []
    for name in names:
        make_spec, batch = NETWORKS[name]
        spec = make_spec()
        times = {'jst': bench_jst(spec, batch, steps), 'minimal_jax': bench_minimal_jax(spec, batch, steps)}
        if with_torch:
            times['pytorch_nchw'] = bench_pytorch(name, batch, steps, channels_last=False)
            times['pytorch_channels_last'] = bench_pytorch(name, batch, steps, channels_last=True)
        for loop, seconds in times.items():
            rows.append({'network': name, 'batch': batch, 'loop': loop, 'step_ms': round(1000 * seconds, 2),
                         'relative_to_jst': round(seconds / times['jst'], 3)})
    return rows


def render(result: dict[str, Any]) -> str:
    """The markdown table of a results JSON (``docs/results/speed.md`` includes it)."""
    m = result['machine']
    lines = [f"One Adam step, median of {result['steps']} ({m['backend']}, {m['cpus']} CPUs, jax {m['jax']}"
             + (f", torch {m['torch']}" if m.get('torch') else '') + f", {result['date']})", '',
             '| network, batch | loop | step (ms) | relative to jst |', '|---|---|---|---|']
    lines += [f"| {r['network']}, {r['batch']} | {r['loop']} | {r['step_ms']:.1f} | {r['relative_to_jst']:.2f}x |"
              for r in result['rows']]
    return '\n'.join(lines) + '\n'


def main(argv):
    del argv
    torch_version = None
    if _TORCH.value:
        import torch  # pylint: disable=g-import-not-at-top
        torch_version = torch.__version__
    result = {'steps': _STEPS.value, 'date': time.strftime('%Y-%m-%d'),
              'machine': {'backend': jax.default_backend(), 'cpus': os.cpu_count(), 'jax': jax.__version__,
                          'torch': torch_version, 'processor': platform.processor() or platform.machine()},
              'rows': run(_NETWORKS.value, _STEPS.value, _TORCH.value)}
    os.makedirs(_OUT.value, exist_ok=True)
    stem = os.path.join(_OUT.value, f'conv_{jax.default_backend()}')
    with open(stem + '.json', 'w') as f:
        json.dump(result, f, indent=1)
    with open(stem + '.md', 'w') as f:
        f.write(render(result))
    print(render(result))


if __name__ == '__main__':
    app.run(main)
