"""Published results are regenerated from the committed records: a page that differs fails."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import REPO

from jst.studies import pages
from jst.studies import policy_pages
from jst.studies import speed_page
from jst.studies import study as study_lib
from jst.studies.catalog import STUDIES

RESULTS = os.path.join(REPO, 'docs', 'results')


@pytest.mark.parametrize('name', sorted(STUDIES) + ['speed', 'index'])
def test_published_page_matches_its_records(name):
    proc = subprocess.run([sys.executable, os.path.join(REPO, 'launch', 'study.py'), 'page', name, '--check'],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize('name', sorted(STUDIES))
def test_every_cell_has_its_seeds(name):
    """Each committed cell (or part of a cell, for a study run seed by seed) holds its seeds, every round, from the
    config it names. A study run in parts may still lack parts (a campaign in progress: its page says which);
    one run in one process per cell must have every cell."""
    study = STUDIES[name]
    for budget in study.budgets:
        for policy in study.policy_names:
            for part in study.parts(policy):
                cell = study_lib.records_dir(RESULTS, study, budget, policy, part)
                if study.lanes_per_run and not os.path.exists(os.path.join(cell, 'summary.json')):
                    continue
                _check_part(study, budget, policy, part, cell)


def _check_part(study, budget, policy, part, cell):
    records = json.load(open(os.path.join(cell, 'summary.json')))
    first, n = part
    seeds = {r['seed'] for r in records}
    assert seeds == set(range(first, first + n)), cell
    config = json.load(open(os.path.join(cell, 'config.json')))
    assert config['num_seeds'] == n and config['seed'] == first, cell
    per_seed = {s: sorted(r['round'] for r in records if r['seed'] == s and r['control'] == 'none') for s in seeds}
    assert all(v == list(range(len(v))) for v in per_seed.values()), cell  # rounds 0..k, none missing
    if 'growth=search' not in study.flags(policy, budget):  # only the search may stop a seed early
        assert len({tuple(v) for v in per_seed.values()}) == 1, cell
        assert len(per_seed[first]) == study.trainings or 'num_rounds' in study.flags(policy, budget), cell
    if study.lanes_per_run:  # a campaign's part names the workdir it ran in (outside the repository)
        run = json.load(open(os.path.join(cell, 'run.json')))
        assert run['workdir'].endswith(study.workdir(policy, budget, part)), cell


def test_a_changed_number_is_caught(tmp_path, monkeypatch):
    """The check really compares numbers: one record's accuracy changed -> the page differs."""
    from jst.studies import study as study_lib  # pylint: disable=g-import-not-at-top
    study = STUDIES['paper_mnist']
    runs = study_lib.load_records(RESULTS, study)
    page = policy_pages.render_page(study, runs)
    key = next(iter(runs))
    runs[key] = [dict(r) for r in runs[key]]
    runs[key][-1]['test_accuracy'] += 0.01
    assert policy_pages.render_page(study, runs) != page


def _level_records():
    """Two seeds x levels 0-2 with controls; level 1 is best on validation, level 2 best on test."""
    out = []
    for seed in (0, 1):
        for level, (val, test) in enumerate([(0.95, 0.95), (0.97, 0.96), (0.96, 0.98)]):
            for control in ('none',) + (('random_reinit', 'random_prune') if level else ()):
                drop = 0.0 if control == 'none' else 0.02 + 0.001 * seed
                out.append({'seed': seed, 'round': level, 'control': control, 'fraction_remaining': 0.8 ** level,
                            'params_remaining': 1000 - 100 * level, 'val_accuracy': val - drop, 'steps': 3000,
                            'test_accuracy': test - drop + 0.001 * seed, 'best_step': 1000 * (3 - level) + seed})
    return out


def test_levels_page_highlights_the_validation_best_level():
    from jst.studies import level_pages  # pylint: disable=g-import-not-at-top
    levels = level_pages.by_level(_level_records())
    assert level_pages.best_level(levels) == 1  # validation-best, although level 2 has the best test accuracy
    table = '\n'.join(level_pages.levels_table(levels))
    assert '| **1** | 80.00 |' in table and '| 2 | 64.00 |' in table
    rows = level_pages.level_comparisons(levels)
    assert [(r['level'], r['b']) for r in rows] == [(1, 'random re-init'), (1, 'random pruning'), (1, 'dense'),
                                                  (2, 'random re-init'), (2, 'random pruning'), (2, 'dense')]
    np.testing.assert_allclose(rows[0]['comparison'].mean_difference, 0.0205, atol=1e-9)
    np.testing.assert_allclose(rows[2]['steps'].mean_difference, -1000, atol=1e-9)
    assert all(r['p_holm'] >= r['comparison'].p_value for r in rows)
    assert 'ticket 2 of 6, random re-init 0 of 4, random pruning 0 of 4' in level_pages.truncation_sentence(levels)


def test_level_lists_join_runs_of_consecutive_levels():
    from jst.studies import level_pages  # pylint: disable=g-import-not-at-top
    assert level_pages.at_levels([]) == 'at no level'
    assert level_pages.at_levels([3]) == 'at level 3'
    assert level_pages.at_levels([4, 5]) == 'at levels 4, 5'
    assert level_pages.at_levels([15, 1, 2, 3, 12, 13, 14, 7]) == 'at levels 1-3, 7 and 12-15'


def test_levels_page_changes_with_a_number():
    from jst.studies import level_pages  # pylint: disable=g-import-not-at-top
    study = STUDIES['lenet300']
    records = _level_records()
    page = level_pages.render_levels_page(study, records)
    records[4]['test_accuracy'] += 0.01
    assert level_pages.render_levels_page(study, records) != page


