"""Seeds as a batch axis: an N-seed run in one program gives each seed the records of its own
one-seed run; the structure search groups lanes by architecture; bad ``num_seeds`` is refused."""

import json
import os

import pytest

from jst.run import configuration
from jst import driver
from jst.analysis import report
from jst.searches import juvenile
from tests import golden_runs
from tests.helpers import load_config, set_fields


def _config(mnist_dir, **overrides):
    config = load_config('tiny')
    config.manual_dir = mnist_dir
    config.write_report = False
    return set_fields(config, {'train_limit': 1200, 'validation_size': 1000, 'steps_per_round': 40,
                               'eval_every': 20, 'num_rounds': 2, **overrides})


POLICIES = {
    'lth': {'control': 'random_reinit,random_prune', 'rewind_step': 10},
    'juvenile_paper': {'method': 'juvenile', 'model.widths': (32,), 'pruning': 'level',
                       'target_sparsity': 0.8},
    'juvenile_search': {'method': 'juvenile', 'growth': 'search', 'model.widths': (16,), 'pruning': 'level',
                        'target_sparsity': 0.5, 'search.probe_steps': 10, 'search.widen_by': (8,),
                        'search.patience': 5},
}


@pytest.mark.parametrize('policy', sorted(POLICIES))
def test_each_seed_equals_its_own_run(policy, mnist_dir, tmp_path):
    """Seeds 3 and 4 trained as lanes of one program == two separate one-seed runs (to float tolerance)."""
    together = driver.train_and_evaluate(_config(mnist_dir, seed=3, num_seeds=2, **POLICIES[policy]),
                                         str(tmp_path / 'together'))
    alone = [r for seed in (3, 4)
             for r in driver.train_and_evaluate(_config(mnist_dir, seed=seed, **POLICIES[policy]),
                                                str(tmp_path / f'seed{seed}'))]
    key = lambda r: (r['seed'], r['round'], r['control'])
    assert sorted(map(key, together)) == sorted(map(key, alone))
    assert {r['seed'] for r in together} == {3, 4}
    by_key = {key(r): r for r in alone}
    as_json = lambda record: golden_runs.strip_volatile(json.loads(json.dumps(record)))
    lanes = lambda a, b, path: golden_runs.differences(as_json(a), as_json(b), path,
                                                       tolerances=golden_runs.LANE_TOLERANCES)
    for r in together:  # every field: floats to golden_runs.LANE_TOLERANCES, the rest exactly; wall-clock dropped
        diffs = lanes(by_key[key(r)], r, str(key(r)))
        assert not diffs, '\n'.join(diffs[:20])
    other_seed = {**by_key[(4, 0, 'none')], 'seed': 3}  # the tolerance tells seeds apart: a swapped lane fails
    assert any('loss' in d for d in lanes(by_key[(3, 0, 'none')], other_seed, 'swapped'))
    # One workdir, both seeds: the report aggregates them with a CI.
    rows = report.aggregate(report.load_runs([str(tmp_path / 'together')])[0])
    assert all(row['seeds'] == 2 for row in rows)
    # ... and the one-seed runs of the same seeds cannot be added to it (each seed counted once).
    with pytest.raises(report.ReportError, match='seed 3 appears twice'):
        report.load_runs([str(tmp_path / 'together'), str(tmp_path / 'seed3')])


def _lanes(*specs_):
    return [juvenile.LaneProgress(round=r, spec={'widths': list(w)}, done=d) for r, w, d in specs_]


def test_search_lanes_train_in_groups_of_one_architecture():
    lanes = _lanes((1, (16, 16), False), (1, (24,), False), (1, (16, 16), False), (0, (16,), True))
    assert juvenile.next_group(lanes) == [0, 2]
    lanes[0] = lanes[2] = juvenile.LaneProgress(round=2, spec={'widths': [16, 16]})
    assert juvenile.next_group(lanes) == [1]  # the lowest round first
    assert juvenile.next_group(_lanes((3, (8,), True), (2, (8, 8), False))) == [1]  # finished lanes never train
    assert juvenile.next_group(_lanes((3, (8,), True), (2, (8, 8), True))) == []  # all done: the search ends


def test_bad_num_seeds_is_refused(mnist_dir):
    with pytest.raises(configuration.ConfigError, match='num_seeds=0 must be >= 1'):
        configuration.validate_config(_config(mnist_dir, num_seeds=0))


def test_multi_seed_summary_table(mnist_dir, tmp_path):
    driver.train_and_evaluate(_config(mnist_dir, num_seeds=3, num_rounds=1), str(tmp_path))
    table = open(os.path.join(tmp_path, 'summary.md')).read()
    assert 'mean ± 95% CI' in table and '| 3 |' in table
