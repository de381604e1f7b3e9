"""Expansion operators: function preservation (1e-5), masks, optimizer state, gradients, errors."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jst.data import datasets as D
from jst.data import readers
from jst.models import networks
from jst.models import specs
from jst.ops import expand as E
from jst.ops import masks as M
from jst.training import growth as G


@pytest.fixture(scope='module')
def mnist_batch(mnist_dir):
    train, _ = readers.read_numpy('mnist', mnist_dir)
    return jnp.asarray(D.preprocess(train.images[:64], 'mnist'))


@pytest.fixture(scope='module')
def cifar_batch(cifar10_dir):
    train, _ = readers.read_numpy('cifar10', cifar10_dir)
    return jnp.asarray(D.preprocess(train.images[:32], 'cifar10'))


def _setup(spec, x, prune, include=M.DEFAULT_PRUNABLE, seed=0):
    variables = networks.init_variables(spec, jax.random.key(seed), x.shape[1:])
    params, stats = variables['params'], variables.get('batch_stats')
    masks = M.create_masks(params, include)
    if prune:
        masks = M.magnitude_prune(params, masks, 0.6)
        params = M.apply_masks(params, masks)
    if stats:  # non-trivial running statistics
        stats = jax.tree.map(lambda s: s + 0.3, stats)
    return params, stats, masks


def _outputs(spec, params, stats, x):
    model = networks.build_model(spec)
    if stats:
        v = {'params': params, 'batch_stats': stats}
        train_out = model.apply(v, x, train=True, mutable=['batch_stats'])[0]
        return model.apply(v, x, train=False), train_out
    return model.apply({'params': params}, x), model.apply({'params': params}, x, train=True)


def _assert_preserved(spec, params, stats, grown, x):
    before = _outputs(spec, params, stats, x)
    after = _outputs(grown.spec, grown.params, grown.batch_stats, x)
    for b, a in zip(before, after):  # eval mode, train mode
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, rtol=0)


def _assert_old_masks_kept(masks, grown):
    old = {M.path_str(p): m for p, m in jax.tree_util.tree_flatten_with_path(
        masks, is_leaf=lambda x: x is None)[0]}
    new = {M.path_str(p): m for p, m in jax.tree_util.tree_flatten_with_path(
        grown.masks, is_leaf=lambda x: x is None)[0]}
    for new_path, old_path, slices in grown.plan:
        if old_path is None or old.get(old_path) is None:
            continue
        index = tuple(slice(a, b) for a, b in slices)
        np.testing.assert_array_equal(np.asarray(new[new_path])[index], np.asarray(old[old_path]))


MLP_CASES = [specs.paper_mlp(0), specs.paper_mlp(2), specs.lenet_300_100()]


@pytest.mark.parametrize('prune', [False, True])
@pytest.mark.parametrize('new_mask', ['dense', 'sparse'])
@pytest.mark.parametrize('spec', MLP_CASES, ids=lambda s: s.describe())
def test_mlp_deepen_every_position(spec, prune, new_mask, mnist_batch):
    params, stats, masks = _setup(spec, mnist_batch, prune)
    for pos in range(1, len(spec.widths) + 1):
        grown = G.deepen(params, masks, spec, jax.random.key(1), position=pos,
                         options=E.GrowthOptions(new_mask=new_mask))
        assert len(grown.spec.widths) == len(spec.widths) + 1
        _assert_preserved(spec, params, stats, grown, mnist_batch)
        _assert_old_masks_kept(masks, grown)
        new_kernel_mask = np.asarray(grown.masks[f'hidden_{pos}']['kernel'])
        assert np.all(np.diag(new_kernel_mask))  # identity kept even when sparse
        if new_mask == 'sparse' and prune:
            density = M.sparsity_stats(masks)['fraction_remaining']
            assert abs(new_kernel_mask.mean() - density) < 0.01


@pytest.mark.parametrize('method', ['zero_fanout', 'net2net'])
@pytest.mark.parametrize('prune', [False, True])
@pytest.mark.parametrize('spec', MLP_CASES[1:], ids=lambda s: s.describe())
def test_mlp_widen_every_layer(spec, method, prune, mnist_batch):
    params, stats, masks = _setup(spec, mnist_batch, prune)
    for layer in range(len(spec.widths)):
        grown = G.widen(params, masks, spec, jax.random.key(2), layer=layer, amount=5,
                        options=E.GrowthOptions(widen_method=method))
        assert grown.spec.widths[layer] == spec.widths[layer] + 5
        _assert_preserved(spec, params, stats, grown, mnist_batch)
        _assert_old_masks_kept(masks, grown)


@pytest.mark.parametrize('prune', [False, True])
def test_resnet_deepen_zero_init_preserves_train_and_eval(prune, cifar_batch):
    spec = specs.paper_resnet(2)
    params, stats, masks = _setup(spec, cifar_batch, prune, include=r'^block_\d+/.*kernel$')
    for pos in range(0, 3):
        grown = G.deepen(params, masks, spec, jax.random.key(1), position=pos, batch_stats=stats)
        _assert_preserved(spec, params, stats, grown, cifar_batch)
        _assert_old_masks_kept(masks, grown)
        assert grown.masks['stem']['kernel'] is None  # excluded layers stay unmasked
        assert grown.masks[f'block_{pos}']['conv1']['kernel'] is not None


def test_resnet_deepen_from_no_block(cifar_batch):
    spec = specs.paper_resnet(0)
    params, stats, masks = _setup(spec, cifar_batch, False)
    grown = G.deepen(params, masks, spec, jax.random.key(1), batch_stats=stats)
    assert grown.spec.block_widths == (8,)
    _assert_preserved(spec, params, stats, grown, cifar_batch)


def test_resnet_paper_block_init_is_dirac_and_not_preserving(cifar_batch):
    spec = specs.paper_resnet(1)
    params, stats, masks = _setup(spec, cifar_batch, False)
    grown = G.deepen(params, masks, spec, jax.random.key(1), batch_stats=stats,
                     options=E.GrowthOptions(block_init='paper'))
    k = np.asarray(grown.params['block_1']['conv1']['kernel'])
    np.testing.assert_array_equal(k[1, 1], np.eye(8))
    assert np.abs(k).sum() == 8
    before = _outputs(spec, params, stats, cifar_batch)[0]
    after = _outputs(grown.spec, grown.params, grown.batch_stats, cifar_batch)[0]
    assert float(jnp.max(jnp.abs(after - before))) > 1e-3  # documented: BatchNorm breaks identity


@pytest.mark.parametrize('method', ['zero_fanout', 'net2net'])
def test_resnet_widen(method, cifar_batch):
    spec = specs.paper_resnet(2)
    params, stats, masks = _setup(spec, cifar_batch, True, include=r'^block_\d+/.*kernel$')
    grown = G.widen(params, masks, spec, jax.random.key(3), layer=1, amount=4, batch_stats=stats,
                    options=E.GrowthOptions(widen_method=method))
    assert grown.spec.block_widths == (8, 12)
    _assert_preserved(spec, params, stats, grown, cifar_batch)
    _assert_old_masks_kept(masks, grown)


@pytest.mark.parametrize('prune', [False, True])
def test_conv_deepen_and_widen(prune, cifar_batch):
    spec = specs.ConvSpec((8, 8, 16, 16), (False, True, False, True), (32, 16))
    params, stats, masks = _setup(spec, cifar_batch, prune)
    for pos in range(1, 5):
        grown = G.deepen(params, masks, spec, jax.random.key(1), position=pos)
        _assert_preserved(spec, params, stats, grown, cifar_batch)
    for layer in (0, 1, 2, 4, 5):
        for method in ('zero_fanout', 'net2net'):
            grown = G.widen(params, masks, spec, jax.random.key(1), layer=layer, amount=3,
                            options=E.GrowthOptions(widen_method=method))
            _assert_preserved(spec, params, stats, grown, cifar_batch)
            _assert_old_masks_kept(masks, grown)


def test_unsupported_widen_names_the_path():
    spec = specs.ConvSpec((8, 8), (False, True), (16,))
    params = networks.init_variables(spec, jax.random.key(0), (8, 8, 3))['params']
    with pytest.raises(E.ExpansionError, match=r'can widen layers \[0, 2\]; not layer 1'):
        G.widen(params, M.create_masks(params), spec, jax.random.key(0), layer=1, amount=2)
    with pytest.raises(E.ExpansionError, match='out of range'):
        G.deepen(params, M.create_masks(params), spec, jax.random.key(0), position=7)


def test_widen_on_user_tree_with_wrong_names_is_clear():
    spec = specs.MLPSpec((4,))
    params = {'Dense_0': {'kernel': jnp.ones((3, 4)), 'bias': jnp.zeros(4)},
              'Dense_1': {'kernel': jnp.ones((4, 2)), 'bias': jnp.zeros(2)}}
    with pytest.raises(E.ExpansionError, match=r'hidden_0/kernel not found.*Dense_0/kernel'):
        G.widen(params, M.create_masks(params), spec, jax.random.key(0), layer=0, amount=1)


def test_noise_breaks_symmetry_but_stays_close(mnist_batch):
    spec = specs.paper_mlp(1)
    params, stats, masks = _setup(spec, mnist_batch, False)
    grown = G.deepen(params, masks, spec, jax.random.key(1), options=E.GrowthOptions(noise_scale=1e-3))
    before = _outputs(spec, params, stats, mnist_batch)[0]
    after = _outputs(grown.spec, grown.params, grown.batch_stats, mnist_batch)[0]
    diff = float(jnp.max(jnp.abs(after - before)))
    assert 0 < diff < 0.5


def test_gradients_reach_new_weights(mnist_batch):
    spec = specs.paper_mlp(1)
    params, stats, masks = _setup(spec, mnist_batch, True)
    labels = jnp.arange(mnist_batch.shape[0]) % 10
    for grown in (G.deepen(params, masks, spec, jax.random.key(1)),
                  G.widen(params, masks, spec, jax.random.key(1), layer=0, amount=4)):
        model = networks.build_model(grown.spec)

        def loss(p):
            logits = model.apply({'params': p}, mnist_batch)
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

        g = jax.grad(loss)(grown.params)
        new_paths = [p for p, old, _ in grown.plan if old is None]
        if new_paths:  # deepen: the new layer's kernel gets gradient
            head = new_paths[0].split('/')[0]
            assert float(jnp.abs(g[head]['kernel']).sum()) > 0
        else:  # widen: the zero fan-out rows get gradient
            assert float(jnp.abs(g['hidden_1']['kernel'][-4:]).sum()) > 0


def test_optimizer_state_carries_moments_and_zero_pads():
    spec = specs.paper_mlp(1)
    params = networks.init_variables(spec, jax.random.key(0), (28, 28, 1))['params']
    masks = M.create_masks(params)
    tx = optax.adam(1e-3)
    state = jax.tree.map(lambda x: x + 1.5, tx.init(params))
    grown = G.deepen(params, masks, spec, jax.random.key(1), position=1)
    new_state = E.extend_optimizer_state(tx, state, grown.params, grown.plan)
    adam = new_state[0]
    assert int(adam.count) == int(state[0].count)
    chex.assert_trees_all_equal(adam.mu['hidden_2'], state[0].mu['hidden_1'])  # renamed, carried
    assert float(jnp.abs(adam.mu['hidden_1']['kernel']).max()) == 0  # new layer starts at zero
    widened = G.widen(params, masks, spec, jax.random.key(1), layer=0, amount=3)
    wstate = E.extend_optimizer_state(tx, state, widened.params, widened.plan)[0]
    np.testing.assert_array_equal(wstate.nu['hidden_1']['kernel'][:128], state[0].nu['hidden_1']['kernel'])
    assert float(jnp.abs(wstate.nu['hidden_1']['kernel'][128:]).max()) == 0


def test_operators_run_under_jit(mnist_batch):
    spec = specs.paper_mlp(1)
    params, stats, masks = _setup(spec, mnist_batch, True)
    grow = jax.jit(G.deepen, static_argnames=('spec', 'position', 'options'))
    opts = E.GrowthOptions(new_mask='sparse')
    jitted = grow(params, masks, spec, jax.random.key(1), position=1, options=opts)
    eager = G.deepen(params, masks, spec, jax.random.key(1), position=1, options=opts)
    chex.assert_trees_all_close(jitted.params, eager.params)
    chex.assert_trees_all_equal(jitted.masks, eager.masks)
    assert jitted.spec == eager.spec
    wide = jax.jit(G.widen, static_argnames=('spec', 'layer', 'amount', 'options'))
    out = wide(params, masks, spec, jax.random.key(1), layer=0, amount=3)
    _assert_preserved(spec, params, stats, out, mnist_batch)


def test_inputs_are_not_mutated(mnist_batch):
    spec = specs.paper_mlp(1)
    params, _, masks = _setup(spec, mnist_batch, True)
    copy_p, copy_m = jax.tree.map(np.array, params), jax.tree.map(np.array, masks)
    G.deepen(params, masks, spec, jax.random.key(1))
    G.widen(params, masks, spec, jax.random.key(1), layer=0, amount=3)
    chex.assert_trees_all_equal(params, copy_p)
    chex.assert_trees_all_equal(masks, copy_m)