def test_a_levels_page_of_one_seed_renders_without_tests_or_intervals():
    """A seed-by-seed campaign's page after its first seed (conv2 once crashed its runner here): the numbers
    without a ± (one value has no interval), and no comparison claimed."""
    from jst.studies import level_pages  # pylint: disable=g-import-not-at-top
    records = [r for r in _level_records() if r['seed'] == 0]
    page = level_pages.render_levels_page(STUDIES['lenet300'], records)
    assert '1 seed so far: the paired comparisons need at least 2, so nothing is tested yet.' in page
    assert 'None yet: 1 seed; a paired comparison needs at least 2.' in page
    assert '| **1** | 80.00 | 900 | 97.00 | 96.00 | 94.00 | 94.00 | 2,000 | 2,000 | 2,000 |' in page, page
    tables = page.split('## Every level')[1]
    assert '±' not in tables and 'beats' not in tables and 'beats' not in page.split('Wording')[0]


def test_readme_headline_needs_its_markers():
    study = STUDIES['paper_mnist']
    with pytest.raises(Exception, match='lacks the markers'):
        pages.readme_with_headline('# a README without the block\n', RESULTS, study)
    text = pages.readme_with_headline(f'a\n{_markers(study)}\nb\n', RESULTS, study)
    assert text.startswith('a\n<!--') and text.endswith('-->\nb\n') and '| grow_sparse_new |' in text


def test_readme_states_each_levels_headline_as_its_page_does():
    """A levels study's README block is its page's summary sentence, word for word (the README once tested
    equivalence without the study's margin and said 'equivalent at levels none')."""
    with open(os.path.join(REPO, 'README.md')) as f:
        readme = f.read()
    for name in pages.README_HEADLINES:
        study = STUDIES[name]
        if study.page != 'levels':
            continue
        begin, end = pages.headline_markers(study)
        block = readme.split(begin, 1)[1].split(end, 1)[0].strip()
        with open(os.path.join(RESULTS, f'{name}.md')) as f:
            assert block in f.read(), name


def test_a_study_without_records_gets_its_planned_page(tmp_path):
    """Before its first part lands, either kind of study renders its setup and the command that runs it (no
    table of nothing, no figure)."""
    for kind in ('policies', 'levels'):
        study = study_lib.Study(name='t', title='A planned study', config='configs/tiny.py', first_seed=0,
                                num_seeds=3, budgets=(40,), policies=(('p', '--config.method=lth', 'weight reset'),),
                                comparisons=(), page=kind, notes='Why it runs.')
        page, write_figure = pages.render(str(tmp_path), study)
        assert page.startswith('# A planned study\n\nWhy it runs.') and '**No records are committed yet.**' in page
        assert '`python launch/study.py run t`' in page and '--config.method=lth' in page
        write_figure()
        assert not os.listdir(tmp_path)


def test_settings_that_differ_between_seeds_are_named(tmp_path):
    """A page names each config field whose value differs between the seeds of one cell (a knob a record predates
    counts as its pre-knob value, so a record from before the knob agrees with one that set that value); seeds, data
    paths and identical settings are not listed."""
    study = study_lib.Study(name='t', title='T', config='configs/tiny.py', first_seed=42, num_seeds=3, budgets=(40,),
                            lanes_per_run=1, policies=(('p', '', 'a policy'),), comparisons=())

    def write(seed, **config):
        folder = study_lib.records_dir(str(tmp_path), study, 40, 'p', (seed, 1))
        os.makedirs(folder)
        with open(os.path.join(folder, 'config.json'), 'w') as f:
            json.dump({'seed': seed, 'manual_dir': f'/data/{seed}', 'learning_rate': 0.1, **config}, f)

    write(42)
    write(43, conv_form='xla')
    assert pages.differing_settings_section(str(tmp_path), study) == []
    write(44, conv_form='auto')
    section = pages.differing_settings_section(str(tmp_path), study)
    assert section[0] == '## Settings that differ between seeds', section
    assert section[-1] == ('- 40 steps, `p`: `conv_form` = "xla" (recorded before the knob existed) in seed 42; '
                           '"xla" in seed 43; "auto" in seed 44'), section
    assert not any('manual_dir' in line or 'learning_rate' in line for line in section)


def test_a_levels_page_names_a_setting_its_seeds_differ_in(tmp_path):
    """The levels page of conv2's committed records gains the section once one seed's config differs, and only
    then (the committed page has none)."""
    study = STUDIES['conv2']
    shutil.copytree(os.path.join(RESULTS, 'conv2', 'records'), tmp_path / 'conv2' / 'records')
    page, _ = pages.render(str(tmp_path), study)
    assert 'Settings that differ' not in page
    config_path = os.path.join(study_lib.records_dir(str(tmp_path), study, study.budgets[0], study.policy_names[0],
                                                     (43, 1)), 'config.json')
    with open(config_path) as f:
        config = json.load(f)
    with open(config_path, 'w') as f:
        json.dump({**config, 'conv_form': 'space_to_depth'}, f)
    changed, _ = pages.render(str(tmp_path), study)
    assert changed.startswith(page.rstrip('\n')) and changed.rstrip('\n').endswith(
        '`conv_form` = "xla" (recorded before the knob existed) in seed 42, seed 44; "space_to_depth" in seed 43')


def _markers(study):
    return (f'<!-- {study.name} headline: generated by `python launch/study.py page {study.name}` -->\nOLD\n'
            f'<!-- end of {study.name} headline -->')


