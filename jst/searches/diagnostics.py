"""Diagnostics of "juvenility" (how able a network still is to learn), on a fixed probe batch.

The measures are pure functions of (params, batch_stats, masks, probe batch)
and run under ``jit``; ``summary`` and ``start_of_round`` run them for a
search (cached per architecture in the ``RunContext``). Pruned weights are excluded everywhere (gradients, Hessian
probes and perturbations are masked).

* ``gradient_stats``: norm of the probe-batch gradient, and its signal-to-noise
  ratio across ``k`` mini-batches: ||mean g||^2 / mean ||g_i - mean g||^2.
* ``dead_fraction``: per layer, the fraction of units whose pre-activation is
  <= 0 for every probe example (and position): dead ReLUs.
* ``weight_stats``: mean, std and max of |w| over the surviving weights.
* ``effective_rank``: exp of the entropy of the normalised singular values of
  a layer's activations [N, units] (Roy & Vetterli 2007); a rank-k matrix with
  equal singular values has effective rank k (singular values below 1e-3 of
  the largest count as zero).
* ``hutchinson_trace``: E[v^T H v] over Rademacher v (masked), with
  Hessian-vector products as ``jax.jvp`` of ``jax.grad``.
* ``sharpness``: L(w + rho g/||g||) - L(w): the loss increase under the
  first-order worst-case perturbation of norm rho (as in SAM).
* ``learning_potential``: validation-accuracy gain after a short fixed
  training budget from the round's starting point.
"""

from __future__ import annotations

import re
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp

from jst.models import specs
from jst.ops import masks as masks_lib
from jst.ops import pytrees
from jst.run import context as context_lib
from jst.training import train as train_lib
from jst.training import train_loop

Array = jax.Array
PyTree = Any


def _tree_sq_norm(tree: PyTree) -> Array:
    return sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree))


def dead_fraction(preactivations: Array) -> Array:
    """Fraction of units (last axis) that are <= 0 for every example and position. [N, ..., U] -> scalar."""
    flat = preactivations.reshape(-1, preactivations.shape[-1])
    return jnp.mean(jnp.max(flat, axis=0) <= 0)


def effective_rank(activations: Array) -> Array:
    """exp(entropy(s / sum s)) of the singular values s of activations [N, ..., U] (flattened to [M, U])."""
    flat = activations.reshape(-1, activations.shape[-1]).astype(jnp.float32)
    # Singular values from the [U, U] Gram matrix: cheap for the tall matrices of conv layers.
    s = jnp.sqrt(jnp.maximum(jnp.linalg.eigvalsh(flat.T @ flat), 0.0))
    s = jnp.where(s > 1e-3 * jnp.max(s), s, 0.0)  # float32 Gram round-off: drop s < 1e-3 s_max
    p = s / jnp.maximum(jnp.sum(s), 1e-12)
    entropy = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0))
    return jnp.exp(entropy)


def weight_stats(params: PyTree, masks: PyTree) -> dict[str, dict[str, Array]]:
    """{path: {'mean_abs', 'std', 'max_abs'}} over surviving weights of every prunable layer."""
    out = {}
    for (path, m), p in zip(pytrees.flatten(masks).items(), jax.tree.leaves(params)):
        if m is None:
            continue
        n = jnp.maximum(jnp.sum(m), 1)
        a = jnp.abs(p) * m
        mean = jnp.sum(a) / n
        var = jnp.sum(jnp.where(m, (jnp.abs(p) - mean) ** 2, 0.0)) / n
        out[path] = {'mean_abs': mean, 'std': jnp.sqrt(var), 'max_abs': jnp.max(a)}
    return out


