"""Where a search starts and what it leaves: the start network (fresh, or another run's final ticket)
and the final ticket stored in the checkpoint for ``config.init_from``.

``config.init_from_weights``: 'trained' (that run's final weights), 'initial'
(its theta_0; weight-reset runs only) or 'random' (a fresh init of the same
structure with this run's seed).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np
from absl import logging

from jst import checkpointing
from jst import configuration
from jst import context as context_lib
from jst import pruning
from jst import specs

PyTree = Any
ArrayKey = checkpointing.ArrayKey


def start_network(ctx: context_lib.RunContext, method: configuration.Method,
                  allow_empty_masks: bool = False) -> tuple[specs.ModelSpec, dict[str, Any], PyTree]:
    """(spec, variables, masks) a search starts from: ``config.init_from``'s ticket when set, else
    ``method``'s start architecture freshly initialised with all-True masks."""
    if ctx.config.init_from:
        return load_ticket(ctx.config.init_from, ctx.config.init_from_weights, ctx.init_variables)
    spec = configuration.start_spec(ctx.config, method)
    variables = ctx.init_variables(spec)
    masks = pruning.initial_masks(pruning.PruningPlan.from_config(ctx.config), variables['params'],
                                  allow_empty=allow_empty_masks)
    return spec, variables, masks


def store_final(journal: checkpointing.Journal, spec: specs.ModelSpec, state: Any) -> None:
    """Keeps the final trained ticket in the journal (for ``init_from``)."""
    journal.arrays[ArrayKey.FINAL] = {'params': checkpointing.to_storable(state.params),
                                      'batch_stats': checkpointing.to_storable(state.batch_stats),
                                      'masks': checkpointing.to_storable(state.masks)}
    journal.final_spec = specs.spec_to_dict(spec)


def load_ticket(source: str, weights: str, init_variables: Callable[[specs.ModelSpec], dict[str, Any]]
                ) -> tuple[specs.ModelSpec, dict[str, Any], PyTree]:
    """(spec, variables, masks) of the final ticket of the finished run in ``source``; ``weights`` as
    ``config.init_from_weights``. The ticket must fit ``init_variables``' input shape."""
    meta, arrays = checkpointing.read_checkpoint(source) or ({}, {})
    if (meta.get('progress') or {}).get('phase') != 'done' or ArrayKey.FINAL not in arrays:
        raise configuration.ConfigError(
            f'config.init_from={source!r} holds no finished run (no final ticket in its checkpoints); '
            'let that run finish first.')
    spec = specs.spec_from_config(meta['final_spec'])
    trained = checkpointing.variables_from_storable(arrays[ArrayKey.FINAL])
    masks = checkpointing.masks_from_storable(arrays[ArrayKey.FINAL].get('masks'), trained['params'])
    if weights == 'trained':
        variables = trained
    elif weights == 'initial':
        if ArrayKey.THETA0 not in arrays:
            raise configuration.ConfigError(
                f'config.init_from_weights=initial needs a weight-reset (lth) run; {source!r} has no theta_0 '
                '(grown networks have none).')
        variables = checkpointing.variables_from_storable(arrays[ArrayKey.THETA0])
    else:
        variables = init_variables(spec)
    expected = jax.eval_shape(lambda: init_variables(spec, jax.random.key(0)))['params']
    if jax.tree.map(np.shape, expected) != jax.tree.map(np.shape, variables['params']):
        raise configuration.ConfigError(f"The ticket in {source!r} does not fit this dataset's inputs.")
    logging.info('Starting from the %s weights of the ticket in %s (%s).', weights, source, spec.describe())
    return spec, variables, masks
