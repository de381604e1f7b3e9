"""Function-preserving structural expansion of any (masked) Flax parameter tree: pure functions.

Generic operations on ``params`` / ``masks`` / ``batch_stats`` addressed by
"/"-joined paths (``jst.training.growth`` applies them to jst's specs). Each returns an
``Expansion``: the new trees and a *plan* (for every new leaf, the old leaf it
extends and where its values sit) for ``extend_optimizer_state``. Nothing is
mutated; spec and plan are static, so everything runs under ``jax.jit``.

* ``insert_layer``: an identity Dense or Dirac Conv after a named layer of
  any module (Flax's automatic names renamed as needed); ``insert_leaves``:
  any new leaves and a renaming of existing modules.
* ``extend_optimizer_state``: optimizer moments carried over by the plan.
* ``assert_preserved``: check that outputs did not change.
* Widening lives in ``jst.ops.widening`` (on top of this module).
* Masks grow with the params: a pruned weight never comes back; new kernels
  get ``'dense'`` or ``'sparse'`` masks (the current density, keeping given
  positions such as an identity diagonal). ``noise_scale`` > 0 perturbs new
  kernels (then preservation is approximate).

Imports only ``jst.ops.masks`` and ``jst.ops.pytrees``: usable in any JAX project.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Hashable, Literal, Optional, Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jst.ops import masks as masks_lib
from jst.ops import pytrees

Array = jax.Array
PyTree = Any
# The caller's static description of the expanded network, carried through untouched (jst: a ``ModelSpec``;
# None for a user's module); hashable, as static fields under ``jit`` must be.
ArchitectureSpec = Optional[Hashable]
Slices = tuple[tuple[int, int], ...]  # (start, stop) per axis
# One entry per leaf of the new tree: (new path, old path or None for a new leaf, where the old values sit).
Plan = tuple[tuple[str, Optional[str], Slices], ...]
NewMask = Literal['dense', 'sparse']
BlockInit = Literal['zero', 'paper']
WidenMethod = Literal['zero_fanout', 'net2net']
__all__ = ['ArchitectureSpec', 'Plan', 'NewMask', 'BlockInit', 'WidenMethod', 'ExpansionError', 'GrowthOptions',
           'Expansion', 'insert_layer', 'assert_preserved', 'auto_name_index', 'extend_optimizer_state',
           'identity_plan', 'identity_dense', 'dirac_conv', 'dirac_kernel', 'insert_leaves', 'assemble',
           'new_mask', 'density', 'rename_heads', 'full_slices', 'add_noise']


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
    spec: ArchitectureSpec = flax.struct.field(pytree_node=False)
    plan: Plan = flax.struct.field(pytree_node=False)


def full_slices(shape: Sequence[int]) -> Slices:
    """((0, n), ...) for every axis of ``shape``: where an unchanged leaf's values sit."""
    return tuple((0, int(s)) for s in shape)


def rename_heads(flat: dict[str, Any], mapping: dict[str, str]) -> dict[str, Any]:
    """Renames module paths by ``mapping`` (e.g. hidden_2 -> hidden_3, Inner_0/Dense_1 -> Inner_0/Dense_2),
    all at once: each leaf by the longest module path it lies in."""
    out = {}
    for path, v in flat.items():
        parts = path.split('/')
        for n in range(len(parts) - 1, 0, -1):
            module = '/'.join(parts[:n])
            if module in mapping:
                path = '/'.join([mapping[module]] + parts[n:])
                break
        out[path] = v
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
    """``x`` + N(0, noise_scale^2) when ``options.noise_scale`` > 0 (symmetry breaking), else ``x``."""
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
             spec: ArchitectureSpec, plan: Plan, new_masks: dict[str, Array], options: GrowthOptions) -> Expansion:
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
                  key: Array, options: GrowthOptions, spec: ArchitectureSpec = None) -> Expansion:
    """Adds the leaves ``new`` (and batch statistics ``new_stats``) after renaming existing top-level
    modules by ``rename``; new prunable kernels get masks by ``options.new_mask`` keeping ``keep``."""
    flat, mflat = pytrees.flatten_dict(params), pytrees.flatten(masks)
    renamed = rename_heads(flat, rename)
    clashes = sorted(set(new) & set(renamed)) if len(renamed) == len(flat) else sorted(rename.values())
    if clashes:
        raise ExpansionError(f'New leaves {clashes[:4]} would replace existing ones: pick a module name that is '
                             f'not in use (insert_layer(..., name=...)); module paths are {sorted(flat)}.')
    kept = density(masks)
    plan = [(new_path, path, full_slices(v.shape)) for path, new_path, v in zip(flat, renamed, flat.values())]
    plan += [(p, None, full_slices(v.shape)) for p, v in new.items()]
    new_masks = {p: new_mask(v.shape, kept, jax.random.fold_in(key, i), keep.get(p), options)
                 for i, (p, v) in enumerate(new.items())
                 if masks_lib.is_prunable(p, v.ndim, options.prune_include, options.prune_exclude)}
    stats = {**rename_heads(pytrees.flatten_dict(batch_stats), rename), **new_stats}
    return assemble({**renamed, **new}, mflat, stats, spec, tuple(plan), new_masks, options)


