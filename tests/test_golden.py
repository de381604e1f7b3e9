"""The re-layout changed no result: small runs give the summaries recorded before it (tests/golden/)."""

import json
import os

import pytest

from tests import golden_runs


@pytest.mark.parametrize('name', sorted(golden_runs.RUNS))
def test_same_summary_as_recorded(name, mnist_dir, tmp_path):
    with open(golden_runs.golden_path(name)) as f:
        expected = json.load(f)
    actual = golden_runs.run(name, os.path.dirname(mnist_dir), str(tmp_path))
    diffs = golden_runs.differences(expected, actual)
    assert not diffs, '\n'.join(diffs[:30])
