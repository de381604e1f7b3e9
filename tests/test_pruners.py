"""The pruners of ``jst.training.pruning.PRUNERS`` that change masks while a round trains, against their definitions:
gradual magnitude pruning (Zhu & Gupta 2017) and RigL (Evci et al. 2020, Algorithm 1); exact over a split run."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jst.data import datasets as D
from jst.models import networks
from jst.models import specs
from jst.ops import masks as M
from jst.training import pruning
from jst.training import train as T
from jst.training import train_loop as L

SPEC, SHAPE = specs.MLPSpec((32, 16)), (8, 8, 1)


def _state(prune=0.0, seed=0):
    variables = networks.init_variables(SPEC, jax.random.key(seed), SHAPE)
    masks = M.create_masks(variables['params'])
    if prune:
        masks = M.prune_to_sparsity(M.magnitude_scores(variables['params'], masks), masks, prune)
    return T.create_train_state(variables, masks, T.make_optimizer('adam', 1e-2))


def _frozen_step(grads):
    """A step that changes nothing and returns ``grads``: what the wrappers do is all that changes."""
    return lambda st, x, y: (st.replace(step=st.step + 1), {'loss': jnp.zeros(())}, grads)


def _kernels(tree):
    return {k: np.asarray(v['kernel']) for k, v in tree.items()}


def test_gmp_follows_the_cubic_schedule_on_update_steps_only():
    """s(t) = s_1 + (s_0 - s_1)(1 - t / end)^3 on steps t = 100, 200, ... <= end (end = the last multiple of
    mask_update_every within mask_update_end of the round): each layer keeps round((1 - s(t)) * size) of its
    largest weights; other steps leave the masks alone; the round ends at s_1 exactly."""
    plan = pruning.PruningPlan(pruning='gmp', target_sparsity=0.9, num_rounds=2, mask_update_every=100,
                               mask_update_end=0.75)
    total, (s0, s1) = 1000, pruning.round_levels(plan, 2)
    assert (s0, s1) == pytest.approx((1 - 0.1 ** 0.5, 0.9))
    state = _state(prune=s0)
    weights = _kernels(state.params)
    step = _frozen_step(jax.tree.map(jnp.zeros_like, state.params))
    update = jax.jit(functools.partial(pruning.gmp_step, plan, total, step))
    for t in (50, 100, 250, 300, 700, 750, 999):
        out, _ = update(state, None, None, jnp.int32(t), jnp.array([s0, s1], jnp.float32))
        kept = _kernels(out.masks)
        if t % 100 or t > 700:  # end = 700 (0.75 * 1000 = 750 -> the last multiple of 100)
            chex.assert_trees_all_equal(out.masks, state.masks)
            continue
        s = s1 + (s0 - s1) * (1 - t / 700) ** 3
        for name, k in kept.items():
            before = int(np.asarray(state.masks[name]['kernel']).sum())  # pruning never regrows: s(t) is a floor
            assert k.sum() == min(round((1 - s) * k.size), before), (name, t)
            w = np.abs(weights[name])
            assert w[k].min() >= w[~k].max(), 'the largest magnitudes are kept'
            assert (np.asarray(out.params[name]['kernel'])[~k] == 0).all()
        if t == 700:
            assert all(k.sum() == round(0.1 * k.size) for k in kept.values())


def test_rigl_rewires_instead_of_stepping_and_keeps_every_layers_count():
    """On an update step each layer drops its round(f(t) * kept) smallest-magnitude weights, f(t) = 0.3 / 2 *
    (1 + cos(pi t / end)), and grows as many of the then-inactive weights with the largest |gradient|; grown weights
    are 0 (one dropped and regrown at once keeps its value: RigL's reinit_when_same=False), the others keep their
    pre-step values and the optimizer state is the pre-step one (no SGD step). Off
    the update grid, and in the dense round 0 (levels (0, 0)), the step is the plain masked step."""
    plan = pruning.PruningPlan(pruning='rigl', target_sparsity=0.8, num_rounds=1, mask_update_every=100,
                               mask_update_end=0.75, rigl_drop_fraction=0.3)
    state = _state(prune=0.8)
    grads = jax.tree.map(lambda p: jax.random.normal(jax.random.key(p.size), p.shape), state.params)
    stepped_marker = jax.tree.map(lambda p: p + 1.0, state.params)
    step = lambda st, x, y: (st.replace(step=st.step + 1, params=stepped_marker), {}, grads)
    update = jax.jit(functools.partial(pruning.rigl_step, plan, 1000, step))
    levels = jnp.array(pruning.round_levels(plan, 1), jnp.float32)
    out, _ = update(state, None, None, jnp.int32(300), levels)
    f = 0.3 / 2 * (1 + np.cos(np.pi * 300 / 700))
    for name, new in _kernels(out.masks).items():
        old = np.asarray(state.masks[name]['kernel']).reshape(-1)
        w = np.abs(np.asarray(state.params[name]['kernel'])).reshape(-1)
        g = np.abs(np.asarray(grads[name]['kernel'])).reshape(-1)
        k = int(np.round(f * old.sum()))
        dropped = np.flatnonzero(old)[np.argsort(w[old], kind='stable')[:k]]  # the k smallest kept weights
        after_drop = old.copy()
        after_drop[dropped] = False
        candidates = np.flatnonzero(~after_drop)
        grown = candidates[np.argsort(-g[candidates], kind='stable')[:k]]  # the k largest |gradient| inactive
        expected = after_drop.copy()
        expected[grown] = True
        assert k > 0 and new.sum() == old.sum(), name
        np.testing.assert_array_equal(new.reshape(-1), expected, err_msg=name)
        params = np.asarray(out.params[name]['kernel']).reshape(-1)
        before = np.asarray(state.params[name]['kernel']).reshape(-1)
        both = old & expected  # kept through the update (with a dropped weight regrown at once, as RigL's default)
        assert (params[~both] == 0).all(), 'newly grown (and dropped) weights are 0'
        np.testing.assert_array_equal(params[both], before[both])  # no SGD step on the others
    chex.assert_trees_all_equal(out.opt_state, state.opt_state)
    off, _ = update(state, None, None, jnp.int32(250), levels)
    chex.assert_trees_all_equal(off.params, stepped_marker)
    dense, _ = update(state, None, None, jnp.int32(300), jnp.zeros(2))
    chex.assert_trees_all_equal(dense.params, stepped_marker)


@pytest.mark.parametrize('name', ['gmp', 'rigl'])
def test_in_round_pruning_is_exact_over_a_split_run(name):
    """The masks change inside the round as a pure function of (state, batch, step): a round trained in two
    pieces (a checkpoint and resume between them) gives the very same state as one piece."""
    plan = pruning.PruningPlan(pruning=name, target_sparsity=0.8, num_rounds=1, mask_update_every=10,
                               mask_update_end=0.75)
    rng = np.random.default_rng(0)
    make = lambda n: D.Split(rng.integers(0, 256, (n, *SHAPE), dtype=np.uint8),
                             rng.integers(0, 10, (n,)).astype(np.int32))
    ds = D.Dataset('mnist', make(600), make(200), make(300), 10, 'numpy')
    trainer = T.Trainer(networks.build_model(SPEC), T.make_optimizer('adam', 1e-2), 30,
                        functools.partial(D.preprocess, dataset='mnist'), pruning.in_round_update(plan, 60))
    state = T.create_train_state(networks.init_variables(SPEC, jax.random.key(0), SHAPE),
                                 pruning.prune(plan, _state().params, _state().masks, 1) if name == 'rigl'
                                 else _state().masks, trainer.tx)
    data, seg = T.device_data(ds), L.make_segment_fn(trainer, len(ds.train))
    run = functools.partial(L.train_steps, seg, data=data, key=jax.random.key(1), spe=20, eval_every=10, total=60,
                            levels=pruning.round_levels(plan, 1))
    whole, _ = run(state=state, start=0, stop=60)
    first, _ = run(state=state, start=0, stop=25)
    split, _ = run(state=first, start=25, stop=60)
    chex.assert_trees_all_equal(whole.masks, split.masks)
    chex.assert_trees_all_close(whole.params, split.params, rtol=0, atol=0)
    assert not jax.tree.all(jax.tree.map(lambda a, b: bool((a == b).all()), whole.masks, state.masks))
    counts = lambda masks: {k: int(np.asarray(m['kernel']).sum()) for k, m in masks.items()}
    if name == 'gmp':
        sizes = {k: np.asarray(m['kernel']).size for k, m in whole.masks.items()}
        assert counts(whole.masks) == {k: round(0.2 * n) for k, n in sizes.items()}, 'the round ends at its level'
    else:
        assert counts(whole.masks) == counts(state.masks), 'RigL keeps every layer\'s count'


def test_every_named_choice_has_its_registry_entry():
    """The names the config accepts (``configuration.CHOICES``) are exactly the registries' keys: a control, a
    growth policy or a pruner cannot be accepted by validation and then fall through an if-chain."""
    from jst.run import configuration  # pylint: disable=g-import-not-at-top
    from jst.searches import lth, prune_and_grow  # pylint: disable=g-import-not-at-top
    from jst.training import growth  # pylint: disable=g-import-not-at-top
    assert set(configuration.CHOICES['pruning']) == set(pruning.PRUNERS)
    assert set(configuration.CHOICES['growth']) == set(prune_and_grow.GROWTH_POLICIES)
    assert set(pruning.CONTROLS) - {'none'} == set(lth.CONTROL_STARTS)
    kinds = {spec.deepened(spec.deepen_positions[0])[1].kind for spec in (
        specs.MLPSpec((8,)), specs.ConvSpec((4, 4), (False, True), (8,)), specs.ResNetSpec((4,), stem_channels=4))}
    assert kinds - {'residual_block'} <= set(growth.IDENTITY_LAYERS), kinds
