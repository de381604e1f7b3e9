"""What every method shares: data on device, keys, one training round, one record.

``Experiment`` is built once per run from the config; ``train_round`` trains a
(params, masks) pair of a given spec for one round and returns the final state,
its evaluation records and the early-stopping point.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import time
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from jst import checkpointing
from jst import configuration
from jst import data as data_lib
from jst import juvenility
from jst import masks as masks_lib
from jst import models
from jst import parallel
from jst import reporting
from jst import train as train_lib

PyTree = Any


@dataclasses.dataclass
class Experiment:
    config: ml_collections.ConfigDict
    workdir: str
    dataset: data_lib.Dataset
    data: train_lib.DeviceData
    input_shape: tuple[int, ...]
    steps_per_round: int
    steps_per_epoch: int
    eval_every: int
    keys: dict[str, jax.Array]
    summary: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    metrics: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    checkpointer: Optional[checkpointing.RunCheckpointer] = None
    mesh: Optional[Any] = None  # data-parallel mesh (None: one device)
    writer: Optional[Any] = None  # clu metric writer (TensorBoard), optional
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)    # JSON progress of the driver
    arrays: dict[str, Any] = dataclasses.field(default_factory=dict)  # storable arrays of the driver
    _segment_fns: dict[Any, Callable[..., Any]] = dataclasses.field(default_factory=dict)
    _eval_fns: dict[Any, Callable[..., Any]] = dataclasses.field(default_factory=dict)
    _executor: Optional[concurrent.futures.ThreadPoolExecutor] = None

    def background(self) -> concurrent.futures.ThreadPoolExecutor:
        """One worker thread for work that overlaps training (pure functions of a fixed state)."""
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix='jst-diagnostics')
        return self._executor

    @property
    def num_train(self) -> int:
        return len(self.dataset.train)

    def trainer(self, spec: models.ModelSpec) -> train_lib.Trainer:
        c = self.config
        return train_lib.Trainer(models.build_model(spec),
                                 train_lib.make_optimizer(c.optimizer, c.learning_rate, c.momentum),
                                 c.batch_size, train_lib.make_preprocess(c.dataset))

    def step_loop(self, spec: models.ModelSpec) -> str:
        """'scan' or 'python' for this architecture (see ``train.resolve_step_loop``)."""
        return train_lib.resolve_step_loop(self.config.step_loop, not isinstance(spec, models.MLPSpec))

    def compiled(self, name: str, spec: models.ModelSpec, build: Callable[[], Callable[..., Any]]):
        """``build()`` once per (name, architecture); the cached function afterwards."""
        if (name, spec) not in self._eval_fns:
            self._eval_fns[(name, spec)] = build()
        return self._eval_fns[(name, spec)]

    def eval_fn(self, spec: models.ModelSpec) -> Callable[..., Any]:
        """Jitted (params, batch_stats, x, y, w) -> (loss, accuracy) for this architecture."""
        unroll = self.step_loop(spec) == 'python'
        return self.compiled('eval', spec, lambda: jax.jit(self.trainer(spec).make_evaluate(unroll=unroll)))

    def segment_fn(self, spec: models.ModelSpec) -> Callable[..., Any]:
        """Compiled once per architecture and reused across rounds."""
        if spec not in self._segment_fns:
            loop = self.step_loop(spec)
            self._segment_fns[spec] = train_lib.make_segment_fn(
                self.trainer(spec), self.num_train, self.mesh, test_at_best=self.config.eval_test == 'at_best',
                step_loop=loop)
        return self._segment_fns[spec]


def load_experiment_data(config: ml_collections.ConfigDict) -> data_lib.Dataset:
    ds = data_lib.load_dataset(config.dataset, manual_dir=config.manual_dir or None,
                               data_dir=config.data_dir or None, backend=config.data_backend,
                               validation_size=config.validation_size, split_seed=config.split_seed,
                               train_limit=config.train_limit or None)
    if config.permute_pixels:
        perm = lambda s: data_lib.Split(data_lib.permute_pixels(s.images, config.split_seed), s.labels)
        ds = dataclasses.replace(ds, name=f'{ds.name}_permuted', train=perm(ds.train),
                                 validation=perm(ds.validation), test=perm(ds.test))
    return ds


def make_experiment(config: ml_collections.ConfigDict, workdir: str,
                    dataset: Optional[data_lib.Dataset] = None) -> Experiment:
    """Loads data (unless given), checks it against the config and derives keys."""
    dataset = dataset or load_experiment_data(config)
    configuration.validate_against_data(config, len(dataset.train))
    spe = train_lib.steps_per_epoch(len(dataset.train), config.batch_size)
    steps = configuration.resolve_steps(config, len(dataset.train))
    if config.rewind_step >= steps:
        raise configuration.ConfigError(
            f'config.rewind_step={config.rewind_step} must be smaller than the {steps} steps per round.')
    eval_every = config.eval_every if config.eval_every > 0 else spe
    mesh = parallel.make_mesh(config.num_devices)
    if mesh is not None and config.batch_size % mesh.size:
        raise configuration.ConfigError(f'config.batch_size={config.batch_size} must be divisible by the '
                                        f'{mesh.size} devices of config.num_devices={config.num_devices}.')
    root = jax.random.key(config.seed)
    names = ('init', 'data', 'prune', 'control', 'growth')
    keys = dict(zip(names, jax.random.split(root, len(names))))
    data = train_lib.device_data(dataset, parallel.replicated(mesh) if mesh is not None else None)
    return Experiment(config, workdir, dataset, data, tuple(dataset.train.images.shape[1:]), steps, spe,
                      eval_every, keys, mesh=mesh)


def fraction_and_params_remaining(params: PyTree, masks: PyTree) -> tuple[float, int]:
    """(kept / prunable weights, kept prunable + all unprunable parameters)."""
    stats = masks_lib.sparsity_stats(masks)
    return stats['fraction_remaining'], stats['kept'] + masks_lib.count_nonprunable(params, masks)


@dataclasses.dataclass
class RoundResult:
    state: train_lib.TrainState
    records: list[train_lib.EvalRecord]
    best: train_lib.EvalRecord
    steps: int
    seconds: float
    start: Optional[dict[str, float]] = None  # val/test loss and accuracy before the first step


# --------------------------------------------------------------------------
# Checkpointed progress
# --------------------------------------------------------------------------
def state_to_storable(state: train_lib.TrainState) -> dict[str, Any]:
    return {'step': np.asarray(state.step), 'params': checkpointing.to_storable(state.params),
            'batch_stats': checkpointing.to_storable(state.batch_stats),
            'masks': checkpointing.to_storable(state.masks),
            'opt_state': checkpointing.opt_state_to_storable(state.opt_state)}


def state_from_storable(stored: dict[str, Any], tx) -> train_lib.TrainState:
    params = checkpointing.from_storable(stored['params'])
    return train_lib.TrainState(
        step=jnp.asarray(stored['step'], jnp.int32), params=params,
        batch_stats=checkpointing.from_storable(stored.get('batch_stats')),
        masks=checkpointing.masks_from_storable(stored.get('masks'), params),
        opt_state=checkpointing.opt_state_from_storable(stored['opt_state'], tx.init(params)))


def variables_to_storable(variables: dict[str, Any]) -> dict[str, Any]:
    return {k: checkpointing.to_storable(v) for k, v in variables.items()}


def variables_from_storable(stored: dict[str, Any]) -> dict[str, Any]:
    out = {'params': checkpointing.from_storable(stored['params'])}
    if stored.get('batch_stats'):
        out['batch_stats'] = checkpointing.from_storable(stored['batch_stats'])
    return out


def save_progress(exp: Experiment) -> None:
    """Checkpoints the driver's progress (meta + arrays) with the history so far."""
    if exp.checkpointer is None:
        return
    exp.meta['summary'], exp.meta['metrics'] = exp.summary, exp.metrics
    exp.checkpointer.save(json.loads(json.dumps(exp.meta)), exp.arrays)


