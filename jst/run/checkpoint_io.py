"""Checkpoint folders on disk with orbax: atomic, verified, and clear about disk and config trouble.

``RunCheckpointer`` writes (meta, arrays) checkpoints to ``WORKDIR/checkpoints``
(synchronously; orbax renames a complete checkpoint into place, so a run
killed during a write keeps the previous one), keeps the last two, and writes
with each one the config fields that define the run, a SHA-256 of every
array and one of the meta item itself (progress, records: what a resume and a
records rebuild read). On restore it verifies all of them: a checkpoint whose data fail their
checksum is skipped and moved to ``checkpoints_unreadable/`` (kept on disk,
out of rotation, so it never displaces a good one); a checkpoint of another
config is refused naming the differences. Imports ``pytrees`` and ``workdir``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from typing import Any, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from jst import errors
from jst.ops import pytrees
from jst.run import workdir as workdir_lib


class CheckpointError(errors.UserError, RuntimeError):
    """No usable checkpoint, one of another run or layout, or a full disk; the message names the fix."""


class RunCheckpointer:
    """Saves and restores (meta, arrays) in ``WORKDIR/checkpoints`` (keeps the last ``keep``)."""

    def __init__(self, workdir: str, config: Optional[dict[str, Any]], keep: int = 2):
        """``config``: the run's config dict (its run-defining fields are written and checked); None to
        read another run's checkpoints without checking (and create nothing in ``workdir``)."""
        self.workdir = workdir
        self.run_config = workdir_lib.run_fields(config) if config is not None else None
        self._config = config
        self.directory = os.path.abspath(os.path.join(workdir, workdir_lib.CHECKPOINT_DIR))
        self._keep = keep
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=config is not None,
                                               enable_async_checkpointing=False)
        self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=('arrays', 'meta'))
        self._next = (self._manager.latest_step() or 0) + 1

    def save(self, meta: dict[str, Any], arrays: dict[str, Any]) -> int:
        """Writes one checkpoint (synchronously), with a checksum of every array; returns its index."""
        index = self._next
        workdir_lib.check_lock_held(self.workdir)
        _maybe_crash_for_test('save', index)
        meta = {**meta, 'config': self.run_config, 'checksums': array_checksums(arrays)}
        meta['meta_checksum'] = meta_checksum(meta)
        try:
            self._manager.save(index, args=ocp.args.Composite(
                arrays=ocp.args.StandardSave(arrays), meta=ocp.args.JsonSave(meta)))
            self._manager.wait_until_finished()
        except Exception as e:  # pylint: disable=broad-except
            if 'RESOURCE_EXHAUSTED' in str(e) or 'No space left' in str(e) or getattr(e, 'errno', None) == 28:
                raise CheckpointError(
                    f'The disk of {self.directory} is full: checkpoint {index} could not be written (about '
                    f'{_megabytes(arrays):.1f} MB of arrays each, {self._manager.directory} keeps two). Free '
                    'space there and rerun the same command: it resumes from the last complete checkpoint.') from e
            raise
        self._next = index + 1
        _maybe_crash_for_test('after_save', index)
        return index

    def latest_meta(self) -> Optional[dict[str, Any]]:
        """The meta item (progress, the training in progress) of the newest checkpoint, without its arrays or any
        check; None when there is none or it cannot be read. For status views; a resume verifies everything."""
        self._manager.reload()
        step = self._manager.latest_step()
        if step is None:
            return None
        try:
            return self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']
        except Exception:  # pylint: disable=broad-except
            return None

    def restore_latest(self) -> Optional[tuple[dict[str, Any], dict[str, Any]]]:
        """(meta, arrays) of the newest readable checkpoint, or None when there is none."""
        self._manager.reload()
        steps = sorted(self._manager.all_steps(), reverse=True)
        for step in steps:
            try:
                restored = self._manager.restore(step, args=ocp.args.Composite(
                    arrays=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()))
                meta, arrays = restored['meta'], restored['arrays']
                if not isinstance(meta, dict) or 'schema_version' not in meta and 'phase' not in meta:
                    raise CheckpointError('meta is incomplete')
                if 'meta_checksum' in meta and meta['meta_checksum'] != meta_checksum(meta):
                    raise CheckpointError('meta (progress, records) differ from the checksum written with them')
                if 'checksums' in meta and meta['checksums'] != array_checksums(arrays):
                    raise CheckpointError('array data differ from the checksums written with them')
            except Exception as e:  # pylint: disable=broad-except
                logging.warning('Checkpoint %d in %s is unreadable (%s); trying an older one.', step,
                                self.directory, e)
                continue
            for bad in [s for s in steps if s > step]:
                self._set_aside(bad)
            self._next = max(steps) + 1
            self._check_config(meta)
            return meta, arrays
        if steps:
            raise CheckpointError(f'None of the checkpoints {steps} in {self.directory} can be read (they are '
                                  'left in place). Pass --config.overwrite=True to discard them and start over.')
        return None

    def _check_config(self, meta: dict[str, Any]) -> None:
        if self.run_config is None or meta.get('config') is None:
            return
        saved, current = dict(meta['config']), dict(self.run_config)
        saved_data, current_data = saved.pop('data', None), current.pop('data', None)
        if saved_data is not None and current_data is not None and saved_data != current_data:
            diffs = workdir_lib.config_differences(saved_data, current_data, 'data.')
            raise CheckpointError(
                f'The checkpoints in {self.directory} were trained on other data (' + '; '.join(diffs) + '). Point '
                '--config.manual_dir (or JST_MANUAL_DIR) at the files that run used, with its dataset, '
                'validation_size, split_seed and train_limit, and rerun to resume it; or use another --workdir.')
        diffs = workdir_lib.config_differences(saved, current)
        if diffs:
            raise CheckpointError(f'The checkpoints in {self.directory} belong to a run of another config ('
                                  + '; '.join(diffs) + '). ' + workdir_lib.resume_advice(saved, current))

    def write_config_if_missing(self) -> None:
        """``config.json`` (without the data's identity) when it is missing or unreadable, once the checkpoints'
        config has been checked (``workdir.claim`` leaves it to them)."""
        if self._config is not None:
            workdir_lib.write_config_if_missing(self.workdir, {k: v for k, v in self._config.items() if k != 'data'})

    def discard(self) -> None:
        """Removes every checkpoint and record file of the workdir's run; saving starts again at 1."""
        self._manager.close()
        workdir_lib.discard_run(self.workdir)
        self.__init__(self.workdir, self.run_config, self._keep)

    def _set_aside(self, step: int) -> None:
        """Moves an unreadable checkpoint out of rotation (kept on disk) so it never displaces a good one."""
        target = os.path.join(os.path.dirname(self.directory), workdir_lib.UNREADABLE_CHECKPOINT_DIR)
        os.makedirs(target, exist_ok=True)
        dest = os.path.join(target, f'{step}-{int(time.time())}')
        shutil.move(os.path.join(self.directory, str(step)), dest)
        logging.warning('Resuming from an older checkpoint; unreadable checkpoint %d moved to %s.', step, dest)
        self._manager.reload()

    def close(self) -> None:
        self._manager.close()


def meta_checksum(meta: dict[str, Any]) -> str:
    """SHA-256 of ``meta`` (progress, records, config, array checksums) as canonical JSON, without its own
    ``meta_checksum``: a resume or a records rebuild reads nothing unverified."""
    body = {k: v for k, v in meta.items() if k != 'meta_checksum'}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(',', ':')).encode()).hexdigest()


def array_checksums(arrays: dict[str, Any]) -> dict[str, str]:
    """SHA-256 of every array (dtype, shape and bytes), by path: verifies a restored checkpoint."""
    out = {}
    for path, leaf in pytrees.flatten(arrays).items():
        a = np.ascontiguousarray(np.asarray(leaf))
        out[path] = hashlib.sha256(f'{a.dtype}{a.shape}'.encode() + a.tobytes()).hexdigest()
    return out


def _megabytes(arrays: dict[str, Any]) -> float:
    return sum(np.asarray(x).nbytes for x in jax.tree.leaves(arrays)) / 2**20


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
