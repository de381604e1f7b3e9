"""Pruning masks as a pytree beside the parameters: pure, exact, ``jit``-able.

A *mask tree* has the structure of a parameter tree (a Flax linen ``params``
dict or an NNX ``State``): prunable leaves hold a boolean array of the leaf's
shape (True = kept; uint8 nonzero also works; results are always bool),
every other leaf (biases, norms, excluded layers) ``None``, as in jaxpruner.
Layers are addressed by their "/"-joined path, the same on linen and NNX
(``'Dense_0/kernel'``, NNX ``'l1/kernel'``), and selected by regular
expressions over it (``re.search``). Masks may be a plain dict for an NNX
``State`` (what an expansion returns) and are matched by path. Every function
checks its inputs (``jst.ops.mask_checks``); fractions traced under ``jit`` are
checked when the compiled function runs.

Exactness: pruning a fraction ``p`` of a scope's remaining weights removes
exactly ``round(p * remaining)`` (round half to even) of them, the lowest
scores first, ties broken by position (lower flat index first). "Level"
pruning keeps exactly ``round((1 - s) * size)`` weights of each layer (or all
of its survivors, if fewer remain: a pruned weight never comes back).
"""

from __future__ import annotations

import re
from typing import Any, Callable, Literal, Mapping, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jst.ops import mask_checks
from jst.ops import pytrees
from jst.ops.mask_checks import check_masks  # re-exported: part of this module's public API
from jst.ops.pytrees import leaf_paths, path_str  # re-exported: part of this module's public API

Array = jax.Array
PyTree = Any
Scope = Literal['layerwise', 'global']
# Kernels of linen params trees ('Dense_0/kernel') and of Flax NNX states (also 'l1/kernel').
DEFAULT_PRUNABLE = r'(^|/)kernel$'
__all__ = ['DEFAULT_PRUNABLE', 'Scope', 'path_str', 'leaf_paths', 'map_masked', 'create_masks', 'is_prunable',
           'apply_masks', 'check_masks', 'magnitude_scores', 'random_scores', 'ranks', 'prune_layerwise',
           'prune_global', 'prune_to_sparsity', 'layer_rates', 'magnitude_prune', 'random_masks_like',
           'sparsity_stats', 'count_nonprunable', 'keep_pruned_at_zero']
_is_none = pytrees.is_none


def map_masked(fn: Callable[..., Any], masks: PyTree, *trees: PyTree) -> PyTree:
    """``fn(mask, *leaves)`` on prunable leaves; ``None`` elsewhere."""
    return jax.tree.map(lambda m, *xs: None if m is None else fn(m, *xs),
                        masks, *trees, is_leaf=_is_none)


def create_masks(params: PyTree,
                 include: str = DEFAULT_PRUNABLE,
                 exclude: Optional[str] = None,
                 allow_empty: bool = False) -> PyTree:
    """All-True masks on leaves whose path matches ``include`` (and not ``exclude``).

    Only leaves with ``ndim >= 2`` (kernels) are ever selected. No match is an
    error unless ``allow_empty`` (e.g. a network that will grow prunable layers).
    """
    mask_checks.compile_pattern('include', include)
    if exclude:
        mask_checks.compile_pattern('exclude', exclude)
    def make(path, leaf):
        selected = is_prunable(path_str(path), jnp.ndim(leaf), include, exclude)
        return jnp.ones(jnp.shape(leaf), jnp.bool_) if selected else None

    masks = jax.tree_util.tree_map_with_path(make, params)
    if not allow_empty and not any(m is not None for m in jax.tree.leaves(masks, is_leaf=_is_none)):
        raise ValueError(f'No prunable leaf (ndim >= 2) matches include={include!r} exclude={exclude!r}; '
                         f'paths are: {leaf_paths(params)} (NNX paths have no "/value").')
    if exclude and not any(re.search(exclude, p) for p in leaf_paths(params)):
        raise ValueError(f'exclude={exclude!r} matches no parameter path (a typo?); paths are: {leaf_paths(params)}')
    return masks


def is_prunable(path: str, ndim: int, include: str = DEFAULT_PRUNABLE, exclude: Optional[str] = None) -> bool:
    """Whether a leaf at ``path`` with ``ndim`` dimensions is selected: a kernel (ndim >= 2) whose path
    matches ``include`` and not ``exclude``."""
    return (ndim >= 2 and re.search(include, path) is not None
            and not (exclude and re.search(exclude, path)))


def apply_masks(params: PyTree, masks: PyTree) -> PyTree:
    """Zeroes pruned weights; leaves without a mask pass through. Masks are checked (``check_masks``) and
    matched to ``params`` by path (a dict of masks applies to an NNX ``State``); the result has ``params``'
    structure."""
    masks = mask_checks.conform(masks, params)
    return jax.tree.map(lambda m, p: p if m is None else jnp.where(m, p, jnp.zeros_like(p)),
                        masks, params, is_leaf=_is_none)


