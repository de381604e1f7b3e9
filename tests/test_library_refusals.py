"""Inputs the library used to accept silently (issue: the library in other people's projects, round three):
each case of the report, reproduced on a user's pytree or module, is now refused with the path and the fix, or
gives the right answer. NNX growth end to end with a module that is not jst's."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jst.ops import expand as E
from jst.ops import masks as M
from jst.ops import nnx_growth
from jst.ops import pytrees
from jst.ops import widening as W


def user_params():
    """The report's P: two Dense layers, kernels of ones."""
    return {'Dense_0': {'kernel': jnp.ones((4, 8)), 'bias': jnp.zeros(8)},
            'Dense_1': {'kernel': jnp.ones((8, 2)), 'bias': jnp.zeros(2)}}


def transposed(masks):
    return jax.tree.map(lambda m: None if m is None else m.T, masks, is_leaf=pytrees.is_none)


def test_r1_inserting_under_an_existing_name_is_refused():
    P = user_params()
    with pytest.raises(E.ExpansionError, match=r"would replace existing ones.*Dense_1/kernel"):
        E.insert_layer(P, M.create_masks(P), 'Dense_0', name='Dense_1')
    grown = E.insert_layer(P, M.create_masks(P), 'Dense_0', name='middle')
    assert len({e[0] for e in grown.plan}) == len(grown.plan)
    assert grown.params['Dense_1']['kernel'].shape == (8, 2) and grown.params['middle']['kernel'].shape == (8, 8)


@pytest.mark.parametrize('call', [
    lambda P, m: M.magnitude_prune(P, m, 0.5),
    lambda P, m: M.magnitude_prune(P, m, 0.5, 'global'),
    lambda P, m: M.prune_to_sparsity(M.magnitude_scores(P, M.create_masks(P)), m, 0.5),
    lambda P, m: M.apply_masks(P, m),
])
def test_r2_transposed_masks_are_refused_with_the_path(call):
    P = user_params()
    with pytest.raises(ValueError, match=r"Mask 'Dense_0/kernel' has shape \(8, 4\).*transposed"):
        call(P, transposed(M.create_masks(P)))


def test_r2_int_masks_are_refused_and_uint8_masks_mean_nonzero():
    P = user_params()
    as_int = jax.tree.map(lambda m: m.astype(jnp.int32), M.create_masks(P))
    for call in (lambda: M.magnitude_prune(P, as_int, 0.5), lambda: M.random_masks_like(as_int, jax.random.key(0))):
        with pytest.raises(ValueError, match="'Dense_0/kernel' has dtype int32"):
            call()
    twos = jax.tree.map(lambda m: m.astype(jnp.uint8) * 2, M.create_masks(P))  # nonzero = kept
    pruned = M.magnitude_prune(P, twos, 0.5)
    assert pruned['Dense_0']['kernel'].dtype == jnp.bool_
    assert M.sparsity_stats(pruned)['layers'] == {'Dense_0/kernel': (16, 32), 'Dense_1/kernel': (8, 16)}


def test_r3_traced_fractions_are_checked_when_the_compiled_function_runs():
    P = user_params()
    masks = M.create_masks(P)
    with pytest.raises(Exception, match=r'fraction=1.5 must be in \[0, 1\].*traced'):
        jax.block_until_ready(jax.jit(M.magnitude_prune)(P, masks, 1.5))
    with pytest.raises(Exception, match=r'sparsity=-0.25 must be in \[0, 1\]'):
        jax.block_until_ready(jax.jit(M.prune_to_sparsity)(M.magnitude_scores(P, masks), masks, -0.25))
    eager = M.magnitude_prune(P, masks, 0.25)
    chex_equal = jax.tree.map(np.testing.assert_array_equal, jax.jit(M.magnitude_prune)(P, masks, 0.25), eager)
    assert chex_equal is not None
    kept = jax.vmap(lambda f: M.magnitude_prune(P, masks, f)['Dense_0']['kernel'].sum())(jnp.array([0.25, 0.5]))
    np.testing.assert_array_equal(kept, [24, 16])


