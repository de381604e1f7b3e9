"""``method='juvenile'``, the recursive search: grow the winning ticket, keep its weights, prune again.

For rounds r = 0..N: train the current network from its current weights
(never reset); record; then ``prune_and_grow.next_ticket`` prunes it (the round's
level / IMP fraction) and extends its structure function-preservingly (the
paper's rule or the structure search). Stops at ``num_rounds``, after
``search.patience`` rounds without validation gain (search only), or when no
candidate fits ``search.max_depth`` / ``search.max_params``; the last record
says why. Optimizer moments of surviving weights carry over and new weights
start at zero (``optimizer_state_on_growth='carry'``), or the optimizer is
re-initialised (``'reset'``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

from jst.models import specs
from jst.run import checkpointing
from jst.run import context as context_lib
from jst.run import journal as journal_lib
from jst.run import records as records_lib
from jst.searches import prune_and_grow
from jst.searches import rounds
from jst.searches import tickets
from jst.training import progress as progress_lib

ArrayKey = checkpointing.ArrayKey


@dataclasses.dataclass(frozen=True)
class LaneProgress:
    """One lane (seed) between rounds: its next round and spec (lanes of the structure search may differ), and
    its search's stopping state."""

    round: int = 0
    spec: dict[str, Any] = dataclasses.field(default_factory=dict)
    done: bool = False
    best_val: Optional[float] = None
    rounds_without_gain: int = 0
    grown_by: Optional[str] = None
    candidates: Optional[list[dict[str, Any]]] = None
    cumulative: int = 0  # training steps so far (probes included)

    def model_spec(self) -> specs.ModelSpec:
        return specs.spec_from_config(self.spec)


def run(ctx: context_lib.RunContext) -> list[records_lib.RoundRecord]:
    """Runs (or resumes) the recursive search for every lane (seed); returns the summary records.

    Each stage (``Journal.once``) trains one round of the unfinished lanes of the lowest round that share one
    architecture, in one compiled program (with ``growth='paper'`` every lane, every round; lanes of the
    structure search that chose different structures train as separate groups), then prunes and grows each.
    The state each lane starts its next round from is checkpointed with the stage, as is progress inside it.
    """
    with journal_lib.Journal(ctx.workdir, 'juvenile', ctx.recorded_config(), ctx.plan.overwrite) as journal:
        journal.restore()
        lanes = [LaneProgress(**lane) for lane in journal.once('start', lambda: _start(ctx, journal))]
        while group := next_group(lanes):
            r = lanes[group[0]].round
            ended = journal.once(f'round {r}: lanes {"-".join(map(str, group))}',
                                 lambda: _run_group(ctx, journal, lanes, group))
            for i, lane in zip(group, ended):
                lanes[i] = LaneProgress(**lane)
        journal.finish()
        return journal.history.summary


def _start(ctx: context_lib.RunContext, journal: journal_lib.Journal) -> list[dict[str, Any]]:
    """Stores every lane's start state; returns each lane's progress (as dicts)."""
    states, lanes = {}, []
    for lane in ctx.lanes:
        spec, variables, masks = tickets.start_network(ctx, 'juvenile', lane, allow_empty_masks=True)
        states[lane] = ctx.new_state(spec, variables, masks)
        lanes.append(dataclasses.asdict(LaneProgress(spec=spec.to_dict())))
    journal.put_states(ArrayKey.ROUND_STATE, states)
    return lanes


def next_group(lanes: list[LaneProgress]) -> list[int]:
    """The lanes to train next: the unfinished ones of the lowest round sharing the first one's spec (none when
    every lane is done)."""
    alive = [i for i, lane in enumerate(lanes) if not lane.done]
    if not alive:
        return []
    r = min(lanes[i].round for i in alive)
    first = next(i for i in alive if lanes[i].round == r)
    return [i for i in alive if lanes[i].round == r and lanes[i].spec == lanes[first].spec]


def _stop_reason(ctx: context_lib.RunContext, lane: LaneProgress) -> Optional[str]:
    if lane.round == ctx.plan.num_rounds:
        return 'num_rounds'
    if ctx.plan.growth == 'search' and lane.rounds_without_gain >= ctx.plan.search.patience:
        return f'patience: {lane.rounds_without_gain} rounds without validation gain'
    return None


def _run_group(ctx: context_lib.RunContext, journal: journal_lib.Journal, lanes: list[LaneProgress],
               group: list[int]) -> list[dict[str, Any]]:
    """Trains one round of the lanes in ``group`` together, records it, and prunes and grows each for its
    next round (or stops it); returns their new progress (as dicts)."""
    r, spec = lanes[group[0]].round, lanes[group[0]].model_spec()
    tx = ctx.trainer(spec).tx
    states = [journal.state(ArrayKey.ROUND_STATE, i, tx) for i in group]
    progress_lib.at_training(r)
    label = f'juvenile round {r}/{ctx.plan.num_rounds}' + (
        f' (seeds {[ctx.seeds[i] for i in group]})' if len(group) < len(ctx.lanes) else '')
    results = rounds.train_round(ctx, journal, spec, states, group, round_index=r, label=label)
    ended = [_end_lane_round(ctx, journal, i, lanes[i], spec, result) for i, result in zip(group, results)]
    finals = [(i, spec, result.state) for i, lane, result in zip(group, ended, results) if lane.done]
    if finals:
        journal.store_final(finals)
    return [dataclasses.asdict(lane) for lane in ended]


def _end_lane_round(ctx: context_lib.RunContext, journal: journal_lib.Journal, i: int, lane: LaneProgress,
                    spec: specs.ModelSpec, result: rounds.RoundResult) -> LaneProgress:
    """Records lane ``i``'s round and stores the state of its next one; returns its new progress."""
    r, cumulative = lane.round, lane.cumulative + result.steps
    if lane.best_val is None or result.best.val_accuracy > lane.best_val + 1e-9:
        lane = dataclasses.replace(lane, best_val=result.best.val_accuracy, rounds_without_gain=0)
    else:
        lane = dataclasses.replace(lane, rounds_without_gain=lane.rounds_without_gain + 1)
    stop_reason = _stop_reason(ctx, lane)
    grown_by, candidates, probe_steps, nxt = lane.grown_by, lane.candidates, 0, None
    if stop_reason is None:
        nxt = prune_and_grow.next_ticket(ctx, result.state, spec, r, i)
        stop_reason = nxt.stop_reason if nxt.state is None else None
    rounds.record_round(ctx, journal, result, lane=i, round_index=r, method='juvenile', control='none', spec=spec,
                        cumulative_steps=cumulative, growth=ctx.plan.growth, grown_by=grown_by,
                        candidates=candidates, stop_reason=stop_reason)
    if stop_reason is not None:
        return dataclasses.replace(lane, cumulative=cumulative, done=True)
    journal.put_states(ArrayKey.ROUND_STATE, {i: nxt.state})
    # the search's probe training counts toward the next round's budget
    return dataclasses.replace(lane, round=r + 1, spec=nxt.spec.to_dict(), grown_by=nxt.grown_by,
                               candidates=nxt.candidates, cumulative=cumulative + nxt.probe_steps)