def hutchinson_trace(loss_fn: Callable[[PyTree], Array], params: PyTree, masks: PyTree, key: Array,
                     num_samples: int = 8, unroll: bool = False) -> Array:
    """Hutchinson estimate of tr(H) of ``loss_fn`` at ``params`` over the surviving weights."""
    grad_fn = jax.grad(loss_fn)
    leaves, treedef = jax.tree.flatten(params)
    sizes = [x.size for x in leaves]
    # One random draw for all samples and leaves (a single threefry call keeps compilation cheap).
    signs = jax.random.rademacher(key, (num_samples, sum(sizes)), jnp.float32)
    offsets = [sum(sizes[:i]) for i in range(len(sizes))]

    def one(flat_v):
        v = jax.tree.unflatten(treedef, [flat_v[o:o + n].reshape(x.shape).astype(x.dtype)
                                         for o, n, x in zip(offsets, sizes, leaves)])
        v = masks_lib.apply_masks(v, masks)
        _, hv = jax.jvp(grad_fn, (params,), (v,))
        return sum(jnp.sum(a * b) for a, b in zip(jax.tree.leaves(v), jax.tree.leaves(hv)))

    if unroll:  # convolutions on CPU: avoid a loop (XLA:CPU runs convs inside loops much slower)
        return jnp.mean(jnp.stack([one(signs[i]) for i in range(num_samples)]))
    return jnp.mean(jax.lax.map(one, signs))


def sharpness(loss_fn: Callable[[PyTree], Array], params: PyTree, masks: PyTree, rho: float = 0.05) -> Array:
    """L(w + rho * g / ||g||) - L(w), with g the masked gradient."""
    loss, g = jax.value_and_grad(loss_fn)(params)
    g = masks_lib.apply_masks(g, masks)
    scale = rho / jnp.maximum(jnp.sqrt(_tree_sq_norm(g)), 1e-12)
    perturbed = jax.tree.map(lambda p, d: p + scale * d, params, g)
    return loss_fn(perturbed) - loss


