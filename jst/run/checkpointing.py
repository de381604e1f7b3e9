"""The on-disk checkpoint schema, every conversion to and from it, and safe resumption.

A checkpoint (orbax, in ``WORKDIR/checkpoints``) has two items:

* ``arrays``: named pytrees of numpy arrays (``ArrayKey``: theta_0, masks,
  the rewind point, train states, the final ticket), stored as plain nested
  dicts so that they restore without a template even when growth has changed
  the architecture; masks without their ``None`` leaves.
* ``meta``: JSON: ``SCHEMA_VERSION``, the search's name, its completed stages with
  their results (``Journal.once``), progress inside the current training
  (``TrainingProgress``), the final tickets' specs and the run's
  ``records.History``.

``jst.run.journal.Journal`` holds all of it for a running search, behind typed
accessors. PRNG state needs no saving:
every key is a pure function of (seed, round, step). orbax writes each
checkpoint to a temporary folder and renames it when complete, so a run killed
during a write keeps the previous checkpoint; one that cannot be read is
skipped with a warning and left in place.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import jax
import numpy as np

from jst import __version__
from jst.ops import pytrees
from jst.run import checkpoint_io
from jst.training import train as train_lib

PyTree = Any
SCHEMA_VERSION = 4  # 4: completed stages (``Journal.once``) instead of phases; 3: one entry per lane (seed)
# The release that reads each older schema (a checkpoint of one is refused with this line, never misread).
READ_BY = {1: 'jst before the per-lane layout (git history before 2026-11)',
           2: 'jst before the per-lane layout (git history before 2026-11)',
           3: 'jst 0.1.0 (git checkout 774351f)'}
CheckpointError = checkpoint_io.CheckpointError
RunCheckpointer = checkpoint_io.RunCheckpointer


class ArrayKey:
    """Names of the pytrees in a checkpoint's ``arrays`` item."""

    THETA0 = 'theta0'            # weight reset: initial variables
    REWIND = 'rewind'            # weight reset: variables at rewind_step of round 0
    ROUND_STATE = 'round_state'  # growth: TrainState at the start of the current round
    TRAIN_STATE = 'train_state'  # TrainState of the lanes inside a training, stacked (``TrainingProgress``)
    FINAL = 'final'              # the final ticket: params, batch_stats, masks

    # Every key but TRAIN_STATE holds one entry per lane (seed): {lane_name(i): tree}.

    @staticmethod
    def masks(round_index: int) -> str:
        """Weight reset: the masks round ``round_index`` trains (its ticket's and controls')."""
        return f'masks_round{round_index:03d}'


def lane_name(lane: int) -> str:
    """The key of lane ``lane``'s entry in a per-lane array item."""
    return f'lane{lane:04d}'


def per_lane(trees: dict[int, Any]) -> dict[str, Any]:
    """{lane: tree} -> a per-lane array item."""
    return {lane_name(lane): tree for lane, tree in trees.items()}


@dataclasses.dataclass
class TrainingProgress:
    """Where a training of ``lanes`` stopped: ``stage`` is the search stage it belongs to
    (``jst.run.journal.Journal.once``), ``step`` the next global step; the other fields hold one entry per lane."""

    stage: str
    step: int
    lanes: list[int]
    windows: list[dict[str, list]]
    start_evals: list[Optional[dict[str, Any]]]
    records: list[list[dict[str, Any]]]


def is_finished(meta: dict[str, Any]) -> bool:
    """Whether a checkpoint's ``meta`` is of a finished search (all its stages ran; its final tickets are kept)."""
    return meta.get('schema_version') == SCHEMA_VERSION and bool(meta.get('finished'))


def stale_schema_line(meta: dict[str, Any]) -> str:
    """One line naming the checkpoint's schema, the jst release that reads it, and the two ways on."""
    version = meta.get('schema_version', 1)
    return (f'checkpoint schema {version}, which {READ_BY.get(version, "an older jst")} reads; this jst '
            f'({__version__}) reads schema {SCHEMA_VERSION} only. Finish that run with that release, or pass '
            '--config.overwrite=True to start over (or use another --workdir).')


# --------------------------------------------------------------------------
# Trees <-> storable nested dicts
# --------------------------------------------------------------------------
def to_storable(tree: PyTree) -> dict[str, Any]:
    """Nested dict of numpy arrays; ``None`` leaves are dropped."""
    return pytrees.unflatten({k: np.asarray(v) for k, v in pytrees.flatten(tree).items() if v is not None})


def from_storable(stored: Optional[dict[str, Any]]) -> dict[str, Any]:
    """Nested dict of jax arrays (inverse of ``to_storable`` for trees without ``None``)."""
    return jax.tree.map(jax.numpy.asarray, stored) if stored else {}


def masks_from_storable(stored: Optional[dict[str, Any]], params: PyTree) -> PyTree:
    """Rebuilds a mask tree shaped like ``params`` (``None`` where nothing was stored)."""
    flat = pytrees.flatten_dict(stored)

    def leaf(path, _):
        m = flat.get(pytrees.path_str(path))
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


def state_to_storable(state: train_lib.TrainState) -> dict[str, Any]:
    best = {} if state.best is None else {'best': variables_to_storable(state.best)}
    return {'step': np.asarray(state.step), 'params': to_storable(state.params),
            'batch_stats': to_storable(state.batch_stats), 'masks': to_storable(state.masks),
            'opt_state': opt_state_to_storable(state.opt_state), **best}


def state_from_storable(stored: dict[str, Any], tx: Any) -> train_lib.TrainState:
    params = from_storable(stored['params'])
    return train_lib.TrainState(
        step=jax.numpy.asarray(stored['step'], jax.numpy.int32), params=params,
        batch_stats=from_storable(stored.get('batch_stats')),
        masks=masks_from_storable(stored.get('masks'), params),
        opt_state=opt_state_from_storable(stored['opt_state'], tx.init(params)),
        best=({k: from_storable(v) for k, v in stored['best'].items()} if 'best' in stored else None))


def variables_to_storable(variables: dict[str, Any]) -> dict[str, Any]:
    return {k: to_storable(v) for k, v in variables.items()}


def variables_from_storable(stored: dict[str, Any]) -> dict[str, Any]:
    out = {'params': from_storable(stored['params'])}
    if stored.get('batch_stats'):
        out['batch_stats'] = from_storable(stored['batch_stats'])
    return out
