"""The layout of a run's folder, and who may write to it.

Every file name of a workdir is defined here (records, checkpoints, report,
TensorBoard); ``WorkdirLock`` lets one process at a time write a workdir (an
exclusive ``flock``, released on any exit, also when the process dies); in a
multi-process (multi-host) run only process 0 writes files and takes the lock
(``is_primary_process``; orbax coordinates the checkpoints of all processes);
``claim`` refuses a workdir that holds a run of another config (unless
``overwrite``) and records ours in ``config.json``. Imports no other jst module.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import socket
import tempfile
import time
from typing import Any, Optional

from absl import logging

from jst import errors

CONFIG_FILE = 'config.json'
SUMMARY_FILE = 'summary.json'
SUMMARY_TABLE_FILE = 'summary.md'
METRICS_FILE = 'metrics.jsonl'
CHECKPOINT_DIR = 'checkpoints'
UNREADABLE_CHECKPOINT_DIR = 'checkpoints_unreadable'  # checkpoints that failed verification, kept for inspection
LOCK_FILE = '.lock'
REPORT_DIR = 'report'
TENSORBOARD_DIR = 'tensorboard'
RUN_FILE = 'run.json'  # provenance, one entry per invocation (jst.run.provenance)
RECORD_FILES = (SUMMARY_FILE, METRICS_FILE, SUMMARY_TABLE_FILE, RUN_FILE)
# Config fields that may change between a run and its resumption.
RESUMABLE_FIELDS = ('overwrite', 'log_level', 'checkpoint_every_epochs', 'checkpoint_min_interval_s',
                    'manual_dir', 'data_dir', 'data_backend', 'write_report')


class WorkdirError(errors.UserError, RuntimeError):
    """The workdir cannot be used: not writable, or it holds a run of another config."""


def is_primary_process() -> bool:
    """Whether this process writes the workdir's files: always in a one-process run, process 0 of a
    multi-process run (every process computes the same records)."""
    import jax  # pylint: disable=g-import-not-at-top
    return jax.process_index() == 0


def atomic_write_text(path: str, text: str) -> None:
    """Writes ``text`` to ``path`` via a temporary file and rename: never a half-written file (process 0
    only, see ``is_primary_process``)."""
    if not is_primary_process():
        return
    tmp = f'{path}.tmp.{os.getpid()}'
    with open(tmp, 'w') as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


_HELD_LOCKS: dict[str, int] = {}  # workdir -> inode of the lock file this process holds (see check_lock_held)


def check_lock_held(workdir: str) -> None:
    """Before a write: refuses to go on when the lock file this process holds on ``workdir`` was deleted or
    replaced (a second run may then have claimed the workdir and be writing into it too)."""
    inode = _HELD_LOCKS.get(os.path.abspath(workdir))
    if inode is None:
        return
    try:
        current = os.stat(os.path.join(workdir, LOCK_FILE)).st_ino
    except OSError:
        current = None
    if current != inode:
        raise WorkdirError(f'The lock file {os.path.join(workdir, LOCK_FILE)!r} was deleted or replaced while this '
                           'run held it, so another run may be writing into the same workdir: stopping before '
                           'writing. Make sure only one run uses it, then rerun this command to resume.')


class WorkdirLock:
    """Exclusive use of ``workdir`` by this process (a context manager). A second process is refused
    with the holder's pid and host; a lock left by a dead process is free again (``flock``)."""

    def __init__(self, workdir: str):
        self.path = os.path.join(workdir, LOCK_FILE)
        self._key = os.path.abspath(workdir)  # in _HELD_LOCKS while held
        self._fd: Optional[int] = None

    def __enter__(self) -> WorkdirLock:
        if not is_primary_process():  # the other processes of a multi-process run write nothing
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = os.pread(fd, 4096, 0).decode(errors='replace').strip() or 'another process'
            os.close(fd)
            if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            raise WorkdirError(f'Workdir {os.path.dirname(self.path)!r} is in use by {holder}. Wait for that run '
                               'to end (this command then resumes it), or use another --workdir.') from e
        os.ftruncate(fd, 0)
        os.pwrite(fd, f'pid {os.getpid()} on host {socket.gethostname()} since '
                      f'{time.strftime("%Y-%m-%d %H:%M:%S")}\n'.encode(), 0)
        self._fd = fd
        _HELD_LOCKS[self._key] = os.fstat(fd).st_ino
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._fd is not None:
            _HELD_LOCKS.pop(self._key, None)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def running_holder(workdir: str) -> Optional[str]:
    """Who else holds ``workdir``'s lock (a run in progress: 'pid .. on host ..'), or None (also when this
    process holds it: a run writing its own report)."""
    path = os.path.join(workdir, LOCK_FILE)
    if os.path.abspath(workdir) in _HELD_LOCKS or not os.path.exists(path):
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return os.pread(fd, 4096, 0).decode(errors='replace').strip() or 'another process'
    finally:
        os.close(fd)
    return None


