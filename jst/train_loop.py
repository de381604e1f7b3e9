"""Loops over training steps: compiled segments, resumable step ranges, evaluation records.

* ``make_segment_fn``: a contiguous run of steps inside one epoch as one
  ``lax.scan`` over device-resident data, batches drawn on device from a PRNG
  key; validation and test are evaluated inside the scan (``lax.cond``) every
  ``eval_every`` steps, so there is no host sync per step.
* ``make_replicated_segment_fn``: the same over N replicates (``vmap``).
* ``train_steps``: drives segments from global step ``start`` to ``stop``;
  the batch order is a pure function of (data key, global step), so training
  can be split or resumed anywhere and gives the same result.
* ``early_stopping``: the LTH paper's early-stopping iteration (minimum
  validation loss) and the accuracies at it.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from jst import parallel
from jst.train import DeviceData, TrainState, Trainer  # re-exported: the types these loops take

Array = jax.Array
PyTree = Any


DIVERGENCE_FACTOR = 1e3  # a segment's mean loss this many times the first one's: warn of divergence


class NonFiniteLossError(FloatingPointError):
    """Raised when the training loss becomes NaN or inf."""


def make_segment_fn(trainer: Trainer, num_train: int, mesh: Optional[Any] = None,
                    test_at_best: bool = True, step_loop: str = 'scan') -> Callable[..., Any]:
    """Jitted (state, data, key, epoch, pos, t0, total, eval_every, best_val, length) -> (state, metrics).

    Runs ``length`` steps (static) of epoch ``epoch`` from batch position
    ``pos``; global steps are ``t0 .. t0 + length - 1``. Metrics are per-step
    arrays [length]: train ``loss``/``accuracy`` and ``val_loss``, ``val_acc``,
    ``test_loss``, ``test_acc`` (NaN where not evaluated), plus the scalar
    ``best_val`` (lowest validation loss so far, carried between segments).
    With ``test_at_best`` the test split is evaluated only where the
    validation loss reaches a new minimum: the only points early stopping can
    report, at a third of the evaluation cost. With a ``mesh``, each batch is
    split across its devices (data parallelism). ``step_loop='python'`` runs
    the same jitted step from a Python loop (dispatch is asynchronous: still no
    host sync per step), for convolutions on CPU.
    """
    train_step, bsz = trainer.train_step, trainer.batch_size
    evaluate = trainer.evaluate(mesh, unroll=step_loop == 'python')
    nan2 = jnp.full((2,), jnp.nan)

    def step_with_eval(st, best, data, batch_idx, t, total, eval_every):
        """One train step on ``batch_idx``, then val (and test) evaluation if ``t`` is an eval point."""
        def evaluate_all(s, b):
            vl, va = evaluate(s.params, s.batch_stats, data.val_x, data.val_y, data.val_w)
            need_test = jnp.logical_or(vl < b, not test_at_best)
            test = jax.lax.cond(
                need_test, lambda q: jnp.stack(evaluate(q.params, q.batch_stats, data.test_x, data.test_y,
                                                        data.test_w)), lambda q: nan2, s)
            return jnp.concatenate([jnp.stack([vl, va]), test]), jnp.minimum(vl, b)

        x = parallel.shard_batch(data.train_x[batch_idx], mesh)
        y = parallel.shard_batch(data.train_y[batch_idx], mesh)
        st, m = train_step(st, x, y)
        do_eval = jnp.logical_or((t + 1) % eval_every == 0, t + 1 == total)
        ev, best = jax.lax.cond(do_eval, evaluate_all, lambda s, b: (jnp.full((4,), jnp.nan), b), st, best)
        return (st, best), (m['loss'], m['accuracy'], ev)

    def epoch_permutation(key, epoch):
        return jax.random.permutation(jax.random.fold_in(key, epoch), num_train)

    def as_metrics(loss, acc, ev, best_val):
        return {'loss': loss, 'accuracy': acc, 'val_loss': ev[:, 0], 'val_acc': ev[:, 1],
                'test_loss': ev[:, 2], 'test_acc': ev[:, 3], 'best_val': best_val}

    def segment(state, data, key, epoch, pos, t0, total, eval_every, best_val, length):
        perm = epoch_permutation(key, epoch)
        idx = jax.lax.dynamic_slice(perm, (pos * bsz,), (length * bsz,)).reshape(length, bsz)
        ts = t0 + jnp.arange(length)

        def body(carry, args):
            batch_idx, t = args
            return step_with_eval(*carry, data, batch_idx, t, total, eval_every)

        (state, best_val), (loss, acc, ev) = jax.lax.scan(body, (state, jnp.asarray(best_val, jnp.float32)),
                                                          (idx, ts))
        return state, as_metrics(loss, acc, ev, best_val)

    if step_loop == 'scan':
        return jax.jit(segment, static_argnames=('length',))

    permutation = jax.jit(epoch_permutation)
    one_step = jax.jit(lambda st, best, data, perm, i, t, total, eval_every: step_with_eval(
        st, best, data, jax.lax.dynamic_slice(perm, (i * bsz,), (bsz,)), t, total, eval_every))
    stack = jax.jit(lambda outs: tuple(jnp.stack(x) for x in zip(*outs)))

    def python_segment(state, data, key, epoch, pos, t0, total, eval_every, best_val, length):
        perm = permutation(key, epoch)
        best = jnp.asarray(best_val, jnp.float32)
        outs = []
        for i in range(length):
            (state, best), out = one_step(state, best, data, perm, pos + i, t0 + i, total, eval_every)
            outs.append(out)
        loss, acc, ev = stack(outs)
        return state, as_metrics(loss, acc, ev, best)

    return python_segment


def make_replicated_segment_fn(trainer: Trainer, num_train: int) -> Callable[..., Any]:
    """``make_segment_fn`` over N independent replicates in one compiled program (``jax.vmap``).

    ``state`` and ``key`` carry a leading replicate axis [N, ...] (different
    inits, masks and batch orders); data and step counters are shared. Metrics
    come back as [N, length].
    """
    segment = make_segment_fn(trainer, num_train).__wrapped__
    vmapped = jax.vmap(segment, in_axes=(0, None, 0, None, None, None, None, None, 0, None))
    return jax.jit(lambda state, data, key, epoch, pos, t0, total, eval_every, best_val, length:
                   vmapped(state, data, key, epoch, pos, t0, total, eval_every, best_val, length),
                   static_argnames=('length',))


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


@dataclasses.dataclass
class EvalRecord:
    step: int  # number of steps trained when evaluated (1-based)
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    test_loss: float
    test_accuracy: float


@dataclasses.dataclass
class EvalWindow:
    """Per-step train loss/accuracy since the last evaluation (carried across segments and resumes)."""

    losses: list = dataclasses.field(default_factory=list)
    accuracies: list = dataclasses.field(default_factory=list)


def _records_from_metrics(metrics: dict[str, np.ndarray], t0: int,
                          window: EvalWindow) -> tuple[list[EvalRecord], EvalWindow]:
    """Eval points of one segment; train metrics averaged over the steps since the previous one."""
    records = []
    losses = list(window.losses) + [float(x) for x in metrics['loss']]
    accs = list(window.accuracies) + [float(x) for x in metrics['accuracy']]
    offset = len(window.losses)  # index of this segment's first step in losses
    start = 0
    for i in np.nonzero(~np.isnan(metrics['val_loss']))[0]:
        end = offset + int(i) + 1
        records.append(EvalRecord(
            step=int(t0 + i + 1),
            train_loss=float(np.mean(np.asarray(losses[start:end], np.float32))),
            train_accuracy=float(np.mean(np.asarray(accs[start:end], np.float32))),
            val_loss=float(metrics['val_loss'][i]), val_accuracy=float(metrics['val_acc'][i]),
            test_loss=float(metrics['test_loss'][i]), test_accuracy=float(metrics['test_acc'][i])))
        start = end
    return records, EvalWindow(losses[start:], accs[start:])


def train_steps(segment_fn: Callable[..., Any], state: TrainState, data: DeviceData, key: Array,
                start: int, stop: int, *, spe: int, eval_every: int, total: Optional[int] = None,
                window: Optional[EvalWindow] = None, best_val: float = float('inf'),
                on_segment: Optional[Callable[[TrainState, list[EvalRecord], int, EvalWindow], None]] = None,
                label: str = '') -> tuple[TrainState, list[EvalRecord]]:
    """Trains global steps [start, stop) and returns the new state and its eval records.

    ``total`` is the length of the whole round (its last step is always
    evaluated). ``window`` carries the train metrics since the last
    evaluation when resuming. ``on_segment(state, records_so_far, step,
    window)`` is called after each segment (host side, e.g. for checkpoints);
    it is the only host sync.
    """
    total = stop if total is None else total
    first_loss, diverging = None, False
    records: list[EvalRecord] = []
    window = window or EvalWindow()
    t = start
    t_begin = time.time()
    for epoch, pos, length in plan_segments(start, stop, spe):
        state, metrics = segment_fn(state, data, key, epoch, pos, t, total, eval_every, best_val, length=length)
        metrics = jax.device_get(metrics)
        best_val = float(metrics['best_val'])
        if not np.all(np.isfinite(metrics['loss'])):
            bad = t + int(np.argmax(~np.isfinite(metrics['loss'])))
            raise NonFiniteLossError(f'{label}: non-finite training loss at step {bad} (epoch {epoch}). Lower '
                                     'config.learning_rate or check the data; a new learning rate is a new run: '
                                     'use another --workdir or pass --config.overwrite=True.')
        first_loss = float(metrics['loss'][0]) if first_loss is None else first_loss
        recent = float(np.mean(metrics['loss'][-10:]))
        if not diverging and recent > DIVERGENCE_FACTOR * max(first_loss, 1e-3):
            diverging = True
            logging.warning('%s: the training loss grew from %.3g to %.3g by step %d: training is diverging; '
                            'consider a lower config.learning_rate.', label, first_loss, recent, t + length)
        new, window = _records_from_metrics(metrics, t, window)
        records.extend(new)
        t += length
        if on_segment is not None:
            on_segment(state, records, t, window)
        if new:
            done = (t - start) / max(stop - start, 1)
            elapsed = time.time() - t_begin
            eta = elapsed / done - elapsed if done > 0 else math.nan
            r = new[-1]
            logging.info('%s step %d/%d  train_loss %.4f  val_acc %.4f  test_acc %.4f  (%.1fs, ETA %.0fs)',
                         label, t, total, r.train_loss, r.val_accuracy, r.test_accuracy, elapsed, eta)
    return state, records


def early_stopping(records: list[EvalRecord]) -> EvalRecord:
    """The eval point with minimum validation loss (first on ties); LTH's early-stopping iteration.

    (With ``test_at_best`` the test split is evaluated at every new minimum, so the
    record returned here always carries test metrics.)"""
    if not records:
        raise ValueError('No evaluation records: train at least one step.')
    return min(records, key=lambda r: (r.val_loss if np.isfinite(r.val_loss) else np.inf, r.step))
