"""Where a search starts: a fresh network, or another run's final ticket (``config.init_from``; the journal
stores each run's final tickets, ``jst.run.journal``).

``config.init_from_weights``: 'trained' (that run's final weights), 'initial'
(its theta_0; weight-reset runs only), 'random' (an init of the same structure
from this run's init key: layers whose names and shapes the source's round 0 had
start at that round's values when the seeds match) or 'fresh' (an init from a key
no other draw of this seed uses). ``config.init_from_masks``: 'ticket' (its masks)
or 'random' (random masks with the ticket's per-layer kept counts): with random
weights, the random re-init and random-mask controls of a grown ticket.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np
from absl import logging

from jst.models import specs
from jst.run import configuration
from jst.run import context as context_lib
from jst.run import journal as journal_lib
from jst.training import pruning

PyTree = Any
FRESH_KEY = 1 << 20  # folded into a lane's control key for init_from_weights='fresh' (controls fold in rounds < it)


def start_network(ctx: context_lib.RunContext, method: configuration.Method, lane: int,
                  allow_empty_masks: bool = False) -> tuple[specs.ModelSpec, dict[str, Any], PyTree]:
    """(spec, variables, masks) lane ``lane`` starts from: ``config.init_from``'s ticket when set, else
    ``method``'s start architecture freshly initialised (the lane's init key) with all-True masks."""
    init = lambda spec: ctx.init_variables(spec, ctx.key('init', lane))
    transfer = ctx.plan.transfer
    if transfer.source:
        if transfer.weights == 'fresh':
            init = lambda spec: ctx.init_variables(spec, jax.random.fold_in(ctx.key('control', lane), FRESH_KEY))
        spec, variables, masks = load_ticket(transfer.source, transfer.weights, init, lane,
                                             split=ctx.data_identity.get('split'))
        if transfer.masks == 'random':
            masks = pruning.random_prune_masks(masks, jax.random.fold_in(ctx.key('init', lane), 1))
        return spec, variables, masks
    spec = ctx.plan.start_spec(method)
    variables = init(spec)
    masks = pruning.initial_masks(ctx.plan.pruning, variables['params'],
                                  allow_empty=allow_empty_masks)
    return spec, variables, masks


def load_ticket(source: str, weights: str, init_variables: Callable[[specs.ModelSpec], dict[str, Any]],
                lane: int = 0, split: str | None = None) -> tuple[specs.ModelSpec, dict[str, Any], PyTree]:
    """(spec, variables, masks) of the final ticket of the finished run in ``source``; ``weights`` as
    ``config.init_from_weights``. Lane ``lane`` takes the source's lane ``lane`` (a one-seed source
    serves every lane). The ticket must fit ``init_variables``' input shape and, given this run's ``split``
    (``data.fingerprint``), come from the same train/validation split (else the source trained on examples
    this run validates on)."""
    run = journal_lib.FinishedRun.read(source)
    if run is None:
        raise configuration.ConfigError(
            f'config.init_from={source!r} holds no finished run (no final ticket in its checkpoints); '
            'let that run finish first.')
    if split is not None and run.split is not None and run.split != split:
        raise configuration.ConfigError(
            f'config.init_from={source!r} was trained on another train/validation split (split digest '
            f'{run.split} there, {split} here): its training examples may be this run\'s validation examples. '
            'Use the same dataset files, validation_size and split_seed as that run.')
    source_lane = lane if run.num_tickets > 1 else 0
    if not run.has_ticket(source_lane):
        raise configuration.ConfigError(
            f'config.init_from={source!r} holds {run.num_tickets} seeds\' tickets, not one for seed index {lane}: '
            'use a source with one seed or with at least config.num_seeds seeds.')
    spec, trained, masks = run.ticket(source_lane)
    if weights == 'trained':
        variables = trained
    elif weights == 'initial':
        variables = run.theta0(source_lane)
        if variables is None:
            raise configuration.ConfigError(
                f'config.init_from_weights=initial needs a weight-reset (lth) run; {source!r} has no theta_0 '
                '(grown networks have none).')
    else:
        variables = init_variables(spec)
    expected = jax.eval_shape(lambda: init_variables(spec))['params']
    if jax.tree.map(np.shape, expected) != jax.tree.map(np.shape, variables['params']):
        raise configuration.ConfigError(f"The ticket in {source!r} does not fit this dataset's inputs.")
    logging.info('Starting from the %s weights of the ticket in %s (%s).', weights, source, spec.describe())
    return spec, variables, masks