def identity_plan(params: PyTree) -> Plan:
    """The plan of an unchanged tree: every leaf extends itself."""
    return tuple((p, p, full_slices(jnp.shape(v))) for p, v in pytrees.flatten_dict(params).items())


def auto_name_index(name: str) -> Optional[tuple[str, int]]:
    """('Dense', 3) for Flax's automatic name 'Dense_3'; None for a custom name."""
    prefix, _, index = name.rpartition('_')
    return (prefix, int(index)) if prefix and index.isdigit() else None


def insert_layer(params: PyTree, masks: PyTree, after: str, *, kind: Literal['dense', 'conv'] = 'dense',
                 name: Optional[str] = None, kernel_size: int = 3, key: Optional[Array] = None,
                 options: GrowthOptions = GrowthOptions()) -> Expansion:
    """Inserts an identity Dense (kernel I) or 'SAME' Conv (Dirac kernel) right after module ``after``.

    ``after`` is a module path (``'Dense_0'``, ``'Block_1/Conv_0'``). With Flax's automatic names the new
    layer is ``Dense_{i+1}`` (or ``Conv_{i+1}``) and later layers of that type in the same parent are
    renamed one up; otherwise pass ``name``. Identity is exact when the layer follows a ReLU (or nothing
    nonlinear). Returns params, masks and the plan for ``extend_optimizer_state``; add the layer to your
    module at that place, with ``use_bias=True``.
    """
    flat = pytrees.flatten_dict(params)
    kernel = flat.get(f'{after}/kernel')
    if kernel is None or kernel.ndim not in (2, 4):
        raise ExpansionError(f'{after}/kernel (a Dense or 2-D Conv kernel) not found; parameter paths are '
                             f'{sorted(flat)}.')
    parent, _, leaf = after.rpartition('/')
    auto = auto_name_index(leaf)
    layer_type = 'Dense' if kind == 'dense' else 'Conv'
    rename = {}
    if name is None:
        if auto is None or auto[0] != layer_type:
            raise ExpansionError(f'{after!r} is not an automatically named {layer_type}_i: pass name= for the new '
                                 'layer.')
        name = f'{layer_type}_{auto[1] + 1}'
        prefix = f'{parent}/' if parent else ''
        for sibling in {p[len(prefix):].split('/')[0] for p in flat if p.startswith(prefix)}:
            index = auto_name_index(sibling)
            if index and index[0] == layer_type and index[1] > auto[1]:
                rename[prefix + sibling] = f'{prefix}{layer_type}_{index[1] + 1}'
    new_path = f'{parent}/{name}' if parent else name
    width = kernel.shape[-1]
    layer = identity_dense(width) if kind == 'dense' else dirac_conv(width, kernel_size)
    keep = np.eye(width, dtype=bool) if kind == 'dense' else dirac_kernel(width, kernel_size) != 0
    key = jax.random.key(0) if key is None else key
    k_noise, k_mask = jax.random.split(key)
    new = {f'{new_path}/kernel': add_noise(layer['kernel'], k_noise, options), f'{new_path}/bias': layer['bias']}
    return insert_leaves(params, masks, None, new, {}, rename, {f'{new_path}/kernel': keep}, k_mask, options)


