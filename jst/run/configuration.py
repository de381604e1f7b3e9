"""Every knob of a run: defaults, allowed values and validation, in one place.

Config files in ``configs/`` start from ``default_config()`` and change a few fields; every field can be
overridden on the command line (``--config.num_rounds=3``). ``validate_config`` checks everything that needs no
data before any data is read or anything is written; ``jst.run.data_checks`` what needs the training split's
size. The allowed values of a knob are defined once: here for run-level choices, and as ``Literal`` types beside
the code that implements an option (``expand``, ``train``, ``readers``, ``specs``), from which ``CHOICES`` is built.
"""

from __future__ import annotations

import math
import os
import re
import typing
from typing import Any, Literal

import jax
import ml_collections

from jst import errors
from jst.data import readers
from jst.models import convolution
from jst.models import networks
from jst.models import specs
from jst.ops import expand
from jst.ops import masks
from jst.training import cpu_kernels
from jst.training import pruning
from jst.training import train as train_lib

Method = Literal['lth', 'juvenile']  # the searches (jst.searches.registry); 'compare' runs both (jst.driver)
Growth = Literal['paper', 'search', 'none']
# Allowed values of every string knob (dotted for nested fields).
CHOICES: dict[str, tuple[str, ...]] = {
    'dataset': readers.SUPPORTED_DATASETS, 'data_backend': readers.BACKENDS,
    'model.family': specs.FAMILIES,
    'method': typing.get_args(Method) + ('compare',),
    'pruning': pruning.PRUNINGS,
    'prune_scope': pruning.SCOPES,
    'level_schedule': pruning.LEVEL_SCHEDULES,
    'optimizer': train_lib.OPTIMIZERS,
    'step_loop': train_lib.STEP_LOOPS,
    'cpu_kernels': cpu_kernels.CPU_KERNELS,
    'conv_form': convolution.CONV_FORMS,
    'eval_test': ('at_best', 'always'),
    'growth': typing.get_args(Growth),
    'new_layer_mask': typing.get_args(expand.NewMask),
    'block_init': typing.get_args(expand.BlockInit),
    'widen_method': typing.get_args(expand.WidenMethod),
    'optimizer_state_on_growth': ('carry', 'reset'),
    'prune_weights': ('final', 'best'),
    'data_order': ('per_round', 'replay'),
    'init_from_weights': ('trained', 'initial', 'random', 'fresh'),
    'init_from_masks': ('ticket', 'random'),
}


