"""The mask and expand library on modules that are not jst's: nested automatic names, insertion, NNX,
and inputs that are refused with the path and the fix (issue: the library in other people's projects)."""

import inspect

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jst.ops import expand as E
from jst.ops import masks as M
from jst.ops import pytrees
from jst.ops import widening as W


class Inner(nn.Module):
    width: int

    @nn.compact
    def __call__(self, x):
        return nn.relu(nn.Dense(self.width)(x))  # Inner_0/Dense_0


class Nested(nn.Module):
    """Automatic names that end alike: Dense_0 at the top and Inner_0/Dense_0 inside."""
    hidden: int = 12

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(self.hidden)(x))  # Dense_0
        x = Inner(12)(x)                       # Inner_0/Dense_0
        return nn.Dense(3)(x)                  # Dense_1


class Plain(nn.Module):
    """Dense_0 .. Dense_{n-1}, ReLU between; ``extra`` adds identity-ready layers after Dense_0."""
    extra: int = 0

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(16)(x))
        for _ in range(self.extra):
            x = nn.relu(nn.Dense(16)(x))
        x = nn.relu(nn.Dense(16)(x))
        return nn.Dense(4)(x)


def _adam_after_steps(model, params, x, steps=3):
    tx = optax.adam(1e-2)
    state = tx.init(params)
    for _ in range(steps):
        grads = jax.grad(lambda p: jnp.mean(model.apply({'params': p}, x) ** 2))(params)
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    return tx, params, state


def test_optimizer_state_follows_exact_paths_with_nested_automatic_names():
    x = jax.random.normal(jax.random.key(0), (8, 5))
    params = Nested().init(jax.random.key(1), x)['params']
    tx, params, state = _adam_after_steps(Nested(), params, x)
    grown = W.widen_layer(params, M.create_masks(params), jax.random.key(2), producer='Dense_0',
                          consumer='Inner_0/Dense_0', amount=4)
    new_state = E.extend_optimizer_state(tx, state, grown.params, grown.plan)
    mu, old_mu = new_state[0].mu, state[0].mu
    np.testing.assert_array_equal(mu['Dense_0']['kernel'][:, :12], old_mu['Dense_0']['kernel'])
    np.testing.assert_array_equal(mu['Dense_0']['kernel'][:, 12:], 0)
    np.testing.assert_array_equal(mu['Inner_0']['Dense_0']['kernel'][:12], old_mu['Inner_0']['Dense_0']['kernel'])
    np.testing.assert_array_equal(mu['Inner_0']['Dense_0']['kernel'][12:], 0)
    np.testing.assert_array_equal(mu['Dense_1']['kernel'], old_mu['Dense_1']['kernel'])
    np.testing.assert_allclose(Nested(16).apply({'params': grown.params}, x), Nested().apply({'params': params}, x),
                               atol=1e-5)


def test_optimizer_state_without_a_usable_plan_is_refused():
    x = jax.random.normal(jax.random.key(0), (8, 5))
    params = Nested().init(jax.random.key(1), x)['params']
    tx, params, state = _adam_after_steps(Nested(), params, x, 1)
    with pytest.raises(E.ExpansionError, match='needs the plan'):
        E.extend_optimizer_state(tx, state, params, None)
    with pytest.raises(E.ExpansionError, match=r"no plan entry: \['Dense_0/bias'"):
        E.extend_optimizer_state(tx, state, params, ())
    same = E.extend_optimizer_state(tx, state, params, E.identity_plan(params))
    jax.tree.map(np.testing.assert_array_equal, same, state)


