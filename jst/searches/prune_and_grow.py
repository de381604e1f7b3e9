"""Between two rounds of ``method='juvenile'``: prune the trained network, then grow it (the paper's rule, or a
search over candidate extensions).

After a round's training, ``next_ticket`` prunes the network into the
round's ticket and extends it function-preservingly:

* ``growth='paper'``: insert one identity layer/block at ``grow_position``
  (default: end of the hidden stack), as arXiv 2109.03862 does.
* ``growth='none'``: no extension: *prune and continue* on the same
  architecture with the trained weights (the control that separates growing
  from keeping the trained weights).
* ``growth='search'``: build candidate extensions (deepen at each of the
  family's growth positions, widen each widenable layer by each of
  ``search.widen_by``), train each for ``search.probe_steps`` from the same
  weights and batches, and keep the one with the best *validation* accuracy
  (the score reads validation alone: ``train_loop.validation_accuracy_after``).
  Candidates of the same architecture (e.g. deepening a uniform-width MLP at
  different positions) train together as lanes of the rounds' own compiled
  segment program (same sampler, same convolution unrolling). Candidates
  beyond ``search.max_depth`` or ``search.max_params`` are skipped.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
from absl import logging

from jst.models import specs
from jst.ops import pytrees
from jst.run import context as context_lib
from jst.training import growth
from jst.training import pruning
from jst.training import train as train_lib
from jst.training import train_loop


@dataclasses.dataclass(frozen=True)
class Candidate:
    name: str
    op: str        # 'deepen' | 'widen'
    position: int  # deepen position or widened layer
    amount: int = 0


@dataclasses.dataclass(frozen=True)
class ProbedCandidate:
    """A candidate extension after its probe training: its validation accuracy, grown spec and state."""

    candidate: Candidate
    val_accuracy: float
    spec: specs.ModelSpec
    state: train_lib.TrainState

    def summary(self) -> dict[str, Any]:
        """What a record keeps of it (JSON)."""
        return {'name': self.candidate.name, 'val_accuracy': self.val_accuracy, 'architecture': self.spec.describe()}


@dataclasses.dataclass
class NextTicket:
    """The pruned and extended network for the next round, or (``state`` None) why there is none."""

    state: Optional[train_lib.TrainState]
    spec: Optional[specs.ModelSpec]
    grown_by: Optional[str]  # the extension's name ('none' for prune-and-continue)
    candidates: Optional[list[dict[str, Any]]] = None  # ``ProbedCandidate.summary()`` of each probed one
    probe_steps: int = 0  # training steps spent probing candidates (counted in the budget)
    stop_reason: Optional[str] = None  # why the lane stops here (``state`` is None)


def candidate_list(spec: specs.ModelSpec, search: Any) -> list[Candidate]:
    """Every extension the search considers for ``spec``."""
    out = [Candidate(f'deepen@{p}', 'deepen', p) for p in spec.deepen_positions] if search.deepen else []
    for layer in spec.widenable_layers:
        out += [Candidate(f'widen{layer}+{a}', 'widen', layer, int(a)) for a in search.widen_by]
    return out


def apply_candidate(cand: Candidate, state: train_lib.TrainState, spec: specs.ModelSpec, key: jax.Array,
                    options: Any) -> Any:
    """The ``expand.Expansion`` of ``cand`` applied to ``state``."""
    stats = state.batch_stats or None
    if cand.op == 'deepen':
        return growth.deepen(state.params, state.masks, spec, key, position=cand.position, batch_stats=stats,
                             options=options)
    return growth.widen(state.params, state.masks, spec, key, layer=cand.position, amount=cand.amount,
                        batch_stats=stats, options=options)


def evaluate_candidates(ctx: context_lib.RunContext, state: train_lib.TrainState, spec: specs.ModelSpec, key: jax.Array,
                        options: Any) -> list[ProbedCandidate]:
    """Probe-trains every candidate; returns them scored on validation only (the test split is never read)."""
    search, carry = ctx.plan.search, ctx.plan.carry_optimizer_state
    tx = ctx.trainer(spec).tx
    groups: dict[Any, list[tuple[Candidate, Any, train_lib.TrainState]]] = {}
    for i, cand in enumerate(candidate_list(spec, search)):
        grown = apply_candidate(cand, state, spec, jax.random.fold_in(key, i), options)
        if grown.spec.depth > search.max_depth or pytrees.count(grown.params) > search.max_params:
            continue
        groups.setdefault(grown.spec, []).append((cand, grown, growth.grown_state(state, grown, tx, carry)))
    results = []
    probe_key = jax.random.fold_in(key, 10_000)  # every candidate trains on the same batches
    for new_spec, members in groups.items():
        # The rounds' step runner over the candidates of one architecture as lanes: compiled once per architecture
        # and lane count, the same sampler and convolution unrolling as the rounds.
        states = members[0][2] if len(members) == 1 else pytrees.stack([m[2] for m in members])
        accs = train_loop.validation_accuracy_after(
            ctx.segment_fn(new_spec, len(members)), states, ctx.data, jnp.stack([probe_key] * len(members)),
            int(search.probe_steps), spe=ctx.steps_per_epoch)
        for (cand, grown, grown_st), acc in zip(members, accs):
            results.append(ProbedCandidate(cand, float(acc), grown.spec, grown_st))
    return results


def next_ticket(ctx: context_lib.RunContext, state: train_lib.TrainState, spec: specs.ModelSpec,
                round_index: int, lane: int = 0) -> NextTicket:
    """Prunes lane ``lane``'s trained network into this round's ticket and extends it by ``config.growth``
    (``GROWTH_POLICIES``) with the lane's growth key."""
    plan = ctx.plan
    params, masks = pruning.prune_params(plan.pruning, state.params, state.masks, round_index + 1)
    state = state.replace(masks=masks, params=params)
    key = jax.random.fold_in(ctx.key('growth', lane), round_index)
    if plan.growth not in GROWTH_POLICIES:
        raise ValueError(f'growth={plan.growth!r} is unknown; choose one of {sorted(GROWTH_POLICIES)}.')
    return GROWTH_POLICIES[plan.growth](ctx, state, spec, key, round_index)


