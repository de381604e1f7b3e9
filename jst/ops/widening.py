"""Widening any Flax layer that feeds another: function-preserving, masks and batch stats included.

* ``widen_layer``: a Dense/Conv (``producer``) that feeds another
  (``consumer``) gains ``amount`` units, through an elementwise activation and
  an optional BatchNorm (``norm``). ``'zero_fanout'`` (GradMax-style): fresh
  incoming weights scaled to the existing units' mean norm, zero outgoing;
  ``'net2net'`` (Net2WiderNet): copies of random units, outgoing weights
  divided by the copy count. Both exactly preserving (net2net ~1e-7).
* ``widen_units``: the core, over explicit producer/consumer leaves (what
  ``jst.training.growth`` uses for jst's families).

Imports only ``jst.ops.expand``, ``jst.ops.masks`` and ``jst.ops.pytrees``: usable in any JAX project.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp

from jst.ops import expand
from jst.ops import masks as masks_lib
from jst.ops import pytrees

Array = jax.Array
PyTree = Any
__all__ = ['widen_layer', 'widen_units']


def widen_layer(params: PyTree, masks: PyTree, key: Array, *, producer: str, consumer: str,
                amount: int, norm: Optional[str | bool] = None, batch_stats: Optional[PyTree] = None,
                options: expand.GrowthOptions = expand.GrowthOptions(),
                verify: Optional[tuple[Callable[[PyTree], Array], Callable[[PyTree], Array]]] = None
                ) -> expand.Expansion:
    """Widens any Flax ``nn.Dense``/``nn.Conv`` layer that feeds another, by parameter path.

    ``producer`` (e.g. ``'Dense_0'``) gains ``amount`` output units;
    ``consumer`` (e.g. ``'Dense_1'``), which reads the producer's output
    (possibly through an elementwise activation and a BatchNorm named by
    ``norm``), gains the matching input rows. With ``norm=None`` a BatchNorm-like layer
    (``scale`` of the producer's width) beside the producer is refused as ambiguous: name it
    (``norm='BatchNorm_0'``) or state there is none between the two (``norm=False``). Rebuild
    the module with the new width (``Expansion.spec`` is None here). ``verify=(apply_before, apply_after)``, the
    module's outputs before and after as functions of the params, checks that the function
    is preserved (``expand.assert_preserved``).
    """
    flat = pytrees.flatten_dict(params)
    kernel, consumer_kernel = f'{producer}/kernel', f'{consumer}/kernel'
    for path in (kernel, consumer_kernel):
        if path not in flat:
            raise expand.ExpansionError(f'{path} not found; parameter paths are {sorted(flat)}.')
        if flat[path].ndim not in (2, 4):
            raise expand.ExpansionError(f'{path} has shape {flat[path].shape}: widen_layer supports Dense (2-D) '
                                 'and 2-D Conv (4-D) kernels only.')
    if flat[kernel].shape[-1] != flat[consumer_kernel].shape[-2]:
        raise expand.ExpansionError(f'{consumer_kernel} reads {flat[consumer_kernel].shape[-2]} inputs but '
                                    f'{kernel} '
                             f'has {flat[kernel].shape[-1]} outputs: {consumer} does not consume {producer} '
                             '(e.g. a flatten sits between them), which widen_layer does not support.')
    p_parent, _, p_name = producer.rpartition('/')
    c_parent, _, c_name = consumer.rpartition('/')
    p_auto, c_auto = expand.auto_name_index(p_name), expand.auto_name_index(c_name)
    if p_parent == c_parent and p_auto and c_auto and p_auto[0] == c_auto[0] and c_auto[1] != p_auto[1] + 1:
        raise expand.ExpansionError(f'{consumer} is not the layer right after {producer} (Flax numbers layers '
                                    'of one type '
                             f'in order): widen_layer needs the next layer as consumer, e.g. '
                             f'{p_parent + "/" if p_parent else ""}{p_auto[0]}_{p_auto[1] + 1}.')
    if norm is None:
        _refuse_unnamed_norm(flat, producer, consumer, flat[kernel].shape[-1])
    producers = [(kernel, -1, 'kernel')]
    if f'{producer}/bias' in flat:
        producers.append((f'{producer}/bias', -1, 'bias'))
    if norm:
        producers += [(f'{norm}/scale', -1, 'bn_scale'), (f'{norm}/bias', -1, 'bn_bias'),
                      (f'{norm}/mean', -1, 'mean'), (f'{norm}/var', -1, 'var')]
    grown = widen_units(params, masks, batch_stats, producers, [(consumer_kernel, -2)], key, amount, options)
    if verify is not None:
        expand.assert_preserved(verify[0], verify[1], params, grown.params)
    return grown


def _refuse_unnamed_norm(flat: dict[str, Array], producer: str, consumer: str, units: int) -> None:
    """Refuses ``norm=None`` when a norm layer of ``units`` features sits in the producer's module."""
    parent = producer.rpartition('/')[0]
    norms = sorted(path.rpartition('/')[0] for path, leaf in flat.items()
                   if path.endswith('/scale') and leaf.shape == (units,)
                   and path.rpartition('/')[0].rpartition('/')[0] == parent)
    if norms:
        raise expand.ExpansionError(
            f'{producer} has {units} outputs and {", ".join(norms)} (in the same module) {units} features: if one '
            f'sits between {producer} and {consumer}, pass norm=\'{norms[0]}\' (its scale, bias and batch '
            f'statistics must grow too, and batch_stats=...); if none does, pass norm=False.')


def _fresh_units(kind: str, old: Array, amount: int, key: Array) -> Array:
    """New producer slices for zero fan-out growth (axis -1 has the units)."""
    shape = old.shape[:-1] + (amount,)
    if kind == 'kernel':
        fan = jax.random.normal(key, shape).reshape(-1, amount)
        old_norm = jnp.mean(jnp.linalg.norm(old.reshape(-1, old.shape[-1]), axis=0))
        scale = old_norm / jnp.maximum(jnp.linalg.norm(fan, axis=0), 1e-12)
        return (fan * scale).reshape(shape).astype(old.dtype)
    if kind in ('bias', 'bn_bias', 'mean'):
        return jnp.zeros(shape, old.dtype)
    if kind in ('bn_scale', 'var'):
        return jnp.ones(shape, old.dtype)
    raise ValueError(kind)


def _grown_mask(old_m: Array, idx: Array, axis: int, amount: int, kept: Array, key: Array,
                options: expand.GrowthOptions) -> Array:
    """A widened leaf's mask: net2net copies the masks of the copied units; else a new mask."""
    if options.widen_method == 'net2net':
        return jnp.concatenate([old_m, jnp.take(old_m, idx, axis=axis)], axis=axis)
    shape = list(old_m.shape)
    shape[axis] = amount
    return jnp.concatenate([old_m, expand.new_mask(tuple(shape), kept, key, None, options)], axis=axis)


def widen_units(params: PyTree, masks: PyTree, batch_stats: Optional[PyTree], producers: Sequence[tuple],
                consumers: Sequence[tuple], key: Array, amount: int, options: expand.GrowthOptions,
                spec: expand.ArchitectureSpec = None) -> expand.Expansion:
    """The widening core: ``producers`` [(path, -1, kind)] gain ``amount`` units on their last axis,
    ``consumers`` [(path, axis)] the matching inputs on ``axis``. Kinds 'mean'/'var' are batch_stats."""
    if amount <= 0:
        raise expand.ExpansionError(f'widen amount must be positive, got {amount}.')
    if options.widen_method not in ('zero_fanout', 'net2net'):
        raise ValueError(f"widen_method must be 'zero_fanout' or 'net2net', not {options.widen_method!r}.")
    flat, mflat, sflat = pytrees.flatten_dict(params), pytrees.flatten(masks), pytrees.flatten_dict(batch_stats)
    for path, _, kind in producers:
        source = sflat if kind in ('mean', 'var') else flat
        if path not in source:
            raise expand.ExpansionError(f'{path} not found in the {"batch_stats" if source is sflat else "params"} '
                                 f'tree; paths are {sorted(source)}.')
    kept, units = expand.density(masks), flat[producers[0][0]].shape[-1]
    for path, _, kind in producers:
        size = (sflat if kind in ('mean', 'var') else flat)[path].shape[-1]
        if size != units:
            raise expand.ExpansionError(f'{path} has {size} features but {producers[0][0]} has {units} units: '
                                        'is the norm (norm=...) the one right after the producer?')
    k_sel, k_new, k_mask, k_noise = jax.random.split(key, 4)
    idx = jax.random.randint(k_sel, (amount,), 0, units)
    new_params, new_stats, new_masks = dict(flat), dict(sflat), {}
    for i, (path, _, kind) in enumerate(producers):
        target = new_stats if kind in ('mean', 'var') else new_params
        old = target[path]
        if options.widen_method == 'net2net':
            added = jnp.take(old, idx, axis=-1)
            added = expand.add_noise(added, jax.random.fold_in(k_noise, i), options) if kind == 'kernel' else added
        else:
            added = _fresh_units(kind, old, amount, jax.random.fold_in(k_new, i))
        target[path] = jnp.concatenate([old, added], axis=-1)
        if mflat.get(path) is not None:
            new_masks[path] = _grown_mask(mflat[path], idx, old.ndim - 1, amount, kept,
                                          jax.random.fold_in(k_mask, i), options)
    for j, (path, axis) in enumerate(consumers):
        old = flat[path]
        ax = axis % old.ndim
        if options.widen_method == 'net2net':
            shape = [1] * old.ndim
            shape[ax] = units
            scaled = old / (1 + jnp.bincount(idx, length=units)).reshape(shape).astype(old.dtype)
            new_params[path] = jnp.concatenate([scaled, jnp.take(scaled, idx, axis=ax)], axis=ax)
        else:
            zshape = list(old.shape)
            zshape[ax] = amount
            new_params[path] = jnp.concatenate([old, jnp.zeros(zshape, old.dtype)], axis=ax)
        if mflat.get(path) is not None:
            new_masks[path] = _grown_mask(mflat[path], idx, ax, amount, kept,
                                          jax.random.fold_in(k_mask, 100 + j), options)
    plan = tuple((path, path, expand.full_slices(flat[path].shape)) for path in new_params)
    new_m = pytrees.unflatten({path: new_masks.get(path, mflat.get(path)) for path in new_params})
    return expand.Expansion(params=masks_lib.apply_masks(pytrees.unflatten(new_params), new_m), masks=new_m,
                            batch_stats=pytrees.unflatten(new_stats), spec=spec, plan=plan)
