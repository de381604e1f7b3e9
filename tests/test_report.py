"""Reports refuse to mix runs (finding 1 of the fault probe): different configs, repeated seeds, bad files."""

import glob
import json
import os

import numpy as np
import pytest

from jst.analysis import report
from jst.run import configuration
from tests.helpers import REPO, load_config


def _fake_run(path, dataset='mnist', seed=0, **overrides):
    """A workdir with config.json and a one-record summary.json, as a finished run leaves them."""
    os.makedirs(path)
    config = load_config('tiny')
    config.dataset, config.seed = dataset, seed
    for k, v in overrides.items():
        config[k] = v
    with open(os.path.join(path, 'config.json'), 'w') as f:
        json.dump(configuration.config_to_dict(config), f)
    record = {'round': 0, 'method': config.method, 'control': 'none', 'variant': config.name or config.method,
              'dataset': dataset, 'seed': seed, 'architecture': 'MLP[300-100-10]', 'fraction_remaining': 1.0,
              'params_remaining': 266610, 'val_accuracy': 0.9, 'test_accuracy': 0.9, 'best_step': 150,
              'cumulative_steps': 150}
    with open(os.path.join(path, 'summary.json'), 'w') as f:
        json.dump([record], f)
    return str(path)


def test_runs_of_different_datasets_are_not_averaged(tmp_path):
    a, b = _fake_run(tmp_path / 'a'), _fake_run(tmp_path / 'b', dataset='cifar10', seed=1)
    with pytest.raises(report.ReportError, match=r"dataset: 'mnist' in .*/a, 'cifar10' now"):
        report.load_runs([a, b])


def test_same_workdir_twice_and_repeated_seeds_are_refused(tmp_path):
    a, b = _fake_run(tmp_path / 'a'), _fake_run(tmp_path / 'b')
    with pytest.raises(report.ReportError, match='given twice'):
        report.load_runs([a, a])
    with pytest.raises(report.ReportError, match=r'seed 0 appears twice \(.*/a and .*/b\)'):
        report.load_runs([a, b])


def test_seeds_of_one_config_and_distinct_variants_report_together(tmp_path):
    runs = [_fake_run(tmp_path / 's0'), _fake_run(tmp_path / 's1', seed=1),
            _fake_run(tmp_path / 'other', learning_rate=0.1, name='high_lr')]
    summary, _ = report.load_runs(runs)
    rows = report.aggregate(summary)
    assert sorted((r['variant'], r['seeds']) for r in rows) == [('high_lr', 1), ('lth', 2)]


def test_corrupt_records_name_the_file(tmp_path):
    a = _fake_run(tmp_path / 'a')
    with open(os.path.join(a, 'summary.json'), 'w') as f:
        f.write('[{"round": 0,')
    with pytest.raises(report.ReportError, match=r'a/summary.json is not valid JSON'):
        report.load_runs([a])
    with pytest.raises(report.ReportError, match=r'missing/summary.json does not exist'):
        report.load_runs([str(tmp_path / 'missing')])


def test_confidence_interval_by_hand(tmp_path):
    """Three seeds at 90, 92, 94%: mean 92, sd 2, t(2) = 4.303: 95% CI half-width 4.303 * 2 / sqrt(3) = 4.97."""
    runs = [_fake_run(tmp_path / f's{i}', seed=i) for i in range(3)]
    for i, w in enumerate(runs):
        summary = json.load(open(os.path.join(w, 'summary.json')))
        summary[0]['test_accuracy'] = 0.90 + 0.02 * i
        json.dump(summary, open(os.path.join(w, 'summary.json'), 'w'))
    row = report.aggregate(report.load_runs(runs)[0])[0]
    assert row['test'] == pytest.approx(0.92) and row['test_ci'] == pytest.approx(4.303 * 0.02 / 3 ** 0.5, rel=1e-3)
    assert '92.00 ± 4.97 (sd 2.00)' in report.aggregate_table(report.load_runs(runs)[0])


def test_paired_comparison_and_holm_by_hand():
    from jst.analysis import statistics as S
    a, b = [0.95, 0.96, 0.97, 0.955], [0.94, 0.95, 0.955, 0.95]
    c = S.paired_comparison(a, b)
    d = [0.01, 0.01, 0.015, 0.005]
    sd = float(np.std(d, ddof=1))
    assert c.n == 4 and c.mean_difference == pytest.approx(0.01)
    assert c.effect_size == pytest.approx(0.01 / sd)
    t = 0.01 / (sd / 2)  # t statistic with 3 degrees of freedom
    assert c.p_value == pytest.approx(0.0163, abs=2e-4) and t == pytest.approx(4.899, abs=1e-3)
    assert c.ci95 == pytest.approx(3.182 * sd / 2, rel=1e-3)
    assert S.ci95([0.9, 0.92, 0.94]) == pytest.approx(4.303 * 0.02 / 3 ** 0.5, rel=1e-3)
    # Holm: sorted p * (m, m-1, ...), made monotone, capped at 1, in the given order.
    assert S.holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    with pytest.raises(ValueError, match='two equally long'):
        S.paired_comparison([1.0], [1.0])