def _continue(ctx: context_lib.RunContext, state: train_lib.TrainState, spec: specs.ModelSpec, key: jax.Array,
              round_index: int) -> NextTicket:
    """'none': prune and continue; the optimizer treatment applies as for growth."""
    del key, round_index
    if not ctx.plan.carry_optimizer_state:
        state = state.replace(opt_state=ctx.trainer(spec).tx.init(state.params))
    return NextTicket(state, spec, 'none')


def _deepen(ctx: context_lib.RunContext, state: train_lib.TrainState, spec: specs.ModelSpec, key: jax.Array,
            round_index: int) -> NextTicket:
    """'paper': one identity layer (or block) at ``grow_position``, as arXiv 2109.03862 grows."""
    del round_index
    plan = ctx.plan
    grown = growth.deepen(state.params, state.masks, spec, key, position=plan.grow_position,
                          batch_stats=state.batch_stats or None, options=plan.growth_options)
    where = 'end' if plan.grow_position < 0 else plan.grow_position
    return NextTicket(growth.grown_state(state, grown, ctx.trainer(spec).tx,
                                         plan.carry_optimizer_state), grown.spec, f'deepen@{where}')


def _search(ctx: context_lib.RunContext, state: train_lib.TrainState, spec: specs.ModelSpec, key: jax.Array,
            round_index: int) -> NextTicket:
    """'search': the candidate extension with the best validation accuracy after its probe."""
    scored = evaluate_candidates(ctx, state, spec, key, ctx.plan.growth_options)
    if not scored:
        return NextTicket(None, None, None,
                          stop_reason='budget: no candidate within search.max_depth / search.max_params')
    best = max(scored, key=lambda c: c.val_accuracy)
    logging.info('round %d candidates: %s -> %s', round_index,
                 ', '.join(f'{c.candidate.name}={c.val_accuracy:.4f}' for c in scored), best.candidate.name)
    return NextTicket(best.state, best.spec, best.candidate.name, [c.summary() for c in scored],
                      probe_steps=len(scored) * ctx.plan.search.probe_steps)


# How the juvenile search extends a ticket, by ``config.growth``: (ctx, pruned state, spec, key, round) -> next.
# A new policy is one function and one line here (and its name in jst.run.configuration.Growth).
GROWTH_POLICIES: dict[str, Callable[..., NextTicket]] = {'none': _continue, 'paper': _deepen, 'search': _search}
