"""Default config and up-front validation (before any data is read or step is trained).

Config files in ``configs/`` start from ``default_config()`` and change a few
fields; every field can be overridden on the command line
(``--config.num_rounds=3``).
"""

from __future__ import annotations

import os
import re
import tempfile
from typing import Any

import ml_collections

from jst import data as data_lib

METHODS = ('lth', 'juvenile')
PRUNINGS = ('imp', 'level')
CONTROLS = ('none', 'random_reinit', 'random_prune')
SCOPES = ('layerwise', 'global')
FAMILIES = ('mlp', 'resnet', 'conv')
GROWTHS = ('paper', 'search')


class ConfigError(ValueError):
    """A config value is invalid; the message names the field and the fix."""


def default_config() -> ml_collections.ConfigDict:
    """Every knob jst reads, with defaults; config files override a few."""
    c = ml_collections.ConfigDict()
    # Data.
    c.dataset = 'mnist'
    c.manual_dir = ''          # folder with the original files (offline); or $JST_MANUAL_DIR
    c.data_dir = ''            # TFDS data_dir ('' = TFDS default)
    c.data_backend = 'auto'    # 'auto' | 'tfds' | 'numpy'
    c.validation_size = 5000
    c.split_seed = 0           # fixed train/validation split, shared by all seeds and methods
    c.train_limit = 0          # >0: keep only this many training examples (quick runs)
    c.permute_pixels = False   # permuted-pixel variant (fixed permutation from split_seed)
    # Model.
    c.model = ml_collections.ConfigDict({'family': 'mlp', 'widths': (300, 100), 'init': 'glorot_normal'})
    # Architecture of the weight-reset (LTH) policy when it differs from the juvenile start
    # (the seed paper: LTH on the final structure, growth from none). Empty = same as model.
    c.lth_model = ml_collections.ConfigDict()
    # Method.
    c.seed = 0
    c.method = 'lth'
    c.num_rounds = 5           # pruning rounds/levels; round 0 trains the dense (or start) network
    c.steps_per_round = 0      # >0: steps; 0: use epochs_per_round
    c.epochs_per_round = 1.0
    c.batch_size = 60
    c.optimizer = 'adam'
    c.learning_rate = 1.2e-3
    c.momentum = 0.0
    c.eval_every = 0           # steps between validation/test evaluations; 0 = once per epoch
    c.eval_test = 'at_best'    # test split evaluated where validation loss hits a new minimum; 'always'
    c.step_loop = 'auto'       # 'scan' | 'python' | 'auto' (python loop for conv nets on CPU: XLA:CPU is slow
                               # with convolutions inside scan)
    c.num_devices = 1          # data parallelism over this many devices (-1: all, incl. other hosts)
    # Pruning.
    c.pruning = 'imp'          # 'imp': fraction of remaining; 'level': each layer to a target sparsity
    c.prune_fraction = 0.2
    c.prune_rates = ml_collections.ConfigDict()  # {regex: fraction}, first match wins
    c.prune_scope = 'layerwise'
    c.target_sparsity = 0.95
    c.level_schedule = 'geometric'  # 'geometric': same fraction each round, target at the last; 'constant'
    c.prune_include = r'(^|/)kernel$'
    c.prune_exclude = ''
    c.control = 'none'         # 'none' | 'random_reinit' | 'random_prune' | both, comma-separated
    c.rewind_step = 0          # 0: reset to init (theta_0); k > 0: rewind to step k of round 0
    # Growth (method='juvenile').
    c.growth = 'paper'
    c.grow_position = -1       # where 'paper' growth inserts a layer (-1 = end of the hidden stack)
    c.new_layer_mask = 'dense'  # 'dense' | 'sparse'
    c.noise_scale = 0.0
    c.block_init = 'zero'      # ResNet deepen: 'zero' (exactly function-preserving) | 'paper' (Dirac kernels)
    c.widen_method = 'zero_fanout'  # 'zero_fanout' | 'net2net'
    c.optimizer_state_on_growth = 'carry'  # 'carry' | 'reset'
    c.search = ml_collections.ConfigDict({
        'deepen': True, 'widen_by': (32,), 'probe_steps': 200, 'patience': 2,
        'max_depth': 16, 'max_params': 10_000_000})
    # Juvenility diagnostics (jst.juvenility) at the start and end of every round.
    c.juvenility = True
    c.juvenility_probe_size = 512      # fixed probe batch: the first training examples
    c.juvenility_minibatches = 8       # gradient SNR across this many equal slices of the probe batch
    c.juvenility_hutchinson_samples = 8  # Rademacher probes of the Hessian-trace estimate
    c.juvenility_rho = 0.05            # radius of the sharpness perturbation
    c.juvenility_background = True     # start-of-round diagnostics on a thread, overlapping the training
    c.learning_potential_steps = 50
    # Transfer: start from another run's final ticket.
    c.init_from = ''           # workdir of a finished run
    c.init_from_weights = 'trained'  # 'trained' | 'initial' (that run's theta_0, LTH only) | 'random'
    # Bookkeeping.
    c.name = ''                # label of this variant in reports ('' = the method)
    c.overwrite = False
    c.checkpoint_every_epochs = 1  # also at the end of every round/phase; 0 = only those
    c.checkpoint_min_interval_s = 30.0  # ...but inside a training at most this often (0: no limit)
    c.write_report = True          # report.md + PNG plots in WORKDIR/report at the end
    c.log_level = 'info'
    return c


