"""``jst.models.batch_norm.BatchNorm`` is flax's BatchNorm with a one-pass backward: same variables, forward,
running averages and gradients (within 1e-5 relative), in training and evaluation, under jit and vmap."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jst.models import batch_norm

RTOL = 1e-5


def _inputs(shape, seed=0):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(1.5, 3.0, shape), jnp.float32)  # off-centre, wide: the variance's two passes matter
    dy = jnp.asarray(rng.normal(size=shape), jnp.float32)
    return x, dy


def _pair(shape, seed=0):
    """Initial variables of flax's layer with a trained-looking scale, bias and running stats; both layers."""
    ours = batch_norm.BatchNorm(use_running_average=False, momentum=0.9)
    theirs = nn.BatchNorm(use_running_average=False, momentum=0.9)
    x, _ = _inputs(shape, seed)
    variables = theirs.init(jax.random.key(seed), x)
    rng = np.random.default_rng(seed + 1)
    c = shape[-1]
    variables = {'params': {'scale': jnp.asarray(rng.uniform(0.5, 2.0, c), jnp.float32),
                            'bias': jnp.asarray(rng.normal(size=c), jnp.float32)},
                 'batch_stats': {'mean': jnp.asarray(rng.normal(size=c), jnp.float32),
                                 'var': jnp.asarray(rng.uniform(0.5, 2.0, c), jnp.float32)}}
    return ours, theirs, variables


def _rel(a, b):
    return float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))


def test_same_variables_as_flax():
    ours, theirs, _ = _pair((2, 4, 4, 8))
    x, _ = _inputs((2, 4, 4, 8))
    shapes = lambda v: jax.tree.map(jnp.shape, v)
    chex.assert_trees_all_equal(shapes(ours.init(jax.random.key(0), x)), shapes(theirs.init(jax.random.key(0), x)))


@pytest.mark.parametrize('shape', [(16, 32, 32, 8), (3, 5, 7, 4), (64, 10)])
def test_training_forward_stats_and_gradients_match_flax(shape):
    ours, theirs, variables = _pair(shape)
    x, dy = _inputs(shape)

    def run(layer):
        def f(params, x):
            y, updates = layer.apply({**variables, 'params': params}, x, mutable=['batch_stats'])
            return y, updates['batch_stats']
        (y, stats), vjp = jax.vjp(jax.jit(f), variables['params'], x)
        dparams, dx = vjp((dy, jax.tree.map(jnp.zeros_like, stats)))
        return y, stats, dparams, dx

    for a, b in zip(jax.tree.leaves(run(ours)), jax.tree.leaves(run(theirs))):
        assert _rel(a, b) < RTOL


def test_evaluation_uses_the_running_averages_as_flax():
    _, _, variables = _pair((8, 6, 6, 8))
    x, _ = _inputs((8, 6, 6, 8), seed=3)
    ours = batch_norm.BatchNorm(use_running_average=True, momentum=0.9).apply(variables, x)
    theirs = nn.BatchNorm(use_running_average=True, momentum=0.9).apply(variables, x)
    assert _rel(ours, theirs) < RTOL


def test_closed_form_backward_is_the_derivative_of_the_forward():
    """The closed-form backward is the derivative of the forward (checked against JAX's own differentiation of
    the same forward, written without the custom VJP), for an arbitrary scalar loss of the output."""
    x, _ = _inputs((4, 3, 5, 6), seed=7)
    scale, bias = jnp.linspace(0.5, 1.5, 6), jnp.linspace(-1, 1, 6)
    loss = lambda f: lambda x, s, b: jnp.sum(jnp.sin(f(x, s, b)) * jnp.arange(x.size).reshape(x.shape) / x.size)
    fused = lambda x, s, b: batch_norm.normalize_train(x, s, b, 1e-5)[0]

    def plain(x, s, b):
        mean = x.mean((0, 1, 2))
        var = ((x - mean) ** 2).mean((0, 1, 2))
        return (x - mean) * jax.lax.rsqrt(var + 1e-5) * s + b

    for a, b in zip(jax.grad(loss(fused), (0, 1, 2))(x, scale, bias), jax.grad(loss(plain), (0, 1, 2))(x, scale, bias)):
        assert _rel(a, b) < RTOL


def test_vmapped_lanes_equal_one_by_one():
    """Seeds as lanes (``jax.vmap`` over parameters and inputs) give each lane's own result."""
    ours, _, variables = _pair((4, 6, 6, 8))
    xs = jnp.stack([_inputs((4, 6, 6, 8), seed=s)[0] for s in range(3)])

    def grad_of(x):
        f = lambda p: jnp.sum(ours.apply({**variables, 'params': p}, x, mutable=['batch_stats'])[0] ** 2)
        return jax.grad(f)(variables['params'])

    lanes = jax.vmap(grad_of)(xs)
    for i in range(3):
        chex.assert_trees_all_close(jax.tree.map(lambda v: v[i], lanes), grad_of(xs[i]), rtol=RTOL, atol=1e-6)


def test_channel_mean_equals_the_plain_mean():
    x, _ = _inputs((5, 7, 9, 3), seed=2)
    chex.assert_trees_all_close(batch_norm.channel_mean(x), x.mean((0, 1, 2)), rtol=RTOL, atol=1e-6)


def test_per_column_lays_each_channel_along_the_row_view():
    x, _ = _inputs((2, 3, 4, 5))
    rows = batch_norm.as_rows(x)
    v = jnp.arange(5.0)
    chex.assert_shape(rows, (6, 20))
    np.testing.assert_array_equal(rows, x.reshape(6, 4, 5).reshape(6, 20))
    np.testing.assert_array_equal(batch_norm.per_column(v, rows).reshape(4, 5), jnp.tile(v, (4, 1)))


@pytest.mark.parametrize('shape', [(16, 32, 32, 8), (3, 5, 7, 4), (64, 10)])
def test_normalize_with_is_the_broadcast_formula(shape):
    x, _ = _inputs(shape)
    rng = np.random.default_rng(3)
    mean, rstd_scale, bias = (jnp.asarray(rng.normal(size=shape[-1]), jnp.float32) for _ in range(3))
    got = jax.jit(batch_norm.normalize_with)(x, mean, rstd_scale, bias)
    chex.assert_shape(got, shape)
    chex.assert_trees_all_close(got, (x - mean) * rstd_scale + bias, rtol=1e-6, atol=1e-6)
