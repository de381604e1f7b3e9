"""Small runs give the summaries recorded in tests/golden/ (discrete fields exactly, floats within
golden_runs.TOLERANCES, which hold on any CPU and BLAS build)."""

import json
import os

import pytest

from tests import golden_runs


@pytest.mark.parametrize('name', sorted(golden_runs.RUNS))
def test_same_summary_as_recorded(name, request, tmp_path):
    with open(golden_runs.golden_path(name)) as f:
        expected = json.load(f)
    folder = request.getfixturevalue('mnist_dir' if golden_runs.RUNS[name][1] == 'mnist' else 'cifar10_dir')
    actual = golden_runs.run(name, os.path.dirname(folder), str(tmp_path))
    diffs = golden_runs.differences(expected, actual)
    assert not diffs, '\n'.join(diffs[:30])


def test_tolerances_are_tight_where_results_live():
    """The golden comparison is no rubber stamp: a changed loss, accuracy, count or architecture is caught,
    while last-bit noise of the size measured across CPUs and BLAS builds (see ``golden_runs.TOLERANCES``) is not."""
    record = {'round': 1, 'architecture': 'MLP[128-128-10]', 'fraction_remaining': 0.33140625,
              'params_remaining': 33728, 'val_loss': 0.4954, 'test_accuracy': 0.872, 'cumulative_steps': 120,
              'juvenility': {'start': {'effective_rank_mean': 26.3393, 'grad_norm': 1.86468}}}
    same = lambda **changes: golden_runs.differences([record], [{**record, **changes}])
    assert not same(val_loss=0.4954 * (1 + 4e-6), test_accuracy=0.872 + 1e-3,
                    juvenility={'start': {'effective_rank_mean': 26.3375, 'grad_norm': 1.86473}})
    assert same(val_loss=0.4954 * (1 + 1e-3))
    assert same(test_accuracy=0.875)
    assert same(fraction_remaining=0.33140626)
    assert same(params_remaining=33729)
    assert same(architecture='MLP[128-10]')
    assert same(cumulative_steps=121)
    assert same(juvenility={'start': {'effective_rank_mean': 28.0, 'grad_norm': 1.86468}})
