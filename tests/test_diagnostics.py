"""Juvenility diagnostics against hand-computable cases."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jst.data import datasets as D
from jst.models import networks
from jst.models import specs
from jst.ops import masks as M
from jst.searches import diagnostics as J
from jst.training import train as T


def test_hutchinson_trace_of_a_quadratic():
    a = jnp.asarray(np.random.default_rng(0).normal(size=(6, 6)), jnp.float32)
    h = a @ a.T  # symmetric PSD Hessian
    params = {'w': {'kernel': jnp.ones((6, 1))}}
    loss = lambda p: 0.5 * (p['w']['kernel'][:, 0] @ h @ p['w']['kernel'][:, 0])
    masks = M.create_masks(params)
    est = J.hutchinson_trace(loss, params, masks, jax.random.key(0), num_samples=4000)
    np.testing.assert_allclose(float(est), float(jnp.trace(h)), rtol=0.05)
    # Pruned weights are excluded: the trace over the kept block only.
    half = {'w': {'kernel': jnp.arange(6)[:, None] < 3}}
    est_half = J.hutchinson_trace(loss, params, half, jax.random.key(1), num_samples=4000)
    np.testing.assert_allclose(float(est_half), float(jnp.trace(h[:3, :3])), rtol=0.05)


def test_hutchinson_exact_for_diagonal_hessian():
    d = jnp.asarray([1.0, 2.0, 3.0, 4.0])
    params = {'l': {'kernel': jnp.ones((4, 1))}}
    loss = lambda p: 0.5 * jnp.sum(d * p['l']['kernel'][:, 0] ** 2)
    est = J.hutchinson_trace(loss, params, M.create_masks(params), jax.random.key(0), num_samples=3)
    assert float(est) == pytest.approx(10.0)  # v^T D v = sum(d) for every Rademacher v


def test_dead_fraction_known_preactivations():
    pre = jnp.asarray([[1.0, -1.0, 0.0, -2.0],
                       [-1.0, -3.0, 0.0, 5.0]])
    # unit 0 fires, unit 1 never, unit 2 is exactly 0 (dead), unit 3 fires once
    assert float(J.dead_fraction(pre)) == pytest.approx(0.5)
    conv = jnp.stack([pre, pre])[:, :, None, :]  # [N, H, W, U]
    assert float(J.dead_fraction(conv)) == pytest.approx(0.5)


@pytest.mark.parametrize('k', [1, 3, 5])
def test_effective_rank_of_rank_k_matrix(k):
    rng = np.random.default_rng(k)
    q1, _ = np.linalg.qr(rng.normal(size=(40, k)))
    q2, _ = np.linalg.qr(rng.normal(size=(12, k)))
    a = jnp.asarray(q1 @ q2.T * 3.0, jnp.float32)  # k equal singular values
    assert float(J.effective_rank(a)) == pytest.approx(k, rel=1e-3)


def test_sharpness_of_a_quadratic():
    d = jnp.asarray([1.0, 4.0])
    params = {'l': {'kernel': jnp.asarray([[1.0], [1.0]])}}
    loss = lambda p: 0.5 * jnp.sum(d * p['l']['kernel'][:, 0] ** 2)
    rho = 0.1
    g = d * 1.0
    eps = rho * g / jnp.linalg.norm(g)
    expected = 0.5 * jnp.sum(d * (1.0 + eps) ** 2) - 0.5 * jnp.sum(d)
    got = J.sharpness(loss, params, M.create_masks(params), rho)
    np.testing.assert_allclose(float(got), float(expected), rtol=1e-5)


def test_weight_stats_use_surviving_weights_only():
    params = {'l': {'kernel': jnp.asarray([[1.0, -3.0], [100.0, 0.5]])}}
    masks = {'l': {'kernel': jnp.asarray([[True, True], [False, True]])}}
    s = J.weight_stats(params, masks)['l/kernel']
    assert float(s['mean_abs']) == pytest.approx(1.5)
    assert float(s['max_abs']) == pytest.approx(3.0)


def test_gradient_snr_is_high_for_identical_minibatches():
    spec = specs.MLPSpec((8,))
    v = networks.init_variables(spec, jax.random.key(0), (4, 4, 1))
    masks = M.create_masks(v['params'])
    x1 = jax.random.randint(jax.random.key(1), (8, 4, 4, 1), 0, 255).astype(jnp.uint8)
    y1 = jnp.arange(8) % 10
    diag = J.make_diagnostics(T.make_trainer(spec, 'adam', 1e-3, 0.0, 8, 'mnist'), spec.preactivation_pattern, num_minibatches=4, hutchinson_samples=2)
    same = J.summarize(diag(v['params'], {}, masks, jnp.tile(x1, (4, 1, 1, 1)), jnp.tile(y1, 4), jax.random.key(0)))
    x2 = jax.random.randint(jax.random.key(2), (32, 4, 4, 1), 0, 255).astype(jnp.uint8)
    mixed = J.summarize(diag(v['params'], {}, masks, x2, jnp.arange(32) % 10, jax.random.key(0)))
    assert same['grad_snr'] > 1e6  # no noise across identical mini-batches
    assert mixed['grad_snr'] < same['grad_snr']
    assert set(same['layers']['dead_fraction']) == {'hidden_0'}


def test_diagnostics_on_resnet_name_the_relu_layers():
    spec = specs.paper_resnet(1, channels=4)
    v = networks.init_variables(spec, jax.random.key(0), (8, 8, 3))
    masks = M.create_masks(v['params'])
    diag = J.make_diagnostics(T.make_trainer(spec, 'adam', 1e-3, 0.0, 8, 'cifar10'), spec.preactivation_pattern, num_minibatches=2, hutchinson_samples=2)
    x = jax.random.randint(jax.random.key(1), (16, 8, 8, 3), 0, 255).astype(jnp.uint8)
    s = J.summarize(diag(v['params'], v['batch_stats'], masks, x, jnp.arange(16) % 10, jax.random.key(0)))
    assert set(s['layers']['dead_fraction']) == {'stem_bn', 'block_0/bn1'}
    assert all(np.isfinite(s[k]) for k in ('grad_norm', 'grad_snr', 'hessian_trace', 'sharpness'))


def test_runs_record_diagnostics_and_transfer_a_ticket(mnist_dir, tmp_path):
    from jst import driver
    from tests.helpers import load_config
    config = load_config('tiny')
    config.manual_dir = mnist_dir
    config.method = 'juvenile'
    config.model.widths = (32,)
    config.num_rounds = 1
    config.steps_per_round = 60
    config.write_report = False
    config.juvenility = True
    config.learning_potential_steps = 10
    src = driver.train_and_evaluate(config, str(tmp_path / 'src'))
    j = src[0]['juvenility']
    assert set(j) == {'start', 'end', 'learning_potential', 'seconds', 'wait_seconds'}
    assert j['start']['loss'] > j['end']['loss']  # training lowered the probe loss
    assert 'hidden_0' in j['end']['layers']['dead_fraction']
    # Transfer the final ticket to permuted-pixel MNIST.
    config.init_from = str(tmp_path / 'src')
    config.permute_pixels = True
    dst = driver.train_and_evaluate(config, str(tmp_path / 'dst'))
    assert dst[0]['architecture'] == src[-1]['architecture']
    assert (dst[0]['dataset'], dst[0]['permute_pixels'], src[0]['permute_pixels']) == ('mnist', True, False)
    assert abs(dst[0]['fraction_remaining'] - src[-1]['fraction_remaining']) < 1e-9
    config.init_from_weights = 'initial'
    with pytest.raises(Exception, match='needs a weight-reset'):
        driver.train_and_evaluate(config, str(tmp_path / 'dst2'))
    config.init_from = str(tmp_path / 'missing')
    with pytest.raises(Exception, match='not a folder'):
        driver.train_and_evaluate(config, str(tmp_path / 'dst3'))


def test_background_start_diagnostics_are_those_of_the_start_state(mnist_dir, tmp_path):
    """The start-of-round diagnostics run on a thread while the round trains: same values as run first."""
    from jst.run import context, plans
    from jst.searches import rounds
    from tests.helpers import load_config
    config = load_config('tiny')
    config.manual_dir = mnist_dir
    config.juvenility = True
    config.learning_potential_steps = 10
    config.steps_per_round = 40
    exp = context.make_context(config, str(tmp_path))
    spec = specs.paper_mlp(1, width=32)
    variables = networks.init_variables(spec, jax.random.key(0), exp.input_shape)
    state = T.create_train_state(variables, M.create_masks(variables['params']), exp.trainer(spec).tx)
    (result,) = rounds.train_round(exp, None, spec, [state], [0], round_index=0, label='t')
    start = rounds.evaluate_start(exp, spec, state)
    alone = J.start_of_round(exp, spec, state, start['val_accuracy'])
    assert result.start['juvenility'] == alone['juvenility']
    assert result.start['learning_potential'] == alone['learning_potential']
    assert result.start['juvenility_end']['loss'] < alone['juvenility']['loss']
    config.juvenility_background = False  # all on the main thread: same values, all of the time waited
    exp.plan = plans.SearchPlan.from_config(config)  # the searches read the plan, made once from the config
    (fg,) = rounds.train_round(exp, None, spec, [state], [0], round_index=0, label='t')
    assert fg.start['juvenility'] == alone['juvenility']
    assert fg.start['juvenility_wait_seconds'] >= fg.start['juvenility_seconds'] > 0


def test_correlation_table_by_hand():
    """Two runs x three rounds with known factors: pooled, within-round and final-test correlations."""
    from jst.analysis import report

    def run(workdir, variant, vals, losses_at_start, final):
        out = []
        for rnd, (val, lp) in enumerate(zip(vals, losses_at_start)):
            out.append({'workdir': workdir, 'control': 'none', 'variant': variant, 'method': variant,
                        'round': rnd, 'val_accuracy': val, 'test_accuracy': final,
                        'juvenility': {'start': {'grad_norm': lp}, 'learning_potential': lp}})
        return out

    # Gains: run a 0.2, 0.1; run b 0.4, 0.1. Factor (learning potential): a 2, 1; b 3, 2.
    summary = run('a', 'x', [0.5, 0.7, 0.8], [0, 2, 1], 0.8) + run('b', 'y', [0.3, 0.7, 0.8], [0, 3, 2], 0.9)
    rows = report.juvenility_rows(summary)
    assert sorted((r['round'], round(r['gain'], 6)) for r in rows) == [(1, 0.2), (1, 0.4), (2, 0.1), (2, 0.1)]
    pooled, within, final = report.juvenility_correlations(rows, 'learning_potential')
    np.testing.assert_allclose(pooled, np.corrcoef([2, 1, 3, 2], [0.2, 0.1, 0.4, 0.1])[0, 1], atol=1e-9)
    # Within round 1: factor (2, 3) vs gain (0.2, 0.4), same order; round 2: gains equal -> only round 1 counts.
    np.testing.assert_allclose(within, np.corrcoef([-0.5, 0.5, -0.5, 0.5], [-0.1, 0.1, 0, 0])[0, 1], atol=1e-9)
    np.testing.assert_allclose(final, np.corrcoef([2, 1, 3, 2], [0.8, 0.8, 0.9, 0.9])[0, 1], atol=1e-9)
    table = report.juvenility_table(summary)
    assert 'all: r(gain) / r(gain, within round) / r(final test), n=4 pairs of 2 runs' in table
    assert 'x: r(gain) / r(gain, within round) / r(final test), n=2 pairs of 1 runs' in table


def test_correlations_keep_the_seeds_of_one_workdir_apart():
    """A ``num_seeds`` workdir holds several runs: its seeds are paired round by round, never across seeds."""
    from jst.analysis import report

    def run(workdir, seed, vals, factor):
        return [{'workdir': workdir, 'seed': seed, 'control': 'none', 'variant': 'x', 'method': 'x', 'round': rnd,
                 'val_accuracy': v, 'test_accuracy': vals[-1], 'juvenility': {'start': {'grad_norm': f},
                                                                              'learning_potential': f}}
                for rnd, (v, f) in enumerate(zip(vals, factor))]

    apart = run('a', 0, [0.5, 0.7, 0.8], [0, 2, 1]) + run('b', 0, [0.3, 0.7, 0.8], [0, 3, 2])
    lanes = run('w', 0, [0.5, 0.7, 0.8], [0, 2, 1]) + run('w', 1, [0.3, 0.7, 0.8], [0, 3, 2])
    strip = lambda rows: sorted((r['round'], round(r['gain'], 6), r['learning_potential']) for r in rows)
    assert strip(report.juvenility_rows(lanes)) == strip(report.juvenility_rows(apart))
    assert 'n=4 pairs of 2 runs' in report.juvenility_table(lanes)
