"""The run context: what every search reads and nothing it writes.

``RunContext`` holds the config, the dataset (host and device copies), the
PRNG keys, the data-parallel mesh, the compiled functions of each
architecture (built once, reused across rounds) and one background thread
for work that overlaps training. Checkpointed progress lives in
``checkpointing.Journal``, not here. Use it as a context manager (the thread
is shut down on exit).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
from typing import Any, Callable, Optional

import jax
import ml_collections

from jst import configuration
from jst import data as data_lib
from jst import parallel
from jst import train as train_lib
from jst import train_loop

KEY_NAMES = ('init', 'data', 'prune', 'control', 'growth')


@dataclasses.dataclass
class RunContext:
    config: ml_collections.ConfigDict
    workdir: str
    dataset: data_lib.Dataset
    data: train_lib.DeviceData
    input_shape: tuple[int, ...]
    steps_per_round: int
    steps_per_epoch: int
    eval_every: int
    keys: dict[str, jax.Array]
    mesh: Optional[Any] = None  # data-parallel mesh (None: one device)
    _compiled: dict[Any, Any] = dataclasses.field(default_factory=dict)
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

    def config_dict(self) -> dict[str, Any]:
        """The config as plain JSON-able dicts."""
        return configuration.config_to_dict(self.config)

    @property
    def num_train(self) -> int:
        return len(self.dataset.train)

    def compiled(self, name: str, spec: Any, build: Callable[[], Any]) -> Any:
        """``build()`` once per (name, architecture); the cached result afterwards."""
        if (name, spec) not in self._compiled:
            self._compiled[(name, spec)] = build()
        return self._compiled[(name, spec)]

    def trainer(self, spec: Any) -> train_lib.Trainer:
        c = self.config
        return self.compiled('trainer', spec, lambda: train_lib.make_trainer(
            spec, c.optimizer, c.learning_rate, c.momentum, c.batch_size, c.dataset))

    def unroll(self, spec: Any) -> bool:
        """Whether loops over ``spec``'s convolutions are unrolled (``train.resolve_step_loop``)."""
        return train_lib.resolve_step_loop(self.config.step_loop, spec.has_convolutions) == 'python'

    def eval_fn(self, spec: Any) -> Callable[..., Any]:
        """Jitted (params, batch_stats, x, y, w) -> (loss, accuracy) for this architecture."""
        return self.compiled('eval', spec, lambda: jax.jit(self.trainer(spec).evaluate(unroll=self.unroll(spec))))

    def step_fn(self, spec: Any) -> Callable[..., Any]:
        """Jitted (state, x, y) -> (state, metrics): one training step of this architecture."""
        return self.compiled('step', spec, lambda: jax.jit(self.trainer(spec).train_step))

    def segment_fn(self, spec: Any) -> Callable[..., Any]:
        """``train_loop.make_segment_fn`` of this architecture."""
        return self.compiled('segment', spec, lambda: train_loop.make_segment_fn(
            self.trainer(spec), self.num_train, self.mesh, test_at_best=self.config.eval_test == 'at_best',
            step_loop='python' if self.unroll(spec) else 'scan'))

    def replicate(self, tree: Any) -> Any:
        """``tree`` on every device of the run's mesh (unchanged on one device)."""
        return parallel.replicate(tree, self.mesh)

    def init_variables(self, spec: Any, key: Optional[jax.Array] = None) -> dict[str, Any]:
        """Initial variables of ``spec`` (with the run's init key unless ``key`` is given)."""
        return self.trainer(spec).init_variables(self.keys['init'] if key is None else key, self.input_shape)

    def new_state(self, spec: Any, variables: dict[str, Any], masks: Any) -> train_lib.TrainState:
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
        ds = dataclasses.replace(ds, name=f'{ds.name}_permuted', train=perm(ds.train),
                                 validation=perm(ds.validation), test=perm(ds.test))
    return ds


def make_context(config: ml_collections.ConfigDict, workdir: str,
                 dataset: Optional[data_lib.Dataset] = None) -> RunContext:
    """Loads data (unless given), checks it against the config, derives keys and puts data on device."""
    mesh = parallel.make_mesh(config.num_devices)
    dataset = dataset or load_run_data(config)
    num_train = len(dataset.train)
    configuration.validate_against_data(config, num_train, mesh.size if mesh is not None else 1)
    spe = train_lib.steps_per_epoch(num_train, config.batch_size)
    keys = dict(zip(KEY_NAMES, jax.random.split(jax.random.key(config.seed), len(KEY_NAMES))))
    data = train_lib.device_data(dataset, parallel.replicated(mesh) if mesh is not None else None)
    return RunContext(config, workdir, dataset, data, tuple(dataset.train.images.shape[1:]),
                      configuration.resolve_steps(config, num_train), spe,
                      config.eval_every if config.eval_every > 0 else spe, keys, mesh=mesh)
