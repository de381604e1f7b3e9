"""Where and when to prune, as in jaxpruner, on jst's masks-beside-params design: pure and ``jit``-able.

* Distributions (how a global sparsity is split over layers): ``uniform_sparsities``
  and ``erk_sparsities`` (Erdos-Renyi-Kernel, Evci et al. 2020, "Rigging the
  Lottery", Appendix: density of a layer proportional to
  ``sum(shape) / prod(shape)``, layers that would exceed density 1 kept dense and
  the rest rescaled). Both return a tree of per-layer sparsities for
  ``masks.prune_to_sparsity``.
* Schedules (target sparsity at a training step, traceable): ``one_shot_sparsity``,
  ``iterative_sparsity`` (prune a fraction of the survivors every ``period``
  steps: ``1 - (1 - rate)^k``) and ``polynomial_sparsity`` (gradual magnitude
  pruning, Zhu & Gupta 2017: ``s_f + (s_i - s_f)(1 - (t - t_0)/(t_1 - t_0))^3``,
  updated every ``frequency`` steps).
* ``n_m_masks``: N:M structured sparsity (at most N of every M consecutive
  weights along the input axis kept: NVIDIA's 2:4), by score.

Imports only ``jst.ops.masks``, ``jst.ops.mask_checks`` and ``jst.ops.pytrees``: part of the ops layer.
"""

from __future__ import annotations

from typing import Any, Union

import jax
import jax.numpy as jnp
import numpy as np

from jst.ops import mask_checks
from jst.ops import masks as masks_lib
from jst.ops import pytrees

Array = jax.Array
PyTree = Any
Step = Union[int, Array]
__all__ = ['uniform_sparsities', 'erk_sparsities', 'one_shot_sparsity', 'iterative_sparsity',
           'polynomial_sparsity', 'is_update_step', 'n_m_masks']


def uniform_sparsities(masks: PyTree, sparsity: float) -> PyTree:
    """Every prunable layer at ``sparsity`` (a tree of floats; ``None`` where not prunable)."""
    mask_checks.check_fraction('sparsity', sparsity)
    return masks_lib.map_masked(lambda m: float(sparsity), masks)


def erk_sparsities(masks: PyTree, sparsity: float, power_scale: float = 1.0) -> PyTree:
    """Erdos-Renyi-Kernel per-layer sparsities whose kept total is ``(1 - sparsity)`` of all prunable weights.

    A layer of shape ``(k_h, k_w, n_in, n_out)`` (or ``(n_in, n_out)``) gets density
    ``eps * (sum(shape) / prod(shape)) ** power_scale``; layers whose density would exceed 1 are kept dense
    and ``eps`` is solved again for the rest (RigL's ``get_sparsities``). ``power_scale=0`` is uniform.
    """
    mask_checks.check_fraction('sparsity', sparsity)
    mask_checks.check_mask_leaves(masks)
    shapes = {p: tuple(np.shape(m)) for p, m in pytrees.flatten(masks).items() if m is not None}
    dense: set[str] = set()
    while True:
        sizes = {p: float(np.prod(s)) for p, s in shapes.items()}
        raw = {p: (sum(s) / sizes[p]) ** power_scale for p, s in shapes.items() if p not in dense}
        if not raw:
            raise ValueError(f'sparsity={sparsity} cannot be reached with ERK: every layer would be dense.')
        kept_target = (1.0 - sparsity) * sum(sizes.values()) - sum(sizes[p] for p in dense)
        eps = kept_target / sum(raw[p] * sizes[p] for p in raw)
        top = max(raw.values())
        if eps * top <= 1.0:
            break
        dense |= {p for p, r in raw.items() if r == top}
    densities = {p: 1.0 if p in dense else eps * raw[p] for p in shapes}

    def leaf(path: Any, m: Any) -> Any:
        return None if m is None else 1.0 - densities[pytrees.path_str(path)]

    return jax.tree_util.tree_map_with_path(leaf, masks, is_leaf=pytrees.is_none)


