"""What a run's config needs the training split for: the steps of a round, and the knobs that must fit in them."""

from __future__ import annotations

import ml_collections

from jst.run.configuration import ConfigError
from jst.training import pruning


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def validate_against_data(config: ml_collections.ConfigDict, num_train: int, num_devices: int) -> None:
    """Checks that need the training split's size and the number of devices of the mesh."""
    _check(config.batch_size <= num_train,
           f'config.batch_size={config.batch_size} is larger than the training split '
           f'({num_train} examples); lower it or raise config.train_limit.')
    steps = resolve_steps(config, num_train)
    _check(config.rewind_step < steps,
           f'config.rewind_step={config.rewind_step} must be smaller than the {steps} steps per round.')
    _check(config.pruning not in pruning.IN_ROUND or 1 <= config.mask_update_every <= config.mask_update_end * steps,
           f'config.mask_update_every={config.mask_update_every} must be in [1, mask_update_end * steps per round = '
           f'{config.mask_update_end * steps:g}] for pruning={config.pruning!r} (it updates masks inside a round).')
    _check(config.batch_size % num_devices == 0,
           f'config.batch_size={config.batch_size} must be divisible by the {num_devices} devices of '
           f'config.num_devices={config.num_devices}.')


def resolve_steps(config: ml_collections.ConfigDict, num_train: int) -> int:
    """Training steps per round from ``steps_per_round`` or ``epochs_per_round``."""
    if config.steps_per_round > 0:
        return int(config.steps_per_round)
    spe = num_train // config.batch_size
    return max(1, int(round(config.epochs_per_round * spe)))
