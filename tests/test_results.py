"""Published results are regenerated from the committed records: a page that differs fails."""

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import REPO

sys.path.insert(0, os.path.join(REPO, 'launch'))
import study as study_cli  # pylint: disable=g-import-not-at-top,wrong-import-position


@pytest.mark.parametrize('name', sorted(study_cli.STUDIES))
def test_published_page_matches_its_records(name):
    proc = subprocess.run([sys.executable, os.path.join(REPO, 'launch', 'study.py'), 'page', name, '--check'],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize('name', sorted(study_cli.STUDIES))
def test_every_cell_has_its_seeds(name):
    """Each committed cell holds every seed of the study, every round, from the config it names."""
    study = study_cli.STUDIES[name]
    for budget in study.budgets:
        for policy, _, _ in study.policies:
            cell = os.path.join(study_cli.RESULTS, name, 'records', str(budget), policy)
            records = json.load(open(os.path.join(cell, 'summary.json')))
            seeds = {r['seed'] for r in records}
            assert seeds == set(range(study.first_seed, study.first_seed + study.num_seeds)), cell
            config = json.load(open(os.path.join(cell, 'config.json')))
            assert config['num_seeds'] == study.num_seeds and config['seed'] == study.first_seed, cell
            per_seed = {s: sorted(r['round'] for r in records if r['seed'] == s and r['control'] == 'none')
                        for s in seeds}
            assert len({tuple(v) for v in per_seed.values()}) == 1, cell  # same rounds for every seed


def test_a_changed_number_is_caught(tmp_path, monkeypatch):
    """The check really compares numbers: one record's accuracy changed -> the page differs."""
    from jst import study as study_lib  # pylint: disable=g-import-not-at-top
    study = study_cli.STUDIES['paper_mnist']
    runs = study_lib.load_records(study_cli.RESULTS, study)
    page = study_lib.render_page(study, runs)
    key = next(iter(runs))
    runs[key] = [dict(r) for r in runs[key]]
    runs[key][-1]['test_accuracy'] += 0.01
    assert study_lib.render_page(study, runs) != page
