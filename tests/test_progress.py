"""The run-wide progress of the log lines (jst.training.progress): the plan's order, prefixes and the ETA."""

import pytest

from jst.searches import lth
from jst.training import progress


def test_planned_trainings_count_rounds_and_weight_resets_controls():
    assert progress.planned_trainings('juvenile', 5, 2) == 6  # growth runs no controls
    assert progress.planned_trainings('lth', 5, 0) == 6
    assert progress.planned_trainings('lth', 5, 2) == 6 + 10  # controls at rounds 1..5


def test_weight_resets_training_order_is_dense_then_each_round_ticket_and_controls():
    """The index each training announces enumerates every planned training once, in the order lth runs them."""
    order = [(0, 0)] + [(r, k) for r in (1, 2, 3) for k in range(3)]  # 2 controls
    assert [lth._training_index(r, k, 2) for r, k in order] == list(range(progress.planned_trainings('lth', 3, 2)))


def test_prefix_names_the_policy_only_when_a_run_has_several():
    assert progress.run_prefix() == ''
    with progress.running([('grow', 3)]):
        progress.start_policy('grow', 10)
        assert progress.run_prefix() == ''
    with progress.running([('weight_reset', 3), ('grow', 3)]) as run:
        with progress.running([('grow', 3)]):  # a nested plan (one policy of compare) keeps the outer one
            progress.start_policy('grow', 10)
            assert progress.run_prefix() == 'policy 2/2 grow · '
        assert run.policy_index == 1
    assert progress.run_prefix() == ''


def test_eta_counts_every_planned_step_left_at_this_processs_pace(monkeypatch):
    clock = iter([100.0, 110.0])
    monkeypatch.setattr(progress.time, 'time', lambda: next(clock))
    with progress.running([('weight_reset', 2), ('grow', 2)]):
        progress.start_policy('weight_reset', 10)
        progress.at_training(1)
        assert progress.run_eta(5) == ''        # the first line sets the pace's origin (position 15 of 40)
        assert progress.run_eta(10) == '; run ETA 40s'  # 5 steps in 10 s; 20 of the 40 planned steps left


@pytest.mark.parametrize('name', ['unplanned', ''])
def test_a_policy_outside_the_plan_changes_nothing(name):
    with progress.running([('grow', 2)]) as run:
        progress.start_policy(name, 10)
        assert run.steps_per_training == 0 and progress.run_eta(5) == ''
