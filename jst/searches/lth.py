"""``method='lth'``, the classic lottery-ticket search (iterative magnitude pruning, the "weight reset policy").

For rounds r = 0..N: train; record the early-stopping accuracies; prune
(``jst.training.pruning``); reset the survivors to their initial values theta_0 (or
rewind to step ``rewind_step`` of round 0); train again. Round 0 is the dense
network.

Controls (as OpenLTH's branches), run at every pruned round on the *same*
masks as the ticket: ``random_reinit`` (same mask, fresh random init) and
``random_prune`` (random mask with the same per-layer counts, theta_0).
"""

from __future__ import annotations

from typing import Any, Callable

import jax

from jst.models import specs
from jst.run import checkpointing
from jst.run import context as context_lib
from jst.run import journal as journal_lib
from jst.searches import rounds
from jst.searches import tickets
from jst.training import progress as progress_lib
from jst.training import pruning

ArrayKey = checkpointing.ArrayKey


def run(ctx: context_lib.RunContext) -> list[dict[str, Any]]:
    """Runs (or resumes) the weight-reset search for every lane (seed) at once; returns the summary records.

    Progress moves through phases per round: ``'train'`` (the ticket), then ``'controls'``
    (one per control, on the same masks); the masks for the next round are computed right
    after the ticket's training. A checkpoint is written after every phase and inside trainings.
    All lanes share the architecture, so each training is one compiled program over the lanes.
    """
    controls = ctx.plan.controls
    with journal_lib.Journal(ctx.workdir, checkpointing.LotteryProgress(), ctx.config_dict(),
                             ctx.plan.overwrite) as journal:
        if not journal.restore():
            starts = {lane: tickets.start_network(ctx, 'lth', lane) for lane in ctx.lanes}
            journal.put_variables(ArrayKey.THETA0, {i: v for i, (_, v, _) in starts.items()})
            journal.put_masks(ArrayKey.MASKS, {i: m for i, (_, _, m) in starts.items()})
            journal.progress = checkpointing.LotteryProgress(
                spec=starts[0][0].to_dict(), cumulative={name: 0 for name in ('none',) + controls})
        while journal.progress.phase != 'done':
            if journal.progress.phase == 'train':
                _train_ticket(ctx, journal)
            if journal.progress.phase == 'controls':
                _run_controls(ctx, journal, controls)
        return journal.history.summary


def _rewind_point(journal: journal_lib.Journal, lane: int) -> dict[str, Any]:
    """The variables survivors are reset to: the rewind point when there is one, else theta_0."""
    return journal.variables(ArrayKey.REWIND if journal.has(ArrayKey.REWIND) else ArrayKey.THETA0, lane)


def _masks(journal: journal_lib.Journal, lane: int) -> Any:
    return journal.masks(ArrayKey.MASKS, lane, journal.variables(ArrayKey.THETA0, lane)['params'])


def _training_index(r: int, k: int, num_controls: int) -> int:
    """Weight reset's training order: round r's ticket (k = 0), then its controls (k = 1..); none at round 0."""
    return r + max(r - 1, 0) * num_controls + k


def _train_ticket(ctx: context_lib.RunContext, journal: journal_lib.Journal) -> None:
    """Trains round r's ticket of every lane from theta_0 (or the rewind point), records it, prunes for r + 1."""
    progress, plan, lanes = journal.progress, ctx.plan, ctx.lanes
    r, spec = progress.round, progress.model_spec()

    def store_rewind(states) -> None:
        journal.put_variables(ArrayKey.REWIND, {
            lane: {'params': st.params, **({'batch_stats': st.batch_stats} if st.batch_stats else {})}
            for lane, st in zip(lanes, states)})

    start_variables = lambda i: _rewind_point(journal, i) if r > 0 else journal.variables(ArrayKey.THETA0, i)
    states = [ctx.new_state(spec, start_variables(i), _masks(journal, i)) for i in lanes]
    progress_lib.at_training(_training_index(r, 0, len(plan.controls)))
    results = rounds.train_round(
        ctx, journal, spec, states, lanes, round_index=r, start=plan.rewind_step if r > 0 else 0,
        label=f'lth round {r}/{plan.num_rounds}',
        tag=f'round{r}/none', snapshot_at=plan.rewind_step if r == 0 else 0, on_snapshot=store_rewind)
    progress.cumulative['none'] += results[0].steps
    next_masks = {}
    for lane, result in zip(lanes, results):
        rounds.record_round(ctx, journal, result, lane=lane, round_index=r, method='lth', control='none',
                            spec=spec, cumulative_steps=progress.cumulative['none'])
        if r < plan.num_rounds:
            next_masks[lane] = pruning.prune(plan.pruning, result.state.params, result.state.masks, r + 1)  # as trained
    if r < plan.num_rounds:
        journal.put_masks(ArrayKey.NEXT_MASKS, next_masks)
    else:
        journal.store_final([(lane, spec, result.state) for lane, result in zip(lanes, results)])
    progress.phase, progress.control_index = 'controls', 0
    journal.save()


def _control_start(ctx: context_lib.RunContext, journal: journal_lib.Journal, control: str, spec: specs.ModelSpec,
                   lane: int, r: int) -> Any:
    """The state a control of lane ``lane`` trains from in round ``r``."""
    key = jax.random.fold_in(ctx.key('control', lane), r)
    variables, masks = CONTROL_STARTS[control](ctx, journal, spec, lane, key)
    return ctx.new_state(spec, variables, masks)


# The controls of a ticket (``config.control``; names in ``pruning.CONTROLS``): (ctx, journal, spec, lane, key) ->
# (variables, masks) the control trains from, at the ticket's per-layer counts.
CONTROL_STARTS: dict[str, Callable[..., tuple[Any, Any]]] = {
    'random_reinit': lambda ctx, journal, spec, lane, key: (ctx.init_variables(spec, key), _masks(journal, lane)),
    'random_prune': lambda ctx, journal, spec, lane, key: (
        _rewind_point(journal, lane), pruning.random_prune_masks(_masks(journal, lane), key)),
}


def _run_controls(ctx: context_lib.RunContext, journal: journal_lib.Journal, controls: tuple[str, ...]) -> None:
    """Round r's controls on the ticket's masks (none at round 0), then on to round r + 1 (or done)."""
    progress, lanes = journal.progress, ctx.lanes
    r, spec = progress.round, progress.model_spec()
    while r > 0 and progress.control_index < len(controls):
        control = controls[progress.control_index]
        states = [_control_start(ctx, journal, control, spec, lane, r) for lane in lanes]
        progress_lib.at_training(_training_index(r, 1 + progress.control_index, len(controls)))
        results = rounds.train_round(ctx, journal, spec, states, lanes, round_index=r, start=ctx.plan.rewind_step,
                                     label=f'lth round {r}/{ctx.plan.num_rounds} ({control})',
                                     tag=f'round{r}/{control}')
        progress.cumulative[control] += results[0].steps
        for lane, result in zip(lanes, results):
            rounds.record_round(ctx, journal, result, lane=lane, round_index=r, method='lth', control=control,
                                spec=spec, cumulative_steps=progress.cumulative[control])
        progress.control_index += 1
        journal.save()
    if r < ctx.plan.num_rounds:
        journal.promote(ArrayKey.NEXT_MASKS, ArrayKey.MASKS)
        progress.round, progress.phase = r + 1, 'train'
    else:
        progress.phase = 'done'
    journal.save()