def check_writable(workdir: str) -> None:
    """Creates ``workdir`` if needed and checks that a file can be written there."""
    try:
        os.makedirs(workdir, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=workdir, prefix='.write_test'):
            pass
    except OSError as e:
        raise WorkdirError(f'workdir {workdir!r} is not writable ({e}); pass --workdir=DIR '
                           'with a folder you can write to.') from e


_ABSENT = '<absent>'  # a field one of two config dicts lacks
# Knobs added after runs were made, with the value that reproduces those runs: a saved config that lacks one
# matches a current config holding that value (so adding a knob never strands a run in progress).
# knob: its value in runs made before it
ADDED_KNOBS = {'prune_weights': 'final', 'cpu_kernels': 'xla', 'init_from_masks': 'ticket',
               'mask_update_every': 100, 'mask_update_end': 0.75, 'rigl_drop_fraction': 0.3, 'conv_form': 'xla'}


def _differing_fields(saved: dict[str, Any], current: dict[str, Any],
                      prefix: str = '') -> list[tuple[str, Any, Any]]:
    """(dotted field, saved value, current value) where two config dicts differ, ignoring ``RESUMABLE_FIELDS``."""
    out = []
    for key in sorted(set(saved) | set(current)):
        if not prefix and key in RESUMABLE_FIELDS:
            continue
        a, b = saved.get(key, _ABSENT), current.get(key, _ABSENT)
        if not prefix and _ABSENT in (a, b) and key in ADDED_KNOBS and ADDED_KNOBS[key] in (a, b):
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differing_fields(a, b, f'{prefix}{key}.')
        elif json.dumps(a, sort_keys=True) != json.dumps(b, sort_keys=True):
            out.append((f'{prefix}{key}', a, b))
    return out


def config_differences(saved: dict[str, Any], current: dict[str, Any], prefix: str = '') -> list[str]:
    """Human-readable differences between two config dicts, ignoring ``RESUMABLE_FIELDS``."""
    return [f'{key}: {a!r} in the workdir, {b!r} now' for key, a, b in _differing_fields(saved, current, prefix)]


def run_fields(config_dict: dict[str, Any]) -> dict[str, Any]:
    """The config fields that define a run (all but ``RESUMABLE_FIELDS``)."""
    return {k: v for k, v in config_dict.items() if k not in RESUMABLE_FIELDS}


def discard_run(workdir: str) -> None:
    """Removes the checkpoints and records of the run in ``workdir`` (process 0 only)."""
    if not is_primary_process():
        return
    shutil.rmtree(os.path.join(workdir, CHECKPOINT_DIR), ignore_errors=True)
    for name in RECORD_FILES:
        if os.path.exists(os.path.join(workdir, name)):
            os.remove(os.path.join(workdir, name))


def _flag_value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return '(' + ','.join(map(_flag_value, value)) + (',)' if len(value) == 1 else ')')
    return str(value)


