"""The recursive juvenile search: weights carried over, validation-only selection, end to end."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jst.run import context
from jst import driver
from jst.models import networks
from jst.models import specs
from jst.ops import masks as M
from jst.ops import pytrees
from jst.run import records as R
from jst.searches import prune_and_grow as S
from jst.searches import rounds
from jst.training import growth as G
from jst.training import train as T
from jst.training import train_loop
from tests.helpers import load_config, set_fields


def _tiny_juvenile(mnist_dir, **overrides):
    config = load_config('tiny')
    config.manual_dir = mnist_dir
    config.method = 'juvenile'
    config.model.widths = (64,)
    config.pruning = 'level'
    config.target_sparsity = 0.8
    config.num_rounds = 2
    config.steps_per_round = 100
    return set_fields(config, overrides)


def test_surviving_weights_carry_over_between_rounds(mnist_dir, tmp_path, monkeypatch):
    seen = []
    real = rounds.train_round

    def spy(ctx, journal, spec, states, lanes, **kw):
        (result,) = real(ctx, journal, spec, states, lanes, **kw)
        seen.append((spec, jax.tree.map(np.asarray, states[0].params),
                     jax.tree.map(np.asarray, result.state.params), result.state.masks))
        return [result]

    monkeypatch.setattr(rounds, 'train_round', spy)
    records = driver.train_and_evaluate(_tiny_juvenile(mnist_dir), str(tmp_path))
    assert [r['architecture'] for r in records] == ['MLP[64-10]', 'MLP[64-64-10]', 'MLP[64-64-64-10]']
    for (spec0, _, end0, _), (spec1, start1, _, _) in zip(seen, seen[1:]):
        assert len(spec1.widths) == len(spec0.widths) + 1
        # Layers are kept (the new one is appended at the end, before the output).
        for i in range(len(spec0.widths)):
            name = f'hidden_{i}'
            np.testing.assert_array_equal(start1[name]['bias'], end0[name]['bias'])
            surviving = np.asarray(start1[name]['kernel']) != 0
            # Every weight that survives into round r+1 has exactly its value from the end of round r.
            np.testing.assert_array_equal(np.asarray(start1[name]['kernel'])[surviving],
                                          np.asarray(end0[name]['kernel'])[surviving])
        np.testing.assert_array_equal(start1['output']['kernel'][start1['output']['kernel'] != 0],
                                      end0['output']['kernel'][start1['output']['kernel'] != 0])
        new = f'hidden_{len(spec0.widths)}'
        np.testing.assert_array_equal(start1[new]['kernel'], np.eye(64))


def test_candidate_selection_ignores_the_test_split(mnist_dir, tmp_path, monkeypatch):
    """Also: the three searches below reuse one compiled probe per architecture (it used to be rebuilt, and
    recompiled, every round): the rounds' segment program, built once per architecture."""
    built = []
    real = train_loop.make_segment_fn
    monkeypatch.setattr(train_loop, 'make_segment_fn', lambda trainer, *a, **k: built.append(trainer) or real(
        trainer, *a, **k))
    config = _tiny_juvenile(mnist_dir, growth='search')
    exp = context.make_context(config, str(tmp_path))
    spec = specs.paper_mlp(1, width=32)
    variables = networks.init_variables(spec, jax.random.key(0), exp.input_shape)
    state = T.create_train_state(variables, M.create_masks(variables['params']), exp.trainer(spec).tx)
    options = G.options_from_config(config)
    a = S.evaluate_candidates(exp, state, spec, jax.random.key(5), options)
    # Scramble the test split: scores must not change. Scramble validation: they must.
    d = exp.data
    exp.data = d.replace(test_x=jnp.zeros_like(d.test_x), test_y=(d.test_y + 3) % 10)
    b = S.evaluate_candidates(exp, state, spec, jax.random.key(5), options)
    assert [c.val_accuracy for c in a] == [c.val_accuracy for c in b]
    exp.data = d.replace(val_y=(d.val_y + 3) % 10)
    c = S.evaluate_candidates(exp, state, spec, jax.random.key(5), options)
    assert [x.val_accuracy for x in a] != [x.val_accuracy for x in c]
    names = {x.candidate.name for x in a}
    assert names == {'deepen@1', 'deepen@2', 'widen0+32', 'widen1+32'}
    assert len(built) == len({x.spec for x in a}) == len(set(built))  # per architecture, not per search


