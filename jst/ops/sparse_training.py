"""Sparse training as jaxpruner users know it: SET and RigL mask updates and a one-object optax wrapper.

* ``set_update`` (Mocanu et al. 2018) and ``rigl_update`` (Evci et al. 2020):
  in each layer drop the ``k = round(drop_fraction * kept)`` active weights of
  smallest magnitude, then grow ``k`` inactive ones (random for SET; largest
  ``|gradient|`` for RigL; a just-dropped weight may be regrown, as in RigL's
  reference code). Kept counts are unchanged; grown weights start at 0.
  ``cosine_drop_fraction`` is RigL's decay of the drop fraction.
* ``masked_optimizer``: an optax transformation whose state carries the masks
  (so they travel with optimizer checkpoints), keeps pruned weights at zero,
  and, given a sparsity schedule (``jst.ops.sparsity``), prunes by magnitude on the
  schedule's update steps (gradual magnitude pruning; one sparsity for every
  layer or a tree of per-layer ones). jst's own training keeps masks beside the optimizer state; this is
  for users who want one object.

Imports only ops modules (``jst.ops.masks``, ``jst.ops.mask_checks``, ``jst.ops.pytrees``).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from jst.ops import mask_checks
from jst.ops import masks as masks_lib
from jst.ops import pytrees

Array = jax.Array
PyTree = Any
__all__ = ['drop_and_grow', 'set_update', 'rigl_update', 'cosine_drop_fraction', 'MaskedState',
           'masked_optimizer']


def drop_and_grow(mask: Array, drop_scores: Array, grow_scores: Array, drop_fraction: Array) -> Array:
    """One layer's new mask: the ``round(drop_fraction * kept)`` lowest ``drop_scores`` among kept weights
    dropped, as many highest ``grow_scores`` among the then-inactive weights grown (ties: lower index).
    All arrays of one shape; ``drop_fraction`` a scalar (may be traced)."""
    flat_m = mask.reshape(-1)
    k = jnp.round(drop_fraction * jnp.sum(flat_m)).astype(jnp.int32)
    after_drop = flat_m & (masks_lib.ranks(jnp.where(flat_m, drop_scores.reshape(-1), jnp.inf)) >= k)
    grow_rank = masks_lib.ranks(jnp.where(after_drop, jnp.inf, -grow_scores.reshape(-1).astype(jnp.float32)))
    return (after_drop | (grow_rank < k)).reshape(mask.shape)


def _update(params: PyTree, masks: PyTree, grow_scores: PyTree, drop_fraction: Array) -> tuple[PyTree, PyTree]:
    mask_checks.check_fraction('drop_fraction', drop_fraction)
    masks = mask_checks.conform(masks, params)
    new = masks_lib.map_masked(lambda m, p, g: drop_and_grow(m, jnp.abs(p), g, drop_fraction),
                               masks, params, grow_scores)
    # Weights kept throughout keep their values; dropped and grown ones are 0 (RigL initialises grown to 0).
    kept_both = masks_lib.map_masked(lambda n, m: n & m, new, masks)
    return masks_lib.apply_masks(params, kept_both), new


def set_update(params: PyTree, masks: PyTree, key: Array, drop_fraction: float) -> tuple[PyTree, PyTree]:
    """SET: drop by magnitude, regrow at random. Returns ``(params, masks)`` with per-layer counts unchanged."""
    return _update(params, masks, masks_lib.random_scores(mask_checks.conform(masks, params), key), drop_fraction)


def rigl_update(params: PyTree, masks: PyTree, grads: PyTree, drop_fraction: float) -> tuple[PyTree, PyTree]:
    """RigL: drop by magnitude, regrow where the dense gradient ``grads`` (same tree as params) is largest
    in magnitude. Returns ``(params, masks)`` with per-layer counts unchanged."""
    mask_checks.check_masks(masks, grads)
    scores = masks_lib.map_masked(lambda m, g: jnp.abs(g), mask_checks.conform(masks, params), grads)
    return _update(params, masks, scores, drop_fraction)


def cosine_drop_fraction(step: Any, initial_fraction: float, end_step: int) -> Array:
    """RigL's schedule: ``initial_fraction / 2 * (1 + cos(pi * step / end_step))``, 0 from ``end_step`` on."""
    progress = jnp.clip(jnp.asarray(step) / end_step, 0.0, 1.0)
    return (initial_fraction / 2.0 * (1.0 + jnp.cos(jnp.pi * progress))).astype(jnp.float32)


def _clipped(sparsity: PyTree) -> PyTree:
    """A schedule's value (one sparsity, or a tree of per-layer sparsities) clipped to [0, 1]."""
    return jax.tree.map(lambda v: jnp.clip(v, 0.0, 1.0), sparsity)


class MaskedState(NamedTuple):
    """``masked_optimizer``'s state: the inner optimizer's state, the current masks and the step count."""

    inner_state: Any
    masks: PyTree
    count: Array


def masked_optimizer(inner: optax.GradientTransformation, masks: Optional[PyTree] = None,
                     sparsity_schedule: Optional[Callable[[Array], Array]] = None,
                     update_schedule: Optional[Callable[[Array], Array]] = None) -> optax.GradientTransformation:
    """``inner`` with the masks in its state: gradients and updates of pruned weights zeroed; on steps where
    ``update_schedule(count)`` is true, every layer is pruned by magnitude to ``sparsity_schedule(count)`` (one
    sparsity, or a tree of per-layer sparsities shaped like the masks, e.g. ERK's), with
    ``masks.prune_to_sparsity`` (a pruned weight never comes back), and newly pruned weights are set to 0
    by the update. ``masks`` default to ``masks.create_masks(params)``. ``update`` needs ``params``.

    Gradual magnitude pruning::

        tx = masked_optimizer(optax.adam(1e-3),
                              sparsity_schedule=lambda t: sparsity.polynomial_sparsity(t, 0.9, 100, 1000, 50),
                              update_schedule=lambda t: sparsity.is_update_step(t, 100, 1000, 50))
    """
    if (sparsity_schedule is None) != (update_schedule is None):
        raise ValueError('Pass both sparsity_schedule and update_schedule (or neither, for fixed masks).')

    def init_fn(params: PyTree) -> MaskedState:
        current = masks if masks is not None else masks_lib.create_masks(params)
        current = mask_checks.conform(current, params)
        return MaskedState(inner.init(params), current, jnp.zeros((), jnp.int32))

    def update_fn(updates: PyTree, state: MaskedState, params: Optional[PyTree] = None
                  ) -> tuple[PyTree, MaskedState]:
        if params is None:
            raise ValueError('masked_optimizer.update needs params (tx.update(grads, state, params)).')
        current = state.masks
        if sparsity_schedule is not None:
            current = jax.lax.cond(
                update_schedule(state.count),
                lambda: masks_lib.prune_to_sparsity(masks_lib.magnitude_scores(params, current), current,
                                                    _clipped(sparsity_schedule(state.count))),
                lambda: current)
        inner_updates, inner_state = inner.update(masks_lib.apply_masks(updates, current), state.inner_state,
                                                  params)
        out = jax.tree.map(lambda m, u, p: u if m is None else jnp.where(m, u, -p),
                           current, inner_updates, params, is_leaf=pytrees.is_none)
        return out, MaskedState(inner_state, current, state.count + 1)

    return optax.GradientTransformation(init_fn, update_fn)
