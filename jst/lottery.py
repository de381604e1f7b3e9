"""Classic lottery-ticket search (iterative magnitude pruning, the "weight reset policy").

For rounds r = 0..N: train; record the early-stopping accuracies; prune
(``jst.pruning``); reset the survivors to their initial values theta_0 (or
rewind to step ``rewind_step`` of round 0); train again. Round 0 is the dense
network.

Controls (as OpenLTH's branches), run at every pruned round on the *same*
masks as the ticket: ``random_reinit`` (same mask, fresh random init) and
``random_prune`` (random mask with the same per-layer counts, theta_0).
"""

from __future__ import annotations

from typing import Any

import jax

from jst import checkpointing
from jst import context as context_lib
from jst import pruning
from jst import rounds
from jst import tickets

ArrayKey = checkpointing.ArrayKey


def run(ctx: context_lib.RunContext) -> list[dict[str, Any]]:
    """Runs (or resumes) the weight-reset search; returns the summary records.

    Progress moves through phases per round: ``'train'`` (the ticket), then ``'controls'``
    (one per control, on the same masks); the masks for the next round are computed right
    after the ticket's training. A checkpoint is written after every phase and inside trainings.
    """
    controls = pruning.control_names(ctx.config.control)
    with checkpointing.Journal(ctx.workdir, checkpointing.LotteryProgress(), ctx.config_dict(),
                               ctx.config.overwrite) as journal:
        if not journal.restore():
            spec, theta0, masks0 = tickets.start_network(ctx, 'lth')
            journal.arrays = {ArrayKey.THETA0: checkpointing.variables_to_storable(theta0),
                              ArrayKey.MASKS: checkpointing.to_storable(masks0)}
            journal.progress = checkpointing.LotteryProgress(
                spec=spec.to_dict(), cumulative={name: 0 for name in ('none',) + controls})
        while journal.progress.phase != 'done':
            if journal.progress.phase == 'train':
                _train_ticket(ctx, journal)
            if journal.progress.phase == 'controls':
                _run_controls(ctx, journal, controls)
        return journal.history.summary


def _theta0(journal: checkpointing.Journal) -> dict[str, Any]:
    return checkpointing.variables_from_storable(journal.arrays[ArrayKey.THETA0])


def _rewind_point(journal: checkpointing.Journal) -> dict[str, Any]:
    """The variables survivors are reset to: the rewind point when there is one, else theta_0."""
    if ArrayKey.REWIND in journal.arrays:
        return checkpointing.variables_from_storable(journal.arrays[ArrayKey.REWIND])
    return _theta0(journal)


def _masks(journal: checkpointing.Journal) -> Any:
    return checkpointing.masks_from_storable(journal.arrays[ArrayKey.MASKS], _theta0(journal)['params'])


def _train_ticket(ctx: context_lib.RunContext, journal: checkpointing.Journal) -> None:
    """Trains round r's ticket from theta_0 (or the rewind point), records it, prunes for round r + 1."""
    progress, config = journal.progress, ctx.config
    r, spec, masks = progress.round, progress.model_spec(), _masks(journal)

    def store_rewind(state) -> None:
        journal.arrays[ArrayKey.REWIND] = checkpointing.variables_to_storable(
            {'params': state.params, **({'batch_stats': state.batch_stats} if state.batch_stats else {})})

    state = ctx.new_state(spec, _rewind_point(journal) if r > 0 else _theta0(journal), masks)
    result = rounds.train_round(
        ctx, journal, spec, state, start=config.rewind_step if r > 0 else 0, label=f'lth round {r}',
        tag=f'round{r}/none', snapshot_at=config.rewind_step if r == 0 else 0, on_snapshot=store_rewind)
    progress.cumulative['none'] += result.steps
    rounds.record_round(ctx, journal, result, round_index=r, method='lth', control='none', spec=spec,
                        cumulative_steps=progress.cumulative['none'])
    if r < config.num_rounds:
        journal.arrays[ArrayKey.NEXT_MASKS] = checkpointing.to_storable(
            pruning.prune(pruning.PruningPlan.from_config(config), result.state.params, masks, r + 1))
    else:
        tickets.store_final(journal, spec, result.state)
    progress.phase, progress.control_index = 'controls', 0
    journal.save()


def _run_controls(ctx: context_lib.RunContext, journal: checkpointing.Journal, controls: tuple[str, ...]) -> None:
    """Round r's controls on the ticket's masks (none at round 0), then on to round r + 1 (or done)."""
    progress = journal.progress
    r, spec = progress.round, progress.model_spec()
    while r > 0 and progress.control_index < len(controls):
        control = controls[progress.control_index]
        key = jax.random.fold_in(ctx.keys['control'], r)
        if control == 'random_reinit':
            variables, masks = ctx.init_variables(spec, key), _masks(journal)
        else:  # 'random_prune'
            variables, masks = _rewind_point(journal), pruning.random_prune_masks(_masks(journal), key)
        result = rounds.train_round(ctx, journal, spec, ctx.new_state(spec, variables, masks),
                                    start=ctx.config.rewind_step, label=f'lth round {r} ({control})',
                                    tag=f'round{r}/{control}')
        progress.cumulative[control] += result.steps
        rounds.record_round(ctx, journal, result, round_index=r, method='lth', control=control, spec=spec,
                            cumulative_steps=progress.cumulative[control])
        progress.control_index += 1
        journal.save()
    if r < ctx.config.num_rounds:
        journal.arrays[ArrayKey.MASKS] = journal.arrays.pop(ArrayKey.NEXT_MASKS)
        progress.round, progress.phase = r + 1, 'train'
    else:
        progress.phase = 'done'
    journal.save()