def test_vmapped_probe_matches_one_at_a_time(mnist_dir, tmp_path):
    config = _tiny_juvenile(mnist_dir)
    exp = context.make_context(config, str(tmp_path))
    spec = specs.paper_mlp(1, width=32)
    variables = networks.init_variables(spec, jax.random.key(0), exp.input_shape)
    trainer = exp.trainer(spec)
    state = T.create_train_state(variables, M.create_masks(variables['params']), trainer.tx)
    grown = [G.deepen(state.params, state.masks, spec, jax.random.key(1), position=p) for p in (1, 2)]
    states = [G.grown_state(state, g, trainer.tx) for g in grown]
    new_spec, key = grown[0].spec, jax.random.key(2)
    score = lambda st, n: train_loop.validation_accuracy_after(
        exp.segment_fn(new_spec, n), st, exp.data, jnp.stack([key] * n), 30, spe=exp.steps_per_epoch)
    together = score(pytrees.stack(states), 2)
    alone = [float(score(s, 1)[0]) for s in states]
    np.testing.assert_allclose(together, alone, atol=1e-6)


def test_probe_trains_as_a_round_does(mnist_dir, tmp_path):
    """One step runner: a probe's score is the validation accuracy of the same steps trained as a round (same
    sampler, same batches for the same key, across an epoch boundary), and it does not read the test split."""
    config = _tiny_juvenile(mnist_dir)
    exp = context.make_context(config, str(tmp_path))
    spec = specs.paper_mlp(1, width=32)
    variables = networks.init_variables(spec, jax.random.key(0), exp.input_shape)
    state = T.create_train_state(variables, M.create_masks(variables['params']), exp.trainer(spec).tx)
    key, steps = jax.random.key(7), exp.steps_per_epoch + 3
    probed = train_loop.validation_accuracy_after(exp.segment_fn(spec, 1), state, exp.data, key[None], steps,
                                                  spe=exp.steps_per_epoch)
    trained, _ = train_loop.train_lanes(exp.segment_fn(spec, 1), state, exp.data, key[None], 0, steps,
                                        spe=exp.steps_per_epoch, eval_every=steps)
    d = exp.data
    _, val_acc = exp.eval_fn(spec)(trained.params, trained.batch_stats, d.val_x, d.val_y, d.val_w)
    assert float(probed[0]) == float(val_acc)
    other = train_loop.validation_accuracy_after(exp.segment_fn(spec, 1), state, exp.data,
                                                 jax.random.key(8)[None], steps, spe=exp.steps_per_epoch)
    assert float(other[0]) != float(probed[0])  # another key, other batches
    with pytest.raises(ValueError, match='at least one training step'):
        train_loop.validation_accuracy_after(exp.segment_fn(spec, 1), state, exp.data, key[None], 0,
                                             spe=exp.steps_per_epoch)


def test_tiny_juvenile_paper_end_to_end(mnist_dir, tmp_path):
    records = driver.train_and_evaluate(_tiny_juvenile(mnist_dir), str(tmp_path))
    assert all(r['method'] == 'juvenile' for r in records)
    assert [r['grown_by'] for r in records] == [None, 'deepen@end', 'deepen@end']
    assert records[-1]['stop_reason'] == 'num_rounds'
    assert [r['cumulative_steps'] for r in records] == [100, 200, 300]
    assert records[-1]['test_accuracy'] > 0.85
    assert R.read_summary(str(tmp_path)) == json.loads(json.dumps(records))


def test_tiny_juvenile_search_end_to_end(mnist_dir, tmp_path):
    config = _tiny_juvenile(mnist_dir, growth='search')
    config.search.probe_steps = 20
    config.search.widen_by = (16,)
    records = driver.train_and_evaluate(config, str(tmp_path))
    assert records[1]['candidates'] and records[1]['grown_by'] in {c['name'] for c in records[1]['candidates']}
    best = max(records[1]['candidates'], key=lambda c: c['val_accuracy'])
    assert records[1]['grown_by'] == best['name']
    assert records[-1]['stop_reason'] is not None