class UserNNX(nnx.Module):
    """A user's NNX MLP with custom names and an optional layer between fc1 and fc2."""

    def __init__(self, hidden: int, rngs: nnx.Rngs, middle: bool = False):
        self.fc1 = nnx.Linear(5, hidden, rngs=rngs)
        self.middle = nnx.Linear(hidden, hidden, rngs=rngs) if middle else None
        self.fc2 = nnx.Linear(hidden, 3, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.fc1(x))
        if self.middle is not None:
            x = nnx.relu(self.middle(x))
        return self.fc2(x)


def test_r4_nnx_regexes_mean_the_same_path_as_on_linen():
    state = nnx.state(UserNNX(8, nnx.Rngs(0)), nnx.Param)
    masks = M.create_masks(state)
    assert [p for p, m in pytrees.flatten(masks).items() if m is not None] == ['fc1/kernel', 'fc2/kernel']
    rates = pytrees.flatten(M.layer_rates(masks, 0.5, {'^fc1/kernel$': 0.0}))
    assert (rates['fc1/kernel'], rates['fc2/kernel']) == (0.0, 0.5)
    excluded = pytrees.flatten(M.create_masks(state, exclude='^fc2/kernel$'))
    assert excluded['fc2/kernel'] is None and excluded['fc1/kernel'] is not None
    both = pytrees.flatten(M.create_masks(state, include='^(fc1|fc2)/kernel$'))
    assert both['fc1/kernel'] is not None and both['fc2/kernel'] is not None


def _trained_nnx(steps: int = 3):
    model = UserNNX(8, nnx.Rngs(0))
    masks = M.magnitude_prune(nnx.state(model, nnx.Param), M.create_masks(nnx.state(model, nnx.Param)), 0.5)
    nnx.update(model, M.apply_masks(nnx.state(model, nnx.Param), masks))
    optimizer = nnx.Optimizer(model, M.keep_pruned_at_zero(optax.adam(1e-2)), wrt=nnx.Param)
    x = jax.random.normal(jax.random.key(1), (16, 5))
    for _ in range(steps):
        optimizer.update(model, nnx.grad(lambda mdl: jnp.mean(mdl(x) ** 2))(model), masks=masks)
    return model, optimizer, masks, x


def test_r5_nnx_optimizer_state_is_carried_not_zeroed():
    model, optimizer, masks, _ = _trained_nnx()
    grown = W.widen_layer(nnx.state(model, nnx.Param), masks, jax.random.key(2), producer='fc1', consumer='fc2',
                          amount=4)
    state = E.extend_optimizer_state(optimizer.tx, optimizer.opt_state, grown.params, grown.plan)
    old = pytrees.flatten(optimizer.opt_state)
    new = pytrees.flatten(state)
    assert float(jnp.abs(old['0/mu/fc2/kernel']).sum()) > 0
    np.testing.assert_array_equal(new['0/mu/fc2/kernel'][:8], old['0/mu/fc2/kernel'])
    np.testing.assert_array_equal(new['0/mu/fc2/kernel'][8:], 0)
    assert int(new['0/count']) == int(old['0/count']) == 3


def test_nnx_growth_end_to_end_insert_then_train_with_the_expansion_masks():
    model, optimizer, masks, x = _trained_nnx()
    before = model(x)
    grown = E.insert_layer(nnx.state(model, nnx.Param), masks, 'fc1', name='middle')
    deeper = UserNNX(8, nnx.Rngs(5), middle=True)
    new_optimizer = nnx_growth.grow_optimizer(optimizer, deeper, grown)
    np.testing.assert_allclose(deeper(x), before, atol=1e-6)
    assert int(new_optimizer.step.value) == 3
    mu = pytrees.flatten(new_optimizer.opt_state)
    np.testing.assert_array_equal(mu['0/mu/fc2/kernel'], pytrees.flatten(optimizer.opt_state)['0/mu/fc2/kernel'])
    np.testing.assert_array_equal(mu['0/mu/middle/kernel'], 0)
    for _ in range(3):  # R7: the expansion's plain-dict masks work with an nnx.Optimizer
        new_optimizer.update(deeper, nnx.grad(lambda mdl: jnp.mean(mdl(x) ** 2))(deeper), masks=grown.masks)
    kernels = pytrees.flatten(nnx.state(deeper, nnx.Param))
    for path, mask in pytrees.flatten(grown.masks).items():
        if mask is not None:
            assert not np.any(np.asarray(kernels[path])[~np.asarray(mask)]), path
    with pytest.raises(E.ExpansionError, match=r"structure of these params at \['middle/bias'"):
        nnx_growth.grow_optimizer(optimizer, UserNNX(8, nnx.Rngs(5)), grown)


