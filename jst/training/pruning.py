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
import functools
import typing
from typing import Any, Callable, Literal, Optional

import jax
import ml_collections

from jst.ops import masks as masks_lib
from jst.ops import sparse_training
from jst.ops import sparsity as sparsity_lib
from jst.training.train import StepWithGrads, TrainState

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
    mask_update_every: int = 100    # 'gmp', 'rigl': steps between mask updates inside a round
    mask_update_end: float = 0.75   # ... which stop at this fraction of the round's steps
    rigl_drop_fraction: float = 0.3  # 'rigl': initial drop fraction (cosine decay to 0 at the end)

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict) -> PruningPlan:
        return cls(config.pruning, float(config.prune_fraction), tuple(dict(config.prune_rates).items()),
                   config.prune_scope, float(config.target_sparsity), config.level_schedule,
                   int(config.num_rounds), config.prune_include, config.prune_exclude or None,
                   int(config.mask_update_every), float(config.mask_update_end), float(config.rigl_drop_fraction))


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


def _kept(plan: PruningPlan, params: PyTree, masks: PyTree, round_index: int) -> PyTree:
    """'gmp': the masks as the round's training left them (it pruned them on its schedule: ``gmp_step``)."""
    del plan, params, round_index
    return masks


# The pruners of a round, by ``config.pruning``: (plan, params, masks, round_index) -> masks. A new pruner is one
# function of jst.ops calls and one line here (and, if it changes masks while a round trains, one in IN_ROUND).
PRUNERS: dict[str, Callable[[PruningPlan, PyTree, PyTree, int], PyTree]] = {
    'imp': _imp, 'level': _level, 'erk': _erk, 'gmp': _kept, 'rigl': _erk}
PRUNINGS: tuple[str, ...] = tuple(PRUNERS)


def round_levels(plan: PruningPlan, round_index: int) -> tuple[float, float]:
    """(sparsity at the start, at the end) of round ``round_index``'s training on the level schedule: (0, 0) for
    the dense round 0; what ``gmp_step`` ramps between."""
    if round_index == 0:
        return 0.0, 0.0
    return (round_sparsity(plan, round_index - 1) if round_index > 1 else 0.0), round_sparsity(plan, round_index)


def _update_due(plan: PruningPlan, t: jax.Array, total: int) -> tuple[jax.Array, int]:
    """(whether step ``t`` of a ``total``-step round updates the masks, the last step that may: the last multiple
    of ``mask_update_every`` within ``mask_update_end`` of the round, so that a schedule reaches its end)."""
    end = plan.mask_update_every * max(1, int(plan.mask_update_end * total) // plan.mask_update_every)
    return sparsity_lib.is_update_step(t, plan.mask_update_every, end, plan.mask_update_every), end


def gmp_step(plan: PruningPlan, total: int, step: StepWithGrads, state: TrainState, x: jax.Array, y: jax.Array,
             t: jax.Array, levels: jax.Array) -> tuple[TrainState, dict[str, jax.Array]]:
    """Gradual magnitude pruning (Zhu & Gupta 2017) inside a round: the masked step, then on update steps every
    layer pruned by magnitude to ``s(t) = s_1 + (s_0 - s_1)(1 - t / end)^3`` (``levels`` = (s_0, s_1); ``end`` =
    ``mask_update_end`` of the round). Pruning never regrows, so ``s(t)`` is a floor per layer."""
    state, metrics, _ = step(state, x, y)
    due, end = _update_due(plan, t, total)
    target = sparsity_lib.polynomial_sparsity(t, levels[1], 0, end, plan.mask_update_every, levels[0])

    def prune_now(st: TrainState) -> TrainState:
        masks = masks_lib.prune_to_sparsity(masks_lib.magnitude_scores(st.params, st.masks), st.masks, target)
        return st.replace(params=masks_lib.apply_masks(st.params, masks), masks=masks)

    return jax.lax.cond(due & (levels[1] > 0), prune_now, lambda st: st, state), metrics


def rigl_step(plan: PruningPlan, total: int, step: StepWithGrads, state: TrainState, x: jax.Array, y: jax.Array,
              t: jax.Array, levels: jax.Array) -> tuple[TrainState, dict[str, jax.Array]]:
    """RigL (Evci et al. 2020, Algorithm 1) inside a round: on update steps (every ``mask_update_every`` until
    ``mask_update_end`` of the round; sparse rounds only) each layer drops its ``f(t) * kept`` smallest-magnitude
    weights and grows as many inactive ones of largest |gradient| (``jst.ops.sparse_training.rigl_update``; grown
    weights start at 0; ``f`` decays from ``rigl_drop_fraction`` by a cosine) instead of taking the SGD step."""
    stepped, metrics, grads = step(state, x, y)
    due, end = _update_due(plan, t, total)

    def rewire(st: TrainState) -> TrainState:
        fraction = sparse_training.cosine_drop_fraction(t, plan.rigl_drop_fraction, end)
        params, masks = sparse_training.rigl_update(st.params, st.masks, grads, fraction)
        return stepped.replace(params=params, masks=masks, opt_state=st.opt_state)  # no optimizer step

    return jax.lax.cond(due & (levels[1] > 0), rewire, lambda st: stepped, state), metrics


# Pruners that change the masks while a round trains: (plan, total steps of a round) -> the step's wrapper.
IN_ROUND: dict[str, Callable[..., Any]] = {'gmp': gmp_step, 'rigl': rigl_step}


def in_round_update(plan: PruningPlan, total: int) -> Optional[Callable[..., Any]]:
    """The wrapper of the masked step for ``plan.pruning`` (``train.make_train_step``'s ``in_round``), else None."""
    update = IN_ROUND.get(plan.pruning)
    return None if update is None else functools.partial(update, plan, total)


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