# --------------------------------------------------------------------------
# Scores
# --------------------------------------------------------------------------
def magnitude_scores(params: PyTree, masks: PyTree) -> PyTree:
    """|w| on prunable leaves."""
    return map_masked(lambda m, p: jnp.abs(p).astype(jnp.float32), masks, params)


def random_scores(masks: PyTree, key: Array) -> PyTree:
    """Uniform random scores on prunable leaves (for the random-pruning control)."""
    flat, treedef = jax.tree.flatten(masks, is_leaf=_is_none)
    keys = jax.random.split(key, max(len(flat), 1))
    out = [None if m is None else jax.random.uniform(k, m.shape) for m, k in zip(flat, keys)]
    return jax.tree.unflatten(treedef, out)


# --------------------------------------------------------------------------
# The exact core: prune the k lowest scores among the survivors of a vector
# --------------------------------------------------------------------------
def ranks(scores: Array) -> Array:
    """Rank of each entry of ``scores`` [n] in ascending order (ties: lower index first). Exact, traceable."""
    order = jnp.argsort(scores, stable=True)
    return jnp.zeros_like(order).at[order].set(jnp.arange(order.shape[0], dtype=order.dtype))


def _prune_lowest(scores: Array, mask: Array, num_prune: Array) -> Array:
    """New flat mask with the ``num_prune`` lowest-scoring survivors removed.

    scores, mask: [n]; num_prune: scalar int (may be traced).
    """
    return mask & (ranks(jnp.where(mask, scores, jnp.inf)) >= num_prune)


def _is_scalar(x: Any) -> bool:
    return isinstance(x, (float, int)) or (hasattr(x, 'ndim') and x.ndim == 0)


def _round_count(x: Array) -> Array:
    return jnp.round(x).astype(jnp.int32)


def prune_layerwise(scores: PyTree, masks: PyTree, fractions: Union[float, PyTree]) -> PyTree:
    """Removes ``round(f * remaining)`` lowest-score survivors in each layer.

    ``fractions`` is one float or a tree of per-leaf floats (see ``layer_rates``).
    """
    mask_checks.check_fraction('fraction', fractions)
    masks = mask_checks.conform(masks, scores)
    if _is_scalar(fractions):
        frac_tree = map_masked(lambda m: jnp.asarray(fractions, jnp.float32), masks)
    else:
        frac_tree = fractions

    def prune_leaf(m, s, f):
        remaining = jnp.sum(m)
        k = _round_count(f * remaining)
        return _prune_lowest(s.reshape(-1), m.reshape(-1), k).reshape(m.shape)

    return map_masked(prune_leaf, masks, scores, frac_tree)


def prune_global(scores: PyTree, masks: PyTree, fraction: float) -> PyTree:
    """Removes ``round(fraction * remaining)`` lowest-score survivors across all layers."""
    mask_checks.check_fraction('fraction', fraction)
    masks = mask_checks.conform(masks, scores)
    flat_m, treedef = jax.tree.flatten(masks, is_leaf=_is_none)
    flat_s = jax.tree.flatten(scores, is_leaf=_is_none)[0]
    idx = [i for i, m in enumerate(flat_m) if m is not None]
    all_m = jnp.concatenate([flat_m[i].reshape(-1) for i in idx])
    all_s = jnp.concatenate([flat_s[i].reshape(-1) for i in idx])
    k = _round_count(fraction * jnp.sum(all_m))
    new = _prune_lowest(all_s, all_m, k)
    out, start = list(flat_m), 0
    for i in idx:
        size = flat_m[i].size
        out[i] = new[start:start + size].reshape(flat_m[i].shape)
        start += size
    return jax.tree.unflatten(treedef, out)


def prune_to_sparsity(scores: PyTree, masks: PyTree, sparsity: Union[float, PyTree]) -> PyTree:
    """"Level" pruning: each layer keeps ``round((1 - s) * size)`` top-score weights."""
    mask_checks.check_fraction('sparsity', sparsity)
    masks = mask_checks.conform(masks, scores)
    if _is_scalar(sparsity):
        value = sparsity
        sparsity = map_masked(lambda m: jnp.asarray(value, jnp.float32), masks)

    def prune_leaf(m, s, sp):
        keep = _round_count((1.0 - sp) * m.size)
        k = jnp.maximum(jnp.sum(m) - keep, 0)
        return _prune_lowest(s.reshape(-1), m.reshape(-1), k).reshape(m.shape)

    return map_masked(prune_leaf, masks, scores, sparsity)


