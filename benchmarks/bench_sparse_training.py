"""Sparse training from jaxpruner's menu against IMP, at matched sparsity: LeNet-300-100 on MNIST.

    python benchmarks/bench_sparse_training.py --manual_dir=../shared/datasets/mnist [--seeds=3] [--steps=16000]

IMP's records come from the committed ``lenet300`` study (``docs/results/lenet300``: Frankle & Carbin's rates,
8,000 iterations per level, survivors reset to theta_0) at ``--level`` (default 10: 0.8^10 of the hidden layers'
and 0.9^10 of the output layer's weights kept). Trained here, side by side, with the same data split, network,
Adam 1.2e-3 and batch 60, the same per-layer sparsities, and one training of ``--steps`` iterations each:

* ``gmp``: gradual magnitude pruning (Zhu & Gupta 2017) with ``jst.ops.sparse_training.masked_optimizer``: dense at
  first, pruned every 500 steps from 5% to 75% of training on the cubic schedule of ``jst.ops.sparsity``;
* ``rigl``: RigL (Evci et al. 2020), random masks at the final sparsity from the start, drop-and-grow every 100
  steps until 75% of training with a drop fraction decaying from 0.3 (cosine); grown weights and their Adam
  moments start at zero;
* ``static``: the same random masks, never updated (the sparse-from-scratch control).

Validation every 500 steps; the reported test accuracy is the one at the lowest validation loss (as IMP's; for
GMP among the evaluations at its final sparsity).
Results: ``--out/sparse_training_<platform>.{json,md}``; ``--render=JSON`` rewrites the table from a results JSON.
"""

from __future__ import annotations

import glob
import json
import os
import platform
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app
from absl import flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
# pylint: disable=g-import-not-at-top,wrong-import-position
from jst.analysis import statistics
from jst.data import datasets as data_lib
from jst.models import networks
from jst.models import specs
from jst.ops import masks as masks_lib
from jst.ops import sparse_training
from jst.ops import sparsity
# pylint: enable=g-import-not-at-top,wrong-import-position

_MANUAL_DIR = flags.DEFINE_string('manual_dir', os.environ.get('JST_MANUAL_DIR', ''), 'MNIST files.')
_SEEDS = flags.DEFINE_integer('seeds', 3, 'Seeds 0 .. N-1 (IMP: the same seeds of the lenet300 study).')
_STEPS = flags.DEFINE_integer('steps', 16_000, 'Training iterations of each sparse-training run.')
_LEVEL = flags.DEFINE_integer('level', 10, 'IMP level to match (its per-layer sparsities).')
_TRAIN_LIMIT = flags.DEFINE_integer('train_limit', 0, '>0: fewer training examples (the toy-scale test).')
_OUT = flags.DEFINE_string('out', os.path.join(REPO, 'benchmarks', 'results'), 'Output folder.')
_RENDER = flags.DEFINE_string('render', '', 'A results JSON: rewrite its .md from it (no training).')
BATCH, LR, EVAL_EVERY, CHUNK = 60, 1.2e-3, 500, 100
METHODS = ('gmp', 'rigl', 'static')


def level_sparsities(masks: Any, level: int) -> Any:
    """IMP's per-layer sparsities after ``level`` levels: hidden 1 - 0.8^level, output 1 - 0.9^level."""
    return masks_lib.layer_rates(masks, 1 - 0.8 ** level, {'^output/': 1 - 0.9 ** level})


