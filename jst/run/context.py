"""The run context: what every search reads and nothing it writes.

``RunContext`` holds the run's typed plan (``plans.SearchPlan``; the ``ConfigDict`` stays with the driver),
the dataset (host and device copies), the
seeds of the run (``config.seed .. config.seed + num_seeds - 1``, one *lane*
each) and their PRNG keys (lane i's keys are exactly those of a one-seed run
of seed ``config.seed + i``), the data-parallel mesh, the compiled functions of each
architecture (``compile_cache``: built once, reused across rounds, thread-safe) and one background thread
for work that overlaps training. Checkpointed progress lives in
``journal.Journal``, not here. Use it as a context manager (the thread
is shut down on exit).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections

from jst.data import datasets as data_lib
from jst.models import specs
from jst.run import compile_cache
from jst.run import configuration
from jst.run import data_checks
from jst.run import plans
from jst.training import parallel
from jst.training import pruning
from jst.training import train as train_lib
from jst.training import train_loop

KEY_NAMES = ('init', 'data', 'prune', 'control', 'growth')


@dataclasses.dataclass
class RunContext:
    plan: plans.SearchPlan  # what the searches read of the config, typed
    workdir: str
    dataset: data_lib.Dataset
    data: train_lib.DeviceData
    input_shape: tuple[int, ...]
    steps_per_round: int
    steps_per_epoch: int
    eval_every: int
    lane_keys: list[dict[str, jax.Array]]  # per lane (seed): {name: key} for KEY_NAMES
    mesh: Optional[Any] = None  # data-parallel mesh (None: one device)
    data_identity: dict[str, Any] = dataclasses.field(default_factory=dict)  # data.fingerprint of ``dataset``
    recorded: dict[str, Any] = dataclasses.field(default_factory=dict)  # the config as checkpoints record it
    cache: compile_cache.CompileCache = dataclasses.field(default_factory=compile_cache.CompileCache)
    _executor: Optional[concurrent.futures.ThreadPoolExecutor] = None

    def __enter__(self) -> RunContext:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Waits for and shuts down the background thread."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def background(self) -> concurrent.futures.ThreadPoolExecutor:
        """One worker thread for work that overlaps training (pure functions of a fixed state)."""
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix='jst-background')
        return self._executor

    def recorded_config(self) -> dict[str, Any]:
        """The config as plain JSON-able dicts, with the data's identity (``data``: what checkpoints record, so
        that a resume or ``init_from`` on other data is refused)."""
        return {**self.recorded, 'data': self.data_identity}

    @property
    def seeds(self) -> tuple[int, ...]:
        """The seed of each lane."""
        return tuple(self.plan.training.first_seed + i for i in range(len(self.lane_keys)))

    @property
    def lanes(self) -> tuple[int, ...]:
        return tuple(range(len(self.lane_keys)))

    def key(self, name: str, lane: int) -> jax.Array:
        """Lane ``lane``'s PRNG key ``name`` (one of ``KEY_NAMES``)."""
        return self.lane_keys[lane][name]

    def keys_of(self, name: str, lanes: Sequence[int]) -> jax.Array:
        """[len(lanes)] stacked keys ``name`` of ``lanes``."""
        return jnp.stack([self.key(name, lane) for lane in lanes])

    @property
    def num_train(self) -> int:
        return len(self.dataset.train)

    def compiled(self, kind: compile_cache.CompiledKind, spec: specs.ModelSpec, build: Callable[[], Any]) -> Any:
        """``build()`` once per (kind, architecture), from any thread; the cached result afterwards."""
        return self.cache.get(kind, spec, build)

    def trainer(self, spec: specs.ModelSpec) -> train_lib.Trainer:
        t = self.plan.training
        in_round = pruning.in_round_update(self.plan.pruning, self.steps_per_round)
        return self.compiled('trainer', spec, lambda: train_lib.make_trainer(
            spec, t.optimizer, t.learning_rate, t.momentum, t.batch_size, t.dataset, in_round, t.conv_form))

    def unroll(self, spec: specs.ModelSpec) -> bool:
        """Whether loops over ``spec``'s convolutions are unrolled (``train.resolve_step_loop``)."""
        return train_lib.resolve_step_loop(self.plan.training.step_loop, spec.has_convolutions) == 'python'

    def eval_fn(self, spec: specs.ModelSpec) -> Callable[..., Any]:
        """Jitted (params, batch_stats, x, y, w) -> (loss, accuracy) for this architecture."""
        return self.compiled('eval', spec, lambda: jax.jit(self.trainer(spec).evaluate(unroll=self.unroll(spec))))

    def segment_fn(self, spec: specs.ModelSpec, num_lanes: int) -> Callable[..., Any]:
        """The training segment of this architecture over ``num_lanes`` lanes (seeds) with a leading lane
        axis: ``train_loop.make_replicated_segment_fn`` (one compiled program for all lanes), or for one
        lane ``make_segment_fn`` without the axis (``train_loop.as_single_lane``: a one-seed run computes
        exactly what it did before seeds were lanes)."""
        kwargs = dict(mesh=self.mesh, test_at_best=self.plan.training.test_at_best,
                      step_loop='python' if self.unroll(spec) else 'scan')
        if num_lanes == 1:
            return self.compiled('segment', spec, lambda: train_loop.as_single_lane(
                train_loop.make_segment_fn(self.trainer(spec), self.num_train, **kwargs)))
        return self.compiled('lanes_segment', spec, lambda: train_loop.make_replicated_segment_fn(
            self.trainer(spec), self.num_train, **kwargs))

    def replicate(self, tree: Any) -> Any:
        """``tree`` on every device of the run's mesh (unchanged on one device)."""
        return parallel.replicate(tree, self.mesh)

    def init_variables(self, spec: specs.ModelSpec, key: jax.Array) -> dict[str, Any]:
        """Initial variables of ``spec`` from ``key`` (a lane's init key: ``key('init', lane)``)."""
        return self.trainer(spec).init_variables(key, self.input_shape)

    def new_state(self, spec: specs.ModelSpec, variables: dict[str, Any], masks: Any) -> train_lib.TrainState:
        """A fresh TrainState of ``spec``: masked params, new optimizer state, step 0."""
        return train_lib.create_train_state(variables, masks, self.trainer(spec).tx)