@pytest.mark.parametrize('extra_before', [0, 1])
def test_insert_layer_into_a_user_module(extra_before):
    """An identity Dense after Dense_0: later automatic names shift up, outputs and Adam moments carry over."""
    x = jax.random.normal(jax.random.key(0), (8, 5))
    params = Plain(extra_before).init(jax.random.key(1), x)['params']
    masks = M.magnitude_prune(params, M.create_masks(params), 0.5)
    params = M.apply_masks(params, masks)
    tx, params, state = _adam_after_steps(Plain(extra_before), params, x)
    params = M.apply_masks(params, masks)
    grown = E.insert_layer(params, masks, 'Dense_0', options=E.GrowthOptions(new_mask='sparse'))
    last = 3 + extra_before
    assert sorted(grown.params) == [f'Dense_{i}' for i in range(last + 1)]
    np.testing.assert_array_equal(grown.params[f'Dense_{last}']['kernel'], params[f'Dense_{last - 1}']['kernel'])
    new_mask = grown.masks['Dense_1']['kernel']  # sparse: the network's density, always the diagonal
    assert bool(jnp.all(jnp.diag(new_mask))) and int(new_mask.sum()) == round(M.sparsity_stats(masks)['fraction_remaining'] * 256)
    E.assert_preserved(lambda p: Plain(extra_before).apply({'params': p}, x),
                       lambda p: Plain(extra_before + 1).apply({'params': p}, x), params, grown.params)
    new_state = E.extend_optimizer_state(tx, state, grown.params, grown.plan)
    np.testing.assert_array_equal(new_state[0].nu[f'Dense_{last}']['kernel'], state[0].nu[f'Dense_{last - 1}']['kernel'])
    np.testing.assert_array_equal(new_state[0].nu['Dense_1']['kernel'], 0)


class ConvStack(nn.Module):
    extra: int = 0

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(6, (3, 3))(x))      # Conv_0
        for _ in range(self.extra):
            x = nn.relu(nn.Conv(6, (3, 3))(x))  # inserted Dirac convs
        x = nn.relu(nn.Conv(4, (3, 3))(x))
        return nn.Dense(2)(x.reshape((x.shape[0], -1)))


def test_insert_dirac_conv_and_verified_widening():
    x = jax.random.normal(jax.random.key(0), (2, 6, 6, 3))
    params = ConvStack().init(jax.random.key(1), x)['params']
    m = M.create_masks(params)
    grown = E.insert_layer(params, m, 'Conv_0', kind='conv')
    assert sorted(grown.params) == ['Conv_0', 'Conv_1', 'Conv_2', 'Dense_0']
    E.assert_preserved(lambda p: ConvStack().apply({'params': p}, x), lambda p: ConvStack(1).apply({'params': p}, x),
                       params, grown.params)
    with pytest.raises(E.ExpansionError, match='changed the outputs'):  # verify= catches a wrong rebuild
        W.widen_layer(params, m, jax.random.key(2), producer='Conv_0', consumer='Conv_1', amount=2,
                      verify=(lambda p: ConvStack().apply({'params': p}, x),
                              lambda p: ConvStack().apply({'params': jax.tree.map(lambda a: a * 2, params)}, x)))


def test_insert_layer_needs_a_name_for_custom_names_and_finds_nested_layers():
    params = {'enc': {'kernel': jnp.ones((3, 4)), 'bias': jnp.zeros(4)}, 'head': {'kernel': jnp.ones((4, 2))}}
    with pytest.raises(E.ExpansionError, match='pass name='):
        E.insert_layer(params, M.create_masks(params), 'enc')
    grown = E.insert_layer(params, M.create_masks(params), 'enc', name='enc_id')
    assert sorted(grown.params) == ['enc', 'enc_id', 'head']
    x = jax.random.normal(jax.random.key(0), (8, 5))
    nested = Nested().init(jax.random.key(1), x)['params']
    grown = E.insert_layer(nested, M.create_masks(nested), 'Inner_0/Dense_0')
    assert sorted(grown.params['Inner_0']) == ['Dense_0', 'Dense_1'] and sorted(grown.params)[:2] == ['Dense_0', 'Dense_1']
    with pytest.raises(E.ExpansionError, match=r'Nope_0/kernel .* not found'):
        E.insert_layer(nested, M.create_masks(nested), 'Nope_0')


class NNXNet(nnx.Module):
    def __init__(self, hidden, rngs):
        self.l1 = nnx.Linear(5, hidden, rngs=rngs)
        self.l2 = nnx.Linear(hidden, 3, rngs=rngs)

    def __call__(self, x):
        return self.l2(nnx.relu(self.l1(x)))


