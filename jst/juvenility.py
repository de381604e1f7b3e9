"""Diagnostics of "juvenility" (how able a network still is to learn), on a fixed probe batch.

All are pure functions of (params, batch_stats, masks, probe batch) and run
under ``jit``. Pruned weights are excluded everywhere (gradients, Hessian
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
* ``learning_potential`` (in ``jst.experiment``): validation-accuracy gain after a
  short fixed training budget from the round's starting point.
"""

from __future__ import annotations

import re
from typing import Any, Callable

import jax
import jax.numpy as jnp

from jst import masks as masks_lib
from jst import models

Array = jax.Array
PyTree = Any

# Modules whose outputs are pre-activations of a ReLU, per family.
PREACTIVATION_PATTERNS = {
    models.MLPSpec: r'^hidden_\d+$',
    models.ConvSpec: r'^(conv|dense)_\d+$',
    models.ResNetSpec: r'^(stem_bn|block_\d+/bn1)$',
}


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
    flat_m, _ = jax.tree_util.tree_flatten_with_path(masks, is_leaf=lambda x: x is None)
    flat_p = jax.tree.leaves(params)
    for (path, m), p in zip(flat_m, flat_p):
        if m is None:
            continue
        n = jnp.maximum(jnp.sum(m), 1)
        a = jnp.abs(p) * m
        mean = jnp.sum(a) / n
        var = jnp.sum(jnp.where(m, (jnp.abs(p) - mean) ** 2, 0.0)) / n
        out[masks_lib.path_str(path)] = {'mean_abs': mean, 'std': jnp.sqrt(var), 'max_abs': jnp.max(a)}
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


def make_diagnostics(spec: models.ModelSpec, preprocess: Callable[[Array], Array], num_minibatches: int = 8,
                     hutchinson_samples: int = 8, rho: float = 0.05,
                     unroll: bool = False) -> Callable[..., dict[str, Any]]:
    """Jitted (params, batch_stats, masks, x uint8 [N,...], y [N], key) -> diagnostics (eval mode)."""
    model = models.build_model(spec)
    pattern = re.compile(PREACTIVATION_PATTERNS[type(spec)])

    def variables(params, batch_stats):
        return {'params': params, 'batch_stats': batch_stats} if batch_stats else {'params': params}

    def diagnostics(params, batch_stats, masks, x, y, key):
        inputs = preprocess(x)

        def loss_on(p, xi, yi):
            logits = model.apply(variables(p, batch_stats), xi, train=False)
            return jnp.mean(jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, yi[:, None], -1)[:, 0])

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
        flat = jax.tree_util.tree_flatten_with_path(state['intermediates'])[0]
        dead, ranks = {}, {}
        for path, value in flat:
            name = masks_lib.path_str(path).replace('/__call__/0', '').replace('/__call__', '')
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

