"""Training: pruned weights stay zero, splitting a run changes nothing, early stopping."""

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
from jst.ops import pytrees
from jst.training import early_stopping as ES
from jst.training import train as T
from jst.training import train_loop as L


def _dataset(n_train=600, n_val=200, n_test=300, shape=(8, 8, 1), seed=0):
    rng = np.random.default_rng(seed)
    make = lambda n: D.Split(rng.integers(0, 256, (n, *shape), dtype=np.uint8),
                             rng.integers(0, 10, (n,)).astype(np.int32))
    return D.Dataset('mnist', make(n_train), make(n_val), make(n_test), 10, 'numpy')


def _setup(spec, shape=(8, 8, 1), prune=0.7):
    ds = _dataset(shape=shape)
    variables = networks.init_variables(spec, jax.random.key(0), shape)
    masks = M.create_masks(variables['params'])
    masks = M.magnitude_prune(variables['params'], masks, prune)
    trainer = T.Trainer(networks.build_model(spec), T.make_optimizer('adam', 1e-2), 30,
                        functools.partial(D.preprocess, dataset='mnist'))
    state = T.create_train_state(variables, masks, trainer.tx)
    return ds, trainer, state


@pytest.mark.parametrize('spec,shape', [
    (specs.MLPSpec((32, 16)), (8, 8, 1)),
    (specs.ResNetSpec((4, 4), stem_channels=4), (8, 8, 3)),
    (specs.ConvSpec((4, 4), (False, True), (8,)), (8, 8, 1)),
])
def test_pruned_weights_stay_exactly_zero(spec, shape):
    ds, trainer, state = _setup(spec, shape)
    data = T.device_data(ds)
    seg = L.make_segment_fn(trainer, len(ds.train))
    state, records = L.train_steps(seg, state, data, jax.random.key(1), 0, 45, spe=20, eval_every=10)
    flat_m = jax.tree.leaves(state.masks)
    pruned_values = M.map_masked(lambda m, p: p[~m], state.masks, state.params)
    assert all(bool(jnp.all(v == 0)) for v in jax.tree.leaves(pruned_values))
    # Surviving weights did move.
    moved = M.map_masked(lambda m, p: p[m], state.masks, state.params)
    assert any(float(jnp.abs(v).sum()) > 0 for v in jax.tree.leaves(moved))
    assert [r.step for r in records] == [10, 20, 30, 40, 45]
    assert flat_m  # masks were carried through training unchanged
    assert int(state.step) == 45


def test_split_training_equals_one_run():
    spec = specs.MLPSpec((32,))
    ds, trainer, state = _setup(spec)
    data = T.device_data(ds)
    seg = L.make_segment_fn(trainer, len(ds.train))
    key = jax.random.key(3)
    whole, rec_whole = L.train_steps(seg, state, data, key, 0, 50, spe=20, eval_every=10)
    half, rec_a = L.train_steps(seg, state, data, key, 0, 27, spe=20, eval_every=10, total=50)
    rest, rec_b = L.train_steps(seg, half, data, key, 27, 50, spe=20, eval_every=10)
    chex.assert_trees_all_close(whole.params, rest.params, atol=1e-6)
    assert [r.step for r in rec_whole] == [r.step for r in rec_a + rec_b]
    np.testing.assert_allclose([r.val_loss for r in rec_whole], [r.val_loss for r in rec_a + rec_b],
                               rtol=1e-5)


