"""The public API on a user's own modules; py.typed; clear errors."""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jst.ops import expand as E
from jst.ops import masks as M
from jst.ops import widening as W
from tests.helpers import REPO


class UserConvNet(nn.Module):
    width: int = 6

    @nn.compact
    def __call__(self, x, train=False):
        x = nn.relu(nn.Conv(self.width, (3, 3))(x))
        x = nn.BatchNorm(use_running_average=not train)(x)
        x = nn.relu(nn.Conv(5, (3, 3))(x))
        return nn.Dense(3)(x.reshape((x.shape[0], -1)))


def test_keep_pruned_at_zero_in_a_user_loop():
    x = jax.random.normal(jax.random.key(0), (8, 6, 6, 2))
    variables = UserConvNet().init(jax.random.key(1), x)
    params, stats = variables['params'], variables['batch_stats']
    masks = M.magnitude_prune(params, M.create_masks(params), 0.7)
    params = M.apply_masks(params, masks)
    tx = M.keep_pruned_at_zero(optax.sgd(0.1, momentum=0.9))
    state = tx.init(params)
    def loss(p):
        out, _ = UserConvNet().apply({'params': p, 'batch_stats': stats}, x, train=True, mutable=['batch_stats'])
        return jnp.mean(out ** 2)

    @jax.jit  # the user's jitted step (eagerly, every op compiles on its own: 18 s instead of 2)
    def step(params, state):
        updates, state = tx.update(jax.grad(loss)(params), state, params, masks=masks)
        return optax.apply_updates(params, updates), state

    for _ in range(3):
        params, state = step(params, state)
    leaked = M.map_masked(lambda m, p: jnp.abs(p[~m]).sum(), masks, params)
    assert all(float(v) == 0 for v in jax.tree.leaves(leaked))
    moved = M.map_masked(lambda m, p: jnp.abs(p[m]).sum(), masks, params)
    assert all(float(v) > 0 for v in jax.tree.leaves(moved))


def test_keep_pruned_at_zero_with_fixed_masks_and_missing_masks():
    params = {'w': {'kernel': jnp.ones((3, 3))}}
    masks = {'w': {'kernel': jnp.eye(3, dtype=bool)}}
    tx = M.keep_pruned_at_zero(optax.adam(0.1), masks=masks)
    updates, _ = tx.update(jax.tree.map(jnp.ones_like, params), tx.init(params), params)
    assert float(jnp.abs(updates['w']['kernel'] * ~masks['w']['kernel']).sum()) == 0
    with pytest.raises(ValueError, match='pass masks='):
        M.keep_pruned_at_zero(optax.adam(0.1)).update(params, tx.init(params), params)


def test_widen_layer_with_batchnorm_on_a_user_module():
    x = jax.random.normal(jax.random.key(0), (8, 6, 6, 2))
    variables = UserConvNet().init(jax.random.key(1), x)
    variables = {'params': variables['params'],
                 'batch_stats': jax.tree.map(lambda s: s + 0.2, variables['batch_stats'])}
    masks = M.magnitude_prune(variables['params'], M.create_masks(variables['params']), 0.5)
    params = M.apply_masks(variables['params'], masks)
    for method in ('zero_fanout', 'net2net'):
        grown = W.widen_layer(params, masks, jax.random.key(2), producer='Conv_0', consumer='Conv_1',
                              norm='BatchNorm_0', amount=4, batch_stats=variables['batch_stats'],
                              options=E.GrowthOptions(widen_method=method))
        before = UserConvNet(6).apply({'params': params, 'batch_stats': variables['batch_stats']}, x)
        after = UserConvNet(10).apply({'params': grown.params, 'batch_stats': grown.batch_stats}, x)
        np.testing.assert_allclose(after, before, atol=1e-5)


def test_widen_layer_errors_name_the_path():
    x = jax.random.normal(jax.random.key(0), (2, 6, 6, 2))
    params = UserConvNet().init(jax.random.key(1), x)['params']
    masks = M.create_masks(params)
    with pytest.raises(E.ExpansionError, match=r'Dense_0/kernel reads 180 inputs but Conv_1/kernel has 5'):
        W.widen_layer(params, masks, jax.random.key(0), producer='Conv_1', consumer='Dense_0', amount=2)
    with pytest.raises(E.ExpansionError, match=r'Conv_9/kernel not found; parameter paths are'):
        W.widen_layer(params, masks, jax.random.key(0), producer='Conv_9', consumer='Conv_1', amount=2)
    embed = {'Embed_0': {'embedding': jnp.ones((5, 4))}, 'Dense_0': {'kernel': jnp.ones((4, 2))}}
    with pytest.raises(E.ExpansionError, match=r'Embed_0/kernel not found'):
        W.widen_layer(embed, M.create_masks(embed), jax.random.key(0), producer='Embed_0',
                      consumer='Dense_0', amount=1)


def test_identity_layers_preserve_function():
    x = jax.nn.relu(jax.random.normal(jax.random.key(0), (3, 5, 5, 4)))
    conv = nn.Conv(4, (3, 3))
    np.testing.assert_allclose(conv.apply({'params': E.dirac_conv(4)}, x), x, atol=1e-6)
    dense = nn.Dense(4)
    np.testing.assert_allclose(dense.apply({'params': E.identity_dense(4)}, x), x, atol=1e-6)


def test_package_is_typed():
    assert os.path.exists(os.path.join(REPO, 'jst', 'py.typed'))
