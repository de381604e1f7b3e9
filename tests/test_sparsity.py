"""jaxpruner's features on jst's design, each against its paper's definition on hand-computed pytrees:
ERK and uniform distributions, one-shot / iterative / polynomial schedules, N:M masks, SET and RigL drop-and-grow
counts, and the optax wrapper that keeps masks in its state (gradual magnitude pruning)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jst.ops import masks as M
from jst.ops import pytrees
from jst.ops import sparse_training as T
from jst.ops import sparsity as S


def two_layers():
    return {'Dense_0': {'kernel': jnp.ones((4, 8)), 'bias': jnp.zeros(8)},
            'Dense_1': {'kernel': jnp.ones((8, 2)), 'bias': jnp.zeros(2)}}


def test_erk_matches_the_hand_computation():
    # raw = (4+8)/32 = 0.375 and (8+2)/16 = 0.625; eps = 24 / (0.375*32 + 0.625*16) = 24/22.
    out = pytrees.flatten(S.erk_sparsities(M.create_masks(two_layers()), 0.5))
    np.testing.assert_allclose(out['Dense_0/kernel'], 1 - 0.375 * 24 / 22, rtol=1e-12)
    np.testing.assert_allclose(out['Dense_1/kernel'], 1 - 0.625 * 24 / 22, rtol=1e-12)
    assert out['Dense_0/bias'] is None
    uniform = pytrees.flatten(S.erk_sparsities(M.create_masks(two_layers()), 0.5, power_scale=0.0))
    assert uniform['Dense_0/kernel'] == pytest.approx(0.5) and uniform['Dense_1/kernel'] == pytest.approx(0.5)


def test_erk_keeps_small_layers_dense_and_the_total_exact():
    params = {'small': {'kernel': jnp.ones((2, 2))}, 'big': {'kernel': jnp.ones((100, 100))}}
    masks = M.create_masks(params)
    out = pytrees.flatten(S.erk_sparsities(masks, 0.9))
    assert out['small/kernel'] == 0.0  # raw 1.0 would need density > 1
    kept = 4 * (1 - out['small/kernel']) + 10_000 * (1 - out['big/kernel'])
    assert kept == pytest.approx(0.1 * 10_004)
    pruned = M.prune_to_sparsity(M.magnitude_scores(params, masks), masks, S.erk_sparsities(masks, 0.9))
    assert M.sparsity_stats(pruned)['layers'] == {'big/kernel': (996, 10_000), 'small/kernel': (4, 4)}
    assert pytrees.flatten(S.uniform_sparsities(masks, 0.3))['big/kernel'] == 0.3


def test_schedules_by_hand():
    np.testing.assert_allclose([S.one_shot_sparsity(t, 0.8, 10) for t in (0, 9, 10, 50)], [0, 0, 0.8, 0.8])
    np.testing.assert_allclose([S.iterative_sparsity(t, 0.2, 10, 2) for t in (0, 10, 25, 100)],
                               [0, 0.2, 0.36, 0.36], rtol=1e-6)
    # s_f + (s_i - s_f)(1 - p)^3 with t rounded down to the frequency grid after begin.
    got = [float(S.polynomial_sparsity(t, 0.9, 100, 300, frequency=50)) for t in (0, 100, 149, 150, 200, 300, 999)]
    want = [0.0, 0.0, 0.0, 0.9 - 0.9 * 0.75 ** 3, 0.9 - 0.9 * 0.5 ** 3, 0.9, 0.9]
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert [bool(S.is_update_step(t, 100, 300, 50)) for t in (50, 100, 120, 150, 300, 350)] == [
        False, True, False, True, True, False]
    assert float(jax.jit(S.polynomial_sparsity, static_argnums=(1, 2, 3, 4))(200, 0.9, 100, 300, 50)) == \
        pytest.approx(0.9 - 0.9 * 0.125)
    with pytest.raises(ValueError, match='begin_step'):
        S.polynomial_sparsity(0, 0.9, 300, 100)


def test_n_m_keeps_the_top_n_of_every_m_inputs():
    scores = {'k': {'kernel': jnp.array([[4., 0.], [1., 3.], [3., 2.], [2., 1.], [0., 5.], [9., 5.], [1., 1.],
                                         [2., 0.]])}}
    masks = M.create_masks(scores)
    out = S.n_m_masks(scores, masks, 2, 4)['k']['kernel']
    np.testing.assert_array_equal(out[:, 0], [1, 0, 1, 0, 0, 1, 0, 1])
    np.testing.assert_array_equal(out[:, 1], [0, 1, 1, 0, 1, 1, 0, 0])  # ties 5, 5: lower index first
    pruned = {'k': {'kernel': masks['k']['kernel'].at[0, 0].set(False)}}
    again = S.n_m_masks(scores, pruned, 2, 4)['k']['kernel']
    assert not again[0, 0] and again[:4, 0].sum() == 2
    with pytest.raises(ValueError, match="k/kernel has 8 weights along axis -2, not a multiple of m=3"):
        S.n_m_masks(scores, masks, 2, 3)


def _layer_params():
    w = jnp.arange(1.0, 13.0).reshape(3, 4)  # |w| ranks by position
    return {'d': {'kernel': w}}, {'d': {'kernel': jnp.array([[1, 1, 0, 1], [0, 1, 1, 0], [1, 0, 1, 1]], bool)}}


def test_rigl_drops_the_smallest_and_grows_the_largest_gradients():
    params, masks = _layer_params()  # 8 kept; drop_fraction 0.25 -> k = 2: drop weights 1 and 2
    grads = {'d': {'kernel': jnp.array([[0., 0., 7., 0.], [6., 0., 0., 1.], [0., 5., 0., 0.]])}}
    new_params, new_masks = T.rigl_update(params, masks, grads, 0.25)
    want = np.array([[0, 0, 1, 1], [1, 1, 1, 0], [1, 0, 1, 1]], bool)
    np.testing.assert_array_equal(new_masks['d']['kernel'], want)
    assert int(new_masks['d']['kernel'].sum()) == 8
    np.testing.assert_array_equal(new_params['d']['kernel'][0, 2], 0)  # grown at zero
    np.testing.assert_array_equal(new_params['d']['kernel'][1, 0], 0)
    np.testing.assert_array_equal(new_params['d']['kernel'][0, :2], 0)  # dropped
    np.testing.assert_array_equal(new_params['d']['kernel'][2, 3], 12)  # kept throughout


def test_set_keeps_counts_and_grows_among_the_inactive():
    params, masks = _layer_params()
    for seed in range(5):
        _, new = T.set_update(params, masks, jax.random.key(seed), 0.5)
        new = np.asarray(new['d']['kernel'])
        assert new.sum() == 8
        old = np.asarray(masks['d']['kernel'])
        dropped = old & ~new
        assert dropped.sum() + (old & new).sum() == 8
        # The 4 smallest kept weights (1, 2, 4, 6) are the only candidates for dropping.
        assert set(np.flatnonzero(dropped.reshape(-1)) + 1) <= {1, 2, 4, 6}
    np.testing.assert_allclose([T.cosine_drop_fraction(t, 0.3, 100) for t in (0, 50, 100, 200)],
                               [0.3, 0.15, 0.0, 0.0], atol=1e-7)


def test_masked_optimizer_prunes_gradually_to_the_exact_target_and_keeps_zeros():
    key = jax.random.key(0)
    params = {'a': {'kernel': jax.random.normal(key, (10, 10)), 'bias': jnp.zeros(10)}}
    target = jax.random.normal(jax.random.key(1), (10, 10))
    tx = T.masked_optimizer(optax.sgd(0.05),
                            sparsity_schedule=lambda t: S.polynomial_sparsity(t, 0.8, 5, 25, 5),
                            update_schedule=lambda t: S.is_update_step(t, 5, 25, 5))
    state = tx.init(params)

    @jax.jit
    def step(params, state):
        grads = jax.grad(lambda p: jnp.sum((p['a']['kernel'] - target) ** 2))(params)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    kept = []
    for _ in range(40):
        params, state = step(params, state)
        m = np.asarray(state.masks['a']['kernel'])
        kept.append(int(m.sum()))
        assert not np.any(np.asarray(params['a']['kernel'])[~m])
    assert kept[0] == 100 and kept[-1] == 20 and all(a >= b for a, b in zip(kept, kept[1:]))
    # Step 5 begins at sparsity 0; step 10 prunes to 0.8 - 0.8 * 0.75^3: round(100 * (1 - 0.4625)) = 54 kept.
    assert kept[9] == 100 and kept[10] == 54 and kept[24] == 100 - round(100 * (0.8 - 0.8 * 0.25 ** 3))
    with pytest.raises(ValueError, match='both'):
        T.masked_optimizer(optax.sgd(0.1), sparsity_schedule=lambda t: 0.5)