def test_truncation_counts_by_hand():
    """A training is truncated when its minimum validation loss is at the round's end: the budget for every round
    (rewound rounds train fewer steps but end there), its own steps for a one-round policy."""
    study = study_lib.Study(name='t', title='t', config='c', first_seed=0, num_seeds=2, budgets=(100,),
                            policies=(('a', '', ''), ('b', '', ''), ('c', '', '')), comparisons=())
    runs = {(100, 'a'): [{'best_step': 100, 'steps': 100}, {'best_step': 60, 'steps': 100}],
            (100, 'b'): [{'best_step': 100, 'steps': 80}, {'best_step': 80, 'steps': 80}],  # rewound to step 20
            (100, 'c'): [{'best_step': 600, 'steps': 600}, {'best_step': 300, 'steps': 600}]}
    assert policy_pages.truncation_sentence(study, runs, 100).endswith(': a 1 of 2, b 1 of 2, c 1 of 2.')


def test_a_study_naming_a_policy_it_lacks_is_refused():
    """A typo in a comparison would silently drop its row (comparison_rows skips pairs without records)."""
    with pytest.raises(ValueError, match=r"names \['grow'\], which are not among its policies \['a', 'b'\]"):
        study_lib.Study(name='t', title='t', config='c', first_seed=0, num_seeds=2, budgets=(10,),
                        policies=(('a', '', ''), ('b', '', '')), comparisons=(('grow', 'b'),))
    with pytest.raises(ValueError, match='dense_policy'):
        study_lib.Study(name='t', title='t', config='c', first_seed=0, num_seeds=2, budgets=(10,),
                        policies=(('a', '', ''),), comparisons=(), dense_policy='dense')


def test_convergence_sentence_by_hand():
    """The dense network's round 0 per budget, and each one-round policy at its own (cumulative) steps."""
    study = study_lib.Study(name='t', title='t', config='c', first_seed=0, num_seeds=2, budgets=(100,),
                            policies=(('dense', '', ''), ('grow', '', ''), ('once', '', '')), comparisons=(),
                            dense_policy='dense')
    runs = {(100, 'dense'): [{'round': 0, 'best_step': 100, 'steps': 100}, {'round': 0, 'best_step': 80,
                                                                          'steps': 100},
                             {'round': 1, 'best_step': 10, 'steps': 100}],
            (100, 'grow'): [{'round': 0, 'best_step': 50, 'steps': 100}, {'round': 1, 'best_step': 50, 'steps': 100}],
            (100, 'once'): [{'round': 0, 'best_step': 300, 'steps': 600}, {'round': 0, 'best_step': 500, 'steps': 600}]}
    # mean 90, t(1) 95% half-width 12.706 * 14.142 / sqrt(2) = 127.1; mean 400, 12.706 * 141.42 / sqrt(2) = 1,270.6
    assert policy_pages.convergence_sentence(study, runs) == (
        'Where the dense network (dense, round 0) reaches its minimum validation loss: step 90 ± 127 of 100. '
        'Trained once: once at 100 steps per round, step 400 ± 1,271 of 600. A budget whose minimum lies well '
        'before its end has converged.')


def test_comparisons_sentence_by_hand():
    """Two comparisons of one table, Holm across both: a - b = +10 ± 2.48 points (t = 17.32, df 2, p = 0.0033,
    Holm 2 x 0.0033 = 0.0066); c - b = -0.67 points (t = -4.0, p = 0.057, Holm max(0.057, 0.0066) = 0.057)."""
    study = study_lib.Study(name='t', title='t', config='c', first_seed=0, num_seeds=3, budgets=(10,),
                            policies=(('a', '', ''), ('b', '', ''), ('c', '', '')), comparisons=(('a', 'b'), ('c', 'b')),
                            headline=('a', 'b'), headline_question='Q?')
    def cell(accuracies, params):
        return [{'round': 0, 'seed': s, 'test_accuracy': acc, 'params_remaining': params, 'cumulative_steps': 10}
                for s, acc in enumerate(accuracies)]
    runs = {(10, 'a'): cell([0.60, 0.61, 0.62], 5), (10, 'b'): cell([0.50, 0.52, 0.51], 7),
            (10, 'c'): cell([0.49, 0.515, 0.505], 7)}
    assert policy_pages.comparisons_sentence(study, runs, 'Two?', [('a', 'b'), ('c', 'b')]) == (
        '**Two?** At 10 steps per round, a beats b (+10.00 ± 2.48 points of test accuracy, Holm p = 0.0066, 5 vs 7 '
        'params, 10 vs 10 steps); c is inconclusive against b (-0.67 ± 0.72 points of test accuracy, Holm p = 0.057, '
        '7 vs 7 params, 10 vs 10 steps).')
    assert policy_pages.headline_sentence(study, runs) == policy_pages.comparisons_sentence(
        study, runs, 'Q?', [('a', 'b')])


def test_a_campaign_with_one_seed_per_policy_renders_without_comparisons():
    """A paired test needs >= 2 seeds of both policies: with one, the page shows the cells and no comparison
    (the runner crashed here while regenerating cifar10_paper's page after its second part)."""
    study = study_lib.Study(name='t', title='t', config='c', first_seed=0, num_seeds=3, budgets=(10,),
                            policies=(('a', '', ''), ('b', '', '')), comparisons=(('a', 'b'),), headline=('a', 'b'),
                            headline_question='Q?')
    record = {'round': 0, 'seed': 0, 'control': 'none', 'architecture': 'X', 'fraction_remaining': 1.0,
              'params_remaining': 5, 'cumulative_steps': 10, 'val_accuracy': 0.5, 'test_accuracy': 0.5,
              'best_step': 10, 'steps': 10}
    runs = {(10, 'a'): [record], (10, 'b'): [dict(record, test_accuracy=0.6)]}
    assert policy_pages.comparison_rows(study, runs, 10) == []
    assert 'Not run yet (a paired test needs >= 2 seeds of both)' in policy_pages.headline_sentence(study, runs)


