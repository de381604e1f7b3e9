"""Jitted training with masks beside the parameters.

* ``TrainState``: step, params, batch_stats, masks and optimizer state.
* ``train_step``: one masked step; pruned weights stay exactly zero (their
  gradients and updates are masked and the weights re-masked).
* ``make_segment_fn``: a contiguous run of steps inside one epoch as one
  ``lax.scan`` over device-resident data, batches drawn on device from a PRNG
  key; validation and test are evaluated inside the scan (``lax.cond``) every
  ``eval_every`` steps, so there is no host sync per step.
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

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from jst import data as data_lib
from jst import masks as masks_lib
from jst import parallel

Array = jax.Array
PyTree = Any
EVAL_CHUNK = 1000


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training. ``masks`` mirror ``params`` (None = unprunable)."""

    step: Array
    params: PyTree
    batch_stats: PyTree
    masks: PyTree
    opt_state: PyTree


@flax.struct.dataclass
class DeviceData:
    """Whole splits on device. Images uint8 [N, H, W, C]; eval splits padded to EVAL_CHUNK."""

    train_x: Array
    train_y: Array
    val_x: Array
    val_y: Array
    val_w: Array  # float32 [N_pad]: 1 for real examples, 0 for padding
    test_x: Array
    test_y: Array
    test_w: Array


class NonFiniteLossError(FloatingPointError):
    """Raised when the training loss becomes NaN or inf."""


def _pad_to_chunk(split: data_lib.Split, chunk: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = len(split)
    pad = (-n) % chunk
    x = np.concatenate([split.images, np.zeros((pad, *split.images.shape[1:]), np.uint8)])
    y = np.concatenate([split.labels, np.zeros((pad,), np.int32)])
    w = np.concatenate([np.ones((n,), np.float32), np.zeros((pad,), np.float32)])
    return x, y, w


def device_data(dataset: data_lib.Dataset, sharding: Optional[Any] = None) -> DeviceData:
    """Puts all splits on device (uint8, ~4x smaller than float32)."""
    put = (lambda a: jax.device_put(a, sharding)) if sharding is not None else jnp.asarray
    vx, vy, vw = _pad_to_chunk(dataset.validation, EVAL_CHUNK) if len(dataset.validation) else (
        np.zeros((0, *dataset.train.images.shape[1:]), np.uint8), np.zeros((0,), np.int32),
        np.zeros((0,), np.float32))
    tx, ty, tw = _pad_to_chunk(dataset.test, EVAL_CHUNK)
    return DeviceData(put(dataset.train.images), put(dataset.train.labels),
                      put(vx), put(vy), put(vw), put(tx), put(ty), put(tw))


def make_preprocess(dataset: str) -> Callable[[Array], Array]:
    """uint8 images -> float32 model inputs (same transform as ``data.normalize_images``)."""
    if dataset == 'cifar10':
        mean, std = jnp.asarray(data_lib.CIFAR10_MEAN), jnp.asarray(data_lib.CIFAR10_STD)
        return lambda x: (x.astype(jnp.float32) / 255.0 - mean) / std
    return lambda x: x.astype(jnp.float32) / 255.0


def make_optimizer(name: str, learning_rate: float, momentum: float = 0.0) -> optax.GradientTransformation:
    """``'adam'`` or ``'sgd'`` (with optional momentum)."""
    if name == 'adam':
        return optax.adam(learning_rate)
    if name == 'sgd':
        return optax.sgd(learning_rate, momentum=momentum or None)
    raise ValueError(f"optimizer must be 'adam' or 'sgd', not {name!r}.")


def create_train_state(variables: dict[str, Any], masks: PyTree,
                       tx: optax.GradientTransformation) -> TrainState:
    """A fresh state: masked params, new optimizer state, step 0."""
    params = masks_lib.apply_masks(variables['params'], masks)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      batch_stats=variables.get('batch_stats', {}), masks=masks,
                      opt_state=tx.init(params))


def _variables(params: PyTree, batch_stats: PyTree) -> dict[str, Any]:
    return {'params': params, 'batch_stats': batch_stats} if batch_stats else {'params': params}


