"""Checkpoints of the whole search state with orbax, and safe resumption.

A checkpoint has two items:

* ``arrays``: named pytrees of arrays (params, batch_stats, masks without
  their ``None`` leaves, optimizer-state leaves, theta_0 / rewind point, ...),
  stored as plain nested dicts, so that they restore without a template even
  when growth has changed the architecture;
* ``meta``: JSON: the round and phase, progress within the current training
  run, the structure spec, the history so far (summary records and metrics)
  and driver bookkeeping.

PRNG state needs no saving: every key is a pure function of (seed, round,
step). orbax writes each checkpoint to a temporary folder and renames it when
complete, so a run killed during a write leaves the previous checkpoint
intact; a checkpoint that cannot be read is skipped with a warning and the
previous good one is used, never deleted.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from flax import traverse_util

from jst import masks as masks_lib

PyTree = Any
CHECKPOINT_DIR = 'checkpoints'
# Config fields that may change between a run and its resumption.
RESUMABLE_FIELDS = ('overwrite', 'log_level', 'checkpoint_every_epochs', 'checkpoint_min_interval_s',
                    'manual_dir', 'data_dir', 'data_backend', 'write_report')


class CheckpointError(RuntimeError):
    """No usable checkpoint, or a workdir that belongs to another run."""


# --------------------------------------------------------------------------
# Trees <-> storable nested dicts
# --------------------------------------------------------------------------
def _flat_with_paths(tree: PyTree) -> dict[str, Any]:
    flat, _ = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: x is None)
    return {masks_lib.path_str(p): v for p, v in flat}


def to_storable(tree: PyTree) -> dict[str, Any]:
    """Nested dict of numpy arrays; ``None`` leaves are dropped."""
    flat = {tuple(k.split('/')): np.asarray(v) for k, v in _flat_with_paths(tree).items() if v is not None}
    return traverse_util.unflatten_dict(flat) if flat else {}


def from_storable(stored: Optional[dict[str, Any]]) -> dict[str, Any]:
    """Nested dict of jax arrays (inverse of ``to_storable`` for trees without ``None``)."""
    if not stored:
        return {}
    return jax.tree.map(jax.numpy.asarray, stored)


def masks_from_storable(stored: dict[str, Any], params: PyTree) -> PyTree:
    """Rebuilds a mask tree shaped like ``params`` (``None`` where nothing was stored)."""
    flat = {'/'.join(k): v for k, v in traverse_util.flatten_dict(stored or {}).items()}

    def leaf(path, p):
        m = flat.get(masks_lib.path_str(path))
        return None if m is None else jax.numpy.asarray(m, bool)

    return jax.tree_util.tree_map_with_path(leaf, params)


def opt_state_to_storable(opt_state: PyTree) -> dict[str, Any]:
    return {f'leaf_{i:05d}': np.asarray(x) for i, x in enumerate(jax.tree.leaves(opt_state))}


def opt_state_from_storable(stored: dict[str, Any], template: PyTree) -> PyTree:
    leaves, treedef = jax.tree.flatten(template)
    if len(stored) != len(leaves):
        raise CheckpointError(f'optimizer state has {len(stored)} leaves in the checkpoint but '
                              f'{len(leaves)} for this optimizer: was the optimizer changed?')
    return jax.tree.unflatten(treedef, [jax.numpy.asarray(stored[f'leaf_{i:05d}'], l.dtype)
                                        for i, l in enumerate(leaves)])


# --------------------------------------------------------------------------
# The checkpointer
# --------------------------------------------------------------------------
class RunCheckpointer:
    """Saves and restores (meta, arrays) in ``WORKDIR/checkpoints`` (keeps the last ``keep``)."""

    def __init__(self, workdir: str, keep: int = 2):
        self.directory = os.path.abspath(os.path.join(workdir, CHECKPOINT_DIR))
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                               enable_async_checkpointing=False)
        self._manager = ocp.CheckpointManager(self.directory, options=options,
                                              item_names=('arrays', 'meta'))
        self._next = (self._manager.latest_step() or 0) + 1

    def save(self, meta: dict[str, Any], arrays: dict[str, Any]) -> int:
        """Writes one checkpoint (synchronously); returns its index."""
        index = self._next
        _maybe_crash_for_test('save', index)
        self._manager.save(index, args=ocp.args.Composite(
            arrays=ocp.args.StandardSave(arrays), meta=ocp.args.JsonSave(meta)))
        self._manager.wait_until_finished()
        self._next = index + 1
        _maybe_crash_for_test('after_save', index)
        return index

    def restore_latest(self) -> Optional[tuple[dict[str, Any], dict[str, Any]]]:
        """(meta, arrays) of the newest readable checkpoint, or None when there is none."""
        self._manager.reload()
        steps = sorted(self._manager.all_steps(), reverse=True)
        for step in steps:
            try:
                restored = self._manager.restore(step, args=ocp.args.Composite(
                    arrays=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()))
                meta, arrays = restored['meta'], restored['arrays']
                if not isinstance(meta, dict) or 'phase' not in meta:
                    raise CheckpointError('meta is incomplete')
                if step != steps[0]:
                    logging.warning('Resumed from checkpoint %d: newer ones could not be read.', step)
                self._next = max(steps) + 1
                return meta, arrays
            except Exception as e:  # pylint: disable=broad-except
                logging.warning('Checkpoint %d in %s is unreadable (%s); trying an older one. '
                                'It is left in place.', step, self.directory, e)
        if steps:
            raise CheckpointError(f'None of the checkpoints {steps} in {self.directory} can be read. '
                                  'Move the folder away to start over (or pass --config.overwrite=True).')
        return None

    def close(self) -> None:
        self._manager.close()


def _maybe_crash_for_test(event: str, index: int) -> None:
    """Test hook: ``JST_CRASH_AT=save:3`` SIGKILLs this process during the 3rd checkpoint write,
    ``after_save:3`` right after it (used by the resume tests; unset in normal use)."""
    spec = os.environ.get('JST_CRASH_AT')
    if not spec:
        return
    want_event, _, want_index = spec.partition(':')
    if want_event != event or int(want_index or 0) != index:
        return
    import signal  # pylint: disable=g-import-not-at-top
    import threading  # pylint: disable=g-import-not-at-top
    if event == 'save':  # die a moment later: in the middle of the orbax write
        threading.Timer(float(os.environ.get('JST_CRASH_DELAY', '0.005')),
                        lambda: os.kill(os.getpid(), signal.SIGKILL)).start()
    else:
        os.kill(os.getpid(), signal.SIGKILL)


# --------------------------------------------------------------------------
# Workdir ownership
# --------------------------------------------------------------------------
def config_differences(saved: dict[str, Any], current: dict[str, Any], prefix: str = '') -> list[str]:
    """Human-readable differences between two config dicts, ignoring ``RESUMABLE_FIELDS``."""
    out = []
    for key in sorted(set(saved) | set(current)):
        if not prefix and key in RESUMABLE_FIELDS:
            continue
        a, b = saved.get(key, '<absent>'), current.get(key, '<absent>')
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_differences(a, b, f'{prefix}{key}.')
        elif json.dumps(a, sort_keys=True) != json.dumps(b, sort_keys=True):
            out.append(f'{prefix}{key}: {a!r} in the workdir, {b!r} now')
    return out


def claim_workdir(workdir: str, config_dict: dict[str, Any], overwrite: bool, config_file: str) -> None:
    """Refuses a workdir that holds a run of another config (unless ``overwrite``), else records ours."""
    path = os.path.join(workdir, config_file)
    if os.path.exists(path):
        with open(path) as f:
            try:
                saved = json.load(f)
            except json.JSONDecodeError:
                saved = None
        diffs = config_differences(saved, config_dict) if saved is not None else ['config.json unreadable']
        if diffs and not overwrite:
            raise CheckpointError(
                f'Workdir {workdir!r} holds a run of a different config: ' + '; '.join(diffs) +
                '. Use another --workdir, or pass --config.overwrite=True to discard that run.')
        if diffs and overwrite:
            logging.warning('Overwriting the run in %s (%s).', workdir, '; '.join(diffs))
            shutil.rmtree(os.path.join(workdir, CHECKPOINT_DIR), ignore_errors=True)
            for name in ('summary.json', 'metrics.jsonl', 'summary.md'):
                if os.path.exists(os.path.join(workdir, name)):
                    os.remove(os.path.join(workdir, name))
