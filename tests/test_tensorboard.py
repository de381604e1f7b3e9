"""TensorBoard summaries: one curve per seed (and per policy and control), steps rising on each (issue 37: all
seeds of a run once wrote the same tag, so steps went 108...1287, 108...1287 on one curve)."""

import collections
import os

import pytest

from jst.run import records as records_lib


def _record(seed, rnd, control='none', steps=100):
    return {'seed': seed, 'round': rnd, 'method': 'juvenile', 'variant': 'grow', 'control': control, 'steps': steps,
            'cumulative_steps': steps * (rnd + 1), 'val_accuracy': 0.9, 'test_accuracy': 0.9,
            'fraction_remaining': 0.5 ** rnd, 'params_remaining': 1000 >> rnd}


def _read_events(folder):
    """{tag: [steps in file order]} from the event files in ``folder``."""
    from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
    out = collections.defaultdict(list)
    for name in sorted(os.listdir(folder)):
        acc = event_accumulator.EventAccumulator(os.path.join(folder, name), size_guidance={'tensors': 0})
        acc.Reload()
        for tag in acc.Tags()['tensors']:
            out[tag] += [e.step for e in acc.Tensors(tag)]
    return out


def test_each_seed_writes_its_own_curve_with_rising_steps(tmp_path):
    pytest.importorskip('clu')
    writer = records_lib.make_metric_writer(str(tmp_path))
    if writer is None:
        pytest.skip('no TensorBoard writer here (clu or TensorFlow missing)')
    for rnd in range(3):  # lanes finish a round together: seed 0's and seed 1's records interleave
        for seed in (0, 1):
            evals = [{'step': s, 'val_loss': 1.0 / s, 'val_accuracy': 0.5 + 0.001 * s} for s in (50, 100)]
            records_lib.write_round_scalars(writer, _record(seed, rnd), evals)
    records_lib.write_round_scalars(writer, _record(0, 1, control='random_reinit'), [{'step': 100, 'val_loss': 1.0}])
    writer.close()
    events = _read_events(str(tmp_path / 'tensorboard'))
    assert events['grow/none/seed_0/val_loss'] == [50, 100, 150, 200, 250, 300]
    assert events['grow/none/seed_1/val_loss'] == [50, 100, 150, 200, 250, 300]
    assert events['grow/random_reinit/seed_0/val_loss'] == [200]
    for tag, steps in events.items():
        assert steps == sorted(steps) and len(set(steps)) == len(steps), (tag, steps)  # monotone on every curve
    assert len([t for t in events if t.endswith('/round/val_accuracy')]) == 3  # seeds 0, 1 and the control
