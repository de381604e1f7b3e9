"""Classic lottery-ticket search (iterative magnitude pruning, the "weight reset policy").

For rounds r = 0..N: train; record the early-stopping accuracies; prune
(``'imp'``: a fraction of the remaining weights, layer-wise or global;
``'level'``: each selected layer to the round's target sparsity); reset the
survivors to their initial values theta_0 (or rewind to step k of round 0);
train again. Round 0 is the dense network.

Controls (as OpenLTH's branches), run at every pruned round on the *same*
masks as the ticket: ``random_reinit`` (same mask, fresh random init) and
``random_prune`` (random mask with the same per-layer counts, theta_0).
"""

from __future__ import annotations

from typing import Any

import jax
import ml_collections

from jst import checkpointing
from jst import configuration
from jst import experiment as exp_lib
from jst import masks as masks_lib
from jst import models
from jst import train as train_lib

PyTree = Any


def prune_round(config: ml_collections.ConfigDict, params: PyTree, masks: PyTree,
                round_index: int) -> PyTree:
    """Masks after the pruning that ends round ``round_index - 1`` (``round_index`` >= 1)."""
    if config.pruning == 'imp':
        overrides = dict(config.prune_rates)
        if config.prune_scope == 'global':
            return masks_lib.magnitude_prune(params, masks, float(config.prune_fraction), 'global')
        rates = masks_lib.layer_rates(masks, config.prune_fraction, overrides)
        return _jit_layerwise(params, masks, rates)
    if config.level_schedule == 'geometric':
        sparsity = masks_lib.geometric_level_sparsity(config.target_sparsity, round_index,
                                                      config.num_rounds)
    else:
        sparsity = float(config.target_sparsity)
    return _jit_level(params, masks, sparsity)


@jax.jit
def _jit_layerwise(params, masks, rates):
    return masks_lib.magnitude_prune(params, masks, rates, 'layerwise')


@jax.jit
def _jit_level(params, masks, sparsity):
    return masks_lib.prune_to_sparsity(masks_lib.magnitude_scores(params, masks), masks, sparsity)


def initial_masks(config: ml_collections.ConfigDict, params: PyTree) -> PyTree:
    """Masks of the start network; a growing network may start with nothing prunable."""
    return masks_lib.create_masks(params, config.prune_include, config.prune_exclude or None,
                                  allow_empty=config.method == 'juvenile')


def run_lth(exp: exp_lib.Experiment) -> list[dict[str, Any]]:
    """Runs (or resumes) the weight-reset lottery ticket search; returns the summary records.

    Progress (``exp.meta``) moves through phases per round: ``'train'`` (the
    ticket), then ``'controls'`` (one per control, on the same masks); the
    masks for the next round are computed right after the ticket's training.
    A checkpoint is written after every phase and inside trainings.
    """
    config = exp.config
    spec = models.spec_from_config(configuration.model_config_for(config, 'lth'))
    ticket = exp_lib.load_ticket(exp)
    if ticket is not None:
        spec = ticket[0]
    trainer = exp.trainer(spec)
    controls = configuration.control_list(config.control)
    if not exp_lib.restore_progress(exp):
        if ticket is None:
            theta0 = models.init_variables(spec, exp.keys['init'], exp.input_shape)
            masks0 = initial_masks(config, theta0['params'])
        else:
            _, theta0, masks0 = ticket
        exp.arrays = {'theta0': exp_lib.variables_to_storable(theta0),
                      'masks': checkpointing.to_storable(masks0)}
        exp.meta = {'phase': 'train', 'round': 0, 'control_index': 0, 'training': None,
                    'cumulative': {name: 0 for name in ('none',) + controls}}
    theta0 = exp_lib.variables_from_storable(exp.arrays['theta0'])

    def rewind_point() -> dict[str, Any]:
        if 'rewind' in exp.arrays:
            return exp_lib.variables_from_storable(exp.arrays['rewind'])
        return theta0

    def store_rewind(state: train_lib.TrainState) -> None:
        exp.arrays['rewind'] = exp_lib.variables_to_storable(
            {'params': state.params, **({'batch_stats': state.batch_stats} if state.batch_stats else {})})

    meta = exp.meta
    while meta['phase'] != 'done':
        r = meta['round']
        masks = checkpointing.masks_from_storable(exp.arrays['masks'], theta0['params'])
        start = config.rewind_step if r > 0 else 0
        if meta['phase'] == 'train':
            state = train_lib.create_train_state(rewind_point() if r > 0 else theta0, masks, trainer.tx)
            result = exp_lib.train_round(
                exp, spec, state, start=start, label=f'lth round {r}', tag=f'round{r}/none',
                snapshot_at=config.rewind_step if r == 0 else 0, on_snapshot=store_rewind)
            meta['cumulative']['none'] += result.steps
            exp_lib.log_round(exp, exp_lib.make_record(
                exp, round_index=r, method='lth', control='none', spec=spec, result=result,
                cumulative_steps=meta['cumulative']['none']), result)
            if r < config.num_rounds:
                exp.arrays['next_masks'] = checkpointing.to_storable(
                    prune_round(config, result.state.params, masks, r + 1))
            else:
                exp_lib.store_final(exp, spec, result.state)
            meta['phase'], meta['control_index'] = 'controls', 0
            exp_lib.save_progress(exp)
        if meta['phase'] == 'controls':
            while r > 0 and meta['control_index'] < len(controls):
                control = controls[meta['control_index']]
                result_c = _run_control(exp, spec, trainer, control, masks, rewind_point(), r, start)
                meta['cumulative'][control] += result_c.steps
                exp_lib.log_round(exp, exp_lib.make_record(
                    exp, round_index=r, method='lth', control=control, spec=spec, result=result_c,
                    cumulative_steps=meta['cumulative'][control]), result_c)
                meta['control_index'] += 1
                exp_lib.save_progress(exp)
            if r < config.num_rounds:
                exp.arrays['masks'] = exp.arrays.pop('next_masks')
                meta['round'], meta['phase'] = r + 1, 'train'
            else:
                meta['phase'] = 'done'
            exp_lib.save_progress(exp)
    return exp.summary


def _run_control(exp: exp_lib.Experiment, spec: models.ModelSpec, trainer: train_lib.Trainer,
                 control: str, masks: PyTree, rewind: dict[str, Any], r: int,
                 start: int) -> exp_lib.RoundResult:
    key = jax.random.fold_in(exp.keys['control'], r)
    if control == 'random_reinit':
        variables, control_masks = models.init_variables(spec, key, exp.input_shape), masks
    elif control == 'random_prune':
        variables, control_masks = rewind, masks_lib.random_masks_like(masks, key)
    else:
        raise configuration.ConfigError(f'Unknown control {control!r}.')
    state = train_lib.create_train_state(variables, control_masks, trainer.tx)
    return exp_lib.train_round(exp, spec, state, start=start, label=f'lth round {r} ({control})',
                               tag=f'round{r}/{control}')