def control_list(control: str) -> tuple[str, ...]:
    """'random_reinit,random_prune' -> ('random_reinit', 'random_prune'); 'none' -> ()."""
    parts = tuple(p.strip() for p in str(control).split(',') if p.strip())
    return tuple(p for p in parts if p != 'none')


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Raises ``ConfigError`` naming the field and the fix for the first invalid value."""
    c = config
    _check(c.dataset in data_lib.SUPPORTED_DATASETS,
           f'config.dataset={c.dataset!r} is unknown; choose one of {data_lib.SUPPORTED_DATASETS}.')
    _check(c.data_backend in ('auto', 'tfds', 'numpy'),
           f"config.data_backend={c.data_backend!r}; choose 'auto', 'tfds' or 'numpy'.")
    _check(c.method in METHODS, f'config.method={c.method!r} is unknown; choose one of {METHODS}.')
    _check(c.model.family in FAMILIES,
           f'config.model.family={c.model.family!r} is unknown; choose one of {FAMILIES}.')
    if len(c.lth_model):
        _check(c.lth_model.get('family') in FAMILIES,
               f"config.lth_model.family={c.lth_model.get('family')!r} is unknown; choose one of {FAMILIES}.")
    _check(c.pruning in PRUNINGS, f'config.pruning={c.pruning!r}; choose one of {PRUNINGS}.')
    _check(c.prune_scope in SCOPES, f'config.prune_scope={c.prune_scope!r}; choose one of {SCOPES}.')
    _check(0.0 <= c.prune_fraction < 1.0,
           f'config.prune_fraction={c.prune_fraction} must be in [0, 1).')
    for pattern, rate in dict(c.prune_rates).items():
        _check(0.0 <= float(rate) < 1.0, f'config.prune_rates[{pattern!r}]={rate} must be in [0, 1).')
    _check(0.0 <= c.target_sparsity < 1.0,
           f'config.target_sparsity={c.target_sparsity} must be in [0, 1).')
    _check(c.level_schedule in ('geometric', 'constant'),
           f"config.level_schedule={c.level_schedule!r}; choose 'geometric' or 'constant'.")
    for part in control_list(c.control):
        _check(part in CONTROLS, f'config.control has {part!r}; choose from {CONTROLS} (comma-separated).')
    for field in ('prune_include', 'prune_exclude'):
        try:
            re.compile(c[field])
        except re.error as e:
            raise ConfigError(f'config.{field}={c[field]!r} is not a valid regex: {e}') from e
    _check(c.num_rounds >= 0, f'config.num_rounds={c.num_rounds} must be >= 0.')
    _check(c.batch_size > 0, f'config.batch_size={c.batch_size} must be positive.')
    _check(c.learning_rate > 0, f'config.learning_rate={c.learning_rate} must be positive.')
    _check(c.optimizer in ('adam', 'sgd'), f"config.optimizer={c.optimizer!r}; choose 'adam' or 'sgd'.")
    _check(c.steps_per_round > 0 or c.epochs_per_round > 0,
           'Set config.steps_per_round > 0 or config.epochs_per_round > 0.')
    _check(c.rewind_step >= 0, f'config.rewind_step={c.rewind_step} must be >= 0.')
    _check(c.steps_per_round <= 0 or c.rewind_step < c.steps_per_round,
           f'config.rewind_step={c.rewind_step} must be smaller than steps_per_round={c.steps_per_round}.')
    _check(c.validation_size > 0, f'config.validation_size={c.validation_size} must be > 0 '
           '(early stopping and selection use the validation split only).')
    _check(c.growth in GROWTHS, f'config.growth={c.growth!r}; choose one of {GROWTHS}.')
    _check(c.new_layer_mask in ('dense', 'sparse'),
           f"config.new_layer_mask={c.new_layer_mask!r}; choose 'dense' or 'sparse'.")
    _check(c.optimizer_state_on_growth in ('carry', 'reset'),
           f"config.optimizer_state_on_growth={c.optimizer_state_on_growth!r}; choose 'carry' or 'reset'.")
    _check(c.block_init in ('zero', 'paper'), f"config.block_init={c.block_init!r}; choose 'zero' or 'paper'.")
    _check(c.widen_method in ('zero_fanout', 'net2net'),
           f"config.widen_method={c.widen_method!r}; choose 'zero_fanout' or 'net2net'.")
    _check(c.init_from_weights in ('trained', 'initial', 'random'),
           f"config.init_from_weights={c.init_from_weights!r}; choose 'trained', 'initial' or 'random'.")
    _check(not c.init_from or os.path.isdir(c.init_from),
           f'config.init_from={c.init_from!r} is not a folder: give the workdir of a finished run.')
    _check(c.eval_test in ('at_best', 'always'), f"config.eval_test={c.eval_test!r}; choose 'at_best' or 'always'.")
    _check(c.noise_scale >= 0, f'config.noise_scale={c.noise_scale} must be >= 0.')
    if c.juvenility:
        _check(c.juvenility_minibatches >= 2, f'config.juvenility_minibatches={c.juvenility_minibatches} '
               'must be >= 2 (the gradient SNR needs a spread across mini-batches).')
        _check(c.juvenility_probe_size >= c.juvenility_minibatches,
               f'config.juvenility_probe_size={c.juvenility_probe_size} must be >= '
               f'config.juvenility_minibatches={c.juvenility_minibatches}.')
        _check(c.juvenility_hutchinson_samples >= 1,
               f'config.juvenility_hutchinson_samples={c.juvenility_hutchinson_samples} must be >= 1.')


def validate_against_data(config: ml_collections.ConfigDict, num_train: int) -> None:
    """Checks that need the dataset's size."""
    _check(config.batch_size <= num_train,
           f'config.batch_size={config.batch_size} is larger than the training split '
           f'({num_train} examples); lower it or raise config.train_limit.')


