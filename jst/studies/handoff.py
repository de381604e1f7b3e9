"""Handing an unfinished campaign part to the next machine: its workdir, packed beside the study's records.

A part longer than one stretch of a machine (a CIFAR-10 cell on 2 CPU cores takes hours) loses its checkpoints
when the machine goes. ``pack_study`` writes each paused part's workdir (checkpoints, metrics, config; a few
hundred KB for the paper's ResNet) to ``<results>/<study>/handoff/<budget>/<policy>[/<part>].tar.gz``
(``launch/study.py handoff NAME --commit`` commits them, so a fresh clone carries them); ``campaign.run_part``
unpacks it into an empty workdir, resumes exactly where it stopped, and deletes it when the part's records land
(a committed archive's deletion is committed with the records). A running part is refused (pause it first:
SIGTERM).
"""

from __future__ import annotations

import os
import tarfile
from typing import Callable, Optional

from jst.studies import study as study_lib
from jst.run import workdir as workdir_lib

SKIPPED = (workdir_lib.LOCK_FILE, workdir_lib.UNREADABLE_CHECKPOINT_DIR)  # never handed on


def archive_path(results_dir: str, study: study_lib.Study, budget: int, policy: str,
                 part: Optional[tuple[int, int]] = None) -> str:
    """Where a part's packed workdir lives: beside its records, under ``<study>/handoff/``."""
    records = study_lib.records_dir(results_dir, study, budget, policy, part)
    relative = os.path.relpath(records, os.path.join(results_dir, study.name, 'records'))
    return os.path.join(results_dir, study.name, 'handoff', relative + '.tar.gz')


def has_checkpoint(workdir: str) -> bool:
    folder = os.path.join(workdir, workdir_lib.CHECKPOINT_DIR)
    return os.path.isdir(folder) and bool(os.listdir(folder))


def pack(workdir: str, path: str) -> None:
    """``workdir`` (but its lock and unreadable checkpoints) as ``path`` (.tar.gz), written atomically; refuses a
    workdir that a run holds."""
    holder = workdir_lib.running_holder(workdir)
    if holder:
        raise workdir_lib.WorkdirError(f'{workdir} is in use ({holder}): pause its runner first (SIGTERM; it keeps '
                                       'its last checkpoint), then hand it off.')
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tarfile.open(path + '.tmp', 'w:gz') as tar:
        for name in sorted(os.listdir(workdir)):
            if name not in SKIPPED:
                tar.add(os.path.join(workdir, name), arcname=name)
    os.replace(path + '.tmp', path)


def unpack(path: str, workdir: str) -> bool:
    """Unpacks the archive ``path`` into ``workdir`` when that holds no checkpoint (a fresh machine); False when
    there is no archive or the workdir already has checkpoints (they are newer: the archive is left alone)."""
    if not os.path.exists(path) or has_checkpoint(workdir):
        return False
    os.makedirs(workdir, exist_ok=True)
    with tarfile.open(path, 'r:gz') as tar:
        tar.extractall(workdir, filter='data')  # no absolute paths, links out of the folder or device files
    return True


def pack_study(study: study_lib.Study, results_dir: str, workdir_root: str,
               order: list[tuple[int, str, tuple[int, int]]], done: Callable[..., bool]) -> list[str]:
    """Packs every part of ``order`` (budget, policy, part) that has checkpoints but no records (``done``);
    returns the archives written."""
    written = []
    for budget, policy, part in order:
        workdir = os.path.join(workdir_root, study.workdir(policy, budget, part))
        if done(study, budget, policy, part, results_dir) or not has_checkpoint(workdir):
            continue
        path = archive_path(results_dir, study, budget, policy, part)
        pack(workdir, path)
        written.append(path)
    return written