def make_diagnostics(trainer: train_lib.Trainer, preactivation_pattern: str, num_minibatches: int = 8,
                     hutchinson_samples: int = 8, rho: float = 0.05,
                     unroll: bool = False) -> Callable[..., dict[str, Any]]:
    """Jitted (params, batch_stats, masks, x uint8 [N,...], y [N], key) -> diagnostics (eval mode).

    ``preactivation_pattern`` selects the modules whose outputs feed a ReLU (``spec.preactivation_pattern``).
    """
    model, preprocess = trainer.model, trainer.preprocess
    pattern = re.compile(preactivation_pattern)
    variables = pytrees.flax_variables

    def diagnostics(params, batch_stats, masks, x, y, key):
        inputs = preprocess(x)

        def loss_on(p, xi, yi):
            logits = model.apply(variables(p, batch_stats), xi, train=False)
            return jnp.mean(train_lib.cross_entropy(logits, yi))

        full_loss = lambda p: loss_on(p, inputs, y)
        g = masks_lib.apply_masks(jax.grad(full_loss)(params), masks)
        n = (x.shape[0] // num_minibatches) * num_minibatches
        xs = inputs[:n].reshape(num_minibatches, -1, *inputs.shape[1:])
        ys = y[:n].reshape(num_minibatches, -1)
        gs = jax.vmap(lambda xi, yi: masks_lib.apply_masks(jax.grad(loss_on)(params, xi, yi), masks))(xs, ys)
        mean_g = jax.tree.map(lambda a: jnp.mean(a, 0), gs)
        noise = jnp.mean(jax.vmap(lambda gi: _tree_sq_norm(jax.tree.map(jnp.subtract, gi, mean_g)))(gs))
        snr = _tree_sq_norm(mean_g) / jnp.maximum(noise, 1e-20)

        _, state = model.apply(variables(params, batch_stats), inputs, train=False,
                               capture_intermediates=lambda mdl, name: name == '__call__',
                               mutable=['intermediates'])
        dead, ranks = {}, {}
        for path, value in pytrees.flatten(state['intermediates']).items():
            name = path.replace('/__call__/0', '').replace('/__call__', '')
            if pattern.search(name):
                dead[name] = dead_fraction(value)
                ranks[name] = effective_rank(jax.nn.relu(value))
        return {'grad_norm': jnp.sqrt(_tree_sq_norm(g)), 'grad_snr': snr, 'loss': full_loss(params),
                'hessian_trace': hutchinson_trace(full_loss, params, masks, key, hutchinson_samples, unroll),
                'sharpness': sharpness(full_loss, params, masks, rho),
                'dead_fraction': dead, 'effective_rank': ranks, 'weights': weight_stats(params, masks)}

    return jax.jit(diagnostics)


def summarize(diag: dict[str, Any]) -> dict[str, Any]:
    """Host-side JSON summary: scalars plus per-layer dicts and their means."""
    host = jax.tree.map(float, jax.device_get(diag))
    out = {k: host[k] for k in ('grad_norm', 'grad_snr', 'loss', 'hessian_trace', 'sharpness')}
    out['dead_fraction_mean'] = (sum(host['dead_fraction'].values()) / len(host['dead_fraction'])
                                 if host['dead_fraction'] else 0.0)
    out['effective_rank_mean'] = (sum(host['effective_rank'].values()) / len(host['effective_rank'])
                                  if host['effective_rank'] else 0.0)
    w = host['weights']
    out['weight_mean_abs'] = sum(v['mean_abs'] for v in w.values()) / len(w) if w else 0.0
    out['layers'] = {'dead_fraction': host['dead_fraction'], 'effective_rank': host['effective_rank'],
                     'weights': w}
    return out


# --------------------------------------------------------------------------
# For a search: on the fixed probe batch, cached per architecture
# --------------------------------------------------------------------------
def summary(ctx: context_lib.RunContext, spec: specs.ModelSpec, state: train_lib.TrainState) -> dict[str, Any]:
    """Juvenility diagnostics of ``state`` on the probe batch (the first training examples)."""
    d = ctx.plan.diagnostics
    diagnostics = ctx.compiled('diagnostics', spec, lambda: make_diagnostics(
        ctx.trainer(spec), spec.preactivation_pattern, num_minibatches=d.minibatches,
        hutchinson_samples=d.hutchinson_samples, rho=d.rho, unroll=ctx.unroll(spec)))
    n = min(d.probe_size, ctx.num_train)
    x, y = ctx.data.train_x[:n], ctx.data.train_y[:n]
    return summarize(diagnostics(state.params, state.batch_stats, state.masks, x, y, jax.random.key(0)))


LEARNING_POTENTIAL_KEY = 999  # the data key of the learning-potential training: the same batches every round


def learning_potential(ctx: context_lib.RunContext, spec: specs.ModelSpec, state: train_lib.TrainState,
                       start_val_accuracy: float) -> float:
    """Validation-accuracy gain after ``learning_potential_steps`` steps from ``state``.

    Trains on the rounds' step runner (``train_loop.validation_accuracy_after``: same sampler, same convolution
    unrolling, the round's compiled segment) with one fixed data key, so every round and method sees the same
    batches.
    """
    steps = ctx.plan.diagnostics.learning_potential_steps
    if steps <= 0:
        return float('nan')
    keys = jax.random.key(LEARNING_POTENTIAL_KEY)[None]
    acc = train_loop.validation_accuracy_after(ctx.segment_fn(spec, 1), state, ctx.data, keys, steps,
                                               spe=ctx.steps_per_epoch)
    return float(acc[0]) - start_val_accuracy


def start_of_round(ctx: context_lib.RunContext, spec: specs.ModelSpec, state: train_lib.TrainState,
                   start_val_accuracy: float) -> dict[str, Any]:
    """Diagnostics and learning potential of a round's start state (run on the background thread)."""
    t0 = time.time()
    out = {'juvenility': summary(ctx, spec, state),
           'learning_potential': learning_potential(ctx, spec, state, start_val_accuracy)}
    out['juvenility_seconds'] = time.time() - t0
    return out
