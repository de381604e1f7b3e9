"""The recursive juvenile search: grow the winning ticket, keep its weights, prune again.

For rounds r = 0..N: train the current network (from its current weights:
never reset); record; prune (the round's level / IMP fraction); then extend
the structure function-preservingly:

* ``growth='paper'``: insert one identity layer/block at ``grow_position``
  (default: end of the hidden stack), as arXiv 2109.03862 does.
* ``growth='search'``: build candidate extensions (deepen at each allowed
  position, widen each hidden layer by each of ``search.widen_by``), train
  each for ``search.probe_steps`` from the same weights and batches, and keep
  the one with the best *validation* accuracy (the test split is never
  touched). Candidates with the same architecture (e.g. deepening a
  uniform-width MLP at different positions) are trained together in one
  compiled, ``vmap``-ed program. Stops at ``num_rounds``, after
  ``search.patience`` rounds without validation gain, or at
  ``search.max_depth`` / ``search.max_params``; the last record says why.

Optimizer state: Adam moments of surviving weights carry over, new weights
start at zero (``optimizer_state_on_growth='carry'``), or the optimizer is
re-initialised (``'reset'``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from jst import configuration
from jst import experiment as exp_lib
from jst import expand
from jst import lottery
from jst import masks as masks_lib
from jst import models
from jst import train as train_lib

PyTree = Any


def growth_options(config: ml_collections.ConfigDict) -> expand.GrowthOptions:
    return expand.GrowthOptions(new_mask=config.new_layer_mask, noise_scale=float(config.noise_scale),
                                block_init=config.block_init, widen_method=config.widen_method,
                                prune_include=config.prune_include,
                                prune_exclude=config.prune_exclude or None)


def depth(spec: models.ModelSpec) -> int:
    if isinstance(spec, models.MLPSpec):
        return len(spec.widths)
    if isinstance(spec, models.ResNetSpec):
        return len(spec.block_widths)
    return len(spec.conv_channels) + len(spec.dense_widths)


@dataclasses.dataclass(frozen=True)
class Candidate:
    name: str
    op: str        # 'deepen' | 'widen'
    position: int  # deepen position or widened layer
    amount: int = 0


def candidate_list(spec: models.ModelSpec, search: ml_collections.ConfigDict) -> list[Candidate]:
    """Every extension the search considers for ``spec``."""
    out = []
    if search.deepen:
        if isinstance(spec, models.MLPSpec):
            positions = range(1, len(spec.widths) + 1)
        elif isinstance(spec, models.ResNetSpec):
            positions = range(0, len(spec.block_widths) + 1)
        else:
            positions = range(1, len(spec.conv_channels) + 1)
        out += [Candidate(f'deepen@{p}', 'deepen', p) for p in positions]
    hidden = (len(spec.widths) if isinstance(spec, models.MLPSpec) else
              len(spec.block_widths) if isinstance(spec, models.ResNetSpec) else 0)
    for layer in range(hidden):
        for amount in search.widen_by:
            out.append(Candidate(f'widen{layer}+{amount}', 'widen', layer, int(amount)))
    return out


def apply_candidate(cand: Candidate, state: train_lib.TrainState, spec: models.ModelSpec, key: jax.Array,
                    options: expand.GrowthOptions) -> expand.Expansion:
    if cand.op == 'deepen':
        return expand.deepen(state.params, state.masks, spec, key, position=cand.position,
                             batch_stats=state.batch_stats or None, options=options)
    return expand.widen(state.params, state.masks, spec, key, layer=cand.position, amount=cand.amount,
                        batch_stats=state.batch_stats or None, options=options)


def grown_state(exp: exp_lib.Experiment, state: train_lib.TrainState, grown: expand.Expansion,
                tx) -> train_lib.TrainState:
    """TrainState of the extended network (optimizer state carried or reset)."""
    if exp.config.optimizer_state_on_growth == 'carry':
        opt_state = expand.extend_optimizer_state(tx, state.opt_state, grown.params, grown.plan)
    else:
        opt_state = tx.init(grown.params)
    return train_lib.TrainState(step=state.step, params=grown.params, batch_stats=grown.batch_stats,
                                masks=grown.masks, opt_state=opt_state)


# --------------------------------------------------------------------------
# Probe training of candidates (validation only), vmapped per architecture
# --------------------------------------------------------------------------
def make_probe_fn(trainer: train_lib.Trainer, num_train: int, probe_steps: int) -> Callable[..., Any]:
    """Jitted, vmapped (states, train_x, train_y, val_x, val_y, val_w, key) -> val accuracy [C].

    Only the training and validation arrays are passed in: the test split
    cannot influence the choice.
    """
    train_step, evaluate, bsz = trainer.train_step, trainer.evaluate, trainer.batch_size

    def one(state, train_x, train_y, val_x, val_y, val_w, key):
        n_batches = num_train // bsz
        perm = jax.random.permutation(key, num_train)[: n_batches * bsz].reshape(n_batches, bsz)
        idx = perm[jnp.arange(probe_steps) % n_batches]

        def body(st, batch_idx):
            st, _ = train_step(st, train_x[batch_idx], train_y[batch_idx])
            return st, None

        state, _ = jax.lax.scan(body, state, idx)
        _, acc = evaluate(state.params, state.batch_stats, val_x, val_y, val_w)
        return acc

    return jax.jit(jax.vmap(one, in_axes=(0, None, None, None, None, None, None)))


def _stack(trees: list[PyTree]) -> PyTree:
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def evaluate_candidates(exp: exp_lib.Experiment, state: train_lib.TrainState, spec: models.ModelSpec,
                        key: jax.Array, options: expand.GrowthOptions) -> list[dict[str, Any]]:
    """Probe-trains every candidate; returns [{name, val_accuracy, spec, expansion}] (validation only)."""
    search = exp.config.search
    cands = candidate_list(spec, search)
    results = []
    groups: dict[models.ModelSpec, list[tuple[Candidate, expand.Expansion, train_lib.TrainState]]] = {}
    trainer_tx = exp.trainer(spec).tx
    for i, cand in enumerate(cands):
        grown = apply_candidate(cand, state, spec, jax.random.fold_in(key, i), options)
        if depth(grown.spec) > search.max_depth or models.count_params(grown.params) > search.max_params:
            continue
        groups.setdefault(grown.spec, []).append((cand, grown, grown_state(exp, state, grown, trainer_tx)))
    d = exp.data
    probe_key = jax.random.fold_in(key, 10_000)
    for new_spec, members in groups.items():
        probe = make_probe_fn(exp.trainer(new_spec), exp.num_train, int(search.probe_steps))
        stacked = _stack([m[2] for m in members])
        accs = np.asarray(probe(stacked, d.train_x, d.train_y, d.val_x, d.val_y, d.val_w, probe_key))
        for (cand, grown, _), acc in zip(members, accs):
            results.append({'name': cand.name, 'val_accuracy': float(acc), 'spec': grown.spec,
                            'expansion': grown})
    return results


# --------------------------------------------------------------------------
# The driver
# --------------------------------------------------------------------------
def run_juvenile(exp: exp_lib.Experiment) -> list[dict[str, Any]]:
    """Runs (or resumes) the recursive juvenile search; returns the summary records.

    The state at the start of each round (grown, pruned weights, masks,
    optimizer state and spec) is checkpointed, as is progress inside
    trainings.
    """
    config = exp.config
    options = growth_options(config)
    if not exp_lib.restore_progress(exp):
        ticket = exp_lib.load_ticket(exp)
        if ticket is None:
            spec = models.spec_from_config(configuration.model_config_for(config, 'juvenile'))
            variables = models.init_variables(spec, exp.keys['init'], exp.input_shape)
            masks = lottery.initial_masks(config, variables['params'])
        else:
            spec, variables, masks = ticket
        state = train_lib.create_train_state(variables, masks, exp.trainer(spec).tx)
        exp.arrays = {'round_state': exp_lib.state_to_storable(state)}
        exp.meta = {'phase': 'train', 'round': 0, 'training': None, 'spec': models.spec_to_dict(spec),
                    'best_val': None, 'rounds_without_gain': 0, 'grown_by': None, 'candidates': None,
                    'cumulative': 0}
    meta = exp.meta
    while meta['phase'] != 'done':
        r = meta['round']
        spec = models.spec_from_config(meta['spec'])
        tx = exp.trainer(spec).tx
        state = exp_lib.state_from_storable(exp.arrays['round_state'], tx)
        result = exp_lib.train_round(exp, spec, state, label=f'juvenile round {r}', tag=f'round{r}')
        meta['cumulative'] += result.steps
        state = result.state
        if meta['best_val'] is None or result.best.val_accuracy > meta['best_val'] + 1e-9:
            meta['best_val'], meta['rounds_without_gain'] = result.best.val_accuracy, 0
        else:
            meta['rounds_without_gain'] += 1
        stop_reason = None
        if r == config.num_rounds:
            stop_reason = 'num_rounds'
        elif config.growth == 'search' and meta['rounds_without_gain'] >= config.search.patience:
            stop_reason = f"patience: {meta['rounds_without_gain']} rounds without validation gain"
        record = exp_lib.make_record(exp, round_index=r, method='juvenile', control='none', spec=spec,
                                     result=result, cumulative_steps=meta['cumulative'],
                                     growth=config.growth, grown_by=meta['grown_by'],
                                     candidates=meta['candidates'], stop_reason=stop_reason)
        if stop_reason is None:
            grown, grown_by, candidates = _prune_and_grow(exp, state, spec, r, options)
            if grown is None:
                stop_reason = record['stop_reason'] = grown_by
            else:
                new_state = grown_state(exp, state, grown, tx)
                exp.arrays['round_state'] = exp_lib.state_to_storable(new_state)
                meta.update(spec=models.spec_to_dict(grown.spec), grown_by=grown_by, candidates=candidates,
                            round=r + 1)
        exp_lib.log_round(exp, record, result)
        if stop_reason is not None:
            meta['phase'] = 'done'
            exp_lib.store_final(exp, spec, state)
        exp_lib.save_progress(exp)
    return exp.summary


def _prune_and_grow(exp: exp_lib.Experiment, state: train_lib.TrainState, spec: models.ModelSpec,
                    r: int, options: expand.GrowthOptions):
    """Prunes the trained network into this round's ticket and extends it.

    Returns (expansion, growth step name, candidate scores); (None, reason, None) when the search
    has no candidate within budget.
    """
    config = exp.config
    masks = lottery.prune_round(config, state.params, state.masks, r + 1)
    state = state.replace(masks=masks, params=masks_lib.apply_masks(state.params, masks))
    key = jax.random.fold_in(exp.keys['growth'], r)
    if config.growth == 'paper':
        grown = expand.deepen(state.params, state.masks, spec, key, position=config.grow_position,
                              batch_stats=state.batch_stats or None, options=options)
        where = 'end' if config.grow_position < 0 else config.grow_position
        return grown, f'deepen@{where}', None
    scored = evaluate_candidates(exp, state, spec, key, options)
    if not scored:
        return None, 'budget: no candidate within search.max_depth / search.max_params', None
    best = max(scored, key=lambda c: c['val_accuracy'])
    candidates = [{'name': c['name'], 'val_accuracy': c['val_accuracy'],
                   'architecture': c['spec'].describe()} for c in scored]
    logging.info('round %d candidates: %s -> %s', r,
                 ', '.join(f"{c['name']}={c['val_accuracy']:.4f}" for c in candidates), best['name'])
    return best['expansion'], best['name'], candidates
