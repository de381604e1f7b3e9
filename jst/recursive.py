"""The recursive juvenile search: grow the winning ticket, keep its weights, prune again.

For rounds r = 0..N: train the current network from its current weights
(never reset); record; then ``search.next_ticket`` prunes it (the round's
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

from jst import checkpointing
from jst import context as context_lib
from jst import rounds
from jst import search
from jst import tickets

ArrayKey = checkpointing.ArrayKey


def run(ctx: context_lib.RunContext) -> list[dict[str, Any]]:
    """Runs (or resumes) the recursive search; returns the summary records.

    The state at the start of each round (grown, pruned weights, masks, optimizer state and
    spec) is checkpointed, as is progress inside trainings.
    """
    with checkpointing.Journal(ctx.workdir, checkpointing.RecursiveProgress(), ctx.config_dict(),
                               ctx.config.overwrite) as journal:
        if not journal.restore():
            spec, variables, masks = tickets.start_network(ctx, 'juvenile', allow_empty_masks=True)
            journal.arrays = {ArrayKey.ROUND_STATE: checkpointing.state_to_storable(
                ctx.new_state(spec, variables, masks))}
            journal.progress = checkpointing.RecursiveProgress(spec=spec.to_dict())
        while journal.progress.phase != 'done':
            _run_round(ctx, journal)
        return journal.history.summary


def _stop_reason(ctx: context_lib.RunContext, progress: checkpointing.RecursiveProgress) -> Optional[str]:
    if progress.round == ctx.config.num_rounds:
        return 'num_rounds'
    if ctx.config.growth == 'search' and progress.rounds_without_gain >= ctx.config.search.patience:
        return f'patience: {progress.rounds_without_gain} rounds without validation gain'
    return None


def _run_round(ctx: context_lib.RunContext, journal: checkpointing.Journal) -> None:
    """Trains round ``progress.round``, records it, and prunes and grows for the next (or stops)."""
    progress = journal.progress
    r = progress.round
    spec = progress.model_spec()
    state = checkpointing.state_from_storable(journal.arrays[ArrayKey.ROUND_STATE], ctx.trainer(spec).tx)
    result = rounds.train_round(ctx, journal, spec, state, label=f'juvenile round {r}', tag=f'round{r}')
    progress.cumulative += result.steps
    if progress.best_val is None or result.best.val_accuracy > progress.best_val + 1e-9:
        progress.best_val, progress.rounds_without_gain = result.best.val_accuracy, 0
    else:
        progress.rounds_without_gain += 1
    stop_reason = _stop_reason(ctx, progress)
    grown_by, candidates = progress.grown_by, progress.candidates
    if stop_reason is None:
        nxt = search.next_ticket(ctx, result.state, spec, r)
        if nxt.state is None:
            stop_reason = nxt.grown_by
        else:
            journal.arrays[ArrayKey.ROUND_STATE] = checkpointing.state_to_storable(nxt.state)
            progress.spec = nxt.spec.to_dict()
            progress.grown_by, progress.candidates, progress.round = nxt.grown_by, nxt.candidates, r + 1
    rounds.record_round(ctx, journal, result, round_index=r, method='juvenile', control='none', spec=spec,
                        cumulative_steps=progress.cumulative, growth=ctx.config.growth, grown_by=grown_by,
                        candidates=candidates, stop_reason=stop_reason)
    if stop_reason is not None:
        progress.phase = 'done'
        tickets.store_final(journal, spec, result.state)
    journal.save()
