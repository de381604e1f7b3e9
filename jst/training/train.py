"""One masked training step and evaluation, with masks beside the parameters (not in the optimizer).

* ``TrainState``: step, params, batch_stats, masks and optimizer state.
* ``make_train_step``: one masked step; pruned weights stay exactly zero
  (their gradients and updates are masked and the weights re-masked).
* ``make_evaluate``: mean loss and accuracy over a padded, weighted split.
* ``Trainer`` / ``make_trainer``: the model, optimizer, batch size and input
  transform of one architecture.
* ``resolve_step_loop``: the one place that knows XLA:CPU runs convolutions
  inside loops slowly.

Loops over steps live in ``jst.training.train_loop``; rounds in ``jst.searches.rounds``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Literal, Optional

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jst.data import datasets as data_lib
from jst.models import networks
from jst.models import specs
from jst.ops import masks as masks_lib
from jst.ops import pytrees
from jst.training import parallel

Array = jax.Array
PyTree = Any
EVAL_CHUNK = 1000
Optimizer = Literal['adam', 'sgd']
StepLoop = Literal['auto', 'scan', 'python']
OPTIMIZERS: tuple[str, ...] = ('adam', 'sgd')
STEP_LOOPS: tuple[str, ...] = ('auto', 'scan', 'python')


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training. ``masks`` mirror ``params`` (None = unprunable); ``best``, when
    tracked (``config.prune_weights='best'``), holds {'params', 'batch_stats'} at the lowest validation loss."""

    step: Array
    params: PyTree
    batch_stats: PyTree
    masks: PyTree
    opt_state: PyTree
    best: PyTree = None


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


def make_optimizer(name: Optimizer, learning_rate: float, momentum: float = 0.0) -> optax.GradientTransformation:
    """``'adam'`` or ``'sgd'`` (with optional momentum)."""
    if name == 'adam':
        return optax.adam(learning_rate)
    if name == 'sgd':
        return optax.sgd(learning_rate, momentum=momentum or None)
    raise ValueError(f'optimizer must be one of {OPTIMIZERS}, not {name!r}.')


def create_train_state(variables: dict[str, Any], masks: PyTree,
                       tx: optax.GradientTransformation) -> TrainState:
    """A fresh state: masked params, new optimizer state, step 0."""
    params = masks_lib.apply_masks(variables['params'], masks)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      batch_stats=variables.get('batch_stats', {}), masks=masks,
                      opt_state=tx.init(params))


def track_best(state: TrainState, improved: Array) -> TrainState:
    """``state`` with ``best`` = its current params and batch_stats where ``improved`` (a new lowest validation
    loss); unchanged when ``best`` is not tracked (None)."""
    if state.best is None:
        return state
    now = {'params': state.params, 'batch_stats': state.batch_stats}
    return state.replace(best=jax.tree.map(lambda a, b: jnp.where(improved, a, b), now, state.best))


def cross_entropy(logits: Array, labels: Array) -> Array:
    """Per-example loss [N]."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


StepWithGrads = Callable[..., tuple[TrainState, dict[str, Array], PyTree]]  # (state, x, y) -> (+ dense grads)


def make_train_step(model: nn.Module, tx: optax.GradientTransformation, preprocess: Callable[[Array], Array],
                    in_round: Optional[Callable[..., Any]] = None) -> Callable[..., tuple[TrainState, Any]]:
    """(state, x uint8 [B,...], y [B][, t, levels]) -> (state, {'loss', 'accuracy'}). ``in_round``
    (``pruning.in_round_update``: gradual pruning, RigL) wraps the step where the round's step ``t`` and its
    sparsity ``levels`` [2] are given (the training loops give them; probes and diagnostics do not)."""
    masked_tx = masks_lib.keep_pruned_at_zero(tx)

    def step_with_grads(state: TrainState, x: Array, y: Array):
        inputs = preprocess(x)

        def loss_fn(params):
            if state.batch_stats:
                logits, updates = model.apply(pytrees.flax_variables(params, state.batch_stats), inputs,
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
        return new_state, {'loss': loss, 'accuracy': accuracy}, grads

    def train_step(state: TrainState, x: Array, y: Array, t: Optional[Array] = None, levels: Optional[Array] = None):
        if in_round is not None and t is not None:
            return in_round(step_with_grads, state, x, y, t, levels)
        return step_with_grads(state, x, y)[:2]

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
            logits = model.apply(pytrees.flax_variables(params, batch_stats), preprocess(cx), train=False)
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
    in_round: Optional[Callable[..., Any]] = None  # mask updates while a round trains (``pruning.IN_ROUND``)

    @property
    def train_step(self) -> Callable[..., tuple[TrainState, dict[str, Array]]]:
        return make_train_step(self.model, self.tx, self.preprocess, self.in_round)

    def evaluate(self, mesh: Optional[Any] = None, unroll: bool = False) -> Callable[..., tuple[Array, Array]]:
        return make_evaluate(self.model, self.preprocess, mesh, unroll)

    def init_variables(self, key: Array, input_shape: tuple[int, ...]) -> dict[str, Any]:
        return networks.init_module_variables(self.model, key, input_shape)


def make_trainer(spec: specs.ModelSpec, optimizer: Optimizer, learning_rate: float, momentum: float, batch_size: int,
                 dataset: str, in_round: Optional[Callable[..., Any]] = None, conv_form: str = 'auto') -> Trainer:
    """The Trainer of architecture ``spec`` (a ``jst.models.specs`` spec) for ``dataset``'s inputs; ``conv_form``:
    how its convolutions are computed (``jst.models.convolution``)."""
    return Trainer(networks.build_model(spec, conv_form), make_optimizer(optimizer, learning_rate, momentum),
                   batch_size, functools.partial(data_lib.preprocess, dataset=dataset), in_round)


BYTES_PER_PARAMETER = 28  # float32 params, 2 Adam moments, gradients, updates and a rewind copy; a bool mask; slack


def lane_memory_bytes(spec: specs.ModelSpec, input_shape: tuple[int, ...], batch_size: int) -> int:
    """An estimate of one lane's (seed's) memory in training: ``BYTES_PER_PARAMETER`` per parameter, plus float32
    module outputs for a training batch (forward and backward, x3) or an evaluation chunk, whichever is larger."""
    parameters, activations = networks.footprint(spec, input_shape)
    return BYTES_PER_PARAMETER * parameters + 4 * activations * max(3 * batch_size, EVAL_CHUNK)


def available_memory_bytes() -> Optional[int]:
    """Free memory of the first device (accelerators: its allocator's limit minus use; CPU: the host's
    ``MemAvailable``); None where unknown."""
    stats = jax.devices()[0].memory_stats() if jax.default_backend() != 'cpu' else None
    if stats and 'bytes_limit' in stats:
        return int(stats['bytes_limit']) - int(stats.get('bytes_in_use', 0))
    try:
        with open('/proc/meminfo') as f:
            fields = dict(line.split(':', 1) for line in f)
        return int(fields['MemAvailable'].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None


def steps_per_epoch(num_train: int, batch_size: int) -> int:
    return num_train // batch_size


def resolve_step_loop(step_loop: StepLoop, has_convolutions: bool) -> str:
    """'auto' -> 'python' for conv nets on CPU (XLA:CPU runs convolutions inside a ``scan`` ~15x
    slower than outside one), else 'scan'."""
    if step_loop == 'auto':
        return 'python' if has_convolutions and jax.default_backend() == 'cpu' else 'scan'
    if step_loop not in STEP_LOOPS:
        raise ValueError(f'step_loop must be one of {STEP_LOOPS}, not {step_loop!r}.')
    return step_loop