def test_tost_by_hand():
    from jst.analysis import statistics  # pylint: disable=g-import-not-at-top
    # d = a - b = [0.1, -0.1, 0.2, 0.0]: mean 0.05, sd sqrt(0.05/3), se = sd/2 = 0.0645497; margin 0.3:
    # t_lower = (0.05 + 0.3)/se = 5.42218, t_upper = (0.05 - 0.3)/se = -3.87298 on 3 df;
    # p = max(P(T > 5.42218), P(T < -3.87298)) = max(0.0061538, 0.0152331) = 0.0152331.
    e = statistics.tost([1.1, 0.9, 1.2, 1.0], [1.0, 1.0, 1.0, 1.0], margin=0.3)
    assert e.n == 4 and e.mean_difference == pytest.approx(0.05)
    assert e.p_value == pytest.approx(0.0152331, rel=1e-4)
    half = 2.353363 * 0.0645497  # t_{0.95, 3} * se
    assert e.ci90 == pytest.approx((0.05 - half, 0.05 + half), rel=1e-5)
    assert statistics.tost([1.1, 0.9, 1.2, 1.0], [1.0] * 4, margin=0.1).p_value > 0.05  # 0.05 +- 0.15 not inside
    assert statistics.tost([1.0, 1.0], [1.0, 1.0], margin=0.1).p_value == 0.0
    with pytest.raises(ValueError, match='margin > 0'):
        statistics.tost([1.0, 2.0], [1.0, 2.0], margin=0.0)


def test_holm_by_family_by_hand():
    from jst.analysis import statistics  # pylint: disable=g-import-not-at-top
    # Family t: p = 0.01, 0.04 -> 0.02, 0.04; family c: 0.03, 0.2, 0.01 -> 0.06, 0.2, 0.03.
    got = statistics.holm_by_family([0.01, 0.03, 0.04, 0.2, 0.01], ['t', 'c', 't', 'c', 'c'])
    assert got == pytest.approx([0.02, 0.06, 0.04, 0.2, 0.03])
    assert statistics.holm_by_family([0.01, 0.04], ['t', 't']) == pytest.approx(statistics.holm([0.01, 0.04]))


def test_claims_words_by_hand():
    """Issue 35's rules, one family of six: 'beats' needs a Holm-adjusted t-test p < 0.05 and a difference not
    shown inside the margin; a significant difference inside it is 'ahead / behind, within ±0.2 points';
    'equivalent' needs a Holm-adjusted TOST; else 'inconclusive'."""
    from jst.analysis import claims  # pylint: disable=g-import-not-at-top
    from jst.analysis import statistics  # pylint: disable=g-import-not-at-top
    b = [0.97, 0.96, 0.975, 0.965]
    diffs = [[0.0010, 0.0011, 0.0009, 0.0010],      # +0.1 points, tight: real, but inside ±0.2
             [0.030, 0.031, 0.029, 0.030],          # +3 points, tight
             [0.0005, -0.0005, 0.0004, -0.0004],    # 0, tight: a tie
             [0.02, -0.015, 0.01, -0.012],          # +0.08 ± 3 points: nothing shown
             [-0.0010, -0.0011, -0.0009, -0.0010],  # -0.1 points, tight
             [0.0013, -0.0013, 0.0013, -0.0013]]    # 0, sd 0.15 points: raw TOST p = 0.038, not after Holm
    values = [([x + d for x, d in zip(b, ds)], b) for ds in diffs]
    rows = [{'a': 'a', 'b': 'b', 'comparison': statistics.paired_comparison(x, y)} for x, y in values]
    rows = claims.add_tests(rows, values, [claims.STUDY_WIDE] * len(rows), margin=0.002)
    assert [r['p_holm'] for r in rows] == pytest.approx(statistics.holm([r['comparison'].p_value for r in rows]))
    assert [r['p_tost_holm'] for r in rows] == pytest.approx(statistics.holm([r['equivalence'].p_value
                                                                              for r in rows]))
    # Row 5 by hand: d = +-0.0013, sd = 0.0013 sqrt(4/3), se = sd / 2, t = 0.002 / se = 2.665 on 3 df -> p = 0.038;
    # its TOST p is the 4th smallest of 6, so Holm multiplies it by 3 (0.114).
    assert rows[5]['equivalence'].p_value == pytest.approx(0.0381, abs=5e-4)
    assert rows[5]['p_tost_holm'] == pytest.approx(3 * rows[5]['equivalence'].p_value)
    assert [claims.verdict(r) for r in rows] == ['is ahead of', 'beats', 'is equivalent to', 'is inconclusive against',
                                               'is behind', 'is inconclusive against']
    assert claims.claim(rows[0]) == 'a is ahead of b, within ±0.2 points'
    assert claims.claim(rows[1], 'growth', 'reset') == 'growth beats reset'
    assert claims.claim(rows[2]) == 'a is equivalent to b, within ±0.2 points'
    assert claims.claim(rows[4]) == 'a is behind b, within ±0.2 points'
    assert claims.claim(rows[3]) == 'a is inconclusive against b'
    assert claims.equivalence_cell(rows[0]).startswith(f"{rows[0]['equivalence'].p_value:.2g} / Holm ")
    no_margin = claims.add_tests([dict(r) for r in rows], values, [claims.STUDY_WIDE] * len(rows), margin=0.0)
    assert [claims.verdict(r) for r in no_margin] == ['beats', 'beats', 'is inconclusive against',
                                                    'is inconclusive against', 'loses to', 'is inconclusive against']


