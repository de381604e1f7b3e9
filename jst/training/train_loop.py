"""Loops over training steps: compiled segments, resumable step ranges, evaluation records.

* ``make_segment_fn``: a contiguous run of steps inside one epoch as one
  ``lax.scan`` over device-resident data, batches drawn on device from a PRNG
  key; validation and test are evaluated inside the scan (``lax.cond``) every
  ``eval_every`` steps, so there is no host sync per step.
* ``make_replicated_segment_fn``: the same over N replicates (``vmap``).
* ``train_steps``: drives segments from global step ``start`` to ``stop``;
  the batch order is a pure function of (data key, global step), so training
  can be split or resumed anywhere and gives the same result.
Evaluation records and the early-stopping point: ``jst.training.early_stopping``.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import struct

from jst import errors
from jst.ops import pytrees
from jst.training import early_stopping
from jst.training import parallel
from jst.training import progress
from jst.training.train import DeviceData, TrainState, Trainer, track_best  # the types these loops take

Array = jax.Array
PyTree = Any
EvalRecord, EvalWindow = early_stopping.EvalRecord, early_stopping.EvalWindow
SegmentCallback = Callable[[TrainState, list[EvalRecord], int, EvalWindow], None]  # after each segment
LANE_AXIS = 'lanes'  # the vmap axis of seeds as lanes
LanesCallback = Callable[[TrainState, list[list[EvalRecord]], int, list[EvalWindow]], None]  # per lane




@struct.dataclass
class Span:
    """Where a segment sits, shared by every lane: batch position ``pos`` of epoch ``epoch``, first global step
    ``t0``; the round's ``total`` steps and ``eval_every`` (a round's last step is always evaluated); the
    round's sparsity ``levels`` [2] (start, end: what in-round pruning ramps between, ``pruning.round_levels``)."""

    epoch: Any
    pos: Any
    t0: Any
    total: Any
    eval_every: Any
    levels: Any = (0.0, 0.0)


class NonFiniteLossError(errors.UserError, FloatingPointError):
    """Raised when the training loss becomes NaN or inf."""


