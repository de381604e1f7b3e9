"""Where a whole run stands, for its log lines: the policy (of how many), the training of the plan, and an ETA over
every training still planned (all policies, rounds and controls).

The driver plans a run (``running``), each policy says its step count (``start_policy``), each search says which of
its planned trainings starts (``at_training``), and the training loop reads ``run_prefix`` and ``run_eta`` when it
logs. Only log lines read this; nothing a run computes depends on it.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import time
from typing import Iterator, Optional, Sequence


@dataclasses.dataclass
class RunProgress:
    """The plan of one run: ``policies`` are (name, planned trainings) in run order."""
    policies: tuple[tuple[str, int], ...]
    policy_index: int = 0
    training: int = 0                 # trainings of the current policy before the current one
    steps_per_training: int = 0
    first_position: Optional[int] = None  # steps of the plan behind the first logged step of this process
    first_time: float = 0.0

    def position(self, step: int) -> int:
        """Steps of the whole plan done once the current training reaches ``step``."""
        before = sum(n for _, n in self.policies[:self.policy_index]) + self.training
        return before * self.steps_per_training + step

    @property
    def planned_steps(self) -> int:
        return sum(n for _, n in self.policies) * self.steps_per_training


_RUN: contextvars.ContextVar[Optional[RunProgress]] = contextvars.ContextVar('jst_run_progress', default=None)


def planned_trainings(method: str, num_rounds: int, num_controls: int) -> int:
    """Trainings of one policy: its rounds 0..num_rounds and, for weight reset, each control at rounds 1..N."""
    return num_rounds + 1 + (num_controls * num_rounds if method == 'lth' else 0)


@contextlib.contextmanager
def running(policies: Sequence[tuple[str, int]]) -> Iterator[RunProgress]:
    """Plans a run for the log lines inside the block; inside an already planned run it changes nothing."""
    current = _RUN.get()
    if current is not None:
        yield current
        return
    token = _RUN.set(RunProgress(tuple(policies)))
    try:
        yield _RUN.get()
    finally:
        _RUN.reset(token)


def start_policy(name: str, steps_per_training: int) -> None:
    """The planned policy ``name`` starts (or resumes); its trainings have ``steps_per_training`` steps."""
    run = _RUN.get()
    names = [n for n, _ in run.policies] if run else []
    if name in names:
        run.policy_index, run.training, run.steps_per_training = names.index(name), 0, steps_per_training


def at_training(index: int) -> None:
    """The current policy's planned training ``index`` (0-based, in the order its search trains them) starts."""
    run = _RUN.get()
    if run is not None:
        run.training = index


def run_prefix() -> str:
    """'policy 2/3 grow · ' inside a run of several policies, else ''."""
    run = _RUN.get()
    if run is None or len(run.policies) < 2:
        return ''
    return f'policy {run.policy_index + 1}/{len(run.policies)} {run.policies[run.policy_index][0]} · '


def run_eta(step: int) -> str:
    """'; run ETA 12m' over the steps the plan still has, at this process's pace so far ('' before a pace exists)."""
    run = _RUN.get()
    if run is None or not run.steps_per_training:
        return ''
    position = run.position(step)
    if run.first_position is None or position < run.first_position:
        run.first_position, run.first_time = position, time.time()
        return ''
    done, elapsed = position - run.first_position, time.time() - run.first_time
    if done <= 0 or len(run.policies) == 1 and run.policies[0][1] == 1:
        return ''
    remaining = max(run.planned_steps - position, 0) * elapsed / done
    return f'; run ETA {_duration(remaining)}'


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f'{seconds:.0f}s'
    return f'{seconds / 60:.0f}m' if seconds < 7200 else f'{seconds / 3600:.1f}h'