class ConfigError(errors.UserError, ValueError):
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
    # Weight reset's (LTH's) architecture where it differs from the juvenile start (the paper's); empty = model.
    c.lth_model = ml_collections.ConfigDict()
    # Method.
    c.seed = 0
    c.num_seeds = 1            # seeds seed .. seed + num_seeds - 1, trained together in one compiled program
    c.method = 'lth'
    c.num_rounds = 5           # pruning rounds/levels; round 0 trains the dense (or start) network
    c.steps_per_round = 0      # >0: steps; 0: use epochs_per_round
    c.epochs_per_round = 1.0
    c.batch_size = 60
    c.data_order = 'per_round'  # 'per_round': a fresh batch order each round; 'replay': round 0's (jst <= 0.1)
    c.optimizer = 'adam'
    c.learning_rate = 1.2e-3
    c.momentum = 0.0
    c.eval_every = 0           # steps between validation/test evaluations; 0 = once per epoch
    c.eval_test = 'at_best'    # test split evaluated where validation loss hits a new minimum; 'always'
    c.step_loop = 'auto'       # 'scan' | 'python' | 'auto' (python loop for conv nets on CPU, scan otherwise)
    c.cpu_kernels = 'auto'     # 'auto' | 'library' | 'xla': YNN/XNNPACK kernels for CPU conv nets (cpu_kernels.py)
    c.conv_form = 'auto'       # 'auto' | 'xla' | 'space_to_depth': how convolutions are computed (convolution.py)
    c.num_devices = 1          # data parallelism over this many devices (-1: all, incl. other hosts)
    # Pruning.
    c.pruning = 'imp'          # 'imp': fraction of remaining; 'level': each layer to a target sparsity; 'erk'
    c.prune_fraction = 0.2
    c.prune_rates = ml_collections.ConfigDict()  # {regex: fraction}, first match wins
    c.prune_scope = 'layerwise'
    c.target_sparsity = 0.95
    c.level_schedule = 'geometric'  # 'geometric': same fraction each round, target at the last; 'constant'
    c.mask_update_every, c.mask_update_end, c.rigl_drop_fraction = 100, 0.75, 0.3  # 'gmp'/'rigl' in-round updates
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
    c.prune_weights = 'final'  # 'final': end-of-round weights are pruned; 'best': those at the round's early stop
    c.search = ml_collections.ConfigDict({
        'deepen': True, 'widen_by': (32,), 'probe_steps': 200, 'patience': 2,
        'max_depth': 16, 'max_params': 10_000_000})
    # Juvenility diagnostics (jst.searches.diagnostics) at the start and end of every round.
    c.juvenility = True
    c.juvenility_probe_size = 512      # fixed probe batch: the first training examples
    c.juvenility_minibatches = 8       # gradient SNR across this many equal slices of the probe batch
    c.juvenility_hutchinson_samples = 8  # Rademacher probes of the Hessian-trace estimate
    c.juvenility_rho = 0.05            # radius of the sharpness perturbation
    c.juvenility_background = True     # start-of-round diagnostics on a thread, overlapping the training
    c.learning_potential_steps = 50
    # Transfer: start from another run's final ticket.
    c.init_from = ''           # workdir of a finished run
    c.init_from_weights = 'trained'  # 'trained' | 'initial' (its theta_0, LTH only) | 'random' | 'fresh'
    c.init_from_masks = 'ticket'  # 'ticket' | 'random' (random masks with the ticket's per-layer counts)
    # Bookkeeping.
    c.name = ''                # label of this variant in reports ('' = the method)
    c.overwrite = False
    c.checkpoint_every_epochs = 1  # also at the end of every stage (a training with its records); 0 = only those
    c.checkpoint_min_interval_s = 30.0  # ...but inside a training at most this often (0: no limit)
    c.write_report = True          # report.md + PNG plots in WORKDIR/report at the end
    return c


_ZERO_MEANS = {'train_limit': 'all training examples', 'steps_per_round': 'use epochs_per_round',
               'eval_every': 'once per epoch'}