def cross_entropy(logits: Array, labels: Array) -> Array:
    """Per-example loss [N]."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def make_train_step(model: nn.Module, tx: optax.GradientTransformation,
                    preprocess: Callable[[Array], Array]) -> Callable[..., tuple[TrainState, dict[str, Array]]]:
    """(state, x uint8 [B,...], y [B]) -> (state, {'loss', 'accuracy'})."""
    masked_tx = masks_lib.keep_pruned_at_zero(tx)

    def train_step(state: TrainState, x: Array, y: Array):
        inputs = preprocess(x)

        def loss_fn(params):
            if state.batch_stats:
                logits, updates = model.apply(_variables(params, state.batch_stats), inputs,
                                              train=True, mutable=['batch_stats'])
                new_stats = updates['batch_stats']
            else:
                logits, new_stats = model.apply({'params': params}, inputs, train=True), state.batch_stats
            return jnp.mean(cross_entropy(logits, y)), (logits, new_stats)

        (loss, (logits, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = masked_tx.update(grads, state.opt_state, state.params, masks=state.masks)
        params = masks_lib.apply_masks(optax.apply_updates(state.params, updates), state.masks)
        new_state = state.replace(step=state.step + 1, params=params, batch_stats=new_stats,
                                  opt_state=opt_state)
        accuracy = jnp.mean(jnp.argmax(logits, -1) == y)
        return new_state, {'loss': loss, 'accuracy': accuracy}

    return train_step


def make_evaluate(model: nn.Module, preprocess: Callable[[Array], Array],
                  mesh: Optional[Any] = None, unroll: bool = False) -> Callable[..., tuple[Array, Array]]:
    """(params, batch_stats, x [Npad,...], y, w) -> (mean loss, accuracy) over the weighted examples."""

    def evaluate(params, batch_stats, x, y, w):
        chunks = x.shape[0] // EVAL_CHUNK
        xs = x.reshape(chunks, EVAL_CHUNK, *x.shape[1:])
        ys, ws = y.reshape(chunks, EVAL_CHUNK), w.reshape(chunks, EVAL_CHUNK)

        def one(args):
            cx, cy, cw = args
            cx, cy, cw = (parallel.shard_batch(a, mesh) for a in (cx, cy, cw))
            logits = model.apply(_variables(params, batch_stats), preprocess(cx), train=False)
            return (jnp.sum(cross_entropy(logits, cy) * cw),
                    jnp.sum((jnp.argmax(logits, -1) == cy) * cw))

        if unroll:  # XLA:CPU runs convolutions inside loops ~15x slower: unroll at trace time
            parts = [one((xs[i], ys[i], ws[i])) for i in range(chunks)]
            loss_sum, correct = jnp.stack([p[0] for p in parts]), jnp.stack([p[1] for p in parts])
        else:
            loss_sum, correct = jax.lax.map(one, (xs, ys, ws))
        n = jnp.maximum(jnp.sum(w), 1.0)
        return jnp.sum(loss_sum) / n, jnp.sum(correct) / n

    return evaluate


@dataclasses.dataclass(frozen=True)
class Trainer:
    """The compiled pieces of training for one architecture (reused across rounds)."""

    model: nn.Module
    tx: optax.GradientTransformation
    batch_size: int
    preprocess: Callable[[Array], Array]

    @property
    def train_step(self):
        return make_train_step(self.model, self.tx, self.preprocess)

    @property
    def evaluate(self):
        return make_evaluate(self.model, self.preprocess)

    def make_evaluate(self, mesh: Optional[Any] = None, unroll: bool = False):
        return make_evaluate(self.model, self.preprocess, mesh, unroll)


def steps_per_epoch(num_train: int, batch_size: int) -> int:
    return num_train // batch_size


def resolve_step_loop(step_loop: str, has_convolutions: bool) -> str:
    """'auto' -> 'python' for conv nets on CPU (XLA:CPU runs convolutions inside a ``scan`` ~15x
    slower than outside one), else 'scan'."""
    if step_loop == 'auto':
        return 'python' if has_convolutions and jax.default_backend() == 'cpu' else 'scan'
    if step_loop not in ('scan', 'python'):
        raise ValueError(f"step_loop must be 'auto', 'scan' or 'python', not {step_loop!r}.")
    return step_loop


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
    evaluate = trainer.make_evaluate(mesh, unroll=step_loop == 'python')
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


def stack_states(states: list[TrainState]) -> TrainState:
    """[N] TrainStates of the same architecture -> one TrainState with a leading replicate axis."""
    return jax.tree.map(lambda *xs: jnp.stack(xs), *states)


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
            raise NonFiniteLossError(f'{label}: non-finite training loss at step {bad} '
                                     f'(epoch {epoch}). Lower the learning rate or check the data; '
                                     'the last good checkpoint is kept.')
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