def test_nnx_prune_train_and_widen():
    model = NNXNet(16, nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (8, 5))
    params = nnx.state(model, nnx.Param)
    m = M.magnitude_prune(params, M.create_masks(params), 0.75)  # default regex matches NNX's 'l1/kernel'
    assert M.leaf_paths(m) == ['l1/bias', 'l1/kernel', 'l2/bias', 'l2/kernel']
    nnx.update(model, M.apply_masks(params, m))
    opt = nnx.Optimizer(model, M.keep_pruned_at_zero(optax.adam(1e-2)), wrt=nnx.Param)
    for _ in range(3):
        opt.update(model, nnx.grad(lambda mdl: jnp.mean(mdl(x) ** 2))(model), masks=m)
    params = nnx.state(model, nnx.Param)
    assert M.sparsity_stats(m)['fraction_remaining'] == 0.25
    pruned = M.map_masked(lambda mm, p: jnp.abs(jnp.where(mm, 0.0, p)).max(), m, params)
    assert max(float(v) for v in jax.tree.leaves(pruned)) == 0.0
    grown = W.widen_layer(params, m, jax.random.key(1), producer='l1', consumer='l2', amount=8)
    wider = NNXNet(24, nnx.Rngs(0))
    state = nnx.state(wider, nnx.Param)
    nnx.replace_by_pure_dict(state, grown.params)  # the one-line conversion back
    nnx.update(wider, state)
    np.testing.assert_allclose(wider(x), model(x), atol=1e-5)
    inserted = E.insert_layer(pytrees.as_pure_dict(params), m, 'l1', name='l1_identity')
    assert sorted(inserted.params) == ['l1', 'l1_identity', 'l2']


def test_bad_inputs_name_the_path_and_the_fix():
    params = {'Dense_0': {'kernel': jnp.ones((784, 64)), 'bias': jnp.zeros(64)},
              'Dense_1': {'kernel': jnp.ones((64, 64)), 'bias': jnp.zeros(64)},
              'Dense_2': {'kernel': jnp.ones((64, 10))}}
    m = M.create_masks(params)
    for bad in (1.5, -0.1):
        with pytest.raises(ValueError, match=rf'fraction={bad} must be in \[0, 1\]'):
            M.magnitude_prune(params, m, bad)
    with pytest.raises(ValueError, match=r'sparsity=2.0 must be in \[0, 1\]'):
        M.prune_to_sparsity(M.magnitude_scores(params, m), m, 2.0)
    short = jax.tree.map(lambda x: x, m)
    short['Dense_0']['kernel'] = jnp.ones((64,), bool)
    with pytest.raises(ValueError, match=r"Mask 'Dense_0/kernel' has shape \(64,\) but its parameter has shape"):
        M.apply_masks(params, short)
    with pytest.raises(ValueError, match=r"'Dense_0/bias' is the Python value False \(optax.masked style\)"):
        M.apply_masks(params, jax.tree.map(lambda p: p.ndim > 1, params))
    with pytest.raises(ValueError, match=r"Rate override '\^output/' matches no prunable layer"):
        M.layer_rates(m, 0.2, {'^output/': 0.1})
    with pytest.raises(ValueError, match=r"exclude='Dense_9' matches no parameter path"):
        M.create_masks(params, exclude='Dense_9')
    grown = W.widen_layer(params, m, jax.random.key(0), producer='Dense_0', consumer='Dense_1', amount=4)
    with pytest.raises(ValueError, match=r"Mask 'Dense_0/kernel' has shape \(784, 64\) .* stale mask"):
        M.apply_masks(grown.params, m)
    square = {'Dense_0': {'kernel': jnp.ones((16, 16))}, 'Dense_1': {'kernel': jnp.ones((16, 16))}}
    with pytest.raises(E.ExpansionError, match='Dense_0 is not the layer right after Dense_1'):  # sizes coincide
        W.widen_layer(square, M.create_masks(square), jax.random.key(0), producer='Dense_1', consumer='Dense_0',
                      amount=2)
    with pytest.raises(E.ExpansionError, match='changed the outputs by up to'):
        E.assert_preserved(lambda p: p['Dense_0']['kernel'].sum(), lambda p: p['Dense_0']['kernel'].sum() + 1,
                           params, params)
    uint8 = jax.tree.map(lambda x: None if x is None else x.astype(jnp.uint8), m, is_leaf=lambda x: x is None)
    assert M.sparsity_stats(uint8)['fraction_remaining'] == 1.0
    M.apply_masks(params, uint8)  # documented: uint8 masks, nonzero = kept


@pytest.mark.parametrize('module', [M, E, W])
def test_public_api_is_listed_and_documented(module):
    assert module.__all__
    for name in module.__all__:
        obj = getattr(module, name)
        if inspect.isfunction(obj) or inspect.isclass(obj):
            assert inspect.getdoc(obj), f'{module.__name__}.{name} has no docstring'