def _changed_flags(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``--config.KEY=VALUE`` flags that restore ``saved``'s values of the fields where ``current`` differs."""
    return [f'--config.{key}={_flag_value(a)}' for key, a, _ in _differing_fields(saved, current)
            if a is not _ABSENT and key.split('.')[0] != 'data']


def resume_advice(saved: dict[str, Any], current: dict[str, Any]) -> str:
    """What to do about a workdir holding a run of another config: first, how to resume that run."""
    flags = _changed_flags(saved, current)
    resume = f'Rerun with {" ".join(flags)} to resume that run, u' if flags else 'U'
    return f'{resume}se another --workdir, or pass --config.overwrite=True to discard that run.'


def _read_config_file(path: str) -> Optional[dict[str, Any]]:
    """The saved config, or None when the file is missing or unreadable (truncated, not JSON)."""
    try:
        with open(path) as f:
            saved = json.load(f)
    except (OSError, json.JSONDecodeError):
        return None
    return saved if isinstance(saved, dict) else None


def has_checkpoints(workdir: str) -> bool:
    folder = os.path.join(workdir, CHECKPOINT_DIR)
    return os.path.isdir(folder) and any(name.isdigit() for name in os.listdir(folder))


def claim(workdir: str, config_dict: dict[str, Any], overwrite: bool) -> None:
    """Refuses a workdir that holds a run of another config (unless ``overwrite``: then that run is
    discarded), then writes ``config.json``. When ``config.json`` is missing or unreadable but checkpoints
    exist, their own config decides on restore (``write_config_if_missing`` then writes the file): a refused
    run writes nothing. A ``config.json`` under which nothing was trained (no checkpoints, no records) is
    replaced. Call it holding the ``WorkdirLock``."""
    path = os.path.join(workdir, CONFIG_FILE)
    saved = _read_config_file(path)
    if saved is None and os.path.exists(path) and not has_checkpoints(workdir) and not overwrite:
        raise WorkdirError(f'Workdir {workdir!r} has an unreadable {CONFIG_FILE} and no checkpoints: use another '
                           '--workdir, or pass --config.overwrite=True to replace it.')
    if saved is None and has_checkpoints(workdir) and not overwrite:
        logging.warning('%s is missing or unreadable; the checkpoints\' own config decides.', path)
        return
    diffs = config_differences(saved, config_dict) if saved is not None else []
    if diffs and not has_checkpoints(workdir) and not os.path.exists(os.path.join(workdir, SUMMARY_FILE)):
        logging.info('%s: nothing was trained under its old config (%s); this config replaces it.', workdir,
                     '; '.join(diffs))  # e.g. a run refused after claiming: the corrected rerun proceeds
        overwrite = True
    if diffs and not overwrite:
        raise WorkdirError(f'Workdir {workdir!r} holds a run of a different config: ' + '; '.join(diffs) + '. '
                           + resume_advice(saved, config_dict))
    if diffs:
        logging.warning('Overwriting the run in %s (%s).', workdir, '; '.join(diffs))
        discard_run(workdir)
    atomic_write_text(path, json.dumps(config_dict, indent=1))


def write_config_if_missing(workdir: str, config_dict: dict[str, Any]) -> None:
    """Writes ``config.json`` when it is missing or unreadable (after the checkpoints' config agreed)."""
    path = os.path.join(workdir, CONFIG_FILE)
    if _read_config_file(path) is None:
        atomic_write_text(path, json.dumps(config_dict, indent=1))


def default_workdir(config_path: str) -> str:
    """``runs/<config file name>[_<config argument>]``: ``configs/cifar10_conv.py:conv4`` ->
    ``runs/cifar10_conv_conv4``, so the variants of one config file never share a workdir."""
    stem, _, arg = config_path.partition(':')
    return os.path.join('runs', os.path.splitext(os.path.basename(stem))[0] + (f'_{arg}' if arg else ''))