def one_shot_sparsity(step: Step, sparsity: float, at_step: int) -> Array:
    """0 before ``at_step``, ``sparsity`` from it on."""
    return jnp.where(jnp.asarray(step) >= at_step, sparsity, 0.0).astype(jnp.float32)


def iterative_sparsity(step: Step, rate: float, period: int, num_prunings: int) -> Array:
    """IMP-style: ``rate`` of the survivors pruned at steps ``period, 2 * period, ...`` (``num_prunings`` times):
    sparsity ``1 - (1 - rate)^k`` after the k-th."""
    if period <= 0 or num_prunings < 0:
        raise ValueError(f'period={period} must be positive and num_prunings={num_prunings} >= 0.')
    k = jnp.minimum(jnp.asarray(step) // period, num_prunings)
    return (1.0 - (1.0 - rate) ** k).astype(jnp.float32)


def polynomial_sparsity(step: Step, final_sparsity: float, begin_step: int, end_step: int,
                        frequency: int = 1, initial_sparsity: float = 0.0, power: float = 3.0) -> Array:
    """Gradual magnitude pruning (Zhu & Gupta 2017): ``initial_sparsity`` until ``begin_step``, then
    ``s_f + (s_i - s_f) * (1 - (t - begin) / (end - begin)) ** power`` with ``t`` rounded down to a multiple
    of ``frequency`` after ``begin_step`` (the mask changes only on update steps), ``final_sparsity`` from
    ``end_step`` on."""
    if not 0 <= begin_step < end_step or frequency <= 0:
        raise ValueError(f'need 0 <= begin_step ({begin_step}) < end_step ({end_step}) and frequency '
                         f'({frequency}) > 0.')
    t = jnp.asarray(step)
    t = begin_step + ((t - begin_step) // frequency) * frequency
    progress = jnp.clip((t - begin_step) / (end_step - begin_step), 0.0, 1.0)
    value = final_sparsity + (initial_sparsity - final_sparsity) * (1.0 - progress) ** power
    return value.astype(jnp.float32)


def is_update_step(step: Step, begin_step: int, end_step: int, frequency: int) -> Array:
    """Whether the mask is updated at ``step``: ``begin_step <= step <= end_step`` on the ``frequency`` grid."""
    step = jnp.asarray(step)
    return (step >= begin_step) & (step <= end_step) & ((step - begin_step) % frequency == 0)


def n_m_masks(scores: PyTree, masks: PyTree, n: int, m: int, axis: int = -2) -> PyTree:
    """N:M masks: in every group of ``m`` consecutive weights along ``axis`` (a kernel's input axis: -2 for
    Dense ``[in, out]`` and Conv ``[kh, kw, in, out]``), the ``n`` highest-scoring survivors are kept
    (ties: lower index first); already pruned weights stay pruned. The axis length must divide by ``m``."""
    if not 0 < n <= m:
        raise ValueError(f'N:M needs 0 < n <= m, got n={n}, m={m}.')
    masks = mask_checks.conform(masks, scores)

    def leaf(path: Any, mask: Any, score: Any) -> Any:
        if mask is None:
            return None
        if mask.shape[axis] % m:
            raise ValueError(f'{pytrees.path_str(path)} has {mask.shape[axis]} weights along axis {axis}, not a '
                             f'multiple of m={m}: exclude it (create_masks(..., exclude=...)) or pick another m.')
        moved_s, moved_m = jnp.moveaxis(score, axis, -1), jnp.moveaxis(mask, axis, -1)
        groups_s = jnp.where(moved_m, moved_s, -jnp.inf).reshape(moved_s.shape[:-1] + (-1, m))
        order = jnp.argsort(-groups_s, axis=-1, stable=True)
        rank = jnp.argsort(order, axis=-1)
        kept = (rank < n).reshape(moved_m.shape) & moved_m
        return jnp.moveaxis(kept, -1, axis)

    return jax.tree_util.tree_map_with_path(leaf, masks, scores, is_leaf=pytrees.is_none)