def test_clustered_correlation_by_hand():
    """Two runs (clusters) of three rounds: each round's mean is removed over both runs, r is computed inside
    each run, and the runs' Fisher z are averaged with a t interval on 1 degree of freedom."""
    from jst.analysis import statistics  # pylint: disable=g-import-not-at-top
    x, y = [1, 2, 3, 2, 4, 6], [1, 2, 3.5, 3, 2, 1]
    runs, rounds = ['a', 'a', 'a', 'b', 'b', 'b'], [1, 2, 3, 1, 2, 3]
    # Round means: x 1.5, 3, 4.5; y 2, 2, 2.25. Run a: x (-0.5, -1, -1.5), y (-1, 0, 1.25); run b the negatives.
    r_a = np.corrcoef([-0.5, -1, -1.5], [-1, 0, 1.25])[0, 1]
    r_b = np.corrcoef([0.5, 1, 1.5], [1, 0, -1.25])[0, 1]
    z = np.arctanh([r_a, r_b])
    half = 12.7062047 * z.std(ddof=1) / np.sqrt(2)  # t_{0.975, 1}
    c = statistics.clustered_correlation(x, y, runs, rounds)
    assert c.clusters == 2
    assert c.r == pytest.approx(np.tanh(z.mean()))
    assert (c.ci_low, c.ci_high) == pytest.approx((np.tanh(z.mean() - half), np.tanh(z.mean() + half)))
    one = statistics.clustered_correlation(x[:3], y[:3], runs[:3], rounds[:3])
    assert one.clusters == 0 and np.isnan(one.r)  # one run: removing each round's mean leaves nothing to correlate
    assert statistics.pearson_within(x, y, rounds) == pytest.approx(
        np.corrcoef([-0.5, -1, -1.5, 0.5, 1, 1.5], [-1, 0, 1.25, 1, 0, -1.25])[0, 1])


def test_validation_chosen_budgets_by_hand():
    from jst.studies import compute  # pylint: disable=g-import-not-at-top
    def run(budget, seed, vals, tests, params):
        return [{'round': r, 'seed': seed, 'control': 'none', 'cumulative_steps': budget * (r + 1),
                 'params_remaining': p, 'val_accuracy': v, 'test_accuracy': t, **MLP_784_4_10}
                for r, (v, t, p) in enumerate(zip(vals, tests, params))]
    # weight-steps: 100 steps x 1000 weights + 100 x 500 = 150,000.
    assert compute.weight_steps(run(100, 0, [0.9, 0.9], [0.9, 0.9], [1000, 500])) == 150_000
    runs = {(100, 'a'): run(100, 0, [0.5, 0.90], [0.5, 0.80], [10, 5]) + run(100, 1, [0.5, 0.92], [0.5, 0.82], [10, 5]),
            (300, 'a'): run(300, 0, [0.5, 0.89], [0.5, 0.99], [10, 5]) + run(300, 1, [0.5, 0.91], [0.5, 0.99], [10, 5]),
            (100, 'b'): run(100, 0, [0.5, 0.80], [0.5, 0.70], [10, 5]) + run(100, 1, [0.5, 0.80], [0.5, 0.74], [10, 5]),
            (300, 'b'): run(300, 0, [0.5, 0.85], [0.5, 0.75], [10, 5]) + run(300, 1, [0.5, 0.85], [0.5, 0.77], [10, 5])}
    # a: mean final val 0.91 at 100 vs 0.90 at 300 -> 100 (its better test at 300 is never looked at); b: 300.
    assert compute.chosen_budgets(runs) == {'a': 100, 'b': 300}
    sentence = compute.chosen_budget_sentence(runs, 'a', 'b')
    # a - b: (0.80 - 0.75, 0.82 - 0.77) = +5.00 points, sd 0 -> CI 0.
    assert 'a (100 steps/round: 200 steps' in sentence and '+5.00 ± 0.00 points' in sentence, sentence
    assert '3.0x apart in weight-steps' in sentence  # a: 100 x 10 + 100 x 5; b: 300 x 10 + 300 x 5
    section = '\n'.join(compute.budget_choice_section(runs, [('a', 'b')], batch_size=2))
    assert '| a - b | 100 vs 300 | 2 | +5.00 ± 0.00 |' in section, section


MLP_784_4_10 = {'dataset': 'mnist', 'spec': {'family': 'mlp', 'widths': [4], 'num_classes': 10, 'init': 'glorot_normal'},
                'layers': {'hidden_0/kernel': [1000, 3136], 'output/kernel': [40, 40]}}


def test_training_multiply_adds_by_hand():
    """MLP 784-4-10: kernels of 3,136 and 40 weights, each used once per example (Dense); 1,000 of the first
    kept. A round of 100 steps at batch 2 costs 3 x 2 x 100 x 1,040 sparse and 3 x 2 x 100 x 3,176 dense-equivalent
    multiply-adds; the next round of 200 steps with 500 kept adds 3 x 2 x 200 x 540 and 3 x 2 x 200 x 3,176."""
    from jst.studies import compute  # pylint: disable=g-import-not-at-top
    first = {'round': 0, 'seed': 0, 'cumulative_steps': 100, 'test_accuracy': 0.9, **MLP_784_4_10}
    second = {**first, 'round': 1, 'cumulative_steps': 300,
              'layers': {'hidden_0/kernel': [500, 3136], 'output/kernel': [40, 40]}}
    assert compute.forward_macs(first) == (1040.0, 3176.0)
    assert compute.training_macs([second, first], 2) == [(624_000.0, 1_905_600.0),
                                                         (624_000.0 + 648_000.0, 1_905_600.0 + 3_811_200.0)]
    curve = compute.macs_curve([first, second], 2)
    assert curve['sparse'] == [624_000.0, 1_272_000.0] and curve['test'] == [0.9, 0.9]