def test_search_respects_depth_budget(mnist_dir, tmp_path):
    config = _tiny_juvenile(mnist_dir, growth='search')
    config.search.max_depth = 1
    config.search.widen_by = ()
    config.search.probe_steps = 5
    records = driver.train_and_evaluate(config, str(tmp_path))
    assert len(records) == 1 and records[0]['stop_reason'].startswith('budget')


def test_prune_and_continue_keeps_structure_and_weights(mnist_dir, tmp_path, monkeypatch):
    """growth='none' (the control for growth): same architecture every round, surviving weights carried over
    exactly, pruned ones zero, and the level schedule's sparsity reached."""
    seen = []
    real = rounds.train_round

    def spy(ctx, journal, spec, states, lanes, **kw):
        results = real(ctx, journal, spec, states, lanes, **kw)
        seen.append((jax.tree.map(np.asarray, states[0].params), jax.tree.map(np.asarray, results[0].state.params)))
        return results

    monkeypatch.setattr(rounds, 'train_round', spy)
    records = driver.train_and_evaluate(_tiny_juvenile(mnist_dir, growth='none', **{'model.widths': (64, 64)}),
                                        str(tmp_path))
    assert [r['architecture'] for r in records] == ['MLP[64-64-10]'] * 3
    assert [r['grown_by'] for r in records] == [None, 'none', 'none']
    assert abs(records[-1]['fraction_remaining'] - 0.2) < 1e-3
    for (_, end0), (start1, _) in zip(seen, seen[1:]):
        for name in ('hidden_0', 'hidden_1', 'output'):
            kept = start1[name]['kernel'] != 0
            assert 0 < kept.mean() < 1
            np.testing.assert_array_equal(start1[name]['kernel'][kept], end0[name]['kernel'][kept])
            np.testing.assert_array_equal(start1[name]['bias'], end0[name]['bias'])


def test_prune_and_continue_optimizer_treatment(mnist_dir, tmp_path):
    """optimizer_state_on_growth applies to growth='none' too: 'reset' starts each round's Adam afresh (count 0,
    moments 0), 'carry' keeps the moments of the surviving weights (and zeroes those of pruned ones' updates)."""
    for treatment in ('carry', 'reset'):
        config = _tiny_juvenile(mnist_dir, growth='none', optimizer_state_on_growth=treatment)
        exp = context.make_context(config, str(tmp_path / treatment))
        spec = specs.paper_mlp(1, width=32)
        variables = networks.init_variables(spec, jax.random.key(0), exp.input_shape)
        trainer = exp.trainer(spec)
        state = T.create_train_state(variables, M.create_masks(variables['params']), trainer.tx)
        state = trainer.train_step(state, exp.data.train_x[:60], exp.data.train_y[:60])[0]
        nxt = S.next_ticket(exp, state, spec, 0)
        adam = nxt.state.opt_state[0]
        moments = [float(jnp.abs(x).sum()) for x in jax.tree.leaves(adam.mu)]
        if treatment == 'reset':
            assert int(adam.count) == 0 and not any(moments)
        else:
            assert int(adam.count) == 1 and all(m > 0 for m in moments)


def test_data_order_per_round_and_replay(mnist_dir, tmp_path):
    """'per_round': round 0 keeps the lane's data key (one-round runs unchanged), every later round its own key,
    the same for every training of that round; 'replay': round 0's key in every round."""
    keys = {}
    for order in ('per_round', 'replay'):
        exp = context.make_context(_tiny_juvenile(mnist_dir, data_order=order, num_seeds=2), str(tmp_path / order))
        keys[order] = [np.asarray(jax.random.key_data(rounds.data_keys(exp, [0, 1], r))) for r in range(3)]
        plain = np.asarray(jax.random.key_data(exp.keys_of('data', [0, 1])))
        np.testing.assert_array_equal(keys[order][0], plain)
        one_lane = np.asarray(jax.random.key_data(rounds.data_keys(exp, [1], 2)))[0]
        np.testing.assert_array_equal(one_lane, keys[order][2][1])  # a lane's key does not depend on its group
    assert all((keys['replay'][r] == keys['replay'][0]).all() for r in (1, 2))
    per_round = keys['per_round']
    assert not (per_round[1] == per_round[0]).all(axis=-1).any()
    assert not (per_round[2] == per_round[1]).all(axis=-1).any()
    assert not (per_round[1][0] == per_round[1][1]).all()  # lanes keep distinct orders


