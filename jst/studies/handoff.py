"""Handing an unfinished campaign part to the next machine: its workdir, packed into a folder you carry.

A part longer than one stretch of a machine (a CIFAR-10 cell on 2 CPU cores takes hours) loses its checkpoints
when the machine goes. ``pack_study`` writes each paused part's workdir (checkpoints, metrics, config; a few
hundred KB for the paper's ResNet) to ``<handoff_dir>/<study>/<budget>/<policy>[/<part>].tar.gz``; carry that
folder to the next machine (a mounted disk, a bucket), where ``campaign.run_part`` unpacks an archive into an
empty workdir, resumes exactly where it stopped, and deletes the archive when the part's records land. A running
part is refused (pause it first: SIGTERM). Archives hold checkpoints, which never belong in the repository: a
``handoff_dir`` inside it is refused (``outside_repository``).
"""

from __future__ import annotations

import os
import tarfile
from typing import Callable, Optional

from jst import errors
from jst.studies import study as study_lib
from jst.run import workdir as workdir_lib

SKIPPED = (workdir_lib.LOCK_FILE, workdir_lib.UNREADABLE_CHECKPOINT_DIR)  # never handed on


def archive_path(handoff_dir: str, study: study_lib.Study, budget: int, policy: str,
                 part: Optional[tuple[int, int]] = None) -> str:
    """Where a part's packed workdir lives: its workdir's relative path under ``handoff_dir``, as ``.tar.gz``."""
    return os.path.join(handoff_dir, study.workdir(policy, budget, part) + '.tar.gz')


def outside_repository(handoff_dir: str, repo: str) -> str:
    """``handoff_dir`` made absolute; refuses a folder inside ``repo`` (checkpoints are never committed)."""
    path, repo = os.path.realpath(handoff_dir), os.path.realpath(repo)
    if os.path.commonpath([path, repo]) == repo:
        raise errors.UserError(f'--handoff_dir={handoff_dir} is inside the repository {repo}: hand-off archives hold '
                               'checkpoints, which are never committed. Give a folder outside it (one you carry to '
                               'the next machine, e.g. --handoff_dir=/mnt/disk/jst-handoff or $JST_HANDOFF_DIR).')
    return path


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


def pack_study(study: study_lib.Study, results_dir: str, workdir_root: str, handoff_dir: str,
               order: list[tuple[int, str, tuple[int, int]]], done: Callable[..., bool]) -> list[str]:
    """Packs every part of ``order`` (budget, policy, part) that has checkpoints but no records (``done``) into
    ``handoff_dir``; returns the archives written."""
    written = []
    for budget, policy, part in order:
        workdir = os.path.join(workdir_root, study.workdir(policy, budget, part))
        if done(study, budget, policy, part, results_dir) or not has_checkpoint(workdir):
            continue
        path = archive_path(handoff_dir, study, budget, policy, part)
        pack(workdir, path)
        written.append(path)
    return written
