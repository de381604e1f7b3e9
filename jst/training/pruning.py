"""Pruning as the searches use it: the start masks, one round's pruning, and the random controls.

Both searches (weight reset and growth) prune through ``prune``; neither
knows the other. ``PRUNERS``: ``'imp'`` removes a fraction of the remaining
weights (layer-wise with per-layer overrides, or global); ``'level'`` prunes
each selected layer to the round's target sparsity (``'geometric'``: the same
fraction of the remaining weights every round, reaching ``target_sparsity``
at the last; ``'constant'``); ``'erk'`` splits that sparsity over layers by
Erdos-Renyi-Kernel. The exact selection is ``jst.ops``' (``masks``, ``sparsity``).
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Callable, Literal, Optional

import jax
import ml_collections

from jst.ops import masks as masks_lib
from jst.ops import sparsity as sparsity_lib

PyTree = Any
Pruning = str  # a key of PRUNERS
LevelSchedule = Literal['geometric', 'constant']
Control = Literal['none', 'random_reinit', 'random_prune']
LEVEL_SCHEDULES: tuple[str, ...] = typing.get_args(LevelSchedule)
SCOPES: tuple[str, ...] = typing.get_args(masks_lib.Scope)
CONTROLS: tuple[str, ...] = typing.get_args(Control)


@dataclasses.dataclass(frozen=True)
class PruningPlan:
    """The pruning knobs of a run (``from_config``)."""

    pruning: Pruning = 'imp'
    prune_fraction: float = 0.2
    prune_rates: tuple[tuple[str, float], ...] = ()  # (regex, fraction); first match wins
    prune_scope: masks_lib.Scope = 'layerwise'
    target_sparsity: float = 0.95
    level_schedule: LevelSchedule = 'geometric'
    num_rounds: int = 5
    include: str = masks_lib.DEFAULT_PRUNABLE
    exclude: Optional[str] = None

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict) -> PruningPlan:
        return cls(config.pruning, float(config.prune_fraction), tuple(dict(config.prune_rates).items()),
                   config.prune_scope, float(config.target_sparsity), config.level_schedule,
                   int(config.num_rounds), config.prune_include, config.prune_exclude or None)


def initial_masks(plan: PruningPlan, params: PyTree, allow_empty: bool = False) -> PyTree:
    """All-True masks of the start network (a network that will grow may start with none)."""
    return masks_lib.create_masks(params, plan.include, plan.exclude, allow_empty=allow_empty)


def geometric_level_sparsity(target: float, round_index: int, num_rounds: int) -> float:
    """Sparsity after pruning round ``round_index`` (1-based) of ``num_rounds`` reaching ``target``.

    Each round removes the same fraction of the remaining weights:
    s_r = 1 - (1 - target) ** (r / num_rounds) (NNI's lottery-ticket schedule).
    """
    if num_rounds <= 0:
        return float(target)
    return float(1.0 - (1.0 - target) ** (min(round_index, num_rounds) / num_rounds))


def round_sparsity(plan: PruningPlan, round_index: int) -> float:
    """The overall sparsity a level-style pruner reaches after round ``round_index`` (``level_schedule``)."""
    if plan.level_schedule == 'geometric':
        return geometric_level_sparsity(plan.target_sparsity, round_index, plan.num_rounds)
    return plan.target_sparsity


def _imp(plan: PruningPlan, params: PyTree, masks: PyTree, round_index: int) -> PyTree:
    """Frankle & Carbin's IMP: ``prune_fraction`` of each layer's survivors (``prune_rates`` overrides), or of all
    survivors together (``prune_scope='global'``), lowest magnitudes first."""
    del round_index
    if plan.prune_scope == 'global':
        return masks_lib.magnitude_prune(params, masks, plan.prune_fraction, 'global')
    return _jit_layerwise(params, masks, masks_lib.layer_rates(masks, plan.prune_fraction, dict(plan.prune_rates)))


def _level(plan: PruningPlan, params: PyTree, masks: PyTree, round_index: int) -> PyTree:
    """Every layer to the round's sparsity (the uniform distribution), lowest magnitudes first."""
    return _jit_level(params, masks, round_sparsity(plan, round_index))


def _erk(plan: PruningPlan, params: PyTree, masks: PyTree, round_index: int) -> PyTree:
    """The round's sparsity split over layers by Erdos-Renyi-Kernel (``jst.ops.sparsity.erk_sparsities``: density
    proportional to sum(shape) / prod(shape)), lowest magnitudes first in each layer; pruning never regrows, so
    a layer already sparser than its share stays as it is."""
    return _jit_level(params, masks, sparsity_lib.erk_sparsities(masks, round_sparsity(plan, round_index)))


# The pruners of a round, by ``config.pruning``: (plan, params, masks, round_index) -> masks. A new pruner is one
# function of jst.ops calls and one line here.
PRUNERS: dict[str, Callable[[PruningPlan, PyTree, PyTree, int], PyTree]] = {
    'imp': _imp, 'level': _level, 'erk': _erk}
PRUNINGS: tuple[str, ...] = tuple(PRUNERS)


def prune(plan: PruningPlan, params: PyTree, masks: PyTree, round_index: int) -> PyTree:
    """Masks after the pruning that ends round ``round_index - 1`` (``round_index`` >= 1), by ``plan.pruning``."""
    if plan.pruning not in PRUNERS:
        raise ValueError(f'pruning={plan.pruning!r} is unknown; choose one of {PRUNINGS}.')
    return PRUNERS[plan.pruning](plan, params, masks, round_index)


def prune_params(plan: PruningPlan, params: PyTree, masks: PyTree, round_index: int) -> tuple[PyTree, PyTree]:
    """(params with the newly pruned weights zeroed, new masks): ``prune`` applied to a network that
    keeps its weights."""
    new_masks = prune(plan, params, masks, round_index)
    return masks_lib.apply_masks(params, new_masks), new_masks


@jax.jit
def _jit_layerwise(params, masks, rates):
    return masks_lib.magnitude_prune(params, masks, rates, 'layerwise')


@jax.jit
def _jit_level(params, masks, sparsity):
    return masks_lib.prune_to_sparsity(masks_lib.magnitude_scores(params, masks), masks, sparsity)


def control_names(control: str) -> tuple[str, ...]:
    """'random_reinit,random_prune' -> ('random_reinit', 'random_prune'); 'none' -> ()."""
    parts = tuple(p.strip() for p in str(control).split(',') if p.strip())
    return tuple(p for p in parts if p != 'none')


def random_prune_masks(masks: PyTree, key: jax.Array) -> PyTree:
    """The random-pruning control: random masks with exactly the per-layer kept counts of ``masks``."""
    return masks_lib.random_masks_like(masks, key)
