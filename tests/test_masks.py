"""Masks: exact counts, scopes, level pruning, determinism, jit, never reviving."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jst.ops import masks as M
from jst.training import pruning


def _params(seed=0):
    rng = np.random.default_rng(seed)
    return {'a': {'kernel': jnp.asarray(rng.normal(size=(20, 30)), jnp.float32),
                  'bias': jnp.zeros((30,))},
            'b': {'kernel': jnp.asarray(rng.normal(size=(30, 7)), jnp.float32),
                  'bias': jnp.zeros((7,))}}


def test_create_masks_selects_kernels_only():
    masks = M.create_masks(_params())
    assert masks['a']['bias'] is None and masks['b']['bias'] is None
    assert masks['a']['kernel'].dtype == jnp.bool_ and bool(jnp.all(masks['a']['kernel']))
    only_a = M.create_masks(_params(), exclude='^b/')
    assert only_a['b']['kernel'] is None and only_a['a']['kernel'] is not None


def test_create_masks_without_match_names_paths():
    with pytest.raises(ValueError, match='a/kernel'):
        M.create_masks(_params(), include='nothing_matches')


@pytest.mark.parametrize('fraction', [0.0, 0.1, 0.2, 0.5, 0.95])
def test_layerwise_removes_exact_fraction_of_remaining(fraction):
    params, masks = _params(), M.create_masks(_params())
    # First prune something so that "remaining" != size.
    masks = M.magnitude_prune(params, masks, 0.3)
    before = M.sparsity_stats(masks)['layers']
    after = M.sparsity_stats(M.magnitude_prune(params, masks, fraction))['layers']
    for name, (kept, total) in before.items():
        assert after[name][0] == kept - int(np.round(fraction * kept)), name


def test_layerwise_prunes_smallest_magnitudes():
    params = _params()
    masks = M.magnitude_prune(params, M.create_masks(params), 0.5)
    w, m = np.abs(np.asarray(params['a']['kernel'])), np.asarray(masks['a']['kernel'])
    assert w[m].min() >= w[~m].max()


def test_per_layer_rates():
    params = _params()
    masks = M.create_masks(params)
    rates = M.layer_rates(masks, 0.2, {'^b/': 0.1})
    assert rates['a']['kernel'] == 0.2 and rates['b']['kernel'] == 0.1 and rates['a']['bias'] is None
    stats = M.sparsity_stats(M.magnitude_prune(params, masks, rates))['layers']
    assert stats['a/kernel'][0] == 600 - 120 and stats['b/kernel'][0] == 210 - 21


def test_global_prunes_exact_total_and_lowest_across_layers():
    params = _params()
    masks = M.magnitude_prune(params, M.create_masks(params), 0.4, scope='global')
    stats = M.sparsity_stats(masks)
    assert stats['kept'] == 810 - int(np.round(0.4 * 810))
    kept_vals = np.concatenate([np.abs(np.asarray(params[k]['kernel']))[np.asarray(masks[k]['kernel'])]
                                for k in 'ab'])
    pruned_vals = np.concatenate([np.abs(np.asarray(params[k]['kernel']))[~np.asarray(masks[k]['kernel'])]
                                  for k in 'ab'])
    assert kept_vals.min() >= pruned_vals.max()


def test_ties_broken_by_position_deterministically():
    params = {'l': {'kernel': jnp.ones((4, 5))}}
    masks = M.magnitude_prune(params, M.create_masks(params), 0.25)
    flat = np.asarray(masks['l']['kernel']).reshape(-1)
    np.testing.assert_array_equal(flat, np.arange(20) >= 5)


def test_pruned_weights_never_revive():
    params = _params()
    masks = M.magnitude_prune(params, M.create_masks(params), 0.5)
    # Make pruned weights huge: they must still stay pruned.
    big = jax.tree.map(lambda m, p: p if m is None else jnp.where(m, p, 1e6), masks, params,
                       is_leaf=lambda x: x is None)
    again = M.magnitude_prune(big, masks, 0.2)
    for k in 'ab':
        assert not np.any(np.asarray(again[k]['kernel']) & ~np.asarray(masks[k]['kernel']))
    level = M.prune_to_sparsity(M.magnitude_scores(big, masks), masks, 0.1)
    chex.assert_trees_all_equal(level, masks)  # fewer survivors than the level keeps: unchanged


@pytest.mark.parametrize('sparsity', [0.0, 0.5, 0.8, 0.95])
def test_level_pruning_reaches_target_per_layer(sparsity):
    params = _params()
    masks = M.prune_to_sparsity(M.magnitude_scores(params, M.create_masks(params)),
                                M.create_masks(params), sparsity)
    for name, (kept, total) in M.sparsity_stats(masks)['layers'].items():
        assert kept == int(np.round((1 - sparsity) * total)), name


def test_jit_matches_eager():
    params = _params(3)
    masks = M.create_masks(params)
    rates = M.layer_rates(masks, 0.2, {'^b/': 0.1})
    chex.assert_trees_all_equal(jax.jit(M.magnitude_prune)(params, masks, rates),
                                M.magnitude_prune(params, masks, rates))
    glob = jax.jit(M.magnitude_prune, static_argnames='scope')
    chex.assert_trees_all_equal(glob(params, masks, 0.3, scope='global'),
                                M.magnitude_prune(params, masks, 0.3, scope='global'))


def test_random_masks_like_keeps_counts_and_differs():
    params = _params()
    masks = M.magnitude_prune(params, M.create_masks(params), 0.6)
    rnd = M.random_masks_like(masks, jax.random.key(0))
    assert M.sparsity_stats(rnd)['layers'] == M.sparsity_stats(masks)['layers']
    assert not np.array_equal(np.asarray(rnd['a']['kernel']), np.asarray(masks['a']['kernel']))


def test_apply_masks_zeroes_and_passes_unmasked():
    params = _params()
    masks = M.magnitude_prune(params, M.create_masks(params), 0.5)
    out = M.apply_masks(params, masks)
    assert np.all(np.asarray(out['a']['kernel'])[~np.asarray(masks['a']['kernel'])] == 0)
    chex.assert_trees_all_equal(out['a']['bias'], params['a']['bias'])


def test_geometric_schedule():
    assert pruning.geometric_level_sparsity(0.95, 5, 5) == pytest.approx(0.95)
    s1 = pruning.geometric_level_sparsity(0.95, 1, 5)
    assert 1 - s1 == pytest.approx(0.05 ** 0.2)


def test_works_on_a_user_flax_module():
    import flax.linen as nn

    class Tiny(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.Conv(4, (3, 3))(x)
            return nn.Dense(3)(x.reshape((x.shape[0], -1)))

    params = Tiny().init(jax.random.key(0), jnp.zeros((1, 5, 5, 2)))['params']
    masks = M.magnitude_prune(params, M.create_masks(params), 0.5)
    stats = M.sparsity_stats(masks)['layers']
    assert set(stats) == {'Conv_0/kernel', 'Dense_0/kernel'}
    assert stats['Conv_0/kernel'] == (36, 72)


def test_erk_pruner_keeps_each_layers_erk_share_of_the_rounds_sparsity_by_magnitude():
    """config.pruning='erk' against its definition: after round r each layer keeps round(density * size) of its
    largest weights, density = eps * sum(shape) / prod(shape) with eps solved so that the kept total is
    (1 - s_r) of all prunable weights, s_r the geometric level schedule (layers 20x30 and 30x7 here)."""
    params = _params()
    masks = M.create_masks(params)
    plan = pruning.PruningPlan(pruning='erk', target_sparsity=0.9, num_rounds=2)
    s1 = pruning.geometric_level_sparsity(0.9, 1, 2)  # 1 - sqrt(0.1)
    raw = {'a': 50 / 600, 'b': 37 / 210}
    eps = (1 - s1) * 810 / (raw['a'] * 600 + raw['b'] * 210)
    out = pruning.prune(plan, params, masks, 1)
    for name, size in (('a', 600), ('b', 210)):
        kept = np.asarray(out[name]['kernel'])
        assert kept.sum() == round(eps * raw[name] * size), name
        w = np.abs(np.asarray(params[name]['kernel']))
        assert w[kept].min() >= w[~kept].max(), 'the largest magnitudes are kept'
    assert out['a']['bias'] is None
    assert abs(sum(np.asarray(out[n]['kernel']).sum() for n in 'ab') - (1 - s1) * 810) <= 1
    with pytest.raises(ValueError, match=r"pruning='gmp2' is unknown; choose one of \('imp', 'level', 'erk'"):
        pruning.prune(pruning.PruningPlan(pruning='gmp2'), params, masks, 1)