def layer_rates(masks: PyTree, default: float, overrides: Optional[Mapping[str, float]] = None) -> PyTree:
    """Per-leaf rates: the first regex in ``overrides`` matching a path wins, else ``default``.

    Example: ``layer_rates(masks, 0.2, {'^output/': 0.1})`` (Frankle & Carbin).
    """
    mask_checks.check_mask_leaves(masks)
    compiled = [(mask_checks.compile_pattern('rate override', k), float(v)) for k, v in (overrides or {}).items()]
    prunable = [p for p, m in pytrees.flatten(masks).items() if m is not None]
    for pattern, value in compiled:
        mask_checks.check_fraction(f'rate of {pattern.pattern!r}', value)
        if not any(pattern.search(p) for p in prunable):
            raise ValueError(f'Rate override {pattern.pattern!r} matches no prunable layer; prunable paths are '
                             f'{prunable}.')

    def rate(path, m):
        if m is None:
            return None
        name = path_str(path)
        for pattern, value in compiled:
            if pattern.search(name):
                return value
        return float(default)

    return jax.tree_util.tree_map_with_path(rate, masks, is_leaf=_is_none)


def magnitude_prune(params: PyTree, masks: PyTree, fraction: Union[float, PyTree],
                    scope: Scope = 'layerwise') -> PyTree:
    """Prunes ``fraction`` of the remaining weights by magnitude: ``'layerwise'`` or ``'global'``."""
    masks = mask_checks.conform(masks, params)
    scores = magnitude_scores(params, masks)
    if scope == 'layerwise':
        return prune_layerwise(scores, masks, fraction)
    if scope == 'global':
        if not _is_scalar(fraction):
            raise ValueError('Global pruning takes one fraction, not per-layer rates.')
        return prune_global(scores, masks, fraction)
    raise ValueError(f"prune scope must be 'layerwise' or 'global', not {scope!r}.")


def random_masks_like(masks: PyTree, key: Array) -> PyTree:
    """Random masks with exactly the per-layer kept counts of ``masks`` (random-pruning control)."""
    mask_checks.check_mask_leaves(masks)
    masks = map_masked(lambda m: jnp.asarray(m).astype(jnp.bool_), masks)
    scores = random_scores(masks, key)
    full = map_masked(lambda m: jnp.ones_like(m), masks)

    def leaf(m, s, f):
        k = m.size - jnp.sum(m)
        return _prune_lowest(s.reshape(-1), f.reshape(-1), k).reshape(m.shape)

    return map_masked(leaf, masks, scores, full)


# --------------------------------------------------------------------------
# Statistics (host side)
# --------------------------------------------------------------------------
def sparsity_stats(masks: PyTree) -> dict[str, Any]:
    """Per-layer and total counts: {'layers': {path: (kept, total)}, 'kept', 'total', 'fraction_remaining'}.
    Host side (Python ints): under ``jit``/``vmap`` use ``jst.ops.expand.density(masks)`` instead."""
    mask_checks.check_concrete(masks, 'sparsity_stats', 'jst.ops.expand.density(masks)')
    layers = {}
    for path, m in pytrees.flatten(masks).items():
        if m is not None:
            m = np.asarray(m)
            layers[path] = (int(m.sum()), int(m.size))
    kept = sum(k for k, _ in layers.values())
    total = sum(t for _, t in layers.values())
    return {'layers': layers, 'kept': kept, 'total': total,
            'fraction_remaining': kept / total if total else 1.0}


def count_nonprunable(params: PyTree, masks: PyTree) -> int:
    """Number of parameters without a mask (biases, norms, excluded layers)."""
    sizes = jax.tree.map(lambda m, p: int(np.size(p)) if m is None else 0, masks, params, is_leaf=_is_none)
    return int(sum(jax.tree.leaves(sizes)))


# --------------------------------------------------------------------------
# optax integration
# --------------------------------------------------------------------------
def keep_pruned_at_zero(inner: optax.GradientTransformation,
                        masks: Optional[PyTree] = None) -> optax.GradientTransformationExtraArgs:
    """Wraps an optax transformation so that pruned weights never move.

    Gradients of pruned weights are zeroed before ``inner`` sees them and
    their updates are zeroed after, so params that start at zero (see
    ``apply_masks``) stay exactly zero. The optimizer state is ``inner``'s own
    (masks are not stored in it): pass the current masks to ``update`` as an
    extra argument, or fix them at construction::

        tx = masks.keep_pruned_at_zero(optax.adam(1e-3))
        updates, opt_state = tx.update(grads, opt_state, params, masks=current_masks)
    """
    fixed = masks

    def init_fn(params):
        return inner.init(params)

    def update_fn(updates, state, params=None, *, masks=None, **extra_args):
        current = masks if masks is not None else fixed
        if current is None:
            raise ValueError('keep_pruned_at_zero: pass masks=... to update() or to the constructor.')
        updates = apply_masks(updates, current)
        inner_tx = optax.with_extra_args_support(inner)
        updates, state = inner_tx.update(updates, state, params, **extra_args)
        return apply_masks(updates, current), state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