@pytest.mark.parametrize('step_loop', ['scan', 'python'])
def test_tracked_best_weights_are_those_at_the_early_stopping_point(step_loop):
    """config.prune_weights='best': the state carries the params and batch stats of its lowest validation loss;
    they equal the params of the same training stopped at that step (random labels: the loss bottoms out early)."""
    spec = specs.ResNetSpec((4,), stem_channels=4)  # batch stats too
    ds, trainer, state = _setup(spec, (8, 8, 3))
    data = T.device_data(ds)
    seg = L.make_segment_fn(trainer, len(ds.train), step_loop=step_loop)
    key = jax.random.key(5)
    tracked = state.replace(best={'params': state.params, 'batch_stats': state.batch_stats})
    end, records = L.train_steps(seg, tracked, data, key, 0, 60, spe=20, eval_every=5)
    best_step = ES.early_stopping(records).step
    assert best_step < 60, 'the test needs an early minimum'
    stopped, _ = L.train_steps(seg, state, data, key, 0, best_step, spe=20, eval_every=5, total=60)
    chex.assert_trees_all_close(end.best['params'], stopped.params, atol=1e-6)
    chex.assert_trees_all_close(end.best['batch_stats'], stopped.batch_stats, atol=1e-6)
    assert not np.allclose(jax.tree.leaves(end.params)[0], jax.tree.leaves(stopped.params)[0])
    untracked, _ = L.train_steps(seg, state, data, key, 0, 10, spe=20, eval_every=5)
    assert untracked.best is None  # off by default: nothing extra carried


def test_plan_segments_cover_range():
    segs = L.plan_segments(5, 47, 20, breaks=(30,))
    assert segs == [(0, 5, 15), (1, 0, 10), (1, 10, 10), (2, 0, 7)]


def test_evaluate_ignores_padding():
    spec = specs.MLPSpec((16,))
    ds, trainer, state = _setup(spec, prune=0.0)
    data = T.device_data(ds)  # 200 val examples padded to 1000
    loss, acc = jax.jit(trainer.evaluate())(state.params, state.batch_stats, data.val_x, data.val_y,
                                          data.val_w)
    logits = trainer.model.apply({'params': state.params},
                                 jnp.asarray(ds.validation.images, jnp.float32) / 255.0)
    np.testing.assert_allclose(float(acc), float(np.mean(np.argmax(logits, -1) == ds.validation.labels)),
                               atol=1e-6)
    np.testing.assert_allclose(float(loss), float(jnp.mean(T.cross_entropy(logits, ds.validation.labels))),
                               rtol=1e-5)


def test_early_stopping_picks_min_validation_loss():
    rec = lambda step, vl: ES.EvalRecord(step, 0, 0, vl, step / 100, 0, step / 1000)
    best = ES.early_stopping([rec(10, 0.5), rec(20, 0.3), rec(30, 0.3), rec(40, 0.4)])
    assert best.step == 20 and best.test_accuracy == 0.02


def test_non_finite_loss_stops_with_step():
    spec = specs.MLPSpec((16,))
    ds, _, _ = _setup(spec)
    trainer = T.Trainer(networks.build_model(spec), T.make_optimizer('sgd', 1e30), 30, functools.partial(D.preprocess, dataset='mnist'))
    variables = networks.init_variables(spec, jax.random.key(0), (8, 8, 1))
    state = T.create_train_state(variables, M.create_masks(variables['params']), trainer.tx)
    seg = L.make_segment_fn(trainer, len(ds.train))
    with pytest.raises(L.NonFiniteLossError, match=r'round 7: non-finite training loss at step \d+ \(epoch'):
        L.train_steps(seg, state, T.device_data(ds), jax.random.key(0), 0, 40, spe=20, eval_every=10,
                      label='round 7')


def test_replicated_segments_match_individual_runs():
    spec = specs.MLPSpec((16,))
    ds = _dataset()
    data = T.device_data(ds)
    trainer = T.Trainer(networks.build_model(spec), T.make_optimizer('adam', 1e-2), 30, functools.partial(D.preprocess, dataset='mnist'))
    states, keys = [], []
    for seed in range(3):
        variables = networks.init_variables(spec, jax.random.key(seed), (8, 8, 1))
        masks = M.magnitude_prune(variables['params'], M.create_masks(variables['params']), 0.3 * seed)
        states.append(T.create_train_state(variables, masks, trainer.tx))
        keys.append(jax.random.key(100 + seed))
    seg = L.make_segment_fn(trainer, len(ds.train))
    rep = L.make_replicated_segment_fn(trainer, len(ds.train))
    together, metrics = rep(pytrees.stack(states), data, jnp.stack(keys), L.Span(0, 0, 0, 20, 10),
                            jnp.full((3,), jnp.inf), length=20)
    assert metrics['loss'].shape == (3, 20)
    for i, (s, k) in enumerate(zip(states, keys)):
        alone, m = seg(s, data, k, L.Span(0, 0, 0, 20, 10), jnp.inf, length=20)
        chex.assert_trees_all_close(jax.tree.map(lambda x: x[i], together.params), alone.params, atol=1e-5)
        np.testing.assert_allclose(metrics['val_loss'][i], m['val_loss'], rtol=1e-5)


