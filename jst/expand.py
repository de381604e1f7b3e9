"""Function-preserving structural expansion of any (masked) Flax parameter tree: pure functions.

Generic operations on ``params`` / ``masks`` / ``batch_stats`` addressed by
"/"-joined paths (``jst.growth`` applies them to jst's specs). Each returns an
``Expansion``: the new trees and a *plan* (for every new leaf, the old leaf it
extends and where its values sit) for ``extend_optimizer_state``. Nothing is
mutated; spec and plan are static, so everything runs under ``jax.jit``.

* ``widen_layer``: a Dense/Conv that feeds another gains units
  (``'zero_fanout'``: fresh incoming weights scaled to the existing units'
  mean norm, zero outgoing; ``'net2net'``: copies with outgoing weights split);
  a BatchNorm between them grows too. Exactly preserving (net2net ~1e-7).
* ``insert_leaves``: new leaves (e.g. ``identity_dense``, ``dirac_conv``) and
  a renaming of existing modules.
* Masks grow with the params: a pruned weight never comes back; new kernels
  get ``'dense'`` or ``'sparse'`` masks (the current density, keeping given
  positions such as an identity diagonal). ``noise_scale`` > 0 perturbs new
  kernels (then preservation is approximate).

Imports only ``jst.masks`` and ``jst.pytrees``: usable in any JAX project.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, Optional, Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jst import masks as masks_lib
from jst import pytrees

Array = jax.Array
PyTree = Any
Slices = tuple[tuple[int, int], ...]  # (start, stop) per axis
# One entry per leaf of the new tree: (new path, old path or None for a new leaf, where the old values sit).
Plan = tuple[tuple[str, Optional[str], Slices], ...]
NewMask = Literal['dense', 'sparse']
BlockInit = Literal['zero', 'paper']
WidenMethod = Literal['zero_fanout', 'net2net']


class ExpansionError(ValueError):
    """An operator cannot expand this layer; the message names the path and what is supported."""


@dataclasses.dataclass(frozen=True)
class GrowthOptions:
    """How new weights and masks are made: ``new_mask`` ('dense' | 'sparse'), ``noise_scale`` (std of
    noise on new kernels), ``block_init`` (residual blocks: 'zero' exact | 'paper' Dirac),
    ``widen_method`` ('zero_fanout' | 'net2net'), and which new leaves are prunable."""

    new_mask: NewMask = 'dense'
    noise_scale: float = 0.0
    block_init: BlockInit = 'zero'
    widen_method: WidenMethod = 'zero_fanout'
    prune_include: str = masks_lib.DEFAULT_PRUNABLE
    prune_exclude: Optional[str] = None


@flax.struct.dataclass
class Expansion:
    """Result of an expansion: ``params``, ``masks`` and ``batch_stats`` of the new network, its
    ``spec`` (None for a user's module) and the ``plan`` for ``extend_optimizer_state``."""

    params: PyTree
    masks: PyTree
    batch_stats: PyTree
    spec: Any = flax.struct.field(pytree_node=False)
    plan: Plan = flax.struct.field(pytree_node=False)


def full_slices(shape: Sequence[int]) -> Slices:
    return tuple((0, int(s)) for s in shape)


def rename_heads(flat: dict[str, Any], mapping: dict[str, str]) -> dict[str, Any]:
    """Renames the first path component by ``mapping`` (e.g. hidden_2 -> hidden_3)."""
    out = {}
    for path, v in flat.items():
        head, _, rest = path.partition('/')
        out[f'{mapping.get(head, head)}/{rest}' if rest else mapping.get(head, head)] = v
    return out


def density(masks: PyTree) -> Array:
    """Fraction of prunable weights kept (traceable); 1 without prunable leaves."""
    leaves = [m for m in jax.tree.leaves(masks) if m is not None]
    if not leaves:
        return jnp.asarray(1.0)
    return sum(jnp.sum(m) for m in leaves) / sum(m.size for m in leaves)


def new_mask(shape: Sequence[int], kept_fraction: Array, key: Array, keep: Optional[np.ndarray],
             options: GrowthOptions) -> Array:
    """Mask for new weights: all True ('dense') or exactly round(kept_fraction * n) random True ('sparse'),
    always keeping the positions in ``keep`` (identity diagonal / Dirac taps)."""
    if options.new_mask == 'dense':
        return jnp.ones(shape, jnp.bool_)
    if options.new_mask != 'sparse':
        raise ValueError(f"new_mask must be 'dense' or 'sparse', not {options.new_mask!r}.")
    n = int(np.prod(shape))
    keep_flat = np.zeros((n,), bool) if keep is None else np.asarray(keep).reshape(-1)
    scores = -(jax.random.uniform(key, (n,)) + 2.0 * jnp.asarray(keep_flat))  # kept positions rank first
    num_keep = jnp.maximum(jnp.round(kept_fraction * n).astype(jnp.int32), int(keep_flat.sum()))
    return (masks_lib.ranks(scores) < num_keep).reshape(shape)


def add_noise(x: Array, key: Array, options: GrowthOptions) -> Array:
    if options.noise_scale <= 0:
        return x
    return x + options.noise_scale * jax.random.normal(key, x.shape, x.dtype)


def dirac_kernel(channels: int, kernel_size: int = 3) -> np.ndarray:
    """[k, k, c, c] kernel of the identity 'SAME' convolution (numpy: a constant, also under ``jit``)."""
    kernel = np.zeros((kernel_size, kernel_size, channels, channels), np.float32)
    kernel[kernel_size // 2, kernel_size // 2] = np.eye(channels, dtype=np.float32)
    return kernel


def identity_dense(width: int) -> dict[str, Array]:
    """Params of a Dense(width, width) that is the identity (kernel I, bias 0): insert after a ReLU."""
    return {'kernel': jnp.eye(width, dtype=jnp.float32), 'bias': jnp.zeros((width,), jnp.float32)}


def dirac_conv(channels: int, kernel_size: int = 3) -> dict[str, Array]:
    """Params of a 'SAME' Conv(channels, channels) that is the identity (Dirac kernel, zero bias)."""
    return {'kernel': jnp.asarray(dirac_kernel(channels, kernel_size)), 'bias': jnp.zeros((channels,), jnp.float32)}


def assemble(params_flat: dict[str, Array], old_masks: dict[str, Any], stats_flat: dict[str, Array],
             spec: Any, plan: Plan, new_masks: dict[str, Array], options: GrowthOptions) -> Expansion:
    """Builds the expansion: old masks embedded by the plan, new leaves masked by ``new_masks`` (or all
    kept where ``is_prunable``), params re-masked."""
    masks_flat = {}
    plan_by_new = {p[0]: p for p in plan}
    for path, value in params_flat.items():
        _, old_path, slices = plan_by_new[path]
        old_mask = old_masks.get(old_path) if old_path is not None else None
        if old_path is not None and old_path in old_masks and old_mask is None:
            masks_flat[path] = None
        elif old_mask is not None:
            base = new_masks.get(path, jnp.ones(value.shape, jnp.bool_))
            masks_flat[path] = base.at[tuple(slice(a, b) for a, b in slices)].set(old_mask)
        elif path in new_masks:
            masks_flat[path] = new_masks[path]
        elif masks_lib.is_prunable(path, value.ndim, options.prune_include, options.prune_exclude):
            masks_flat[path] = jnp.ones(value.shape, jnp.bool_)
        else:
            masks_flat[path] = None
    masks = pytrees.unflatten(masks_flat)
    params = masks_lib.apply_masks(pytrees.unflatten(params_flat), masks)
    return Expansion(params=params, masks=masks, batch_stats=pytrees.unflatten(stats_flat), spec=spec, plan=plan)


def insert_leaves(params: PyTree, masks: PyTree, batch_stats: Optional[PyTree], new: dict[str, Array],
                  new_stats: dict[str, Array], rename: dict[str, str], keep: dict[str, np.ndarray],
                  key: Array, options: GrowthOptions, spec: Any = None) -> Expansion:
    """Adds the leaves ``new`` (and batch statistics ``new_stats``) after renaming existing top-level
    modules by ``rename``; new prunable kernels get masks by ``options.new_mask`` keeping ``keep``."""
    flat, mflat = pytrees.flatten_dict(params), pytrees.flatten(masks)
    kept = density(masks)
    plan = [(new_path, path, full_slices(v.shape))
            for path, new_path, v in zip(flat, rename_heads(flat, rename), flat.values())]
    plan += [(p, None, full_slices(v.shape)) for p, v in new.items()]
    new_masks = {p: new_mask(v.shape, kept, jax.random.fold_in(key, i), keep.get(p), options)
                 for i, (p, v) in enumerate(new.items())
                 if masks_lib.is_prunable(p, v.ndim, options.prune_include, options.prune_exclude)}
    stats = {**rename_heads(pytrees.flatten_dict(batch_stats), rename), **new_stats}
    return assemble({**rename_heads(flat, rename), **new}, mflat, stats, spec, tuple(plan), new_masks, options)


def widen_layer(params: PyTree, masks: PyTree, key: Array, *, producer: str, consumer: str,
                amount: int, norm: Optional[str] = None, batch_stats: Optional[PyTree] = None,
                options: GrowthOptions = GrowthOptions()) -> Expansion:
    """Widens any Flax ``nn.Dense``/``nn.Conv`` layer that feeds another, by parameter path.

    ``producer`` (e.g. ``'Dense_0'``) gains ``amount`` output units;
    ``consumer`` (e.g. ``'Dense_1'``), which reads the producer's output
    (possibly through an elementwise activation and a BatchNorm named by
    ``norm``), gains the matching input rows. Rebuild the module with the new
    width (``Expansion.spec`` is None here).
    """
    flat = pytrees.flatten_dict(params)
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
    return widen_units(params, masks, batch_stats, producers, [(consumer_kernel, -2)], key, amount, options)


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
                options: GrowthOptions) -> Array:
    """A widened leaf's mask: net2net copies the masks of the copied units; else a new mask."""
    if options.widen_method == 'net2net':
        return jnp.concatenate([old_m, jnp.take(old_m, idx, axis=axis)], axis=axis)
    shape = list(old_m.shape)
    shape[axis] = amount
    return jnp.concatenate([old_m, new_mask(tuple(shape), kept, key, None, options)], axis=axis)


def widen_units(params: PyTree, masks: PyTree, batch_stats: Optional[PyTree], producers: Sequence[tuple],
                consumers: Sequence[tuple], key: Array, amount: int, options: GrowthOptions,
                spec: Any = None) -> Expansion:
    """The widening core: ``producers`` [(path, -1, kind)] gain ``amount`` units on their last axis,
    ``consumers`` [(path, axis)] the matching inputs on ``axis``. Kinds 'mean'/'var' are batch_stats."""
    if amount <= 0:
        raise ExpansionError(f'widen amount must be positive, got {amount}.')
    if options.widen_method not in ('zero_fanout', 'net2net'):
        raise ValueError(f"widen_method must be 'zero_fanout' or 'net2net', not {options.widen_method!r}.")
    flat, mflat, sflat = pytrees.flatten_dict(params), pytrees.flatten(masks), pytrees.flatten_dict(batch_stats)
    for path, _, kind in producers:
        source = sflat if kind in ('mean', 'var') else flat
        if path not in source:
            raise ExpansionError(f'{path} not found in the {"batch_stats" if source is sflat else "params"} '
                                 f'tree; paths are {sorted(source)}.')
    kept, units = density(masks), flat[producers[0][0]].shape[-1]
    k_sel, k_new, k_mask, k_noise = jax.random.split(key, 4)
    idx = jax.random.randint(k_sel, (amount,), 0, units)
    new_params, new_stats, new_masks = dict(flat), dict(sflat), {}
    for i, (path, _, kind) in enumerate(producers):
        target = new_stats if kind in ('mean', 'var') else new_params
        old = target[path]
        if options.widen_method == 'net2net':
            added = jnp.take(old, idx, axis=-1)
            added = add_noise(added, jax.random.fold_in(k_noise, i), options) if kind == 'kernel' else added
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
    plan = tuple((path, path, full_slices(flat[path].shape)) for path in new_params)
    new_m = pytrees.unflatten({path: new_masks.get(path, mflat.get(path)) for path in new_params})
    return Expansion(params=masks_lib.apply_masks(pytrees.unflatten(new_params), new_m), masks=new_m,
                     batch_stats=pytrees.unflatten(new_stats), spec=spec, plan=plan)


def extend_optimizer_state(tx: optax.GradientTransformation, opt_state: PyTree, new_params: PyTree,
                           plan: Plan) -> PyTree:
    """Optimizer state for ``new_params``: moments of surviving weights carried over, new ones zero.

    Works for any optax transformation whose state holds params-shaped trees
    (Adam's mu/nu, momentum traces); a state leaf belongs to the longest plan
    path its path ends with. Other leaves (e.g. Adam's step count) are copied
    from ``opt_state`` when their path and shape are unchanged.
    """
    old_by_path = pytrees.flatten(opt_state)

    def carried(path: Any, leaf: Array) -> Array:
        s = pytrees.path_str(path)
        matches = [e for e in plan if s == e[0] or s.endswith('/' + e[0])]
        if not matches:
            old = old_by_path.get(s)
            return old if old is not None and jnp.shape(old) == jnp.shape(leaf) else leaf
        new_path, old_path, slices = max(matches, key=lambda e: len(e[0]))
        old = old_by_path.get(s[: len(s) - len(new_path)] + old_path) if old_path is not None else None
        return leaf if old is None else jnp.zeros_like(leaf).at[tuple(slice(a, b) for a, b in slices)].set(old)

    return jax.tree_util.tree_map_with_path(carried, tx.init(new_params))