_WIDTH_FIELDS = ('widths', 'block_widths', 'conv_channels', 'dense_widths')


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def _field(config: ml_collections.ConfigDict, dotted: str) -> Any:
    node = config
    for part in dotted.split('.'):
        node = node[part]
    return node


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Raises ``ConfigError`` naming the field and the fix for the first invalid value."""
    c = config
    for name, allowed in CHOICES.items():
        value = _field(c, name)
        _check(value in allowed, f'config.{name}={value!r} is unknown; choose one of {allowed}.')
    if len(c.lth_model):
        _check(c.lth_model.get('family') in specs.FAMILIES,
               f"config.lth_model.family={c.lth_model.get('family')!r} is unknown; choose one of {specs.FAMILIES}.")
    _check(0.0 <= c.prune_fraction < 1.0, f'config.prune_fraction={c.prune_fraction} must be in [0, 1).')
    for pattern, rate in dict(c.prune_rates).items():
        _check(0.0 <= float(rate) < 1.0, f'config.prune_rates[{pattern!r}]={rate} must be in [0, 1).')
    _check(0.0 <= c.target_sparsity < 1.0, f'config.target_sparsity={c.target_sparsity} must be in [0, 1).')
    _check(0.0 < c.mask_update_end <= 1.0 and 0.0 <= c.rigl_drop_fraction < 1.0, f'config.mask_update_end='
           f'{c.mask_update_end} must be in (0, 1] and config.rigl_drop_fraction={c.rigl_drop_fraction} in [0, 1).')
    for part in pruning.control_names(c.control):
        _check(part in pruning.CONTROLS,
               f'config.control has {part!r}; choose from {pruning.CONTROLS} (comma-separated).')
    for field in ('prune_include', 'prune_exclude'):
        try:
            re.compile(c[field])
        except re.error as e:
            raise ConfigError(f'config.{field}={c[field]!r} is not a valid regex: {e}') from e
    _check(c.num_seeds >= 1, f'config.num_seeds={c.num_seeds} must be >= 1 (seeds seed .. seed + num_seeds - 1).')
    _check(c.num_rounds >= 0, f'config.num_rounds={c.num_rounds} must be >= 0.')
    _check(c.batch_size > 0, f'config.batch_size={c.batch_size} must be positive.')
    _check(c.learning_rate > 0, f'config.learning_rate={c.learning_rate} must be positive.')
    for field in ('train_limit', 'steps_per_round', 'eval_every'):
        _check(c[field] >= 0, f'config.{field}={c[field]} must be >= 0 (0 means: {_ZERO_MEANS[field]}).')
    _check(c.epochs_per_round >= 0, f'config.epochs_per_round={c.epochs_per_round} must be >= 0.')
    _check(c.steps_per_round > 0 or c.epochs_per_round > 0, 'Set config.steps_per_round or epochs_per_round > 0.')
    for knob, default, why in (('growth', 'paper', 'does not grow'),
                               ('optimizer_state_on_growth', 'carry', 'restarts the optimizer every round')):
        _check(c[knob] == default or c.method == 'juvenile', f"config.{knob}={c[knob]!r} applies to method='juvenile' "
               f"only; config.method={c.method!r} {why}. Drop --config.{knob} or pass --config.method=juvenile.")
    for name, model in (('model', c.model), ('lth_model', c.lth_model)):
        for field in _WIDTH_FIELDS:
            widths = model.get(field) if len(model) else None
            _check(not widths or all(int(w) > 0 for w in widths),
                   f'config.{name}.{field}={tuple(widths or ())} must hold positive sizes.')
    available = jax.device_count()
    _check(-1 <= c.num_devices <= available and c.num_devices != 0,
           f'config.num_devices={c.num_devices}, but {available} device(s) are visible ({jax.default_backend()}); '
           'pass a number from 1 to that, or -1 for all. (On CPU, XLA_FLAGS=--xla_force_host_platform_device_count=8 '
           'simulates 8.)')
    _check(c.rewind_step >= 0, f'config.rewind_step={c.rewind_step} must be >= 0.')
    _check(c.steps_per_round <= 0 or c.rewind_step < c.steps_per_round,
           f'config.rewind_step={c.rewind_step} must be smaller than steps_per_round={c.steps_per_round}.')
    _check(c.validation_size > 0, f'config.validation_size={c.validation_size} must be > 0 '
           '(early stopping and selection use the validation split only).')
    _check(not c.init_from or os.path.isdir(c.init_from),
           f'config.init_from={c.init_from!r} is not a folder: give the workdir of a finished run.')
    _check(c.init_from or c.init_from_masks == 'ticket', "config.init_from_masks='random' needs config.init_from.")
    for field, holds in (('data_dir', 'where TFDS keeps prepared data'), ('manual_dir', 'of the dataset files')):
        _check(not c[field] or not os.path.isfile(c[field]), f'config.{field}={c[field]!r} is a file: give a folder '
               f'({holds}).')
    _check(c.noise_scale >= 0, f'config.noise_scale={c.noise_scale} must be >= 0.')
    _check_numbers(c)
    if c.juvenility:
        _check(c.juvenility_minibatches >= 2, f'config.juvenility_minibatches={c.juvenility_minibatches} '
               'must be >= 2 (the gradient SNR needs a spread across mini-batches).')
        _check(c.juvenility_probe_size >= c.juvenility_minibatches,
               f'config.juvenility_probe_size={c.juvenility_probe_size} must be >= '
               f'config.juvenility_minibatches={c.juvenility_minibatches}.')
        _check(c.juvenility_hutchinson_samples >= 1,
               f'config.juvenility_hutchinson_samples={c.juvenility_hutchinson_samples} must be >= 1.')


def _check_numbers(c: ml_collections.ConfigDict) -> None:
    """Finite values, ranges and positions that would otherwise fail (or mislead) after training has started."""
    for field in ('learning_rate', 'epochs_per_round', 'momentum', 'noise_scale', 'checkpoint_min_interval_s',
                  'juvenility_rho'):
        _check(math.isfinite(float(c[field])), f'config.{field}={c[field]} must be a finite number.')
    _check(0.0 <= c.momentum < 1.0, f'config.momentum={c.momentum} must be in [0, 1).')
    _check(c.checkpoint_every_epochs >= 0, f'config.checkpoint_every_epochs={c.checkpoint_every_epochs} must be '
           '>= 0 (0: only at the end of every stage (a training with its records)).')
    _check(c.checkpoint_min_interval_s >= 0,
           f'config.checkpoint_min_interval_s={c.checkpoint_min_interval_s} must be >= 0.')
    _check(c.split_seed >= 0, f'config.split_seed={c.split_seed} must be >= 0.')
    _check(0 <= c.seed and c.seed + c.num_seeds <= 2**31,
           f'config.seed={c.seed} must be in [0, 2**31 - num_seeds] (seeds seed .. seed + num_seeds - 1).')
    if c.juvenility:
        _check(c.juvenility_rho > 0, f'config.juvenility_rho={c.juvenility_rho} must be > 0 (the sharpness radius).')
        _check(c.learning_potential_steps >= 1,
               f'config.learning_potential_steps={c.learning_potential_steps} must be >= 1.')
    if c.method == 'juvenile' and c.growth == 'search':
        for field in ('probe_steps', 'patience', 'max_depth', 'max_params'):
            _check(c.search[field] >= 1, f'config.search.{field}={c.search[field]} must be >= 1.')
        _check(all(int(w) > 0 for w in c.search.widen_by),
               f'config.search.widen_by={tuple(c.search.widen_by)} must hold positive unit counts (or be empty).')
    _check_against_models(c)
    if c.method == 'juvenile' and c.growth == 'paper':
        spec = start_spec(c, 'juvenile')
        _check(c.grow_position == -1 or c.grow_position in spec.deepen_positions,
               f'config.grow_position={c.grow_position} is not a place to insert a layer in '
               f'{spec.describe()}: use -1 (the end) or one of {list(spec.deepen_positions)}.')


def _check_against_models(c: ml_collections.ConfigDict) -> None:
    """The start architectures build, prune_include/exclude select a weight of them (or of lth_model), and
    num_seeds lanes fit the free memory (``train.lane_memory_bytes``, ``train.available_memory_bytes``)."""
    shape = readers.dataset_info(c.dataset).image_shape
    methods = ('lth', 'juvenile') if c.method == 'compare' else (c.method,)
    archs = list(dict.fromkeys([start_spec(c, m) for m in methods] + [start_spec(c, 'lth')] * bool(len(c.lth_model))))
    try:
        ndims = {p: len(s) for spec in archs for p, s in networks.param_shapes(spec, shape).items()}
    except ValueError as e:  # e.g. an unknown config.model.init
        raise ConfigError(f'config.model: {e}') from e
    _check(any(masks.is_prunable(p, n, c.prune_include, c.prune_exclude or None) for p, n in ndims.items()),
           f'config.prune_include={c.prune_include!r} (prune_exclude={c.prune_exclude!r}) selects no weight of '
           f'{", ".join(s.describe() for s in archs)}; its parameters are {sorted(ndims)}.')
    available = train_lib.available_memory_bytes()
    per_lane = max(train_lib.lane_memory_bytes(s, shape, c.batch_size) for s in archs[:len(methods)])
    _check(available is None or c.num_seeds * per_lane <= available,
           f'config.num_seeds={c.num_seeds}: the lanes need about {c.num_seeds * per_lane / 1e9:.1f} GB (an estimate: '
           f'{per_lane / 1e6:.1f} MB per seed at batch {c.batch_size}), but {(available or 0) / 1e9:.1f} GB are free '
           f'on {jax.default_backend()}; at most {(available or 0) // per_lane} seeds fit: pass a smaller '
           '--config.num_seeds, or run the seeds as separate runs (launch/sweep.sh).')


def start_spec(config: ml_collections.ConfigDict, method: Method) -> specs.ModelSpec:
    """The architecture ``method`` starts from (``lth_model`` for LTH when set, else ``model``); its head has the
    dataset's classes (``readers.DATASETS``), and a model that sets other ``num_classes`` is refused."""
    model = config_to_dict(config.lth_model if method == 'lth' and len(config.lth_model) else config.model)
    classes = readers.dataset_info(config.dataset).num_classes
    _check(model.setdefault('num_classes', classes) == classes, f'config.model.num_classes={model["num_classes"]}: '
           f'{config.dataset} has {classes} classes; drop the field (the head follows the dataset).')
    return specs.spec_from_config(model)


def config_to_dict(config: Any) -> Any:
    """Plain JSON-able dict of a ConfigDict."""
    if isinstance(config, ml_collections.ConfigDict):
        return {k: config_to_dict(v) for k, v in config.items()}
    if isinstance(config, (list, tuple)):
        return [config_to_dict(v) for v in config]
    return config
