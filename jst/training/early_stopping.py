"""Early stopping, as Frankle & Carbin define it: evaluation records, the minimum-validation-loss point, divergence.

* ``EvalRecord``: one evaluation (train metrics averaged since the previous one, validation, test);
  ``EvalWindow``: the train metrics since the last evaluation (carried across segments and resumes);
  ``records_from_metrics``: a segment's per-step metrics -> its evaluation records.
* ``early_stopping``: the evaluation with the minimum validation loss (the early-stopping iteration; the
  accuracies a round reports are those there).
* ``diverged``: whether a round's training loss blew up (its record's ``diverged`` field).
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np

DIVERGENCE_FACTOR = 1e3  # a loss this many times the reference (first loss, start-of-round loss): divergence


@dataclasses.dataclass
class EvalRecord:
    step: int  # number of steps trained when evaluated (1-based)
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    test_loss: float
    test_accuracy: float


@dataclasses.dataclass
class EvalWindow:
    """Per-step train loss/accuracy since the last evaluation (carried across segments and resumes)."""
    losses: list = dataclasses.field(default_factory=list)
    accuracies: list = dataclasses.field(default_factory=list)


def records_from_metrics(metrics: dict[str, np.ndarray], t0: int,
                          window: EvalWindow) -> tuple[list[EvalRecord], EvalWindow]:
    """Eval points of one segment; train metrics averaged over the steps since the previous one."""
    records = []
    losses = list(window.losses) + [float(x) for x in metrics['loss']]
    accs = list(window.accuracies) + [float(x) for x in metrics['accuracy']]
    offset = len(window.losses)  # index of this segment's first step in losses
    start = 0
    for i in np.nonzero(~np.isnan(metrics['val_loss']))[0]:
        end = offset + int(i) + 1
        records.append(EvalRecord(
            step=int(t0 + i + 1),
            train_loss=float(np.mean(np.asarray(losses[start:end], np.float32))),
            train_accuracy=float(np.mean(np.asarray(accs[start:end], np.float32))),
            val_loss=float(metrics['val_loss'][i]), val_accuracy=float(metrics['val_acc'][i]),
            test_loss=float(metrics['test_loss'][i]), test_accuracy=float(metrics['test_acc'][i])))
        start = end
    return records, EvalWindow(losses[start:], accs[start:])


def diverged(records: Sequence[EvalRecord], start_val_loss: Optional[float]) -> bool:
    """Whether a round diverged: some evaluation window's mean training loss exceeded ``DIVERGENCE_FACTOR``
    times the round's starting validation loss (its step-0 evaluation, else its first one; at least 0.01).
    Computed from the round's evaluation records, so a resumed round gets the same answer."""
    first = records[0].val_loss if records else 1.0
    reference = start_val_loss if start_val_loss is not None and np.isfinite(start_val_loss) else first
    losses = [r.train_loss for r in records if r.train_loss is not None and np.isfinite(r.train_loss)]
    return bool(losses) and max(losses) > DIVERGENCE_FACTOR * max(float(reference), 0.01)


def early_stopping(records: list[EvalRecord]) -> EvalRecord:
    """The eval point with minimum validation loss (first on ties); LTH's early-stopping iteration.

    (With ``test_at_best`` the test split is evaluated at every new minimum, so the
    record returned here always carries test metrics.)"""
    if not records:
        raise ValueError('No evaluation records: train at least one step.')
    return min(records, key=lambda r: (r.val_loss if np.isfinite(r.val_loss) else np.inf, r.step))
