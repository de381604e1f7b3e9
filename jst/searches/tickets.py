"""Where a search starts and what it leaves: the start network (fresh, or another run's final ticket)
and the final ticket stored in the checkpoint for ``config.init_from``.

``config.init_from_weights``: 'trained' (that run's final weights), 'initial'
(its theta_0; weight-reset runs only) or 'random' (a fresh init of the same
structure with this run's seed).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import numpy as np
from absl import logging

from jst.run import checkpointing
from jst.run import configuration
from jst.run import context as context_lib
from jst.training import pruning
from jst.models import specs

PyTree = Any
ArrayKey = checkpointing.ArrayKey


def start_network(ctx: context_lib.RunContext, method: configuration.Method, lane: int,
                  allow_empty_masks: bool = False) -> tuple[specs.ModelSpec, dict[str, Any], PyTree]:
    """(spec, variables, masks) lane ``lane`` starts from: ``config.init_from``'s ticket when set, else
    ``method``'s start architecture freshly initialised (the lane's init key) with all-True masks."""
    init = lambda spec: ctx.init_variables(spec, ctx.key('init', lane))
    if ctx.config.init_from:
        return load_ticket(ctx.config.init_from, ctx.config.init_from_weights, init, lane,
                           split=ctx.data_identity.get('split'))
    spec = configuration.start_spec(ctx.config, method)
    variables = init(spec)
    masks = pruning.initial_masks(pruning.PruningPlan.from_config(ctx.config), variables['params'],
                                  allow_empty=allow_empty_masks)
    return spec, variables, masks


def store_final(journal: checkpointing.Journal, finals: Sequence[tuple[int, specs.ModelSpec, Any]]) -> None:
    """Keeps each lane's final trained ticket, (lane, spec, state), in the journal (for ``init_from``)."""
    items = dict(journal.arrays.get(ArrayKey.FINAL) or {})
    specs_ = dict(journal.final_specs or {})
    for lane, spec, state in finals:
        name = checkpointing.lane_name(lane)
        items[name] = {'params': checkpointing.to_storable(state.params),
                       'batch_stats': checkpointing.to_storable(state.batch_stats),
                       'masks': checkpointing.to_storable(state.masks)}
        specs_[name] = specs.spec_to_dict(spec)
    journal.arrays[ArrayKey.FINAL], journal.final_specs = items, specs_


def load_ticket(source: str, weights: str, init_variables: Callable[[specs.ModelSpec], dict[str, Any]],
                lane: int = 0, split: str | None = None) -> tuple[specs.ModelSpec, dict[str, Any], PyTree]:
    """(spec, variables, masks) of the final ticket of the finished run in ``source``; ``weights`` as
    ``config.init_from_weights``. Lane ``lane`` takes the source's lane ``lane`` (a one-seed source
    serves every lane). The ticket must fit ``init_variables``' input shape and, given this run's ``split``
    (``data.fingerprint``), come from the same train/validation split (else the source trained on examples
    this run validates on)."""
    meta, arrays = checkpointing.read_checkpoint(source) or ({}, {})
    if (meta.get('progress') or {}).get('phase') != 'done' or ArrayKey.FINAL not in arrays:
        raise configuration.ConfigError(
            f'config.init_from={source!r} holds no finished run (no final ticket in its checkpoints); '
            'let that run finish first.')
    source_split = ((meta.get('config') or {}).get('data') or {}).get('split')
    if split is not None and source_split is not None and source_split != split:
        raise configuration.ConfigError(
            f'config.init_from={source!r} was trained on another train/validation split (split digest '
            f'{source_split} there, {split} here): its training examples may be this run\'s validation examples. '
            'Use the same dataset files, validation_size and split_seed as that run.')
    finals = arrays[ArrayKey.FINAL]
    name = checkpointing.lane_name(lane if len(finals) > 1 else 0)
    if name not in finals:
        raise configuration.ConfigError(
            f'config.init_from={source!r} holds {len(finals)} seeds\' tickets, not one for seed index {lane}: '
            'use a source with one seed or with at least config.num_seeds seeds.')
    spec = specs.spec_from_config(meta['final_specs'][name])
    trained = checkpointing.variables_from_storable(finals[name])
    masks = checkpointing.masks_from_storable(finals[name].get('masks'), trained['params'])
    if weights == 'trained':
        variables = trained
    elif weights == 'initial':
        if ArrayKey.THETA0 not in arrays:
            raise configuration.ConfigError(
                f'config.init_from_weights=initial needs a weight-reset (lth) run; {source!r} has no theta_0 '
                '(grown networks have none).')
        variables = checkpointing.variables_from_storable(arrays[ArrayKey.THETA0][name])
    else:
        variables = init_variables(spec)
    expected = jax.eval_shape(lambda: init_variables(spec))['params']
    if jax.tree.map(np.shape, expected) != jax.tree.map(np.shape, variables['params']):
        raise configuration.ConfigError(f"The ticket in {source!r} does not fit this dataset's inputs.")
    logging.info('Starting from the %s weights of the ticket in %s (%s).', weights, source, spec.describe())
    return spec, variables, masks
