"""Function-preserving structural expansion of a (masked) network: pure functions.

Each operator takes (params, masks, spec, key, ...) and returns an
``Expansion`` with the new params, masks, spec, batch_stats and a *plan*
(for every new leaf: which old leaf it extends, and where the old values sit).
Nothing is mutated; ``build_model(expansion.spec)`` applies to
``expansion.params``. ``Expansion`` is a pytree whose spec and plan are static,
so the operators run under ``jax.jit`` with the spec and sizes static::

    grow = jax.jit(expand.deepen, static_argnames=('spec', 'position', 'options'))

Operators
---------
* ``deepen``: insert a hidden layer at ``position``.
  - MLP: Dense(w, w) with identity kernel and zero bias after a ReLU layer:
    relu(I h + 0) = h for h >= 0, exactly function-preserving.
  - Conv net without skips: a 3x3 Dirac conv (zero bias), exactly preserving.
  - ResNet: a BasicBlock. ``block_init='zero'`` (default) initialises conv1
    and conv2 randomly and the last BatchNorm's scale to 0, so the residual
    branch outputs 0 and the block is the identity after the ReLU in train
    *and* eval mode (exactly preserving). ``block_init='paper'`` is the seed
    paper's identity (Dirac) kernels with default BatchNorm: it does *not*
    preserve the function (BatchNorm normalises the branch, and the branch is
    added to the skip: the block roughly doubles its input in eval mode).
* ``widen``: add ``amount`` units/channels to hidden layer ``layer``.
  - ``'zero_fanout'`` (GradMax-style): new units get fresh incoming weights
    (scaled to the mean norm of existing units) and zero outgoing weights.
  - ``'net2net'`` (Net2WiderNet): new units copy randomly chosen units; the
    outgoing weights of every copied unit are divided by its number of copies.
  Both are exactly preserving (net2net up to float rounding, ~1e-7).
* Masks extend with the params: surviving masks are kept unchanged (a pruned
  weight never comes back); new kernels get a mask by ``new_mask``:
  ``'dense'`` (the paper) or ``'sparse'`` at the network's current density,
  keeping the identity diagonal / Dirac taps. New leaves are masked iff their
  path matches ``prune_include`` (and not ``prune_exclude``), as in
  ``masks.create_masks``.
* ``noise_scale > 0`` adds N(0, noise_scale^2) to the new kernels (symmetry
  breaking; then the function is only approximately preserved).
* ``extend_optimizer_state``: optimizer moments of surviving weights carry
  over, new weights start at zero; scalar state (Adam's count) is kept.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Optional, Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

from jst import masks as masks_lib
from jst import models

Array = jax.Array
PyTree = Any
# plan: tuple of (new_path, old_path or None, slices) where slices = tuple of (start, stop) per axis
Plan = tuple[tuple[str, Optional[str], tuple[tuple[int, int], ...]], ...]


class ExpansionError(ValueError):
    """An operator cannot expand this layer; the message names the path and what is supported."""


@dataclasses.dataclass(frozen=True)
class GrowthOptions:
    new_mask: str = 'dense'            # 'dense' | 'sparse'
    noise_scale: float = 0.0
    block_init: str = 'zero'           # ResNet deepen: 'zero' (exact) | 'paper' (Dirac kernels)
    widen_method: str = 'zero_fanout'  # 'zero_fanout' | 'net2net'
    prune_include: str = masks_lib.DEFAULT_PRUNABLE
    prune_exclude: Optional[str] = None


@flax.struct.dataclass
class Expansion:
    params: PyTree
    masks: PyTree
    batch_stats: PyTree
    spec: Any = flax.struct.field(pytree_node=False)
    plan: Plan = flax.struct.field(pytree_node=False)


# --------------------------------------------------------------------------
# flat-dict helpers
# --------------------------------------------------------------------------
def _flat(tree: PyTree) -> dict[str, Any]:
    if not tree:
        return {}
    return {k: v for k, v in traverse_util.flatten_dict(flax.core.unfreeze(tree), sep='/').items()}


def _unflat(flat: dict[str, Any]) -> PyTree:
    return traverse_util.unflatten_dict(flat, sep='/') if flat else {}


def _flat_masks(masks: PyTree) -> dict[str, Any]:
    flat, _ = jax.tree_util.tree_flatten_with_path(masks, is_leaf=lambda x: x is None)
    return {masks_lib.path_str(p): m for p, m in flat}


def _full(shape: Sequence[int]) -> tuple[tuple[int, int], ...]:
    return tuple((0, int(s)) for s in shape)


def _rename(flat: dict[str, Any], mapping: dict[str, str]) -> dict[str, Any]:
    """Renames the first path component by ``mapping`` (e.g. hidden_2 -> hidden_3)."""
    out = {}
    for path, v in flat.items():
        head, _, rest = path.partition('/')
        out[f'{mapping.get(head, head)}/{rest}' if rest else mapping.get(head, head)] = v
    return out


def _is_prunable(path: str, ndim: int, options: GrowthOptions) -> bool:
    return (ndim >= 2 and re.search(options.prune_include, path) is not None
            and not (options.prune_exclude and re.search(options.prune_exclude, path)))


def _density(masks: PyTree) -> Array:
    """Fraction of prunable weights kept (traceable)."""
    leaves = [m for m in jax.tree.leaves(masks) if m is not None]
    if not leaves:
        return jnp.asarray(1.0)
    return sum(jnp.sum(m) for m in leaves) / sum(m.size for m in leaves)


def _new_mask(shape: Sequence[int], density: float, key: Array, keep: Optional[Array],
              options: GrowthOptions) -> Array:
    """Mask for new weights: all True ('dense') or exactly round(density*n) random True ('sparse'),
    always keeping the positions in ``keep`` (identity diagonal / Dirac taps)."""
    if options.new_mask == 'dense':
        return jnp.ones(shape, jnp.bool_)
    if options.new_mask != 'sparse':
        raise ValueError(f"new_mask must be 'dense' or 'sparse', not {options.new_mask!r}.")
    n = int(np.prod(shape))
    keep_flat = np.zeros((n,), bool) if keep is None else np.asarray(keep).reshape(-1)
    scores = jax.random.uniform(key, (n,)) + 2.0 * jnp.asarray(keep_flat)  # kept positions rank first
    num_keep = jnp.maximum(jnp.round(density * n).astype(jnp.int32), int(keep_flat.sum()))
    order = jnp.argsort(-scores, stable=True)
    ranks = jnp.zeros((n,), jnp.int32).at[order].set(jnp.arange(n, dtype=jnp.int32))
    return (ranks < num_keep).reshape(shape)


def _add_noise(x: Array, key: Array, options: GrowthOptions) -> Array:
    if options.noise_scale <= 0:
        return x
    return x + options.noise_scale * jax.random.normal(key, x.shape, x.dtype)


def _finish(params_flat, masks_flat_old, stats_flat, spec, plan, new_masks, options) -> Expansion:
    """Builds the masks tree: old masks embedded by the plan, new leaves by ``new_masks``."""
    masks_flat = {}
    plan_by_new = {p[0]: p for p in plan}
    for path, value in params_flat.items():
        _, old_path, slices = plan_by_new[path]
        old_mask = masks_flat_old.get(old_path) if old_path is not None else None
        if old_path is not None and old_path in masks_flat_old and old_mask is None:
            masks_flat[path] = None
            continue
        if old_mask is not None:
            base = new_masks.get(path, jnp.ones(value.shape, jnp.bool_))
            index = tuple(slice(a, b) for a, b in slices)
            masks_flat[path] = base.at[index].set(old_mask)
        elif path in new_masks:
            masks_flat[path] = new_masks[path]
        elif _is_prunable(path, value.ndim, options):
            masks_flat[path] = jnp.ones(value.shape, jnp.bool_)
        else:
            masks_flat[path] = None
    params = _unflat(params_flat)
    masks = _unflat(masks_flat)
    params = masks_lib.apply_masks(params, masks)
    return Expansion(params=params, masks=masks, batch_stats=_unflat(stats_flat), spec=spec, plan=plan)


def _identity_plan(flat: dict[str, Any], rename: dict[str, str]) -> list:
    plan = []
    for path, v in flat.items():
        head, _, rest = path.partition('/')
        new_path = f'{rename.get(head, head)}/{rest}' if rest else rename.get(head, head)
        plan.append((new_path, path, _full(v.shape)))
    return plan


# --------------------------------------------------------------------------
# deepen
# --------------------------------------------------------------------------
def _resolve_position(position: int, count: int, low: int) -> int:
    pos = count if position < 0 else position
    if not low <= pos <= count:
        raise ExpansionError(f'position {position} out of range [{low}, {count}] (or -1 for the end).')
    return pos


def deepen(params: PyTree, masks: PyTree, spec: models.ModelSpec, key: Array, *,
           position: int = -1, batch_stats: Optional[PyTree] = None,
           options: GrowthOptions = GrowthOptions()) -> Expansion:
    """Inserts one function-preserving hidden layer (block) at ``position`` (-1: end of the stack)."""
    flat, mflat, sflat = _flat(params), _flat_masks(masks), _flat(batch_stats)
    density = _density(masks)
    k_init, k_mask, k_noise = jax.random.split(key, 3)

    if isinstance(spec, models.MLPSpec):
        # A new Dense(w, w) after hidden layer pos-1 (so positions 1..len: after a ReLU).
        pos = _resolve_position(position, len(spec.widths), 1)
        width = spec.widths[pos - 1]
        rename = {f'hidden_{j}': f'hidden_{j + 1}' for j in range(pos, len(spec.widths))}
        name = f'hidden_{pos}'
        eye = jnp.eye(width, dtype=jnp.float32)
        new = {f'{name}/kernel': _add_noise(eye, k_noise, options), f'{name}/bias': jnp.zeros((width,))}
        keep = {f'{name}/kernel': np.eye(width, dtype=bool)}
        new_spec = dataclasses.replace(spec, widths=spec.widths[:pos] + (width,) + spec.widths[pos:])
    elif isinstance(spec, models.ConvSpec):
        pos = _resolve_position(position, len(spec.conv_channels), 1)
        c = spec.conv_channels[pos - 1]
        rename = {f'conv_{j}': f'conv_{j + 1}' for j in range(pos, len(spec.conv_channels))}
        name = f'conv_{pos}'
        dirac = jnp.zeros((3, 3, c, c)).at[1, 1].set(jnp.eye(c))
        new = {f'{name}/kernel': _add_noise(dirac, k_noise, options), f'{name}/bias': jnp.zeros((c,))}
        keep = {f'{name}/kernel': _dirac_np(c)}
        new_spec = dataclasses.replace(
            spec, conv_channels=spec.conv_channels[:pos] + (c,) + spec.conv_channels[pos:],
            pool_after=spec.pool_after[:pos] + (False,) + spec.pool_after[pos:])
    elif isinstance(spec, models.ResNetSpec):
        pos = _resolve_position(position, len(spec.block_widths), 0)
        c = spec.stem_channels
        width = spec.block_widths[pos - 1] if pos > 0 else (spec.block_widths[0] if spec.block_widths else c)
        rename = {f'block_{j}': f'block_{j + 1}' for j in range(pos, len(spec.block_widths))}
        name = f'block_{pos}'
        new, keep, new_stats = _new_block(c, width, k_init, k_noise, spec.init, options, name)
        sflat = {**_rename(sflat, rename), **new_stats}
        new_spec = dataclasses.replace(
            spec, block_widths=spec.block_widths[:pos] + (width,) + spec.block_widths[pos:])
    else:
        raise ExpansionError(f'deepen does not support {type(spec).__name__}.')

    params_flat = {**_rename(flat, rename), **new}
    plan = _identity_plan(flat, rename) + [(p, None, _full(v.shape)) for p, v in new.items()]
    new_masks = {}
    for i, (p, v) in enumerate(new.items()):
        if _is_prunable(p, v.ndim, options):
            new_masks[p] = _new_mask(v.shape, density, jax.random.fold_in(k_mask, i), keep.get(p), options)
    return _finish(params_flat, mflat, sflat, new_spec, tuple(plan), new_masks, options)


def _dirac_np(c: int) -> np.ndarray:
    k = np.zeros((3, 3, c, c), bool)
    k[1, 1] = np.eye(c, dtype=bool)
    return k


def _new_block(c: int, width: int, key: Array, k_noise: Array, init: str, options: GrowthOptions,
               name: str) -> tuple[dict[str, Array], dict[str, Array], dict[str, Array]]:
    k1, k2 = jax.random.split(key)
    if options.block_init == 'zero':
        init_fn = models.INITIALIZERS[init]
        conv1 = init_fn(k1, (3, 3, c, width), jnp.float32)
        conv2 = init_fn(k2, (3, 3, width, c), jnp.float32)
        bn2_scale = jnp.zeros((c,))
        keep = {}
    elif options.block_init == 'paper':
        if width != c:
            raise ExpansionError(f'{name}: paper (Dirac) block init needs width == channels ({width} != {c}).')
        conv1 = jnp.zeros((3, 3, c, c)).at[1, 1].set(jnp.eye(c))
        conv2 = conv1
        bn2_scale = jnp.ones((c,))
        keep = {f'{name}/conv1/kernel': _dirac_np(c), f'{name}/conv2/kernel': _dirac_np(c)}
    else:
        raise ValueError(f"block_init must be 'zero' or 'paper', not {options.block_init!r}.")
    kn1, kn2 = jax.random.split(k_noise)
    params = {f'{name}/conv1/kernel': _add_noise(conv1, kn1, options),
              f'{name}/bn1/scale': jnp.ones((width,)), f'{name}/bn1/bias': jnp.zeros((width,)),
              f'{name}/conv2/kernel': _add_noise(conv2, kn2, options),
              f'{name}/bn2/scale': bn2_scale, f'{name}/bn2/bias': jnp.zeros((c,))}
    stats = {f'{name}/bn1/mean': jnp.zeros((width,)), f'{name}/bn1/var': jnp.ones((width,)),
             f'{name}/bn2/mean': jnp.zeros((c,)), f'{name}/bn2/var': jnp.ones((c,))}
    return params, keep, stats


# --------------------------------------------------------------------------
# widen
# --------------------------------------------------------------------------
def unit_group(spec: models.ModelSpec, layer: int) -> tuple[list[tuple[str, int, str]], list[tuple[str, int]]]:
    """The leaves that widening hidden layer ``layer`` touches.

    Returns (producers [(path, axis, kind)], consumers [(path, axis)]),
    where kind is 'kernel', 'bias', 'bn_scale', 'bn_bias', 'mean' or 'var' ('mean'/'var' live in
    batch_stats).
    """
    if isinstance(spec, models.MLPSpec):
        n = len(spec.widths)
        if not 0 <= layer < n:
            raise ExpansionError(f'MLP has hidden layers 0..{n - 1}; cannot widen layer {layer}.')
        nxt = f'hidden_{layer + 1}' if layer + 1 < n else 'output'
        return ([(f'hidden_{layer}/kernel', -1, 'kernel'), (f'hidden_{layer}/bias', -1, 'bias')],
                [(f'{nxt}/kernel', 0)])
    if isinstance(spec, models.ResNetSpec):
        n = len(spec.block_widths)
        if not 0 <= layer < n:
            raise ExpansionError(f'ResNet has blocks 0..{n - 1}; cannot widen block {layer}.')
        b = f'block_{layer}'
        return ([(f'{b}/conv1/kernel', -1, 'kernel'), (f'{b}/bn1/scale', -1, 'bn_scale'),
                 (f'{b}/bn1/bias', -1, 'bn_bias'), (f'{b}/bn1/mean', -1, 'mean'),
                 (f'{b}/bn1/var', -1, 'var')],
                [(f'{b}/conv2/kernel', -2)])
    if isinstance(spec, models.ConvSpec):
        nc, nd = len(spec.conv_channels), len(spec.dense_widths)
        if 0 <= layer < nc - 1:
            return ([(f'conv_{layer}/kernel', -1, 'kernel'), (f'conv_{layer}/bias', -1, 'bias')],
                    [(f'conv_{layer + 1}/kernel', -2)])
        if layer == nc - 1:
            raise ExpansionError(f'conv_{layer}/kernel feeds the flattened dense layer; widening the last '
                                 'conv layer is not supported (widen an earlier conv or a dense layer).')
        d = layer - nc
        if 0 <= d < nd:
            nxt = f'dense_{d + 1}' if d + 1 < nd else 'output'
            return ([(f'dense_{d}/kernel', -1, 'kernel'), (f'dense_{d}/bias', -1, 'bias')],
                    [(f'{nxt}/kernel', 0)])
        raise ExpansionError(f'Conv net has layers 0..{nc + nd - 1} (convs then dense); got {layer}.')
    raise ExpansionError(f'widen does not support {type(spec).__name__}.')


def _widened_spec(spec: models.ModelSpec, layer: int, amount: int) -> models.ModelSpec:
    if isinstance(spec, models.MLPSpec):
        w = list(spec.widths); w[layer] += amount
        return dataclasses.replace(spec, widths=tuple(w))
    if isinstance(spec, models.ResNetSpec):
        w = list(spec.block_widths); w[layer] += amount
        return dataclasses.replace(spec, block_widths=tuple(w))
    nc = len(spec.conv_channels)
    if layer < nc:
        w = list(spec.conv_channels); w[layer] += amount
        return dataclasses.replace(spec, conv_channels=tuple(w))
    w = list(spec.dense_widths); w[layer - nc] += amount
    return dataclasses.replace(spec, dense_widths=tuple(w))


def _fresh_units(kind: str, old: Array, amount: int, key: Array) -> Array:
    """New producer slices for zero fan-out growth (axis -1 has the units)."""
    shape = old.shape[:-1] + (amount,)
    if kind == 'kernel':
        fresh = jax.random.normal(key, shape)
        fan = fresh.reshape(-1, amount)
        old_norm = jnp.mean(jnp.linalg.norm(old.reshape(-1, old.shape[-1]), axis=0))
        scale = old_norm / jnp.maximum(jnp.linalg.norm(fan, axis=0), 1e-12)
        return (fan * scale).reshape(shape).astype(old.dtype)
    if kind in ('bias', 'bn_bias', 'mean'):
        return jnp.zeros(shape, old.dtype)
    if kind in ('bn_scale', 'var'):
        return jnp.ones(shape, old.dtype)
    raise ValueError(kind)


def widen(params: PyTree, masks: PyTree, spec: models.ModelSpec, key: Array, *,
          layer: int, amount: int, batch_stats: Optional[PyTree] = None,
          options: GrowthOptions = GrowthOptions()) -> Expansion:
    """Adds ``amount`` units to hidden layer ``layer`` of a jst model (function-preserving)."""
    producers, consumers = unit_group(spec, layer)
    new_p, new_m, new_s, plan = _widen_group(params, masks, batch_stats, producers, consumers, key,
                                             amount, options)
    return Expansion(params=new_p, masks=new_m, batch_stats=new_s,
                     spec=_widened_spec(spec, layer, amount), plan=plan)


def widen_layer(params: PyTree, masks: PyTree, key: Array, *, producer: str, consumer: str,
                amount: int, norm: Optional[str] = None, batch_stats: Optional[PyTree] = None,
                options: GrowthOptions = GrowthOptions()) -> Expansion:
    """Widens any Flax ``nn.Dense``/``nn.Conv`` layer that feeds another, by parameter path.

    ``producer`` (e.g. ``'Dense_0'``) gains ``amount`` output units;
    ``consumer`` (e.g. ``'Dense_1'``), which reads the producer's output
    (possibly through an elementwise activation and a BatchNorm named by
    ``norm``), gains the matching input rows. Works on a user's own module;
    rebuild the module with the new width (``Expansion.spec`` is None here).
    """
    flat = _flat(params)
    kernel, consumer_kernel = f'{producer}/kernel', f'{consumer}/kernel'
    for path in (kernel, consumer_kernel):
        if path not in flat:
            raise ExpansionError(f'{path} not found; parameter paths are {sorted(flat)}.')
        if flat[path].ndim not in (2, 4):
            raise ExpansionError(f'{path} has shape {flat[path].shape}: widen_layer supports Dense (2-D) '
                                 'and 2-D Conv (4-D) kernels only.')
    if flat[kernel].shape[-1] != flat[consumer_kernel].shape[-2]:
        raise ExpansionError(f'{consumer_kernel} reads {flat[consumer_kernel].shape[-2]} inputs but {kernel} '
                             f'has {flat[kernel].shape[-1]} outputs: {consumer} does not consume {producer} '
                             '(e.g. a flatten sits between them), which widen_layer does not support.')
    producers = [(kernel, -1, 'kernel')]
    if f'{producer}/bias' in flat:
        producers.append((f'{producer}/bias', -1, 'bias'))
    if norm is not None:
        producers += [(f'{norm}/scale', -1, 'bn_scale'), (f'{norm}/bias', -1, 'bn_bias'),
                      (f'{norm}/mean', -1, 'mean'), (f'{norm}/var', -1, 'var')]
    new_p, new_m, new_s, plan = _widen_group(params, masks, batch_stats, producers,
                                             [(consumer_kernel, -2)], key, amount, options)
    return Expansion(params=new_p, masks=new_m, batch_stats=new_s, spec=None, plan=plan)


def identity_dense(width: int) -> dict[str, Array]:
    """Params of a Dense(width, width) that is the identity (kernel I, bias 0): insert after a ReLU."""
    return {'kernel': jnp.eye(width, dtype=jnp.float32), 'bias': jnp.zeros((width,), jnp.float32)}


def dirac_conv(channels: int, kernel_size: int = 3) -> dict[str, Array]:
    """Params of a 'SAME' Conv(channels, channels) that is the identity (Dirac kernel, zero bias)."""
    c = kernel_size // 2
    kernel = jnp.zeros((kernel_size, kernel_size, channels, channels)).at[c, c].set(jnp.eye(channels))
    return {'kernel': kernel, 'bias': jnp.zeros((channels,), jnp.float32)}


def _widen_group(params, masks, batch_stats, producers, consumers, key, amount, options):
    """The generic widening core: producers gain units on axis -1, consumers inputs on their axis."""
    if amount <= 0:
        raise ExpansionError(f'widen amount must be positive, got {amount}.')
    flat, mflat, sflat = _flat(params), _flat_masks(masks), _flat(batch_stats)
    for path, _, kind in producers:
        source = sflat if kind in ('mean', 'var') else flat
        if path not in source:
            raise ExpansionError(f'{path} not found in the {"batch_stats" if source is sflat else "params"} '
                                 f'tree; paths are {sorted(source)}.')
    density = _density(masks)
    units = flat[producers[0][0]].shape[-1]
    k_sel, k_new, k_mask, k_noise = jax.random.split(key, 4)
    idx = jax.random.randint(k_sel, (amount,), 0, units)
    new_params, new_stats, new_masks = dict(flat), dict(sflat), {}

    for i, (path, _, kind) in enumerate(producers):
        target = new_stats if kind in ('mean', 'var') else new_params
        old = target[path]
        if options.widen_method == 'net2net':
            added = jnp.take(old, idx, axis=-1)
            if kind == 'kernel':
                added = _add_noise(added, jax.random.fold_in(k_noise, i), options)
        elif options.widen_method == 'zero_fanout':
            added = _fresh_units(kind, old, amount, jax.random.fold_in(k_new, i))
        else:
            raise ValueError(f"widen_method must be 'zero_fanout' or 'net2net', not {options.widen_method!r}.")
        target[path] = jnp.concatenate([old, added], axis=-1)
        if mflat.get(path) is not None:
            old_m = mflat[path]
            if options.widen_method == 'net2net':
                new_masks[path] = jnp.concatenate([old_m, jnp.take(old_m, idx, axis=-1)], axis=-1)
            else:
                fresh = _new_mask(old.shape[:-1] + (amount,), density, jax.random.fold_in(k_mask, i), None, options)
                new_masks[path] = jnp.concatenate([old_m, fresh], axis=-1)

    for j, (path, axis) in enumerate(consumers):
        old = flat[path]
        ax = axis % old.ndim
        if options.widen_method == 'net2net':
            counts = 1 + jnp.bincount(idx, length=units)
            shape = [1] * old.ndim
            shape[ax] = units
            scaled = old / counts.reshape(shape).astype(old.dtype)
            new_params[path] = jnp.concatenate([scaled, jnp.take(scaled, idx, axis=ax)], axis=ax)
        else:
            zshape = list(old.shape)
            zshape[ax] = amount
            new_params[path] = jnp.concatenate([old, jnp.zeros(zshape, old.dtype)], axis=ax)
        if mflat.get(path) is not None:
            old_m = mflat[path]
            if options.widen_method == 'net2net':
                new_masks[path] = jnp.concatenate([old_m, jnp.take(old_m, idx, axis=ax)], axis=ax)
            else:
                mshape = list(old.shape)
                mshape[ax] = amount
                fresh = _new_mask(tuple(mshape), density, jax.random.fold_in(k_mask, 100 + j), None, options)
                new_masks[path] = jnp.concatenate([old_m, fresh], axis=ax)

    plan = tuple((path, path, _full(flat[path].shape)) for path in new_params)
    masks_flat = {path: new_masks.get(path, mflat.get(path)) for path in new_params}
    new_p, new_m = _unflat(new_params), _unflat(masks_flat)
    return masks_lib.apply_masks(new_p, new_m), new_m, _unflat(new_stats), plan


# --------------------------------------------------------------------------
# optimizer state
# --------------------------------------------------------------------------
def extend_optimizer_state(tx: optax.GradientTransformation, opt_state: PyTree, new_params: PyTree,
                           plan: Plan) -> PyTree:
    """Optimizer state for ``new_params``: moments of surviving weights carried over, new ones zero.

    Works for any optax transformation whose state holds params-shaped trees
    (Adam's mu/nu, momentum traces); other leaves (e.g. Adam's step count)
    are copied from ``opt_state`` when their path is unchanged.
    """
    template = tx.init(new_params)
    old_flat, _ = jax.tree_util.tree_flatten_with_path(opt_state)
    old_by_path = {masks_lib.path_str(p): v for p, v in old_flat}
    new_flat, treedef = jax.tree_util.tree_flatten_with_path(template)
    plan_by_new = {p[0]: p for p in plan}
    out = []
    for path, leaf in new_flat:
        s = masks_lib.path_str(path)
        value = leaf
        for new_path, old_path, slices in _suffix_matches(s, plan_by_new):
            prefix = s[: len(s) - len(new_path)]
            if old_path is not None and prefix + old_path in old_by_path:
                old = old_by_path[prefix + old_path]
                index = tuple(slice(a, b) for a, b in slices)
                value = jnp.zeros_like(leaf).at[index].set(old)
            break
        else:
            if s in old_by_path and jnp.shape(old_by_path[s]) == jnp.shape(leaf):
                value = old_by_path[s]
        out.append(value)
    return jax.tree_util.tree_unflatten(treedef, out)


def _suffix_matches(path: str, plan_by_new: dict[str, Any]):
    for new_path, entry in plan_by_new.items():
        if path == new_path or path.endswith('/' + new_path):
            yield entry