def loss_fn(model: Any, params: Any, x: jax.Array, y: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(model.apply({'params': params}, x), y).mean()


def evaluate(model: Any, params: Any, x: jax.Array, y: jax.Array) -> tuple[float, float]:
    logits = model.apply({'params': params}, x)
    return (float(optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()),
            float(jnp.mean(jnp.argmax(logits, -1) == y)))


def train(method: str, seed: int, ds: data_lib.Dataset, steps: int, level: int) -> dict[str, Any]:
    """One run of ``method`` ('gmp' | 'rigl' | 'static'); test accuracy at the best validation loss."""
    spec = specs.lenet_300_100()
    model = networks.build_model(spec)
    key = jax.random.key(seed)
    params = networks.init_variables(spec, key, (28, 28, 1))['params']
    dense = masks_lib.create_masks(params)
    final = level_sparsities(dense, level)
    x = jnp.asarray(data_lib.preprocess(ds.train.images, 'mnist'))
    y = jnp.asarray(ds.train.labels)
    vx, vy = jnp.asarray(data_lib.preprocess(ds.validation.images, 'mnist')), jnp.asarray(ds.validation.labels)
    tx_, ty = jnp.asarray(data_lib.preprocess(ds.test.images, 'mnist')), jnp.asarray(ds.test.labels)
    end = int(0.75 * steps)
    if method == 'gmp':
        begin, freq = int(0.05 * steps) // EVAL_EVERY * EVAL_EVERY, EVAL_EVERY
        end = begin + (end - begin) // freq * freq  # on the update grid: the final sparsity is reached
        tx = sparse_training.masked_optimizer(
            optax.adam(LR), dense,
            sparsity_schedule=lambda t: jax.tree.map(
                lambda s: sparsity.polynomial_sparsity(t, s, begin, end, freq), final),
            update_schedule=lambda t: sparsity.is_update_step(t, begin, end, freq))
        masks = dense
    else:
        masks = masks_lib.prune_to_sparsity(masks_lib.random_scores(dense, jax.random.fold_in(key, 1)), dense, final)
        params = masks_lib.apply_masks(params, masks)
        tx = masks_lib.keep_pruned_at_zero(optax.adam(LR))
    opt_state = tx.init(params)

    @jax.jit
    def chunk(params, opt_state, masks, idx):
        def step(carry, batch):
            p, s = carry
            grads = jax.grad(lambda q: loss_fn(model, q, x[batch], y[batch]))(p)
            updates, s = tx.update(grads, s, p) if method == 'gmp' else tx.update(grads, s, p, masks=masks)
            return (optax.apply_updates(p, updates), s), None
        (params, opt_state), _ = jax.lax.scan(step, (params, opt_state), idx)
        return params, opt_state

    @jax.jit
    def rigl(params, opt_state, masks, idx, t):
        grads = jax.grad(lambda q: loss_fn(model, q, x[idx], y[idx]))(params)
        new_params, new_masks = sparse_training.rigl_update(
            params, masks, grads, sparse_training.cosine_drop_fraction(t, 0.3, end))
        kept = masks_lib.map_masked(lambda a, b: a & b, new_masks, masks)
        adam = opt_state[0]._replace(mu=masks_lib.apply_masks(opt_state[0].mu, kept),
                                     nu=masks_lib.apply_masks(opt_state[0].nu, kept))
        return new_params, (adam, *opt_state[1:]), new_masks

    rng = np.random.default_rng(seed)
    best = (np.inf, 0.0, 0, 0.0)  # val loss, val acc, step, test acc
    t0 = time.time()
    for start in range(0, steps, CHUNK):
        idx = jnp.asarray(rng.integers(0, x.shape[0], (CHUNK, BATCH)))
        params, opt_state = chunk(params, opt_state, masks, idx)
        t = start + CHUNK
        if method == 'rigl' and t < end:
            params, opt_state, masks = rigl(params, opt_state, masks, idx[-1], t)
        if t % EVAL_EVERY == 0 and (method != 'gmp' or t >= end):  # GMP: only once at the final sparsity
            vl, va = evaluate(model, params, vx, vy)
            if vl < best[0]:
                best = (vl, va, t, evaluate(model, params, tx_, ty)[1])
    current = opt_state.masks if method == 'gmp' else masks
    stats = masks_lib.sparsity_stats(current)
    return {'method': method, 'seed': seed, 'val_accuracy': best[1], 'test_accuracy': best[3], 'best_step': best[2],
            'fraction_remaining': stats['fraction_remaining'], 'layers': stats['layers'],
            'seconds': round(time.time() - t0, 1)}


def imp_records(level: int, seeds: int) -> list[dict[str, Any]]:
    """The lenet300 study's IMP records at ``level`` for seeds 0 .. seeds-1 (committed records)."""
    out = []
    for path in glob.glob(os.path.join(REPO, 'docs', 'results', 'lenet300', 'records', '*', 'imp', 'summary.json')):
        out += [r for r in json.load(open(path)) if r['round'] == level and r['control'] == 'none'
                and r['seed'] < seeds]
    return out


def welch(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """``mean(a) - mean(b)`` of two unpaired samples, its Welch 95% CI half-width and two-sided p-value (the
    seeds of IMP and of these runs draw different initialisations, so they do not pair)."""
    from scipy import stats  # pylint: disable=g-import-not-at-top
    x, y = np.asarray(a, float), np.asarray(b, float)
    va, vb = x.var(ddof=1) / x.size, y.var(ddof=1) / y.size
    se = float(np.sqrt(va + vb))
    df = (va + vb) ** 2 / (va ** 2 / (x.size - 1) + vb ** 2 / (y.size - 1))
    return float(x.mean() - y.mean()), float(stats.t.ppf(0.975, df) * se), float(stats.ttest_ind(x, y, equal_var=False).pvalue)


def render(results: dict[str, Any]) -> str:
    """The Markdown table of a results JSON (``main``'s output): every number from its records."""
    rows, imp, steps, level = results['rows'], results['imp'], results['steps'], results['level']
    seeds = len({r['seed'] for r in rows})
    head = results.get('machine', 'cpu')
    lines = [f'# Sparse training against IMP at matched sparsity (LeNet-300-100, MNIST; {head})', '',
             f'Per-layer sparsities of IMP level {level} (hidden layers 1 - 0.8^{level}, output 1 - 0.9^{level}); '
             'test accuracy at the lowest validation loss; mean ± 95% CI over seeds. IMP: the committed `lenet300` '
             f'records ({level + 1} trainings of 8,000 iterations); the others: one training of {steps:,} '
             f'iterations. Command: `python benchmarks/bench_sparse_training.py --seeds={seeds} --steps={steps} '
             f'--level={level}`; this table again from the committed JSON: `python benchmarks/bench_sparse_training.py '
             '--render=benchmarks/results/sparse_training_cpu.json`.', '',
             f'**Iterations are not matched**: IMP trains {(level + 1) * 8000:,} iterations in all to find its masks '
             f'({(level + 1) * 8000 / steps:.1f}x the {steps:,} of each other method), and only its last training, of '
             '8,000, is at this sparsity; the rows compare each method\'s whole training cost as run, not matched '
             'iterations.', '',
             '| method | seeds | % weights remaining | iterations | test acc (%) | val acc (%) | test: method − IMP '
             '(points, Welch 95% CI) | p (Holm, 3 tests) |', '|---|---|---|---|---|---|---|---|']
    groups = {'imp': imp, **{m: [r for r in rows if r['method'] == m] for m in METHODS}}
    diffs = {m: welch([r['test_accuracy'] for r in groups[m]], [r['test_accuracy'] for r in imp])
             for m in METHODS if len(groups[m]) > 1 and len(imp) > 1}
    adjusted = dict(zip(diffs, statistics.holm([d[2] for d in diffs.values()]))) if diffs else {}
    for name, rs in groups.items():
        if not rs:
            lines.append(f'| {name} | 0 | | | (no records) | | | |')
            continue
        test, val = [r['test_accuracy'] for r in rs], [r['val_accuracy'] for r in rs]
        iterations = (level + 1) * 8000 if name == 'imp' else steps
        p_text = f'{adjusted.get(name, 1):.3f}' if adjusted.get(name, 1) >= 0.001 else '< 0.001'
        diff = (f'{100 * diffs[name][0]:+.2f} ± {100 * diffs[name][1]:.2f} | {p_text}'
                if name in diffs else '(reference) |' if name == 'imp' else '(needs 2 seeds) |')
        lines.append(f"| {name} | {len(rs)} | {100 * np.mean([r['fraction_remaining'] for r in rs]):.2f} | "
                     f'{iterations:,} | {100 * np.mean(test):.2f} ± {100 * statistics.ci95(test):.2f} | '
                     f'{100 * np.mean(val):.2f} ± {100 * statistics.ci95(val):.2f} | {diff} |')
    return '\n'.join(lines) + '\n'


def main(argv):
    del argv
    if _RENDER.value:
        with open(_RENDER.value) as f:
            text = render(json.load(f))
        path = os.path.splitext(_RENDER.value)[0] + '.md'
    else:
        ds = data_lib.load_dataset('mnist', _MANUAL_DIR.value or None, backend='numpy',
                                   train_limit=_TRAIN_LIMIT.value or None)
        rows = [train(m, s, ds, _STEPS.value, _LEVEL.value) for s in range(_SEEDS.value) for m in METHODS]
        for r in rows:
            print(json.dumps({k: v for k, v in r.items() if k != 'layers'}), flush=True)
        results = {'rows': rows, 'imp': imp_records(_LEVEL.value, _SEEDS.value), 'steps': _STEPS.value,
                   'level': _LEVEL.value, 'machine': f'{jax.default_backend()}, {platform.machine()}, '
                   f'{os.cpu_count()} CPUs, jax {jax.__version__}, {time.strftime("%Y-%m-%d")}'}
        os.makedirs(_OUT.value, exist_ok=True)
        path = os.path.join(_OUT.value, f'sparse_training_{jax.default_backend()}')
        with open(path + '.json', 'w') as f:
            json.dump(results, f, indent=1)
        text, path = render(results), path + '.md'
    with open(path, 'w') as f:
        f.write(text)
    print(text + f'(wrote {path})')


if __name__ == '__main__':
    app.run(main)