def test_r6_old_params_extended_twice_or_another_optimizer_are_refused():
    P = user_params()
    tx = optax.adam(1e-3)
    state = tx.init(P)
    grown = E.insert_layer(P, M.create_masks(P), 'Dense_0')
    with pytest.raises(E.ExpansionError, match=r"planned but absent: \['Dense_2/bias'.*not the old ones"):
        E.extend_optimizer_state(tx, state, P, grown.plan)
    once = E.extend_optimizer_state(tx, state, grown.params, grown.plan)
    with pytest.raises(E.ExpansionError, match='already extended'):
        E.extend_optimizer_state(tx, once, grown.params, grown.plan)
    with pytest.raises(E.ExpansionError, match=r"opt_state has no leaf '0/mu/Dense_0/bias'.*state of this tx"):
        E.extend_optimizer_state(tx, optax.sgd(0.1, momentum=0.9).init(P), grown.params, grown.plan)


class ConvBN(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(8, (3, 3), name='conv1')(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not train, name='bn')(x))
        return nn.Conv(4, (3, 3), name='conv2')(x)


def test_r8_a_norm_of_another_width_is_refused():
    variables = ConvBN().init(jax.random.key(0), jnp.ones((1, 6, 6, 3)))
    params = variables['params']
    stats = jax.tree.map(lambda v: v[:5], variables['batch_stats'])
    params = {**params, 'bn': jax.tree.map(lambda v: v[:5], params['bn'])}
    with pytest.raises(E.ExpansionError, match='bn/scale has 5 features but conv1/kernel has 8 units'):
        W.widen_layer(params, M.create_masks(params), jax.random.key(1), producer='conv1', consumer='conv2',
                      amount=2, norm='bn', batch_stats=stats)


def test_a_forgotten_norm_is_refused_with_its_name_and_the_explicit_no_norm_works():
    variables = ConvBN().init(jax.random.key(0), jnp.ones((1, 6, 6, 3)))
    params, stats = variables['params'], variables['batch_stats']
    masks = M.create_masks(params)
    with pytest.raises(E.ExpansionError, match=r"conv1 has 8 outputs and bn .* pass norm='bn'.*norm=False"):
        W.widen_layer(params, masks, jax.random.key(1), producer='conv1', consumer='conv2', amount=2)
    named = W.widen_layer(params, masks, jax.random.key(1), producer='conv1', consumer='conv2', amount=2,
                          norm='bn', batch_stats=stats)
    assert named.params['bn']['scale'].shape == (10,) and named.batch_stats['bn']['var'].shape == (10,)
    unnormed = W.widen_layer(params, masks, jax.random.key(1), producer='conv1', consumer='conv2', amount=2,
                             norm=False)  # the user states no norm sits between them: the norm is left alone
    assert unnormed.params['conv1']['kernel'].shape[-1] == 10 and unnormed.params['bn']['scale'].shape == (8,)


def test_other_cases_name_the_path_or_the_alternative():
    P = user_params()
    masks = M.create_masks(P)
    with pytest.raises(TypeError, match=r'sparsity_stats .* under jit/vmap.*expand.density'):
        jax.jit(M.sparsity_stats)(masks)
    assert float(jax.jit(E.density)(masks)) == 1.0
    with pytest.raises(ValueError, match=r"include='\(kernel' is not a valid regular expression"):
        M.create_masks(P, include='(kernel')
    with pytest.raises(ValueError, match=r"rate override='\[' is not a valid"):
        M.layer_rates(masks, 0.2, {'[': 0.1})
    wider = W.widen_layer(P, masks, jax.random.key(0), producer='Dense_0', consumer='Dense_1', amount=2)
    with pytest.raises(ValueError, match=r"Mask 'Dense_0/kernel' has shape \(4, 8\) .*stale mask"):
        M.magnitude_prune(wider.params, masks, 0.5)