def _count_primitive(jaxpr, name):
    """How many equations named ``name`` a (closed) jaxpr holds, nested ones (scan, cond, jit bodies) included."""
    jaxpr = getattr(jaxpr, 'jaxpr', jaxpr)
    count = 0
    for eqn in jaxpr.eqns:
        count += eqn.primitive.name == name
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                if hasattr(sub, 'eqns') or hasattr(getattr(sub, 'jaxpr', None), 'eqns'):
                    count += _count_primitive(sub, name)
    return count


def test_lanes_evaluate_the_test_split_only_where_a_lane_has_a_new_minimum():
    """Seeds as lanes: the test split is a branch taken when any lane reaches a new validation minimum (vmap of a
    per-lane predicate would turn it into a select that evaluates it at every evaluation), and each lane reports
    test metrics exactly where it alone would."""
    spec = specs.MLPSpec((16,))
    ds = _dataset()
    data = T.device_data(ds)
    trainer = T.Trainer(networks.build_model(spec), T.make_optimizer('adam', 1e-2), 30,
                        functools.partial(D.preprocess, dataset='mnist'))
    states = [T.create_train_state(networks.init_variables(spec, jax.random.key(s), (8, 8, 1)),
                                   M.create_masks(networks.init_variables(spec, jax.random.key(s), (8, 8, 1))['params']),
                                   trainer.tx) for s in range(3)]
    keys = jnp.stack([jax.random.key(10 + s) for s in range(3)])
    best = jnp.array([jnp.inf, -jnp.inf, jnp.inf])  # lane 1 can never reach a new minimum: no test evaluation
    span = L.Span(0, 0, 0, 20, 5)
    rep = L.make_replicated_segment_fn(trainer, len(ds.train))
    jaxpr = jax.make_jaxpr(functools.partial(rep, length=20))(pytrees.stack(states), data, keys, span, best)
    assert _count_primitive(jaxpr, 'cond') == 2, 'the test evaluation is no longer a branch under vmap'
    _, lanes = rep(pytrees.stack(states), data, keys, span, best, length=20)
    seg = L.make_segment_fn(trainer, len(ds.train))
    for i, state in enumerate(states):
        _, alone = seg(state, data, keys[i], span, best[i], length=20)
        np.testing.assert_array_equal(np.isnan(lanes['test_acc'][i]), np.isnan(alone['test_acc']))
        np.testing.assert_allclose(lanes['test_loss'][i], alone['test_loss'], rtol=1e-5)
    assert np.isnan(lanes['test_acc'][1]).all() and not np.isnan(lanes['test_acc'][0]).all()


def test_python_step_loop_matches_scan():
    spec = specs.ResNetSpec((4,), stem_channels=4)
    ds, trainer, state = _setup(spec, (8, 8, 3))
    data = T.device_data(ds)
    out = {}
    for loop in ('scan', 'python'):
        seg = L.make_segment_fn(trainer, len(ds.train), step_loop=loop)
        out[loop] = L.train_steps(seg, state, data, jax.random.key(1), 0, 30, spe=20, eval_every=10)
    # Same computation, compiled inside or outside a loop: equal up to float rounding (which 30 Adam
    # steps at lr 1e-2 amplify to ~1e-4).
    chex.assert_trees_all_close(out['scan'][0].params, out['python'][0].params, atol=1e-3)
    np.testing.assert_allclose([r.val_loss for r in out['scan'][1]], [r.val_loss for r in out['python'][1]],
                               rtol=1e-4)
    assert T.resolve_step_loop('auto', has_convolutions=False) == 'scan'