def _render(path):
    proc = subprocess.run([sys.executable, os.path.join(REPO, 'benchmarks', 'bench_sparse_training.py'),
                           f'--render={path}'], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_sparse_training_table_is_what_its_committed_record_gives(tmp_path):
    """benchmarks/results/sparse_training_cpu.md is rewritten from its JSON alone (``--render``), and a changed
    record changes the table: every published number comes from the record."""
    import json  # pylint: disable=g-import-not-at-top
    import shutil  # pylint: disable=g-import-not-at-top
    committed = os.path.join(REPO, 'benchmarks', 'results', 'sparse_training_cpu')
    shutil.copy(committed + '.json', tmp_path / 'r.json')
    _render(tmp_path / 'r.json')
    with open(committed + '.md') as f:
        assert (tmp_path / 'r.md').read_text() == f.read()
    results = json.loads((tmp_path / 'r.json').read_text())
    results['rows'][0]['test_accuracy'] += 0.01
    (tmp_path / 'r.json').write_text(json.dumps(results))
    _render(tmp_path / 'r.json')
    with open(committed + '.md') as f:
        assert (tmp_path / 'r.md').read_text() != f.read()


def test_hand_written_results_prose_holds_no_number():
    """Issue 35: every number of the results index and of the README's results section is generated; the words
    around the generated blocks state none."""
    from jst.studies import results_index  # pylint: disable=g-import-not-at-top
    with open(os.path.join(RESULTS, 'README.md')) as f:
        assert results_index.numbers_outside_generated(f.read()) == []
    with open(os.path.join(REPO, 'README.md')) as f:
        readme = f.read()
    section = readme.split('\n## Results\n', 1)[1].split('\n## ', 1)[0]
    assert results_index.GENERATED[0] in section
    markers = [pages.headline_markers(STUDIES[name]) for name in pages.README_HEADLINES]
    assert results_index.numbers_outside_generated(section, markers) == []
    assert results_index.numbers_outside_generated('a 2-core CPU\n') == ['a 2-core CPU']  # the check can fail
    assert results_index.numbers_outside_generated('at 3.5% of weights\n') == ['at 3.5% of weights']
    assert results_index.numbers_outside_generated('CIFAR-10, LeNet-300-100, q75, `k=3` [a](b2.md)\n') == []


def test_a_changed_record_changes_the_index_and_the_verdict(monkeypatch):
    from jst.studies import results_index  # pylint: disable=g-import-not-at-top
    before = results_index.index_page(RESULTS, STUDIES)
    real = study_lib.load_records

    def shifted(results_dir, study, controls=False):
        runs = real(results_dir, study, controls)
        if study.name == 'cifar10_paper':
            runs = {k: [{**r, 'test_accuracy': r['test_accuracy'] + (0.05 if k[1] == 'weight_reset' else 0)}
                        for r in rs] for k, rs in runs.items()}
        return runs
    monkeypatch.setattr(study_lib, 'load_records', shifted)
    after = results_index.index_page(RESULTS, STUDIES)
    assert after != before
    verdict = results_index.verdict_paragraph(RESULTS, STUDIES)
    assert verdict in after and 'On CIFAR-10' in verdict and 'weight_reset' in verdict


def test_budget_from_curve_by_hand():
    """The converged CIFAR-10 study's pre-registered rule: the first whole epoch within 2% of the minimum mean
    validation loss; nothing while the minimum is in the curve's last tenth."""
    from jst.studies import compute  # pylint: disable=g-import-not-at-top
    # Means: 2.0, 1.2, 1.03, 1.01, 1.0 (step 500), then 1.05 ... 1.1 up to step 1000. Within 2% of 1.0: <= 1.02,
    # first at step 400 -> rounded up to whole epochs of 351: 702.
    curve = {100: [2.1, 1.9], 200: [1.2, 1.2], 300: [1.03, 1.03], 400: [1.0, 1.02], 500: [1.0, 1.0],
             600: [1.05, 1.05], 1000: [1.1, 1.1]}
    assert compute.budget_from_curve(curve, steps_per_epoch=351) == 702
    assert compute.budget_from_curve(curve, steps_per_epoch=100) == 400
    curve[1000] = [0.99, 0.99]  # the minimum is now the last evaluation: still improving
    assert compute.budget_from_curve(curve, steps_per_epoch=351) is None
    curve[950], curve[1000] = [0.9, 0.9], [0.95, 0.95]  # minimum at 950 > 0.9 x 1000: still in the last tenth
    assert compute.budget_from_curve(curve, steps_per_epoch=351) is None
    assert compute.budget_from_curve(curve, steps_per_epoch=100, if_improving=True) == 1000  # within 2% of 0.9: 950
    assert compute.budget_from_curve({}, steps_per_epoch=351) is None


def test_budget_rule_section_states_the_rule_outcome():
    """A curve study that ``chooses_budget`` says on its page what the rule gave: a budget, no budget (minimum in
    the last tenth), or nothing yet while seeds are missing."""
    study = STUDIES['cifar10_dense_curve']
    early = {351: [1.5, 1.5, 1.5], 702: [1.01, 1.02, 1.0], 1053: [1.0, 1.0, 1.0], 3510: [1.2, 1.2, 1.2]}
    text = '\n'.join(pages.budget_rule_section(study, early))
    assert '**702 steps per round** (2 epochs)' in text and 'minimum 1.0000 at step 1,053' in text
    late = {**early, 3510: [0.9, 0.9, 0.9]}
    assert '**no budget**' in '\n'.join(pages.budget_rule_section(study, late))
    partial = {s: v[:2] for s, v in early.items()}
    assert 'Only 2 of 3 seeds' in '\n'.join(pages.budget_rule_section(study, partial))
    fallback = '\n'.join(pages.budget_rule_section(STUDIES['cifar10_dense_curve_long'], late))
    assert 'worded as a bound' in fallback and '**3,510 steps per round** (10 epochs)' in fallback


def _write_dense_curve(results_dir: str, study: study_lib.Study, curve: dict[int, list[float]]) -> None:
    """Committed-record layout of a curve study: one ``metrics.jsonl`` per seed (value i of each step: seed i)."""
    for i, (first, _) in enumerate(study.parts(study.dense_policy)[:len(next(iter(curve.values())))]):
        folder = study_lib.records_dir(results_dir, study, study.budgets[0], study.dense_policy, (first, 1))
        os.makedirs(folder)
        with open(os.path.join(folder, 'metrics.jsonl'), 'w') as f:
            for step, losses in curve.items():
                f.write(json.dumps({'round': 0, 'control': 'none', 'step': step, 'val_loss': losses[i],
                                    'val_accuracy': 0.5}) + '\n')


@pytest.mark.parametrize('seeds, late_minimum, expected', [(3, False, 702), (2, False, None), (3, True, None)])
def test_chosen_budget_reads_the_rule_off_committed_records(tmp_path, seeds, late_minimum, expected):
    """``pages.chosen_budget``: the rule's budget once every seed's curve is committed; nothing from a partial
    curve, nor (without the fallback) while the minimum is in the curve's last tenth."""
    study = STUDIES['cifar10_dense_curve']
    curve = {351: [1.5] * 3, 702: [1.01, 1.02, 1.0], 1053: [1.0] * 3, 3510: [0.9 if late_minimum else 1.2] * 3}
    _write_dense_curve(str(tmp_path), study, {s: v[:seeds] for s, v in curve.items()})
    assert pages.chosen_budget(str(tmp_path), study) == expected
    assert pages.chosen_budget(str(tmp_path / 'nothing'), study) is None


def test_the_converged_budget_is_the_rules_choice_committed_between_its_curve_and_its_records():
    """``CIFAR_CONVERGED_BUDGET`` (None until set) equals what the pre-registered rule gives on
    ``cifar10_dense_curve_long``'s committed records, and the commit that set it descends from every record of that
    curve and precedes every record of ``cifar10_converged``: the order issue 34 asks git history to show."""
    from jst.studies import catalog_cifar  # pylint: disable=g-import-not-at-top
    budget = catalog_cifar.CIFAR_CONVERGED_BUDGET
    if budget is None:
        assert 'cifar10_converged' not in STUDIES and not os.path.isdir(os.path.join(RESULTS, 'cifar10_converged'))
        return
    chosen = pages.chosen_budget(RESULTS, STUDIES['cifar10_dense_curve_long'])
    assert budget == chosen, (f'CIFAR_CONVERGED_BUDGET = {budget:,}, but the rule gives {chosen} on '
                              f'cifar10_dense_curve_long\'s committed records (its page states it): set it to {chosen}')
    if not os.path.isdir(os.path.join(REPO, '.git')) or _git('rev-parse', '--is-shallow-repository') == 'true':
        pytest.skip('needs the full git history (a clone, not an archive or a shallow clone)')
    set_in = _git('log', '-1', '--format=%H', '-G', '^CIFAR_CONVERGED_BUDGET:', '--',
                  'jst/studies/catalog_cifar.py')
    for study, before in (('cifar10_dense_curve_long', True), ('cifar10_converged', False)):
        for commit in _git('log', '--diff-filter=A', '--format=%H', '--',
                           f'docs/results/{study}/records').splitlines():
            older, newer = (commit, set_in) if before else (set_in, commit)
            assert commit != set_in and subprocess.run(['git', 'merge-base', '--is-ancestor', older, newer],
                                                       cwd=REPO).returncode == 0, (
                f'{study}: record commit {commit[:7]} must come {"before" if before else "after"} the commit that set '
                f'CIFAR_CONVERGED_BUDGET ({set_in[:7]})')


def _git(*args: str) -> str:
    return subprocess.run(['git', *args], capture_output=True, text=True, cwd=REPO, check=True).stdout.strip()


@pytest.mark.parametrize('name', sorted(n for n, s in STUDIES.items() if s.preregistration))
def test_a_preregistration_precedes_every_record_of_its_study(name):
    """The commit a confirmatory page names added its pre-registration, and every commit that added one of its
    records descends from it (strictly): the order its page states, checked in ``git log``."""
    if not os.path.isdir(os.path.join(REPO, '.git')) or _git('rev-parse', '--is-shallow-repository') == 'true':
        pytest.skip('needs the full git history (a clone, not an archive or a shallow clone)')
    study = STUDIES[name]
    added = _git('log', '--diff-filter=A', '--format=%H', '--', study.preregistration).splitlines()
    assert added, f'{study.preregistration} is not committed'
    assert study.preregistered_in and added[-1].startswith(study.preregistered_in), (
        f'{name}: preregistered_in={study.preregistered_in!r}, but {study.preregistration} was added in {added[-1][:7]}')
    record_commits = set(_git('log', '--diff-filter=A', '--format=%H', '--',
                              f'docs/results/{name}/records').splitlines())
    for commit in record_commits:
        assert commit != added[-1], f'{name}: a record was committed with its pre-registration ({commit[:7]})'
        ancestor = subprocess.run(['git', 'merge-base', '--is-ancestor', added[-1], commit], cwd=REPO)
        assert ancestor.returncode == 0, f'{name}: record commit {commit[:7]} does not descend from the ' \
                                         f'pre-registration {added[-1][:7]}'


def test_threads_sentence_by_hand(tmp_path):
    assert speed_page.threads_sentence(str(tmp_path), 'resnet') == ''  # no measurement, no sentence
    rows = [{'network': 'resnet', 'layout': 'one_process_all_cores', 'steps_per_s_median': 2.0,
             'relative_to_reference': 1.0, 'verdict': '-'},
            {'network': 'resnet', 'layout': 'process_per_core', 'steps_per_s_median': 2.5,
             'relative_to_reference': 1.25, 'verdict': 'faster'},
            {'network': 'conv2', 'layout': 'process_per_core', 'steps_per_s_median': 9.0,
             'relative_to_reference': 0.5, 'verdict': 'slower'}]
    with open(tmp_path / 'threads_cpu.json', 'w') as f:
        json.dump({'rounds': 3, 'date': '2026-12-07', 'cores': [0, 1], 'rows': rows}, f)
    sentence = speed_page.threads_sentence(str(tmp_path), 'resnet')
    assert 'all 2 cores runs 2.00 steps/s' in sentence
    assert '2.50 steps/s in all (1.25x, more in every round)' in sentence


def test_malloc_sentence_by_hand(tmp_path):
    assert speed_page.malloc_sentence(str(tmp_path), 'resnet') == ''  # no measurement, no sentence
    rows = [{'network': 'resnet', 'variant': 'glibc_default', 'relative_to_reference': 1.0, 'verdict': '-',
             'faults_per_step_median': 40000.0, 'peak_rss_mb_max': 600.0, 'loss_identical': True},
            {'network': 'resnet', 'variant': 'reuse_freed_memory', 'relative_to_reference': 0.8, 'verdict': 'faster',
             'faults_per_step_median': 100.0, 'peak_rss_mb_max': 900.0, 'loss_identical': False}]
    with open(tmp_path / 'malloc_cpu.json', 'w') as f:
        json.dump({'rounds': 3, 'date': '2026-12-07', 'rows': rows}, f)
    sentence = speed_page.malloc_sentence(str(tmp_path), 'resnet')
    assert '0.80x the time' in sentence and 'faster in every round' in sentence
    assert '40,000 page faults per step become 100' in sentence and 'from 600 to 900 MB' in sentence
    assert 'is NOT identical' in sentence
    assert speed_page.malloc_sentence(str(tmp_path), 'conv2') == ''  # no rows for that network


def test_speed_targets_by_hand_with_rounds(tmp_path):
    """Issue 34's targets read off conv_cpu.json: by the medians over rounds, and in how many rounds each holds."""
    assert speed_page.conv_target_lines(str(tmp_path)) == []  # no measurement, no section
    row = lambda loop, ms: {'network': 'resnet', 'loop': loop, 'step_ms': sorted(ms)[1], 'step_ms_rounds': ms}
    rows = [row('jst_before', [400.0, 420.0, 380.0]), row('jst_fast', [190.0, 215.0, 205.0]),
            row('minimal_jax', [400.0, 400.0, 400.0]), row('pytorch_compile', [160.0, 150.0, 170.0]),
            row('pytorch_nchw', [300.0, 140.0, 300.0])]
    with open(tmp_path / 'conv_cpu.json', 'w') as f:
        json.dump({'rows': rows}, f)
    with open(tmp_path / 'conv_forms_cpu.json', 'w') as f:
        json.dump({'step_sums_ms': {'resnet': {'xla_nhwc': 100.0, 'xla_nchw': 120.0}}}, f)
    text = '\n'.join(speed_page.conv_target_lines(str(tmp_path)))
    # Medians: 400 -> 205 (1.95x: not met); by round 400/190, 420/215, 380/205 -> 2.11, 1.95, 1.85: met in 1 of 3.
    assert '1.95x faster: the 2x target is not met (by the medians; met in 1 of 3 rounds)' in text
    # PyTorch's best by the medians: pytorch_compile 160 (x1.3 = 208 >= 205: met); by round the best is 160, 140,
    # 170 (x1.3 = 208, 182, 221) against 190, 215, 205: met in 2 of 3.
    assert 'PyTorch\'s best step here is 160.0 ms (pytorch_compile)' in text
    assert 'the 1.3x target (208.0 ms) is met (by the medians; met in 2 of 3 rounds)' in text
    assert 'no convolution form measured here can meet it' not in text  # no library-kernel forms measured: no such claim


def test_convs_over_target_sentence_by_hand(tmp_path):
    """The 1.3x target is called out of reach only when the convolutions alone, in their fastest library-kernel
    form, exceed the whole step's budget."""
    assert speed_page.convs_over_target_sentence(str(tmp_path), 'resnet', 150.0) == ''  # no measurement
    with open(tmp_path / 'conv_forms_library_cpu.json', 'w') as f:
        json.dump({'step_sums_ms': {'resnet': {'xla_nhwc': 260.0, 'space_to_depth': 180.0}}}, f)
    sentence = speed_page.convs_over_target_sentence(str(tmp_path), 'resnet', 150.0)
    assert 'take 1.20x the 150.0 ms the 1.3x target allows the whole step' in sentence
    assert speed_page.convs_over_target_sentence(str(tmp_path), 'resnet', 200.0) == ''  # within the budget