def make_segment_fn(trainer: Trainer, num_train: int, mesh: Optional[Any] = None,
                    test_at_best: bool = True, step_loop: str = 'scan', lanes: bool = False) -> Callable[..., Any]:
    """Jitted (state, data, key, span, best_val, length) -> (state, metrics).

    Runs ``length`` steps (static) of ``span.epoch`` from batch position
    ``span.pos``; global steps are ``span.t0 ..``. Metrics are per-step
    arrays [length]: train ``loss``/``accuracy`` and ``val_loss``, ``val_acc``,
    ``test_loss``, ``test_acc`` (NaN where not evaluated), plus the scalar
    ``best_val`` (lowest validation loss so far, carried between segments).
    With ``test_at_best`` the test split is evaluated only where the
    validation loss reaches a new minimum: the only points early stopping can
    report, at a third of the evaluation cost (over lanes: where any lane
    reaches one; the others report NaN there, as they would alone). With a ``mesh``, each batch is
    split across its devices (data parallelism). ``step_loop='python'`` runs
    the same jitted step from a Python loop (dispatch is asynchronous: still no
    host sync per step), for convolutions on CPU. ``lanes=True``: see
    ``make_replicated_segment_fn``.
    """
    train_step, bsz = trainer.train_step, trainer.batch_size
    evaluate = trainer.evaluate(mesh, unroll=step_loop == 'python')
    nan2 = jnp.full((2,), jnp.nan)

    def step_with_eval(st, best, data, batch_idx, t, total, eval_every, levels):
        """One train step on ``batch_idx``, then val (and test) evaluation if ``t`` is an eval point."""
        def evaluate_all(s, b):
            vl, va = evaluate(s.params, s.batch_stats, data.val_x, data.val_y, data.val_w)
            need_test = jnp.logical_or(vl < b, not test_at_best)
            # Over lanes, a per-lane predicate would make vmap turn the cond into a select that evaluates the
            # test split at every evaluation; one predicate for all lanes (any new minimum) keeps it a branch.
            any_need = jax.lax.psum(need_test.astype(jnp.int32), LANE_AXIS) > 0 if lanes else need_test
            test = jax.lax.cond(
                any_need, lambda q: jnp.stack(evaluate(q.params, q.batch_stats, data.test_x, data.test_y,
                                                       data.test_w)), lambda q: nan2, s)
            return jnp.concatenate([jnp.stack([vl, va]), jnp.where(need_test, test, nan2)]), jnp.minimum(vl, b)

        x = parallel.shard_batch(data.train_x[batch_idx], mesh)
        y = parallel.shard_batch(data.train_y[batch_idx], mesh)
        st, m = train_step(st, x, y, t, levels)
        do_eval = jnp.logical_or((t + 1) % eval_every == 0, t + 1 == total)
        ev, new_best = jax.lax.cond(do_eval, evaluate_all, lambda s, b: (jnp.full((4,), jnp.nan), b), st, best)
        return (track_best(st, new_best < best), new_best), (m['loss'], m['accuracy'], ev)

    def epoch_permutation(key, epoch):
        return jax.random.permutation(jax.random.fold_in(key, epoch), num_train)

    def as_metrics(loss, acc, ev, best_val):
        return {'loss': loss, 'accuracy': acc, 'val_loss': ev[..., 0], 'val_acc': ev[..., 1],
                'test_loss': ev[..., 2], 'test_acc': ev[..., 3], 'best_val': best_val}

    def segment(state, data, key, span, best_val, length):
        perm = epoch_permutation(key, span.epoch)
        idx = jax.lax.dynamic_slice(perm, (span.pos * bsz,), (length * bsz,)).reshape(length, bsz)
        ts = span.t0 + jnp.arange(length)

        def body(carry, args):
            batch_idx, t = args
            return step_with_eval(*carry, data, batch_idx, t, span.total, span.eval_every, span.levels)

        (state, best_val), (loss, acc, ev) = jax.lax.scan(body, (state, jnp.asarray(best_val, jnp.float32)),
                                                          (idx, ts))
        return state, as_metrics(loss, acc, ev, best_val)

    if lanes:  # a leading seed axis on state, key and best_val; data and the span shared
        vmapped = jax.vmap(segment, in_axes=(0, None, 0, None, 0, None), axis_name=LANE_AXIS)
        segment = lambda state, data, key, span, best_val, length: vmapped(state, data, key, span, best_val, length)
    if step_loop == 'scan':
        return jax.jit(segment, static_argnames=('length',))

    lane_axes = (lambda f, axes: jax.vmap(f, axes, axis_name=LANE_AXIS)) if lanes else (lambda f, _: f)
    permutation = jax.jit(lane_axes(epoch_permutation, (0, None)))
    one_step = jax.jit(lane_axes(lambda st, best, data, perm, i, t, total, eval_every, levels: step_with_eval(
        st, best, data, jax.lax.dynamic_slice(perm, (i * bsz,), (bsz,)), t, total, eval_every, levels),
        (0, 0, None, 0, None, None, None, None, None)))
    stack = jax.jit(lambda outs: tuple(jnp.stack(x, axis=1 if lanes else 0) for x in zip(*outs)))

    def python_segment(state, data, key, span, best_val, length):
        perm = permutation(key, span.epoch)
        best = jnp.asarray(best_val, jnp.float32)
        outs = []
        for i in range(length):
            (state, best), out = one_step(state, best, data, perm, span.pos + i, span.t0 + i, span.total,
                                          span.eval_every, span.levels)
            outs.append(out)
        loss, acc, ev = stack(outs)
        return state, as_metrics(loss, acc, ev, best)

    return python_segment


def make_replicated_segment_fn(trainer: Trainer, num_train: int, mesh: Optional[Any] = None,
                               test_at_best: bool = True, step_loop: str = 'scan') -> Callable[..., Any]:
    """``make_segment_fn`` over N replicates (seeds) in one program (``jax.vmap``): ``state``, ``key`` and
    ``best_val`` carry a leading axis [N, ...] (inits, masks, batch orders); data and step counters are shared.
    Metrics come back as [N, length] (``best_val`` [N])."""
    return make_segment_fn(trainer, num_train, mesh, test_at_best, step_loop, lanes=True)


def as_single_lane(segment_fn: Callable[..., Any]) -> Callable[..., Any]:
    """A ``make_segment_fn`` function (one network) with the signature of a replicated one over a
    single lane: ``state`` unbatched, ``key`` [1], ``best_val`` [1]; metrics come back as [1, length]."""
    def one_lane(state, data, keys, span, best_val, length):
        state, m = segment_fn(state, data, keys[0], span, best_val[0], length=length)
        return state, jax.tree.map(lambda x: jnp.asarray(x)[None], m)

    return one_lane


