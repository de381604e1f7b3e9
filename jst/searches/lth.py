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
from jst.run import records as records_lib
from jst.searches import rounds
from jst.searches import tickets
from jst.training import progress as progress_lib
from jst.training import pruning

ArrayKey = checkpointing.ArrayKey


def run(ctx: context_lib.RunContext) -> list[records_lib.RoundRecord]:
    """Runs (or resumes) the weight-reset search for every lane (seed) at once; returns the summary records.

    Each stage (``Journal.once``) is checkpointed when done and resumed inside its training; all lanes
    share the architecture, so each training is one compiled program over the lanes.
    """
    plan = ctx.plan
    with journal_lib.Journal(ctx.workdir, 'lth', ctx.recorded_config(), plan.overwrite) as journal:
        journal.restore()
        spec = specs.spec_from_config(journal.once('start', lambda: _start(ctx, journal)))
        steps = {name: 0 for name in ('none',) + plan.controls}  # cumulative training steps of each
        for r in range(plan.num_rounds + 1):
            steps['none'] += journal.once(f'round {r}: ticket',
                                          lambda: _train_ticket(ctx, journal, spec, r, steps['none']))
            for k, control in enumerate(plan.controls if r > 0 else ()):
                steps[control] += journal.once(f'round {r}: {control}', lambda: _train_control(
                    ctx, journal, spec, r, k, steps[control]))
        journal.finish()
        return journal.history.summary


def _start(ctx: context_lib.RunContext, journal: journal_lib.Journal) -> dict[str, Any]:
    """Stores every lane's theta_0 and round-0 masks; returns the architecture they share (its dict)."""
    starts = {lane: tickets.start_network(ctx, 'lth', lane) for lane in ctx.lanes}
    journal.put_variables(ArrayKey.THETA0, {i: v for i, (_, v, _) in starts.items()})
    journal.put_masks(ArrayKey.masks(0), {i: m for i, (_, _, m) in starts.items()})
    return starts[ctx.lanes[0]][0].to_dict()


def _rewind_point(journal: journal_lib.Journal, lane: int) -> dict[str, Any]:
    """The variables survivors are reset to: the rewind point when there is one, else theta_0."""
    return journal.variables(ArrayKey.REWIND if journal.has(ArrayKey.REWIND) else ArrayKey.THETA0, lane)


def _masks(journal: journal_lib.Journal, lane: int, r: int) -> Any:
    return journal.masks(ArrayKey.masks(r), lane, journal.variables(ArrayKey.THETA0, lane)['params'])


def _training_index(r: int, k: int, num_controls: int) -> int:
    """Weight reset's training order: round r's ticket (k = 0), then its controls (k = 1..); none at round 0."""
    return r + max(r - 1, 0) * num_controls + k


def _train_ticket(ctx: context_lib.RunContext, journal: journal_lib.Journal, spec: specs.ModelSpec, r: int,
                  steps_before: int) -> int:
    """Trains round r's ticket of every lane from theta_0 (or the rewind point), records it, and prunes it into
    round r + 1's masks (or keeps it as the final ticket); returns its training steps."""
    plan, lanes = ctx.plan, ctx.lanes

    def store_rewind(states) -> None:
        journal.put_variables(ArrayKey.REWIND, {
            lane: {'params': st.params, **({'batch_stats': st.batch_stats} if st.batch_stats else {})}
            for lane, st in zip(lanes, states)})

    start_variables = lambda i: _rewind_point(journal, i) if r > 0 else journal.variables(ArrayKey.THETA0, i)
    states = [ctx.new_state(spec, start_variables(i), _masks(journal, i, r)) for i in lanes]
    progress_lib.at_training(_training_index(r, 0, len(plan.controls)))
    results = rounds.train_round(
        ctx, journal, spec, states, lanes, round_index=r, start=plan.rewind_step if r > 0 else 0,
        label=f'lth round {r}/{plan.num_rounds}', snapshot_at=plan.rewind_step if r == 0 else 0,
        on_snapshot=store_rewind)
    for lane, result in zip(lanes, results):
        rounds.record_round(ctx, journal, result, lane=lane, round_index=r, method='lth', control='none',
                            spec=spec, cumulative_steps=steps_before + result.steps)
    if r < plan.num_rounds:  # pruned as trained; round r - 1's masks are done with (its controls ran)
        journal.put_masks(ArrayKey.masks(r + 1), {
            lane: pruning.prune(plan.pruning, result.state.params, result.state.masks, r + 1)
            for lane, result in zip(lanes, results)})
        journal.drop(ArrayKey.masks(r - 1))
    else:
        journal.store_final([(lane, spec, result.state) for lane, result in zip(lanes, results)])
    return results[0].steps


# The controls of a ticket (``config.control``; names in ``pruning.CONTROLS``): (ctx, journal, spec, lane, round,
# key) -> (variables, masks) the control trains from, at the ticket's per-layer counts.
CONTROL_STARTS: dict[str, Callable[..., tuple[Any, Any]]] = {
    'random_reinit': lambda ctx, journal, spec, lane, r, key: (ctx.init_variables(spec, key),
                                                              _masks(journal, lane, r)),
    'random_prune': lambda ctx, journal, spec, lane, r, key: (
        _rewind_point(journal, lane), pruning.random_prune_masks(_masks(journal, lane, r), key)),
}


def _train_control(ctx: context_lib.RunContext, journal: journal_lib.Journal, spec: specs.ModelSpec, r: int,
                   k: int, steps_before: int) -> int:
    """Trains and records round r's control number ``k`` of every lane, on the ticket's masks; returns its steps."""
    control, lanes = ctx.plan.controls[k], ctx.lanes
    keys = [jax.random.fold_in(ctx.key('control', lane), r) for lane in lanes]
    states = [ctx.new_state(spec, *CONTROL_STARTS[control](ctx, journal, spec, lane, r, key))
              for lane, key in zip(lanes, keys)]
    progress_lib.at_training(_training_index(r, 1 + k, len(ctx.plan.controls)))
    results = rounds.train_round(ctx, journal, spec, states, lanes, round_index=r, start=ctx.plan.rewind_step,
                                 label=f'lth round {r}/{ctx.plan.num_rounds} ({control})')
    for lane, result in zip(lanes, results):
        rounds.record_round(ctx, journal, result, lane=lane, round_index=r, method='lth', control=control,
                            spec=spec, cumulative_steps=steps_before + result.steps)
    return results[0].steps
