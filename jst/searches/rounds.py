"""One round of a search: train a (params, masks) pair to the round's end, checkpointing inside it,
with the start-of-round evaluation and diagnostics; and its record.

``train_round`` is what both searches call for every training (the ticket,
controls); inside a stage of the journal (``Journal.once``) it checkpoints every
``checkpoint_every_epochs`` under the stage's name, and a checkpoint taken inside
the same stage resumes it.
``record_round`` turns the result into a ``summary.json`` record and writes
the records.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Optional, Sequence

import jax

from jst.models import specs
from jst.run import checkpointing
from jst.run import context as context_lib
from jst.run import journal as journal_lib
from jst.run import records as records_lib
from jst.searches import diagnostics
from jst.training import early_stopping
from jst.training import pruning
from jst.training import train_loop

TrainState = train_loop.TrainState


@dataclasses.dataclass
class RoundResult:
    state: TrainState
    records: list[early_stopping.EvalRecord]
    best: early_stopping.EvalRecord
    steps: int
    seconds: float
    start: Optional[records_lib.StartMeasures] = None  # val/test loss and accuracy before the first step, diagnostics


def evaluate_start(ctx: context_lib.RunContext, spec: specs.ModelSpec, state: TrainState) -> records_lib.StartMeasures:
    """Validation and test loss/accuracy of ``state`` before training (forgetting after prune/grow/reset)."""
    fn, d = ctx.eval_fn(spec), ctx.data
    vl, va = fn(state.params, state.batch_stats, d.val_x, d.val_y, d.val_w)
    tl, ta = fn(state.params, state.batch_stats, d.test_x, d.test_y, d.test_w)
    return {'val_loss': float(vl), 'val_accuracy': float(va), 'test_loss': float(tl), 'test_accuracy': float(ta)}


class _StartDiagnostics:
    """Start-of-round diagnostics: on the background thread (overlapping the training) or here."""

    def __init__(self, ctx: context_lib.RunContext, spec: specs.ModelSpec, state: TrainState,
                 start_eval: records_lib.StartMeasures):
        self._start_eval, self._pending = start_eval, None
        args = (ctx, spec, state, start_eval['val_accuracy'])
        if ctx.plan.diagnostics.background:
            self._pending = ctx.background().submit(diagnostics.start_of_round, *args)
        else:  # on this thread: the training waits for all of it
            start_eval.update(diagnostics.start_of_round(*args))
            start_eval['juvenility_wait_seconds'] = start_eval['juvenility_seconds']

    def join(self) -> None:
        if self._pending is not None:
            t_wait = time.time()
            self._start_eval.update(self._pending.result())
            self._start_eval['juvenility_wait_seconds'] = time.time() - t_wait
            self._pending = None


def _checkpoint_due(ctx: context_lib.RunContext, step: int, stop: int, last_saved: float) -> bool:
    """Whether to checkpoint inside a training after global step ``step``."""
    every, spe = max(ctx.plan.checkpoint_every_epochs, 0), ctx.steps_per_epoch
    if every == 0 or step % spe or step >= stop or (step // spe) % every:
        return False
    return time.time() - last_saved >= ctx.plan.checkpoint_min_interval_s


def train_round(ctx: context_lib.RunContext, journal: Optional[journal_lib.Journal], spec: specs.ModelSpec,
                states: Sequence[TrainState], lanes: Sequence[int], *, round_index: int, start: int = 0,
                stop: Optional[int] = None, label: str = '', snapshot_at: int = 0,
                on_snapshot: Optional[Callable[[list[TrainState]], None]] = None) -> list[RoundResult]:
    """Trains ``states`` (one per lane in ``lanes``, all of architecture ``spec``) together over global
    steps [start, stop) of a round, in one compiled program; one result per lane.

    Run inside a stage of ``journal`` (``Journal.once``) it checkpoints under that stage and resumes there;
    with no journal it does neither. ``on_snapshot(states)`` is called once at step ``snapshot_at`` (the rewind
    point); what it stores in the journal is saved with the progress. The batch order is ``data_keys(ctx, lanes,
    round_index)``'s: every training of one round (a ticket and its controls) sees the same order.
    """
    stop = ctx.steps_per_round if stop is None else stop
    lanes = list(lanes)
    n = len(lanes)
    records: list[list[early_stopping.EvalRecord]] = [[] for _ in lanes]
    windows, t = [early_stopping.EvalWindow() for _ in lanes], start
    stage = journal.running if journal is not None else None
    progress = journal.training if stage is not None else None
    stacked = None
    if progress is not None and progress.stage == stage and progress.lanes == lanes:
        stacked = journal.training_state(ctx.trainer(spec).tx)
        t, windows = int(progress.step), [early_stopping.EvalWindow(**w) for w in progress.windows]
        records = [[early_stopping.EvalRecord(**r) for r in lane] for lane in progress.records]
    start_evals = (progress.start_evals if t != start else
                   [evaluate_start(ctx, spec, st) for st in states])
    pending = []
    if t == start and ctx.plan.diagnostics.enabled:
        pending = [_StartDiagnostics(ctx, spec, st, ev) for st, ev in zip(states, start_evals) if ev is not None]
    latest = {'windows': windows, 'saved_at': time.time()}

    def on_segment(st, new_records, step, wins):
        latest['windows'] = wins
        if stage is None or not _checkpoint_due(ctx, step, stop, latest['saved_at']):
            return
        latest['saved_at'] = time.time()
        for p in pending:
            p.join()
        journal.save_training(checkpointing.TrainingProgress(
            stage=stage, step=step, lanes=lanes, windows=[dataclasses.asdict(w) for w in wins],
            start_evals=start_evals, records=[[dataclasses.asdict(r) for r in old + new]
                                              for old, new in zip(records, new_records)]),
            st if n > 1 else train_loop.stack_lanes([st]))

    if stacked is None:  # one lane trains without the lane axis (``RunContext.segment_fn``)
        if ctx.plan.prune_weights == 'best':  # track the weights of the lowest validation loss
            states = [st.replace(best={'params': st.params, 'batch_stats': st.batch_stats}) for st in states]
        state = train_loop.stack_lanes(states) if n > 1 else states[0]
    else:
        state = stacked if n > 1 else train_loop.unstack_lanes(stacked, 1)[0]
    state = ctx.replicate(state)
    keys, seeds = data_keys(ctx, lanes, round_index), [ctx.seeds[lane] for lane in lanes]
    levels = pruning.round_levels(ctx.plan.pruning, round_index)  # in-round pruning's schedule
    t0 = time.time()
    segments = [(t, snapshot_at), (snapshot_at, stop)] if snapshot_at and t < snapshot_at < stop else [(t, stop)]
    for a, b in segments:
        state, new = train_loop.train_lanes(
            ctx.segment_fn(spec, n), state, ctx.data, keys, a, b, spe=ctx.steps_per_epoch,
            eval_every=ctx.eval_every, total=ctx.steps_per_round, windows=latest['windows'], label=label,
            best_vals=[min([r.val_loss for r in lane], default=float('inf')) for lane in records],
            on_segment=on_segment, seeds=seeds, levels=levels,
            start_losses=[(ev or {}).get('val_loss') for ev in start_evals])
        for lane_records, lane_new in zip(records, new):
            lane_records.extend(lane_new)
        if b == snapshot_at and on_snapshot is not None:
            on_snapshot(_lane_states(state, n))
    if journal is not None:
        journal.end_training()
    for p in pending:
        p.join()
    final_states = _lane_states(state, n)
    if ctx.plan.prune_weights == 'best':  # the round's network is its early-stopped one
        final_states = [st.replace(params=st.best['params'], batch_stats=st.best['batch_stats'], best=None)
                        for st in final_states]
    seconds = time.time() - t0
    if ctx.plan.diagnostics.enabled:
        for st, ev in zip(final_states, start_evals):
            if ev is not None:
                _end_diagnostics(ctx, spec, st, ev)
    return [RoundResult(st, recs, early_stopping.early_stopping(recs) if recs else None, stop - start, seconds, ev)
            for st, recs, ev in zip(final_states, records, start_evals)]


def data_keys(ctx: context_lib.RunContext, lanes: Sequence[int], round_index: int) -> jax.Array:
    """[len(lanes)] data keys of round ``round_index``: with ``config.data_order='per_round'`` the lane's data
    key folded with the round (round 0 keeps the plain key, so a one-round run is unchanged), with ``'replay'``
    the plain key in every round (each round replays round 0's batch order)."""
    keys = ctx.keys_of('data', lanes)
    if ctx.plan.data_order == 'replay' or round_index == 0:
        return keys
    return jax.vmap(lambda k: jax.random.fold_in(k, round_index))(keys)


def _lane_states(state: TrainState, n: int) -> list[TrainState]:
    """Each lane's state of a training state (with a lane axis unless ``n`` is 1)."""
    return [state] if n == 1 else train_loop.unstack_lanes(state, n)


def _end_diagnostics(ctx: context_lib.RunContext, spec: specs.ModelSpec, state: TrainState,
                     start_eval: records_lib.StartMeasures) -> None:
    t_diag = time.time()
    start_eval['juvenility_end'] = diagnostics.summary(ctx, spec, state)
    seconds = time.time() - t_diag
    start_eval['juvenility_seconds'] = start_eval.get('juvenility_seconds', 0.0) + seconds
    start_eval['juvenility_wait_seconds'] = start_eval.get('juvenility_wait_seconds', 0.0) + seconds


def record_round(ctx: context_lib.RunContext, journal: journal_lib.Journal, result: RoundResult, *,
                 lane: int, round_index: int, method: str, control: str, spec: specs.ModelSpec, cumulative_steps: int,
                 **extra: Any) -> records_lib.RoundRecord:
    """Builds the round's record, adds it to the journal's history, rewrites the record files and
    TensorBoard, prints its line; returns it."""
    state = result.state
    record = records_lib.make_record(
        round_index=round_index, method=method, control=control, variant=ctx.plan.name or method,
        dataset=ctx.dataset.name, permute_pixels=ctx.dataset.permuted_pixels,
        seed=ctx.seeds[lane], data_backend=ctx.dataset.backend, spec=spec,
        params=state.params, masks=state.masks, best=result.best, final=result.records[-1],
        steps=result.steps, seconds=result.seconds, start=result.start, cumulative_steps=cumulative_steps,
        diverged=early_stopping.diverged(result.records, (result.start or {}).get('val_loss')), **extra)
    evals = [dataclasses.asdict(r) for r in result.records]
    journal.history.add_round(record, result.start, evals)
    journal.history.write(ctx.workdir)
    records_lib.write_round_scalars(journal.writer, record, evals)
    print(records_lib.round_line(record), flush=True)
    return record