def restore_progress(exp: Experiment) -> bool:
    """Loads the newest checkpoint into ``exp`` (meta, arrays, history); False if there is none."""
    if exp.checkpointer is None:
        return False
    restored = exp.checkpointer.restore_latest()
    if restored is None:
        return False
    exp.meta, exp.arrays = restored
    exp.summary, exp.metrics = list(exp.meta.get('summary', [])), list(exp.meta.get('metrics', []))
    logging.info('Resuming from checkpoint: round %s, phase %s, step %s.', exp.meta.get('round'),
                 exp.meta.get('phase'), (exp.meta.get('training') or {}).get('step', 0))
    return True


def train_round(exp: Experiment, spec: models.ModelSpec, state: train_lib.TrainState, *,
                start: int = 0, stop: Optional[int] = None, label: str = '', tag: Optional[str] = None,
                snapshot_at: int = 0, on_snapshot=None) -> RoundResult:
    """Trains ``state`` (of architecture ``spec``) over global steps [start, stop) of a round.

    With a ``tag``, progress is checkpointed every ``checkpoint_every_epochs``
    epochs, and a checkpoint taken inside this same training (same tag)
    resumes it. ``on_snapshot(state)`` is called once at step ``snapshot_at``
    (the rewind point), with the snapshot saved with the progress.
    """
    stop = exp.steps_per_round if stop is None else stop
    tx = exp.trainer(spec).tx
    records: list[train_lib.EvalRecord] = []
    window = train_lib.EvalWindow()
    t = start
    progress = exp.meta.get('training')
    if tag is not None and progress and progress.get('tag') == tag:
        state = state_from_storable(exp.arrays['train_state'], tx)
        t = int(progress['step'])
        records = [train_lib.EvalRecord(**r) for r in progress['records']]
        window = train_lib.EvalWindow(**progress['window'])
    every = max(int(exp.config.checkpoint_every_epochs), 0)
    latest = {'window': window, 'saved_at': time.time()}
    start_eval = (progress or {}).get('start_eval') if t != start else evaluate_start(exp, spec, state)
    # Start-of-round diagnostics (pure functions of the start state) run on a background thread
    # while the round trains, so their compilation (new for every grown architecture) overlaps
    # the training (benchmarks/bench_juvenility.py measures what that saves).
    pending = None
    if t == start and exp.config.juvenility and start_eval is not None:
        args = (exp, spec, state, start_eval['val_accuracy'])
        if exp.config.juvenility_background:
            pending = exp.background().submit(start_diagnostics, *args)
        else:  # on this thread: the training waits for all of it
            start_eval.update(start_diagnostics(*args))
            start_eval['juvenility_wait_seconds'] = start_eval['juvenility_seconds']

    def join_diagnostics():
        nonlocal pending
        if pending is not None:
            t_wait = time.time()
            start_eval.update(pending.result())
            start_eval['juvenility_wait_seconds'] = time.time() - t_wait
            pending = None

    def on_segment(st, new_records, step, win):
        latest['window'] = win
        if tag is None or every == 0 or step % exp.steps_per_epoch or step >= stop:
            return
        if (step // exp.steps_per_epoch) % every:
            return
        if time.time() - latest['saved_at'] < exp.config.checkpoint_min_interval_s:
            return
        latest['saved_at'] = time.time()
        join_diagnostics()
        exp.meta['training'] = {'tag': tag, 'step': step, 'window': dataclasses.asdict(win),
                                'start_eval': start_eval,
                                'records': [dataclasses.asdict(r) for r in records + new_records]}
        exp.arrays['train_state'] = state_to_storable(st)
        save_progress(exp)

    state = parallel.replicate(state, exp.mesh)
    t0 = time.time()
    segments = [(t, stop)]
    if snapshot_at and t < snapshot_at < stop:
        segments = [(t, snapshot_at), (snapshot_at, stop)]
    for a, b in segments:
        state, new = train_lib.train_steps(
            exp.segment_fn(spec), state, exp.data, exp.keys['data'], a, b, spe=exp.steps_per_epoch,
            eval_every=exp.eval_every, total=exp.steps_per_round, window=latest['window'], label=label,
            best_val=min([r.val_loss for r in records], default=float('inf')),
            on_segment=on_segment)
        records.extend(new)
        if b == snapshot_at and on_snapshot is not None:
            on_snapshot(state)
    exp.meta['training'] = None
    exp.arrays.pop('train_state', None)
    join_diagnostics()
    if exp.config.juvenility and start_eval is not None:
        t_diag = time.time()
        start_eval['juvenility_end'] = juvenility_summary(exp, spec, state)
        end_seconds = time.time() - t_diag
        start_eval['juvenility_seconds'] = start_eval.get('juvenility_seconds', 0.0) + end_seconds
        start_eval['juvenility_wait_seconds'] = start_eval.get('juvenility_wait_seconds', 0.0) + end_seconds
    return RoundResult(state, records, train_lib.early_stopping(records) if records else None,
                       stop - start, time.time() - t0, start_eval)


def load_ticket(exp: Experiment) -> Optional[tuple[models.ModelSpec, dict[str, Any], Any]]:
    """(spec, variables, masks) of the final ticket of run ``config.init_from``; None when unset.

    ``init_from_weights``: 'trained' (its final weights), 'initial' (its theta_0; LTH runs
    only) or 'random' (a fresh init of the same structure with this run's seed).
    """
    source = exp.config.init_from
    if not source:
        return None
    ck = checkpointing.RunCheckpointer(source)
    try:
        restored = ck.restore_latest()
    finally:
        ck.close()
    if restored is None or restored[0].get('phase') != 'done' or 'final' not in restored[1]:
        raise configuration.ConfigError(f'config.init_from={source!r} holds no finished run (no final ticket in '
                                        'its checkpoints); let that run finish first.')
    meta, arrays = restored
    spec = models.spec_from_config(meta['final_spec'])
    trained = variables_from_storable(arrays['final'])
    masks = checkpointing.masks_from_storable(arrays['final'].get('masks'), trained['params'])
    how = exp.config.init_from_weights
    if how == 'trained':
        variables = trained
    elif how == 'initial':
        if 'theta0' not in arrays:
            raise configuration.ConfigError(f'config.init_from_weights=initial needs a weight-reset (lth) run; '
                                            f'{source!r} has no theta_0 (grown networks have none).')
        variables = variables_from_storable(arrays['theta0'])
    else:
        variables = models.init_variables(spec, exp.keys['init'], exp.input_shape)
    expected = models.init_variables(spec, jax.random.key(0), exp.input_shape)
    shapes = lambda t: jax.tree.map(jnp.shape, t)
    if shapes(expected['params']) != shapes(variables['params']):
        raise configuration.ConfigError(f'The ticket in {source!r} does not fit this dataset\'s inputs '
                                        f'{exp.input_shape}.')
    logging.info('Starting from the %s weights of the ticket in %s (%s).', how, source, spec.describe())
    return spec, variables, masks


def store_final(exp: Experiment, spec: models.ModelSpec, state: train_lib.TrainState) -> None:
    """Keeps the final trained ticket in the checkpoint (for ``init_from``)."""
    exp.arrays['final'] = {'params': checkpointing.to_storable(state.params),
                           'batch_stats': checkpointing.to_storable(state.batch_stats),
                           'masks': checkpointing.to_storable(state.masks)}
    exp.meta['final_spec'] = models.spec_to_dict(spec)


def _probe_batch(exp: Experiment) -> tuple[jax.Array, jax.Array]:
    n = min(int(exp.config.juvenility_probe_size), exp.num_train)
    return exp.data.train_x[:n], exp.data.train_y[:n]


def juvenility_summary(exp: Experiment, spec: models.ModelSpec, state: train_lib.TrainState) -> dict[str, Any]:
    """Juvenility diagnostics of ``state`` on the fixed probe batch (the first training examples)."""
    unroll = exp.step_loop(spec) == 'python'
    c = exp.config
    diagnostics = exp.compiled('diag', spec, lambda: juvenility.make_diagnostics(
        spec, train_lib.make_preprocess(c.dataset), num_minibatches=c.juvenility_minibatches,
        hutchinson_samples=c.juvenility_hutchinson_samples, rho=c.juvenility_rho, unroll=unroll))
    x, y = _probe_batch(exp)
    diag = diagnostics(state.params, state.batch_stats, state.masks, x, y, jax.random.key(0))
    return juvenility.summarize(diag)


def start_diagnostics(exp: Experiment, spec: models.ModelSpec, state: train_lib.TrainState,
                      start_val_accuracy: float) -> dict[str, Any]:
    """Diagnostics and learning potential of a round's start state (run on the background thread)."""
    t0 = time.time()
    out = {'juvenility': juvenility_summary(exp, spec, state),
           'learning_potential': learning_potential(exp, spec, state, start_val_accuracy)}
    out['juvenility_seconds'] = time.time() - t0
    return out


def learning_potential(exp: Experiment, spec: models.ModelSpec, state: train_lib.TrainState,
                       start_val_accuracy: float) -> float:
    """Validation-accuracy gain after ``learning_potential_steps`` steps from ``state`` (fixed batches).

    Runs the jitted train step from a Python loop on batches fixed by a numpy seed: cheap to
    compile for every new architecture, and the same batches for every round and method.
    """
    steps = int(exp.config.learning_potential_steps)
    if steps <= 0:
        return float('nan')
    step = exp.compiled('step', spec, lambda: jax.jit(exp.trainer(spec).train_step))
    bsz = exp.config.batch_size
    idx = np.random.default_rng(999).integers(0, exp.num_train, (steps, bsz))
    for i in range(steps):
        batch = jnp.asarray(idx[i])
        state, _ = step(state, exp.data.train_x[batch], exp.data.train_y[batch])
    d = exp.data
    _, acc = exp.eval_fn(spec)(state.params, state.batch_stats, d.val_x, d.val_y, d.val_w)
    return float(acc) - start_val_accuracy


def evaluate_start(exp: Experiment, spec: models.ModelSpec, state: train_lib.TrainState) -> dict[str, float]:
    """Validation and test loss/accuracy of ``state`` before training (forgetting after prune/grow/reset)."""
    fn, d = exp.eval_fn(spec), exp.data
    vl, va = fn(state.params, state.batch_stats, d.val_x, d.val_y, d.val_w)
    tl, ta = fn(state.params, state.batch_stats, d.test_x, d.test_y, d.test_w)
    return {'val_loss': float(vl), 'val_accuracy': float(va), 'test_loss': float(tl), 'test_accuracy': float(ta)}


def make_record(exp: Experiment, *, round_index: int, method: str, control: str,
                spec: models.ModelSpec, result: RoundResult, cumulative_steps: int,
                **extra: Any) -> dict[str, Any]:
    """One ``summary.json`` record (the schema in ``reporting.SUMMARY_FIELDS`` plus extras)."""
    state = result.state
    fraction, params_remaining = fraction_and_params_remaining(state.params, state.masks)
    final = result.records[-1]
    record = {
        'round': round_index, 'method': method, 'control': control,
        'variant': exp.config.name or method,
        'dataset': exp.dataset.name, 'seed': int(exp.config.seed),
        'architecture': spec.describe(), 'fraction_remaining': fraction,
        'params_remaining': params_remaining,
        'val_accuracy': result.best.val_accuracy, 'test_accuracy': result.best.test_accuracy,
        'best_step': result.best.step, 'cumulative_steps': cumulative_steps,
        'val_loss': result.best.val_loss, 'test_loss': result.best.test_loss,
        'final_val_accuracy': final.val_accuracy, 'final_test_accuracy': final.test_accuracy,
        'steps': result.steps, 'seconds': round(result.seconds, 3),
        'start_val_accuracy': (result.start or {}).get('val_accuracy'),
        'start_test_accuracy': (result.start or {}).get('test_accuracy'),
        'juvenility': ({'start': result.start.get('juvenility'), 'end': result.start.get('juvenility_end'),
                        'learning_potential': result.start.get('learning_potential'),
                        'seconds': result.start.get('juvenility_seconds'),
                        'wait_seconds': result.start.get('juvenility_wait_seconds')}
                       if result.start and 'juvenility' in result.start else None),
        'spec': models.spec_to_dict(spec), 'data_backend': exp.dataset.backend,
        'layers': {k: list(v) for k, v in masks_lib.sparsity_stats(state.masks)['layers'].items()},
    }
    record.update(extra)
    return record


def log_round(exp: Experiment, record: dict[str, Any], result: RoundResult) -> None:
    """Appends the round to summary.json / metrics.jsonl and prints its line."""
    exp.summary.append(record)
    tags = {'round': record['round'], 'method': record['method'], 'control': record['control'],
            'seed': record['seed'], 'variant': record['variant']}
    if result.start:
        start = {k: result.start[k] for k in ('val_loss', 'val_accuracy', 'test_loss', 'test_accuracy')}
        exp.metrics.append({**tags, 'step': 0, 'train_loss': None, 'train_accuracy': None, **start})
    for r in result.records:
        exp.metrics.append({**tags, **dataclasses.asdict(r)})
    reporting.write_summary(exp.workdir, exp.summary)
    reporting.write_metrics(exp.workdir, exp.metrics)
    reporting.write_round_scalars(exp.writer, record, [dataclasses.asdict(r) for r in result.records])
    print(reporting.round_line(record), flush=True)
