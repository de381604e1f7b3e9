"""LeNet-300-100 on MNIST: jst vs a minimal JAX loop vs a PyTorch eager loop, side by side.

    pip install torch==2.13.0          # the benchmark's own dependency (CPU build here); jst never imports it
    python benchmarks/bench_lenet.py --manual_dir=../shared/datasets/mnist [--full] [--out=benchmarks/results]

Everything is timed in this one process, one after another, so the ratios are
comparable; each figure is the median of ``--repeats`` epochs after a warm-up
epoch (which includes compilation). Reported:

* epoch time and steps/s at batch 60 and 128 for: ``jst`` (the real
  ``jst.training.train`` path: masks, in-scan evaluation at the epoch end, metrics and
  early-stopping bookkeeping), ``minimal_jax`` (a bare whole-epoch
  ``lax.scan`` with masked Adam, no evaluation) and ``pytorch`` (an eager loop
  over a ``DataLoader``, masks re-applied after each step as OpenLTH does);
  ratios; achieved GFLOP/s next to a measured matmul peak;
* ``vmap`` over N = 1, 4, 16 seeds in one program, relative to N = 1;
* per-round overheads of a LeNet round (50k steps): compilation, pruning,
  one evaluation, one checkpoint;
* with ``--full``: wall time of a whole run of ``configs/mnist.py`` (both
  policies) and of a 3-level LeNet IMP run, as subprocesses.

Results go to ``--out/lenet_<platform>.json`` and ``.md``.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position
import optax  # pylint: disable=wrong-import-position

from jst.data import datasets as data_lib  # pylint: disable=wrong-import-position
from jst.models import networks  # pylint: disable=wrong-import-position
from jst.models import specs  # pylint: disable=wrong-import-position
from jst.ops import masks as masks_lib  # pylint: disable=wrong-import-position
from jst.ops import pytrees  # pylint: disable=wrong-import-position
from jst.run import checkpointing  # pylint: disable=wrong-import-position
from jst.training import early_stopping  # pylint: disable=wrong-import-position
from jst.training import train as train_lib  # pylint: disable=wrong-import-position
from jst.training import train_loop  # pylint: disable=wrong-import-position

_MANUAL_DIR = flags.DEFINE_string('manual_dir', os.environ.get('JST_MANUAL_DIR', ''), 'MNIST files.')
_OUT = flags.DEFINE_string('out', os.path.join(os.path.dirname(__file__), 'results'), 'Output folder.')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Timed epochs per measurement (median).')
_BATCHES = flags.DEFINE_list('batch_sizes', ['60', '128'], 'Batch sizes.')
_SEEDS = flags.DEFINE_list('vmap_seeds', ['1', '4', '16'], 'Replicate counts for the vmap benchmark.')
_FULL = flags.DEFINE_bool('full', False, 'Also time whole runs (subprocesses).')
_TORCH = flags.DEFINE_bool('torch', True, 'Include the PyTorch reference (needs torch installed).')
_PROFILE = flags.DEFINE_string('profile_dir', '', 'If set: a jax.profiler trace of one jst epoch (view with '
                               'TensorBoard/Perfetto) and the optimized HLO of the epoch program go here.')

LR = 1.2e-3
MACS_PER_EXAMPLE = 784 * 300 + 300 * 100 + 100 * 10  # LeNet-300-100 multiply-accumulates, forward


def _median_time(fn, repeats: int) -> tuple[float, float]:
    """(first call seconds incl. compilation, median of ``repeats`` later calls)."""
    t = time.perf_counter()
    fn()
    first = time.perf_counter() - t
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return first, statistics.median(times)


def bench_jst(ds: data_lib.Dataset, batch: int, repeats: int) -> dict[str, float]:
    spec = specs.lenet_300_100()
    trainer = train_lib.Trainer(networks.build_model(spec), optax.adam(LR), batch, functools.partial(data_lib.preprocess, dataset='mnist'))
    variables = networks.init_variables(spec, jax.random.key(0), (28, 28, 1))
    state = {'s': train_lib.create_train_state(variables, masks_lib.create_masks(variables['params']), trainer.tx)}
    data = train_lib.device_data(ds)
    spe = train_lib.steps_per_epoch(len(ds.train), batch)
    seg = train_loop.make_segment_fn(trainer, len(ds.train))
    epoch = {'e': 0}

    def one_epoch():
        e = epoch['e']
        state['s'], records = train_loop.train_steps(seg, state['s'], data, jax.random.key(1), e * spe,
                                                    (e + 1) * spe, spe=spe, eval_every=spe,
                                                    total=10 ** 9)
        early_stopping.early_stopping(records)
        epoch['e'] += 1

    first, median = _median_time(one_epoch, repeats)
    return {'first_epoch_s': first, 'epoch_s': median, 'steps_per_epoch': spe}


def bench_minimal_jax(ds: data_lib.Dataset, batch: int, repeats: int) -> dict[str, float]:
    """The bare loop: data on device, whole-epoch scan, masked Adam, nothing else."""
    x = jnp.asarray(ds.train.images.reshape(len(ds.train), -1))
    y = jnp.asarray(ds.train.labels)
    n = x.shape[0]
    spe = n // batch
    key = jax.random.key(0)
    sizes = [(784, 300), (300, 100), (100, 10)]
    params = [(jax.random.normal(jax.random.fold_in(key, i), s) * np.sqrt(2.0 / sum(s)), jnp.zeros(s[1]))
              for i, s in enumerate(sizes)]
    masks = [jnp.ones(s, bool) for s in sizes]
    tx = optax.adam(LR)
    opt = tx.init(params)

    def loss_fn(p, xb, yb):
        h = xb.astype(jnp.float32) / 255.0
        for i, (w, b) in enumerate(p):
            h = h @ w + b
            if i < 2:
                h = jax.nn.relu(h)
        return optax.softmax_cross_entropy_with_integer_labels(h, yb).mean()

    @jax.jit
    def epoch(params, opt, k):
        idx = jax.random.permutation(k, n)[: spe * batch].reshape(spe, batch)

        def step(carry, i):
            p, o = carry
            g = jax.grad(loss_fn)(p, x[i], y[i])
            g = [(gw * m, gb) for (gw, gb), m in zip(g, masks)]
            u, o = tx.update(g, o, p)
            p = optax.apply_updates(p, u)
            p = [(w * m, b) for (w, b), m in zip(p, masks)]
            return (p, o), None

        (params, opt), _ = jax.lax.scan(step, (params, opt), idx)
        return params, opt

    state = {'p': params, 'o': opt, 'e': 0}

    def one_epoch():
        state['p'], state['o'] = epoch(state['p'], state['o'], jax.random.fold_in(key, state['e']))
        jax.block_until_ready(state['p'])
        state['e'] += 1

    first, median = _median_time(one_epoch, repeats)
    return {'first_epoch_s': first, 'epoch_s': median, 'steps_per_epoch': spe}


def bench_pytorch(ds: data_lib.Dataset, batch: int, repeats: int) -> dict[str, float]:
    """A plain eager PyTorch loop with a DataLoader, as OpenLTH and most LTH code trains."""
    import torch  # pylint: disable=g-import-not-at-top
    from torch import nn  # pylint: disable=g-import-not-at-top
    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count() or 1)
    x = torch.from_numpy(ds.train.images.reshape(len(ds.train), -1).astype(np.float32) / 255.0)
    y = torch.from_numpy(ds.train.labels.astype(np.int64))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch,
                                         shuffle=True, drop_last=True)
    model = nn.Sequential(nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(), nn.Linear(100, 10))
    masks = {name: torch.ones_like(p) for name, p in model.named_parameters() if name.endswith('weight')}
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    loss_fn = nn.CrossEntropyLoss()

    def one_epoch():
        model.train()
        for xb, yb in loader:
            opt.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            with torch.no_grad():
                for name, p in model.named_parameters():
                    if name in masks:
                        p.mul_(masks[name])

    first, median = _median_time(one_epoch, repeats)
    return {'first_epoch_s': first, 'epoch_s': median, 'steps_per_epoch': len(ds.train) // batch,
            'torch_version': torch.__version__, 'torch_threads': torch.get_num_threads()}


def bench_vmap(ds: data_lib.Dataset, counts: list[int], repeats: int, batch: int = 60) -> dict[str, float]:
    spec = specs.lenet_300_100()
    trainer = train_lib.Trainer(networks.build_model(spec), optax.adam(LR), batch, functools.partial(data_lib.preprocess, dataset='mnist'))
    data = train_lib.device_data(ds)
    spe = train_lib.steps_per_epoch(len(ds.train), batch)
    rep = train_loop.make_replicated_segment_fn(trainer, len(ds.train))
    out = {}
    for n in counts:
        states = []
        for seed in range(n):
            v = networks.init_variables(spec, jax.random.key(seed), (28, 28, 1))
            states.append(train_lib.create_train_state(v, masks_lib.create_masks(v['params']), trainer.tx))
        box = {'s': pytrees.stack(states), 'e': 0}
        keys = jnp.stack([jax.random.key(100 + s) for s in range(n)])
        best = jnp.full((n,), jnp.inf)

        def one_epoch():
            box['s'], m = rep(box['s'], data, keys, train_loop.Span(box['e'], 0, box['e'] * spe, 10 ** 9, spe), best,
                                  length=spe)
            jax.block_until_ready(m['loss'])
            box['e'] += 1

        _, median = _median_time(one_epoch, repeats)
        out[str(n)] = median
    base = out[str(counts[0])]
    return {'epoch_s': out, 'relative_to_first': {k: v / base for k, v in out.items()},
            'per_seed_relative': {k: v / base / int(k) for k, v in out.items()}}


def bench_overheads(ds: data_lib.Dataset, epoch_s: float, batch: int = 60) -> dict[str, float]:
    """Per-round costs besides training, as a share of one 50k-step LeNet round."""
    spec = specs.lenet_300_100()
    trainer = train_lib.Trainer(networks.build_model(spec), optax.adam(LR), batch, functools.partial(data_lib.preprocess, dataset='mnist'))
    v = networks.init_variables(spec, jax.random.key(0), (28, 28, 1))
    masks = masks_lib.create_masks(v['params'])
    state = train_lib.create_train_state(v, masks, trainer.tx)
    data = train_lib.device_data(ds)
    t = time.perf_counter()
    seg = train_loop.make_segment_fn(trainer, len(ds.train))
    spe = train_lib.steps_per_epoch(len(ds.train), batch)
    seg.lower(state, data, jax.random.key(0), train_loop.Span(0, 0, 0, 10, spe), float('inf'), length=spe).compile()
    compile_s = time.perf_counter() - t
    ev = jax.jit(trainer.evaluate())
    jax.block_until_ready(ev(state.params, state.batch_stats, data.val_x, data.val_y, data.val_w))
    jax.block_until_ready(ev(state.params, state.batch_stats, data.test_x, data.test_y, data.test_w))
    t = time.perf_counter()
    jax.block_until_ready(ev(state.params, state.batch_stats, data.val_x, data.val_y, data.val_w))
    jax.block_until_ready(ev(state.params, state.batch_stats, data.test_x, data.test_y, data.test_w))
    eval_s = time.perf_counter() - t
    rates = masks_lib.layer_rates(masks, 0.2, {'^output/': 0.1})
    prune = jax.jit(lambda p, m, r: masks_lib.magnitude_prune(p, m, r))
    jax.block_until_ready(prune(state.params, masks, rates))
    t = time.perf_counter()
    jax.block_until_ready(prune(state.params, masks, rates))
    prune_s = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as d:
        ck = checkpointing.RunCheckpointer(d, None)
        arrays = {'train_state': checkpointing.state_to_storable(state)}
        ck.save({'phase': 'train'}, arrays)
        t = time.perf_counter()
        ck.save({'phase': 'train'}, arrays)
        ckpt_s = time.perf_counter() - t
        ck.close()
    round_s = epoch_s * 50_000 / spe
    evals = 50_000 / 500  # the LeNet config evaluates every 500 steps
    return {'round_training_s_est': round_s, 'compile_s': compile_s, 'eval_val_test_s': eval_s,
            'prune_s': prune_s, 'checkpoint_s': ckpt_s,
            'share_compile': compile_s / round_s, 'share_eval_at_every_500_steps': evals * eval_s / round_s,
            'note_eval': 'val+test every 500 steps; with eval_test=at_best, test runs only at new val minima',
            'share_prune': prune_s / round_s, 'share_checkpoint_per_epoch': (50_000 / spe) * ckpt_s / round_s}


def profile_epoch(ds: data_lib.Dataset, batch: int, out_dir: str) -> dict[str, Any]:
    """A profiler trace of one jst epoch, the optimized HLO, and the op mix of that HLO."""
    spec = specs.lenet_300_100()
    trainer = train_lib.Trainer(networks.build_model(spec), optax.adam(LR), batch, functools.partial(data_lib.preprocess, dataset='mnist'))
    v = networks.init_variables(spec, jax.random.key(0), (28, 28, 1))
    state = train_lib.create_train_state(v, masks_lib.create_masks(v['params']), trainer.tx)
    data = train_lib.device_data(ds)
    spe = train_lib.steps_per_epoch(len(ds.train), batch)
    seg = train_loop.make_segment_fn(trainer, len(ds.train))
    args = (state, data, jax.random.key(1), train_loop.Span(0, 0, 0, 10 ** 9, spe), float('inf'))
    hlo = seg.lower(*args, length=spe).compile().as_text()
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, 'jst_epoch.hlo.txt'), 'w') as f:
        f.write(hlo)
    jax.block_until_ready(seg(*args, length=spe))
    with jax.profiler.trace(out_dir):
        jax.block_until_ready(seg(*args, length=spe))
    ops = {op: hlo.count(f' {op}(') for op in ('dot', 'fusion', 'while', 'conditional', 'gather', 'sort')}
    return {'trace_dir': out_dir, 'hlo_ops': ops}


def bench_peak_gflops() -> float:
    """Measured float32 matmul throughput (an achievable peak for this machine)."""
    a = jax.random.normal(jax.random.key(0), (2048, 2048))
    f = jax.jit(lambda a: a @ a)
    jax.block_until_ready(f(a))
    t = time.perf_counter()
    for _ in range(10):
        jax.block_until_ready(f(a))
    return 10 * 2 * 2048 ** 3 / (time.perf_counter() - t) / 1e9


def _full_runs(manual_dir: str) -> dict[str, float]:
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    runs = {
        'paper_mnist_juvenile (6 rounds x 3 epochs)': ['--config=configs/mnist.py', '--config.method=juvenile',
                                                        '--config.num_seeds=1'],
        'paper_mnist_lth (6 rounds x 3 epochs)': ['--config=configs/mnist.py', '--config.method=lth',
                                                   '--config.num_seeds=1'],
        'lenet300_imp_3_levels_x_5000_steps': ['--config=configs/mnist_lenet300.py', '--config.num_rounds=2',
                                               '--config.steps_per_round=5000', '--config.control=none'],
    }
    out = {}
    for name, args in runs.items():
        with tempfile.TemporaryDirectory() as d:
            t = time.perf_counter()
            subprocess.run([sys.executable, 'launch/main.py', *args, f'--config.manual_dir={manual_dir}',
                            '--config.write_report=False', f'--workdir={d}'], check=True, cwd=repo,
                           capture_output=True)
            out[name] = time.perf_counter() - t
    return out


def machine() -> dict[str, str]:
    cpu = platform.processor()
    try:
        with open('/proc/cpuinfo') as f:
            cpu = next(l.split(':', 1)[1].strip() for l in f if l.startswith('model name'))
    except (OSError, StopIteration):
        pass
    return {'platform': platform.platform(), 'cpu': cpu, 'cores': str(os.cpu_count()),
            'jax_backend': jax.default_backend(), 'devices': str(jax.devices()),
            'jax': jax.__version__, 'python': platform.python_version()}


def main(argv):
    del argv
    ds = data_lib.load_dataset('mnist', _MANUAL_DIR.value or None, backend='numpy')
    results: dict[str, object] = {'machine': machine(), 'dataset': 'mnist (55,000 training examples)'}
    peak = bench_peak_gflops()
    results['matmul_peak_gflops'] = peak
    per_batch = {}
    for b in (int(x) for x in _BATCHES.value):
        row = {'jst': bench_jst(ds, b, _REPEATS.value), 'minimal_jax': bench_minimal_jax(ds, b, _REPEATS.value)}
        if _TORCH.value:
            row['pytorch'] = bench_pytorch(ds, b, _REPEATS.value)
        flop = row['jst']['steps_per_epoch'] * b * 6 * MACS_PER_EXAMPLE
        for name in list(row):
            row[name]['steps_per_s'] = row[name]['steps_per_epoch'] / row[name]['epoch_s']
            row[name]['gflops'] = flop / row[name]['epoch_s'] / 1e9
        row['jst_over_minimal'] = row['jst']['epoch_s'] / row['minimal_jax']['epoch_s']
        if 'pytorch' in row:
            row['pytorch_over_jst'] = row['pytorch']['epoch_s'] / row['jst']['epoch_s']
        row['epoch_gflop'] = flop / 1e9
        per_batch[str(b)] = row
        print(f'batch {b}: ' + ', '.join(f"{k} {v['epoch_s']:.3f}s" for k, v in row.items() if isinstance(v, dict)),
              flush=True)
    results['epoch'] = per_batch
    if _PROFILE.value:
        results['profile'] = profile_epoch(ds, int(_BATCHES.value[0]), _PROFILE.value)
    results['vmap_seeds'] = bench_vmap(ds, [int(x) for x in _SEEDS.value], _REPEATS.value)
    results['overheads'] = bench_overheads(ds, per_batch[_BATCHES.value[0]]['jst']['epoch_s'], int(_BATCHES.value[0]))
    if _FULL.value:
        results['full_runs_s'] = _full_runs(_MANUAL_DIR.value)
    os.makedirs(_OUT.value, exist_ok=True)
    stem = os.path.join(_OUT.value, f'lenet_{jax.default_backend()}')
    with open(stem + '.json', 'w') as f:
        json.dump(results, f, indent=1)
    md = markdown(results)
    with open(stem + '.md', 'w') as f:
        f.write(md)
    print(md)


def markdown(r: dict) -> str:
    m = r['machine']
    lines = [f"Machine: {m['cpu']}, {m['cores']} cores, JAX {m['jax']} ({m['jax_backend']}); "
             f"measured matmul peak {r['matmul_peak_gflops']:.0f} GFLOP/s.", '',
             '| batch | loop | epoch (s) | steps/s | GFLOP/s | first epoch incl. compile (s) |',
             '|---|---|---|---|---|---|']
    for b, row in r['epoch'].items():
        for name in ('jst', 'minimal_jax', 'pytorch'):
            if name in row:
                x = row[name]
                lines.append(f"| {b} | {name} | {x['epoch_s']:.3f} | {x['steps_per_s']:.0f} | {x['gflops']:.1f} | "
                             f"{x['first_epoch_s']:.2f} |")
        extra = f", PyTorch / jst = {row['pytorch_over_jst']:.2f}x" if 'pytorch_over_jst' in row else ''
        lines.append(f"| {b} | ratios | jst / minimal = {row['jst_over_minimal']:.3f}x{extra} | | | |")
    v = r['vmap_seeds']
    lines += ['', '| seeds (vmap) | epoch (s) | relative to 1 | per seed, relative to 1 |', '|---|---|---|---|']
    for k in v['epoch_s']:
        lines.append(f"| {k} | {v['epoch_s'][k]:.3f} | {v['relative_to_first'][k]:.2f} | {v['per_seed_relative'][k]:.2f} |")
    o = r['overheads']
    lines += ['', 'Per-round overheads (LeNet-300-100, one 50k-step round at batch 60): '
              f"compile {o['compile_s']:.2f}s ({100 * o['share_compile']:.2f}%), "
              f"val+test evaluation every 500 steps {100 * o['share_eval_at_every_500_steps']:.1f}%, "
              f"pruning {1000 * o['prune_s']:.1f} ms ({100 * o['share_prune']:.3f}%), "
              f"a checkpoint every epoch {100 * o['share_checkpoint_per_epoch']:.1f}% "
              f"({1000 * o['checkpoint_s']:.0f} ms each)."]
    if 'full_runs_s' in r:
        lines += ['', '| whole run | wall time (s) |', '|---|---|']
        lines += [f'| {k} | {v:.1f} |' for k, v in r['full_runs_s'].items()]
    return '\n'.join(lines) + '\n'


if __name__ == '__main__':
    app.run(main)