def assert_preserved(apply_before: Callable[[PyTree], Array], apply_after: Callable[[PyTree], Array],
                     params_before: PyTree, params_after: PyTree, atol: float = 1e-5) -> float:
    """Checks that an expansion kept the function: ``apply_*(params)`` are the outputs of the module before
    and after on the same inputs. Returns the largest difference; raises ``ExpansionError`` above ``atol``."""
    diff = float(jnp.max(jnp.abs(apply_before(params_before) - apply_after(params_after))))
    if not diff <= atol:
        raise ExpansionError(f'The expansion changed the outputs by up to {diff:.3g} (> atol={atol}): is the '
                             'consumer really the next layer after the producer, with nothing but an elementwise '
                             'activation (and the named norm) between them?')
    return diff


def _check_plan_fits(new_params: PyTree, plan: Optional[Plan]) -> None:
    """Refuses a missing plan, or params that are not the ones the plan was made with (e.g. the old ones)."""
    if plan is None:
        raise ExpansionError('extend_optimizer_state needs the plan of the expansion (Expansion.plan): which old '
                             'leaf each new leaf extends. An unchanged tree has the plan of identity_plan(params).')
    flat = pytrees.flatten_dict(new_params)
    planned = {e[0]: e[2] for e in plan}
    missing, unknown = sorted(set(flat) - set(planned)), sorted(set(planned) - set(flat))
    misfit = sorted(p for p, sl in planned.items() if p in flat and (len(sl) != jnp.ndim(flat[p]) or any(
        b > n for (_, b), n in zip(sl, jnp.shape(flat[p])))))
    if missing or unknown or misfit:
        raise ExpansionError(f'These params are not the ones the plan was made for (no plan entry: {missing[:6]}; '
                             f'planned but absent: {unknown[:6]}; too small: {misfit[:6]}): moments would be '
                             'guessed. Pass the params returned with the plan (Expansion.params), not the old ones.')


def extend_optimizer_state(tx: optax.GradientTransformation, opt_state: PyTree, new_params: PyTree,
                           plan: Plan) -> PyTree:
    """Optimizer state for ``new_params``: moments of surviving weights carried over, new ones zero.

    Works for any optax transformation whose state holds params-shaped trees
    (Adam's mu/nu, momentum traces); a state leaf belongs to the longest plan
    path its path ends with. Other leaves (e.g. Adam's step count) are copied
    from ``opt_state`` when their path and shape are unchanged.
    """
    _check_plan_fits(new_params, plan)
    old_by_path = pytrees.flatten(opt_state)
    new_params = pytrees.as_pure_dict(new_params)

    def carried(path: Any, leaf: Array) -> Array:
        s = pytrees.path_str(path)
        matches = [e for e in plan if s == e[0] or s.endswith('/' + e[0])]
        if not matches:
            old = old_by_path.get(s)
            return old if old is not None and jnp.shape(old) == jnp.shape(leaf) else leaf
        new_path, old_path, slices = max(matches, key=lambda e: len(e[0]))
        if old_path is None:
            return leaf
        old_key = s[: len(s) - len(new_path)] + old_path
        if old_key not in old_by_path:
            raise ExpansionError(f'opt_state has no leaf {old_key!r} for {s!r}: is it the state of this tx for the '
                                 f'params before the expansion? Its paths are '
                                 f'{sorted(old_by_path)[:6]}...')
        old, expected = old_by_path[old_key], tuple(b - a for a, b in slices)
        if tuple(jnp.shape(old)) != expected:
            raise ExpansionError(f'opt_state leaf {old_key!r} has shape {tuple(jnp.shape(old))} but the plan puts '
                                 f'a leaf of shape {expected} there: was this state already extended, or is the '
                                 'plan from another expansion?')
        return jnp.zeros_like(leaf).at[tuple(slice(a, b) for a, b in slices)].set(old)

    return jax.tree_util.tree_map_with_path(carried, tx.init(new_params))