def load_run_data(config: ml_collections.ConfigDict) -> data_lib.Dataset:
    """The dataset of ``config`` (with its fixed pixel permutation when ``permute_pixels``)."""
    ds = data_lib.load_dataset(config.dataset, manual_dir=config.manual_dir or None,
                               data_dir=config.data_dir or None, backend=config.data_backend,
                               validation_size=config.validation_size, split_seed=config.split_seed,
                               train_limit=config.train_limit or None)
    if config.permute_pixels:
        perm = lambda s: data_lib.Split(data_lib.permute_pixels(s.images, config.split_seed), s.labels)
        ds = dataclasses.replace(ds, permuted_pixels=True, train=perm(ds.train),
                                 validation=perm(ds.validation), test=perm(ds.test))
    return ds


def make_context(config: ml_collections.ConfigDict, workdir: str,
                 dataset: Optional[data_lib.Dataset] = None) -> RunContext:
    """Loads data (unless given), checks it against the config, derives keys and puts data on device."""
    mesh = parallel.make_mesh(config.num_devices)
    dataset = dataset or load_run_data(config)
    num_train = len(dataset.train)
    data_checks.validate_against_data(config, num_train, mesh.size if mesh is not None else 1)
    spe = train_lib.steps_per_epoch(num_train, config.batch_size)
    lane_keys = [dict(zip(KEY_NAMES, jax.random.split(jax.random.key(config.seed + i), len(KEY_NAMES))))
                 for i in range(config.num_seeds)]
    data = train_lib.device_data(dataset, parallel.replicated(mesh) if mesh is not None else None)
    return RunContext(plans.SearchPlan.from_config(config), workdir, dataset, data,
                      tuple(dataset.train.images.shape[1:]), data_checks.resolve_steps(config, num_train), spe,
                      config.eval_every if config.eval_every > 0 else spe, lane_keys, mesh=mesh,
                      data_identity=data_lib.fingerprint(dataset), recorded=configuration.config_to_dict(config))