def check_workdir_writable(workdir: str) -> None:
    """Creates ``workdir`` if needed and checks that a file can be written there."""
    try:
        os.makedirs(workdir, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=workdir, prefix='.write_test'):
            pass
    except OSError as e:
        raise ConfigError(f'workdir {workdir!r} is not writable ({e}); pass --workdir=DIR '
                          'with a folder you can write to.') from e


def resolve_steps(config: ml_collections.ConfigDict, num_train: int) -> int:
    """Training steps per round from ``steps_per_round`` or ``epochs_per_round``."""
    if config.steps_per_round > 0:
        return int(config.steps_per_round)
    spe = num_train // config.batch_size
    return max(1, int(round(config.epochs_per_round * spe)))


def model_config_for(config: ml_collections.ConfigDict, method: str) -> ml_collections.ConfigDict:
    """The architecture ``method`` starts from: ``lth_model`` for LTH when set, else ``model``."""
    if method == 'lth' and len(config.lth_model):
        return config.lth_model
    return config.model


def config_to_dict(config: Any) -> Any:
    """Plain JSON-able dict of a ConfigDict."""
    if isinstance(config, ml_collections.ConfigDict):
        return {k: config_to_dict(v) for k, v in config.items()}
    if isinstance(config, (list, tuple)):
        return [config_to_dict(v) for v in config]
    return config
