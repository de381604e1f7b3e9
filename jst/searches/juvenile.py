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

from typing import Any, Optional

from jst.models import specs
from jst.run import checkpointing
from jst.run import context as context_lib
from jst.run import journal as journal_lib
from jst.searches import prune_and_grow
from jst.searches import rounds
from jst.searches import tickets
from jst.training import progress as progress_lib

ArrayKey = checkpointing.ArrayKey


def run(ctx: context_lib.RunContext) -> list[dict[str, Any]]:
    """Runs (or resumes) the recursive search for every lane (seed); returns the summary records.

    Each step trains the unfinished lanes of the lowest round that share one architecture, in one
    compiled program (with ``growth='paper'`` every lane, every round); lanes of the structure search
    that chose different structures train as separate groups. The state at the start of each
    lane's round (grown, pruned weights, masks, optimizer state and spec) is checkpointed, as is
    progress inside trainings.
    """
    with journal_lib.Journal(ctx.workdir, checkpointing.RecursiveProgress(), ctx.config_dict(),
                             ctx.plan.overwrite) as journal:
        if not journal.restore():
            states, lanes = {}, []
            for lane in ctx.lanes:
                spec, variables, masks = tickets.start_network(ctx, 'juvenile', lane, allow_empty_masks=True)
                states[lane] = ctx.new_state(spec, variables, masks)
                lanes.append(checkpointing.LaneProgress(spec=spec.to_dict()))
            journal.put_states(ArrayKey.ROUND_STATE, states)
            journal.progress = checkpointing.RecursiveProgress(lanes=lanes)
        while journal.progress.phase != 'done':
            _run_group(ctx, journal, next_group(journal.progress))
        return journal.history.summary


def next_group(progress: checkpointing.RecursiveProgress) -> list[int]:
    """The lanes to train next: the unfinished ones of the lowest round sharing the first one's spec."""
    alive = [i for i, lane in enumerate(progress.lanes) if not lane.done]
    r = min(progress.lanes[i].round for i in alive)
    first = next(i for i in alive if progress.lanes[i].round == r)
    return [i for i in alive if progress.lanes[i].round == r and progress.lanes[i].spec == progress.lanes[first].spec]


def _stop_reason(ctx: context_lib.RunContext, lane: checkpointing.LaneProgress) -> Optional[str]:
    if lane.round == ctx.plan.num_rounds:
        return 'num_rounds'
    if ctx.plan.growth == 'search' and lane.rounds_without_gain >= ctx.plan.search.patience:
        return f'patience: {lane.rounds_without_gain} rounds without validation gain'
    return None


def _run_group(ctx: context_lib.RunContext, journal: journal_lib.Journal, group: list[int]) -> None:
    """Trains one round of the lanes in ``group`` together, records it, and prunes and grows each for its
    next round (or stops it)."""
    progress = journal.progress
    r, spec = progress.lanes[group[0]].round, progress.lanes[group[0]].model_spec()
    tx = ctx.trainer(spec).tx
    states = [journal.state(ArrayKey.ROUND_STATE, i, tx) for i in group]
    progress_lib.at_training(r)
    label = f'juvenile round {r}/{ctx.plan.num_rounds}' + (
        f' (seeds {[ctx.seeds[i] for i in group]})' if len(group) < len(ctx.lanes) else '')
    results = rounds.train_round(ctx, journal, spec, states, group, round_index=r, label=label,
                                 tag=f'round{r}/lanes{"-".join(map(str, group))}')
    finals = []
    for i, result in zip(group, results):
        if _end_lane_round(ctx, journal, i, spec, result):
            finals.append((i, spec, result.state))
    if finals:
        journal.store_final(finals)
    progress.phase = 'done' if all(lane.done for lane in progress.lanes) else 'train'
    progress.round = min(lane.round for lane in progress.lanes)
    journal.save()


def _end_lane_round(ctx: context_lib.RunContext, journal: journal_lib.Journal, i: int, spec: specs.ModelSpec,
                    result: rounds.RoundResult) -> bool:
    """Records lane ``i``'s round and prepares its next one; True when the lane has stopped."""
    lane = journal.progress.lanes[i]
    r = lane.round
    lane.cumulative += result.steps
    if lane.best_val is None or result.best.val_accuracy > lane.best_val + 1e-9:
        lane.best_val, lane.rounds_without_gain = result.best.val_accuracy, 0
    else:
        lane.rounds_without_gain += 1
    stop_reason = _stop_reason(ctx, lane)
    grown_by, candidates, probe_steps = lane.grown_by, lane.candidates, 0
    if stop_reason is None:
        nxt = prune_and_grow.next_ticket(ctx, result.state, spec, r, i)
        if nxt.state is None:
            stop_reason = nxt.stop_reason
        else:
            journal.put_states(ArrayKey.ROUND_STATE, {i: nxt.state})
            lane.spec = nxt.spec.to_dict()
            lane.grown_by, lane.candidates, lane.round = nxt.grown_by, nxt.candidates, r + 1
            probe_steps = nxt.probe_steps
    rounds.record_round(ctx, journal, result, lane=i, round_index=r, method='juvenile', control='none', spec=spec,
                        cumulative_steps=lane.cumulative, growth=ctx.plan.growth, grown_by=grown_by,
                        candidates=candidates, stop_reason=stop_reason)
    lane.cumulative += probe_steps  # the search's probe training counts toward the next round's budget
    lane.done = stop_reason is not None
    return lane.done