stack_lanes = pytrees.stack  # one state per lane -> one state with a leading lane axis [N]
unstack_lanes = pytrees.unstack  # (state, n) -> the n lanes' states


def plan_segments(start: int, stop: int, spe: int, breaks: tuple[int, ...] = ()) -> list[tuple[int, int, int]]:
    """[(epoch, pos, length)] covering global steps [start, stop), split at epoch ends and ``breaks``."""
    cuts = sorted({b for b in breaks if start < b < stop})
    segments, t = [], start
    for end in cuts + [stop]:
        while t < end:
            epoch, pos = divmod(t, spe)
            length = min(spe - pos, end - t)
            segments.append((epoch, pos, length))
            t += length
    return segments


def train_steps(segment_fn: Callable[..., Any], state: TrainState, data: DeviceData, key: Array,
                start: int, stop: int, *, spe: int, eval_every: int, total: Optional[int] = None,
                window: Optional[early_stopping.EvalWindow] = None, best_val: float = float('inf'),
                on_segment: Optional[SegmentCallback] = None, label: str = '',
                levels: tuple[float, float] = (0.0, 0.0)) -> tuple[TrainState, list[EvalRecord]]:
    """Trains global steps [start, stop) of one network (a ``make_segment_fn`` function) and returns the
    new state and its eval records; ``train_lanes`` with a single lane (same arguments)."""
    lane_callback = None if on_segment is None else (
        lambda st, recs, t, wins: on_segment(st, recs[0], t, wins[0]))
    state, records = train_lanes(as_single_lane(segment_fn), state, data, key[None], start, stop, spe=spe,
                                 eval_every=eval_every, total=total, windows=[window or early_stopping.EvalWindow()],
                                 best_vals=[best_val], on_segment=lane_callback, label=label, levels=levels)
    return state, records[0]


def train_lanes(segment_fn: Callable[..., Any], state: TrainState, data: DeviceData, keys: Array,
                start: int, stop: int, *, spe: int, eval_every: int, total: Optional[int] = None,
                windows: Optional[list[early_stopping.EvalWindow]] = None, best_vals: Optional[list[float]] = None,
                on_segment: Optional[LanesCallback] = None, label: str = '',
                seeds: Optional[Sequence[int]] = None, levels: tuple[float, float] = (0.0, 0.0),
                start_losses: Optional[Sequence[Optional[float]]] = None) -> tuple[TrainState, list[list[EvalRecord]]]:
    """Trains global steps [start, stop) of N lanes (seeds) at once and returns the new state and each
    lane's eval records.

    ``state`` and ``keys`` carry a leading lane axis [N] (a ``make_replicated_segment_fn`` function).
    ``total`` is the length of the whole round (its last step is always
    evaluated). ``windows`` carry each lane's train metrics since its last
    evaluation when resuming. ``on_segment(state, records_so_far, step,
    windows)`` is called after each segment (host side, e.g. for
    checkpoints); it is the only host sync. ``seeds`` name the lanes in errors. ``levels``: the round's
    sparsity at its start and end (in-round pruning's schedule, ``jst.training.pruning.IN_ROUND``).
    ``start_losses``: each lane's validation loss before the round, the reference of the one divergence rule
    (``early_stopping.diverged``; else the first evaluation's).
    """
    total = stop if total is None else total
    num_lanes = int(keys.shape[0])
    seeds = list(seeds) if seeds is not None else list(range(num_lanes))
    diverging = [False] * num_lanes
    start_losses = list(start_losses) if start_losses is not None else [None] * num_lanes
    records: list[list[early_stopping.EvalRecord]] = [[] for _ in range(num_lanes)]
    windows = list(windows) if windows is not None else [early_stopping.EvalWindow() for _ in range(num_lanes)]
    best = np.asarray(best_vals if best_vals is not None else [float('inf')] * num_lanes, np.float32)
    t = start
    t_begin = time.time()
    for epoch, pos, length in plan_segments(start, stop, spe):
        span = Span(epoch, pos, t, total, eval_every, np.asarray(levels, np.float32))
        state, metrics = segment_fn(state, data, keys, span, best, length=length)
        metrics = jax.device_get(metrics)
        best = np.asarray(metrics['best_val'], np.float32)
        loss = np.asarray(metrics['loss'])
        _check_finite(loss, t, epoch, label, seeds)
        new_any = False
        for lane in range(num_lanes):
            lane_metrics = {k: np.asarray(v)[lane] for k, v in metrics.items()}
            new, windows[lane] = early_stopping.records_from_metrics(lane_metrics, t, windows[lane])
            records[lane].extend(new)
            new_any = new_any or bool(new)
            if new and not diverging[lane] and early_stopping.diverged(records[lane], start_losses[lane]):
                diverging[lane] = True  # the rule of the records' ``diverged`` field, said as soon as it holds
                logging.warning('%s (seed %d): the training loss reached %.3g by step %d, over %g times the '
                                "round's starting loss: training is diverging; consider a lower "
                                'config.learning_rate.', label, seeds[lane], max(r.train_loss for r in records[lane]),
                                t + length, early_stopping.DIVERGENCE_FACTOR)
        t += length
        if on_segment is not None:
            on_segment(state, records, t, windows)
        if new_any:
            _log_progress(label, t, start, stop, total, t_begin, [r[-1] for r in records if r], seeds)
    return state, records