@pytest.mark.slow  # launches processes
def test_run_without_config_is_refused_and_a_running_one_is_named(tmp_path, caplog):
    """Issue 20 (d): two learning rates whose config.json is gone were reported as "2 seeds"; now a workdir
    without config.json is refused naming the fix. A workdir whose lock is held is reported with a warning."""
    from jst.run import workdir  # pylint: disable=g-import-not-at-top
    a, b = _fake_run(tmp_path / 'a'), _fake_run(tmp_path / 'b', seed=1, learning_rate=0.1)
    os.remove(os.path.join(b, 'config.json'))
    with pytest.raises(report.ReportError, match=r'b/config.json is missing.*rerun that workdir'):
        report.load_runs([a, b])
    import subprocess  # pylint: disable=g-import-not-at-top
    import sys  # pylint: disable=g-import-not-at-top
    holder = subprocess.Popen([sys.executable, '-c', 'import sys, time; from jst.run import workdir; '
                               f'workdir.WorkdirLock({a!r}).__enter__(); print("locked", flush=True); time.sleep(60)'],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == 'locked'
        report.load_runs([a])  # another process holds the lock: a run in progress
    finally:
        holder.kill()
        holder.wait()
    assert any('is still running (pid' in r.getMessage() for r in caplog.records)
    caplog.clear()
    with workdir.WorkdirLock(a):  # this process holds it (a run writing its own report): no warning
        report.load_runs([a])
    assert not any('is still running' in r.getMessage() for r in caplog.records)


def test_one_run_juvenility_table_says_what_it_needs():
    """Issue 20/21: a one-seed report printed '+nan' correlations; now 'n/a' with what a correlation needs."""
    start = lambda x: {'start': {'grad_norm': x, 'grad_snr': 1.0}, 'learning_potential': 0.1 * x}
    records = [{'round': r, 'control': 'none', 'method': 'juvenile', 'variant': 'juvenile', 'seed': 0,
                'workdir': 'w', 'val_accuracy': 0.8 + 0.01 * r * r, 'test_accuracy': 0.9,
                'juvenility': start(float(r + 1))} for r in range(5)]
    table = report.juvenility_table(records)
    row = next(line for line in table.splitlines() if line.startswith('| grad_norm |'))
    # 4 (run, round) pairs: r with the gain is defined; within one run per round and with the final test it is not
    assert row == '| grad_norm | +1.00 / n/a / n/a | +1.00 / n/a / n/a |'
    assert 'nan' not in table and 'needs >= 3 values with a spread' in table


def test_a_deleted_lock_file_stops_the_holder_before_it_writes(tmp_path):
    """Someone deletes WORKDIR/.lock while a run holds it (a second run could then claim the workdir): the holder's
    next checkpoint write is refused with the reason; an intact lock passes."""
    from jst.run import workdir  # pylint: disable=g-import-not-at-top
    with workdir.WorkdirLock(str(tmp_path)):
        workdir.check_lock_held(str(tmp_path))
        os.remove(tmp_path / workdir.LOCK_FILE)
        with pytest.raises(workdir.WorkdirError, match='was deleted or replaced while this run held it'):
            workdir.check_lock_held(str(tmp_path))
    workdir.check_lock_held(str(tmp_path))  # released: nothing to check


@pytest.mark.slow  # launches the CLI
def test_report_cli_out_that_is_a_file_or_unwritable_is_one_line(tmp_path):
    """The probe's ``report.py --out`` that is a file (or under one) ended in a traceback."""
    import subprocess  # pylint: disable=g-import-not-at-top
    import sys  # pylint: disable=g-import-not-at-top
    from tests.helpers import REPO  # pylint: disable=g-import-not-at-top
    run = _fake_run(tmp_path / 'a')
    (tmp_path / 'a_file').write_text('')
    for out, message in ((tmp_path / 'a_file', 'is a file: pass --out=DIR'),
                         (tmp_path / 'a_file' / 'sub', 'cannot write the report to')):
        proc = subprocess.run([sys.executable, os.path.join(REPO, 'launch', 'report.py'), run, f'--out={out}'],
                              capture_output=True, text=True, timeout=300, cwd=REPO)
        assert proc.returncode == 2 and message in proc.stderr and 'Traceback' not in proc.stderr, proc.stderr


def _sweep_variant(path, name, test_by_seed):
    """A workdir of variant ``name``: seeds as lanes, rounds 0-3 with juvenility diagnostics, known final tests."""
    os.makedirs(path)
    config = load_config('tiny')
    config.name, config.seed, config.num_seeds = name, 0, len(test_by_seed)
    with open(os.path.join(path, 'config.json'), 'w') as f:
        json.dump(configuration.config_to_dict(config), f)
    records = [{'round': r, 'method': 'juvenile', 'control': 'none', 'variant': name, 'dataset': 'mnist', 'seed': s,
                'architecture': 'MLP[300-100-10]', 'fraction_remaining': 0.5 ** r, 'params_remaining': 1000 >> r,
                'val_accuracy': 0.8 + 0.02 * r + 0.01 * ((r * s + r * r) % 3), 'test_accuracy': test if r == 3 else 0.5,
                'best_step': 10, 'cumulative_steps': 10 * (r + 1),
                'juvenility': {'start': {'grad_norm': float((7 * r + 3 * s) % 5 + r)}, 'learning_potential': 0.1 * r}}
               for s, test in enumerate(test_by_seed) for r in range(4)]
    with open(os.path.join(path, 'summary.json'), 'w') as f:
        json.dump(records, f)
    return str(path)


def test_report_pairs_each_variant_with_the_first_and_gives_juvenility_intervals(tmp_path):
    """Issue 37 (sweep.sh): the report of several variants ends with each paired against the first workdir's, by
    seed at final rounds (b - a = +0.9, +1.0, +1.1 points here); its juvenility block gives r with a 95% CI
    over runs, not the pooled (run, round) correlations the study pages warn against."""
    a = _sweep_variant(tmp_path / 'a', 'ref', [0.90, 0.91, 0.92])
    b = _sweep_variant(tmp_path / 'b', 'new', [0.909, 0.92, 0.931])
    text = open(report.write_report([a, b], str(tmp_path / 'out'))).read()
    section = text.split('## Paired across variants')[1].split('##')[0]
    assert '- new beats ref: +1.00 ± 0.25 points (n = 3 seeds' in section, section  # t(2) 4.303 * 0.1 / sqrt(3)
    assert 'one comparison, no correction' in section
    juvenility = text.split('## Juvenility')[1]
    row = next(line for line in juvenility.splitlines() if line.startswith('| grad_norm |'))
    assert row.count(' runs)') == 2 and row.count(' [') == 2, row  # r [95% CI] (k runs) per variant
    assert 'r(gain)' not in text, 'the pooled table stays on the study pages'
    assert report.write_report([a], str(tmp_path / 'one')) and 'Paired across' not in open(
        tmp_path / 'one' / 'report.md').read()


def test_every_committed_record_fits_the_round_record_schema_and_a_misfit_is_refused(tmp_path):
    """``records.record_schema()`` (from ``RoundRecord``'s fields) holds for every record under docs/results; a
    record with a field of the wrong type, or without a required one, is refused by name before it is written."""
    import glob  # pylint: disable=g-import-not-at-top
    from jst.run import records  # pylint: disable=g-import-not-at-top
    paths = glob.glob(os.path.join(REPO, 'docs', 'results', '**', 'summary.json'), recursive=True)
    found = [(p, r) for p in paths for r in json.load(open(p))]
    assert len(found) > 1000
    assert [(p, records.record_problems(r)) for p, r in found if records.record_problems(r)] == []
    good = found[0][1]
    with pytest.raises(ValueError, match=r"'seed' is '43', not integer; 'diverged' is 0, not boolean"):
        records.write_summary(str(tmp_path), [{**good, 'seed': '43', 'diverged': 0}])
    with pytest.raises(ValueError, match=r"lacks 'best_step'"):
        records.write_summary(str(tmp_path), [{k: v for k, v in good.items() if k != 'best_step'}])
    assert not os.path.exists(tmp_path / 'summary.json')
    schema = records.record_schema()
    assert schema['properties']['start_val_accuracy']['type'] == ['null', 'number']
    assert set(schema['required']) <= set(schema['properties'])


def test_an_old_permuted_record_reads_as_a_field(tmp_path):
    """Records made before ``permute_pixels`` was a field named the variant in ``dataset`` ('mnist_permuted'): the
    one reader gives them the field and the plain name; a new record is read as written."""
    from jst.run import records  # pylint: disable=g-import-not-at-top
    old = [{'round': 0, 'dataset': 'mnist_permuted'}, {'round': 0, 'dataset': 'mnist'}]
    (tmp_path / 'summary.json').write_text(json.dumps(old))
    assert [(r['dataset'], r['permute_pixels']) for r in records.read_summary(str(tmp_path))] == [
        ('mnist', True), ('mnist', False)]
    new = {'round': 0, 'dataset': 'mnist', 'permute_pixels': True}
    assert records.upgraded(new) is new
    committed = glob.glob(os.path.join(REPO, 'docs', 'results', 'transfer_mnist', 'records', '**', 'summary.json'),
                          recursive=True)
    permuted = [r for p in committed for r in records.read_summary_file(p) if r['permute_pixels']]
    assert permuted and all(r['dataset'] == 'mnist' for r in permuted)