def test_init_from_another_split_is_refused(mnist_dir, tmp_path):
    """Issue 20 (e): a ticket trained on another train/validation split (its training examples may be this run's
    validation examples) is refused naming the split; the same split with a pixel permutation is accepted."""
    import pytest  # pylint: disable=g-import-not-at-top
    source = str(tmp_path / 'source')
    driver.train_and_evaluate(_tiny_juvenile(mnist_dir, num_rounds=0, steps_per_round=20), source)
    with pytest.raises(Exception, match='another train/validation split'):
        driver.train_and_evaluate(_tiny_juvenile(mnist_dir, num_rounds=0, steps_per_round=20, init_from=source,
                                                 split_seed=1), str(tmp_path / 'other_split'))
    records = driver.train_and_evaluate(_tiny_juvenile(mnist_dir, num_rounds=0, steps_per_round=20,
                                                       init_from=source, permute_pixels=True),
                                        str(tmp_path / 'permuted'))
    assert (records[0]['dataset'], records[0]['permute_pixels']) == ('mnist', True)  # a field, not a name suffix


def test_random_reinit_and_random_mask_controls_of_a_grown_ticket(mnist_dir, tmp_path):
    """Issue 35: the controls of a grown ticket (``init_from`` its workdir with random weights, and random masks
    with its per-layer kept counts) train the grown architecture at the ticket's sparsity, from other weights."""
    from jst.run import journal as journal_lib  # pylint: disable=g-import-not-at-top
    source = str(tmp_path / 'grown')
    grown = driver.train_and_evaluate(_tiny_juvenile(mnist_dir, num_rounds=1, steps_per_round=20), source)
    spec, _, ticket_masks = journal_lib.FinishedRun.read(source).ticket(0)
    runs = {}
    for masks in ('ticket', 'random'):
        config = _tiny_juvenile(mnist_dir, method='lth', num_rounds=0, steps_per_round=40, init_from=source,
                                init_from_weights='fresh', init_from_masks=masks)
        runs[masks] = driver.train_and_evaluate(config, str(tmp_path / masks))[-1]
        _, _, masks_out = journal_lib.FinishedRun.read(str(tmp_path / masks)).ticket(0)
        counts = lambda tree: [int(np.sum(m)) for m in jax.tree.leaves(tree)]
        assert counts(masks_out) == counts(ticket_masks)
        same = all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(masks_out), jax.tree.leaves(ticket_masks)))
        assert same == (masks == 'ticket')
    for record in runs.values():
        assert record['architecture'] == grown[-1]['architecture'] == spec.describe()
        assert record['params_remaining'] == grown[-1]['params_remaining']
        assert record['layers'] == grown[-1]['layers']  # per-layer (kept, total) counts are the ticket's
    def first_layer(weights):  # after one step from the ticket's masks and `weights`
        workdir = str(tmp_path / f'start_{weights}')
        driver.train_and_evaluate(_tiny_juvenile(mnist_dir, method='lth', num_rounds=0, steps_per_round=1,
                                                 init_from=source, init_from_weights=weights), workdir)
        return np.asarray(journal_lib.FinishedRun.read(workdir).ticket(0)[1]['params']['hidden_0']['kernel'])
    assert not np.allclose(first_layer('fresh'), first_layer('random'))  # 'fresh': not the seed's init key


def test_random_masks_without_a_ticket_are_refused(mnist_dir, tmp_path):
    import pytest  # pylint: disable=g-import-not-at-top
    with pytest.raises(Exception, match='init_from_masks=.random. needs config.init_from'):
        driver.train_and_evaluate(_tiny_juvenile(mnist_dir, init_from_masks='random'), str(tmp_path / 'w'))