def validation_accuracy_after(segment_fn: Callable[..., Any], state: TrainState, data: DeviceData, keys: Array,
                              steps: int, *, spe: int) -> np.ndarray:
    """Validation accuracy [N] of N lanes after ``steps`` steps from ``state``: the short trainings that score a
    state (a search's probe of its candidates, the learning potential of a round's start) on the same step runner,
    sampler and convolution unrolling as the rounds (``segment_fn``: a replicated segment function, or
    ``as_single_lane`` of one). Steps run as global steps [0, ``steps``) of keys ``keys`` [N] (so equal keys give
    equal batches), without in-round mask updates; the only evaluation is of validation at the last step: the
    best validation loss starts at -inf, so with ``test_at_best`` the test split is never evaluated (without it,
    it is evaluated there and dropped), and the result reads validation alone."""
    if steps < 1:
        raise ValueError(f'steps={steps}: score a state after at least one training step.')
    best = np.full((int(keys.shape[0]),), -np.inf, np.float32)
    metrics: dict[str, Any] = {}
    t = 0
    for epoch, pos, length in plan_segments(0, steps, spe):
        span = Span(epoch, pos, t, steps, steps, np.zeros((2,), np.float32))
        state, metrics = segment_fn(state, data, keys, span, best, length=length)
        t += length
    return np.asarray(jax.device_get(metrics['val_acc']))[:, -1]


def _check_finite(loss: np.ndarray, t: int, epoch: int, label: str, seeds: Sequence[int]) -> None:
    """Raises ``NonFiniteLossError`` naming the first lane (seed) and step whose loss [N, L] is not finite."""
    bad = ~np.isfinite(loss)
    if bad.any():
        lane, i = (int(a[0]) for a in np.nonzero(bad))
        raise NonFiniteLossError(f'{label}: non-finite training loss at step {t + i} (epoch {epoch}, seed '
                                 f'{seeds[lane]}). Lower config.learning_rate or check the data; a new learning '
                                 'rate is a new run: use another --workdir or pass --config.overwrite=True.')


def _log_progress(label: str, t: int, start: int, stop: int, total: int, t_begin: float,
                  latest: list[early_stopping.EvalRecord], seeds: Sequence[int]) -> None:
    done = (t - start) / max(stop - start, 1)
    elapsed = time.time() - t_begin
    eta = elapsed / done - elapsed if done > 0 else math.nan
    def mean(name: str) -> float:  # over the lanes that have the value (test: only at new validation minima)
        values = [v for v in (getattr(r, name) for r in latest) if np.isfinite(v)]
        return float(np.mean(values)) if values else math.nan
    test = mean('test_accuracy')  # '-': not evaluated here (eval_test='at_best': only at new validation minima)
    who = f'mean of seeds {_seed_range(seeds)}, ' if len(latest) > 1 else f'seed {seeds[0]}, ' if seeds else ''
    logging.info('%s%s step %d/%d  train_loss %.4f  val_acc %.4f  test_acc %s  (%s%.1fs, ETA %.0fs%s)',
                 progress.run_prefix(), label, t, total, mean('train_loss'), mean('val_accuracy'),
                 f'{test:.4f}' if np.isfinite(test) else '-', who, elapsed, eta, progress.run_eta(t))


def _seed_range(seeds: Sequence[int]) -> str:
    """'42-44' for consecutive seeds, else '42, 50'."""
    seeds = list(seeds)
    consecutive = seeds == list(range(seeds[0], seeds[0] + len(seeds)))
    return f'{seeds[0]}-{seeds[-1]}' if consecutive and len(seeds) > 2 else ', '.join(map(str, seeds))
