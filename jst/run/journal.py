"""A running search's checkpointed state behind typed accessors: the searches never see the storage format.

``Journal`` holds the search's progress (``checkpointing.LotteryProgress`` /
``RecursiveProgress``), one tree per lane (seed) under each ``ArrayKey``
(variables, masks or train states, converted by ``checkpointing``), the
training in progress (``TrainingProgress`` and the stacked state), the final
tickets and the run's history; ``restore()`` and ``save()`` move all of it to and
from the newest orbax checkpoint of the workdir. ``FinishedRun`` reads another
run's final tickets (``config.init_from``).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Optional, Sequence

from absl import logging

from jst.models import specs
from jst.run import checkpointing as ck
from jst.run import records as records_lib
from jst.training import train as train_lib

PyTree = Any


class Journal:
    """A running search's checkpointed state: typed progress, arrays, training progress, history.

    Use as a context manager; ``restore()`` loads the newest checkpoint (False when there is
    none), ``save()`` writes one. A checkpoint of an older layout is refused, or discarded
    when ``overwrite``.
    """

    def __init__(self, workdir: str, progress: Any, config: dict[str, Any], overwrite: bool = False):
        self.workdir, self.progress, self._overwrite = workdir, progress, overwrite
        self.arrays: dict[str, Any] = {}
        self.training: Optional[ck.TrainingProgress] = None
        self.final_specs: dict[str, dict[str, Any]] = {}  # lane name -> spec of its final ticket
        self.history = records_lib.History()
        self.checkpointer = ck.RunCheckpointer(workdir, config)
        self.writer = records_lib.make_metric_writer(workdir)

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self.checkpointer.close()
        if self.writer is not None:
            self.writer.close()

    def save(self) -> None:
        meta = {'schema_version': ck.SCHEMA_VERSION, 'search': type(self.progress).__name__,
                'progress': dataclasses.asdict(self.progress),
                'training': dataclasses.asdict(self.training) if self.training else None,
                'final_specs': self.final_specs, 'history': dataclasses.asdict(self.history)}
        self.checkpointer.save(json.loads(json.dumps(meta)), self.arrays)

    def restore(self) -> bool:
        """Loads the newest readable checkpoint of this run (False: none, start fresh), and rewrites the
        record files from its history (they may be missing or stale) and ``config.json`` when it is missing."""
        resumed = self._restore()
        self.checkpointer.write_config_if_missing()
        return resumed

    # ---- one tree per lane under an ArrayKey (merged into what is there) ----
    def has(self, key: str) -> bool:
        return key in self.arrays

    def drop(self, key: str) -> None:
        self.arrays.pop(key, None)

    def promote(self, source: str, target: str) -> None:
        """``target`` takes ``source``'s trees (e.g. the next round's masks become the current ones)."""
        self.arrays[target] = self.arrays.pop(source)

    def put_variables(self, key: str, by_lane: dict[int, dict[str, Any]]) -> None:
        self._put(key, {lane: ck.variables_to_storable(v) for lane, v in by_lane.items()})

    def variables(self, key: str, lane: int) -> dict[str, Any]:
        return ck.variables_from_storable(self._lane(key, lane))

    def put_masks(self, key: str, by_lane: dict[int, PyTree]) -> None:
        self._put(key, {lane: ck.to_storable(m) for lane, m in by_lane.items()})

    def masks(self, key: str, lane: int, params: PyTree) -> PyTree:
        """Lane ``lane``'s masks under ``key``, shaped like ``params`` (``None`` where nothing is pruned)."""
        return ck.masks_from_storable(self._lane(key, lane), params)

    def put_states(self, key: str, by_lane: dict[int, train_lib.TrainState]) -> None:
        self._put(key, {lane: ck.state_to_storable(st) for lane, st in by_lane.items()})

    def state(self, key: str, lane: int, tx: Any) -> train_lib.TrainState:
        return ck.state_from_storable(self._lane(key, lane), tx)

    def _put(self, key: str, storable_by_lane: dict[int, Any]) -> None:
        self.arrays.setdefault(key, {}).update(ck.per_lane(storable_by_lane))

    def _lane(self, key: str, lane: int) -> Any:
        return self.arrays[key][ck.lane_name(lane)]

    # ---- the training in progress: its place and its lanes' state, stacked ----
    def save_training(self, progress: ck.TrainingProgress, stacked: train_lib.TrainState) -> None:
        self.training = progress
        self.arrays[ck.ArrayKey.TRAIN_STATE] = ck.state_to_storable(stacked)
        self.save()

    def training_state(self, tx: Any) -> train_lib.TrainState:
        return ck.state_from_storable(self.arrays[ck.ArrayKey.TRAIN_STATE], tx)

    def end_training(self) -> None:
        self.training = None
        self.drop(ck.ArrayKey.TRAIN_STATE)

    # ---- the final tickets, for ``config.init_from`` ----
    def store_final(self, finals: Sequence[tuple[int, specs.ModelSpec, train_lib.TrainState]]) -> None:
        """Keeps each lane's final trained ticket, (lane, spec, state): params, batch_stats and masks."""
        self._put(ck.ArrayKey.FINAL, {lane: {'params': ck.to_storable(st.params),
                                          'batch_stats': ck.to_storable(st.batch_stats),
                                          'masks': ck.to_storable(st.masks)} for lane, _, st in finals})
        self.final_specs = {**self.final_specs, **{ck.lane_name(lane): specs.spec_to_dict(spec)
                                                   for lane, spec, _ in finals}}

    def _restore(self) -> bool:
        try:
            restored = self.checkpointer.restore_latest()
        except ck.CheckpointError as e:
            if not self._overwrite:
                raise
            return self._start_over(str(e))
        if restored is None:
            return False
        meta, arrays = restored
        if meta.get('schema_version') != ck.SCHEMA_VERSION or meta.get('search') != type(self.progress).__name__:
            return self._refuse_stale(meta)
        self.progress = type(self.progress)(**meta['progress'])
        self.training = ck.TrainingProgress(**meta['training']) if meta.get('training') else None
        self.final_specs, self.arrays = meta.get('final_specs') or {}, arrays
        self.history = records_lib.History(**meta['history'])
        self.history.write(self.workdir)
        logging.info('Resuming from checkpoint: round %s, phase %s, step %s.', self.progress.round,
                     self.progress.phase, self.training.step if self.training else 0)
        return True

    def _refuse_stale(self, meta: dict[str, Any]) -> bool:
        found = f"schema {meta.get('schema_version', 1)} of {meta.get('search', 'an older jst')}"
        if not self._overwrite:
            raise ck.CheckpointError(f'The checkpoints in {self.checkpointer.directory} were written by another '
                                  f'layout ({found}; this jst writes schema {ck.SCHEMA_VERSION} of '
                                  f'{type(self.progress).__name__}). Pass --config.overwrite=True to start '
                                  'over, or use another --workdir.')
        return self._start_over(f'another layout: {found}')

    def _start_over(self, why: str) -> bool:
        """Discards the workdir's checkpoints and records (``overwrite``); the search starts fresh."""
        logging.warning('Discarding the run in %s (%s): --config.overwrite=True.', self.workdir, why)
        self.checkpointer.discard()
        return False


@dataclasses.dataclass(frozen=True)
class FinishedRun:
    """Another run's newest checkpoint, read for its final tickets (``config.init_from``)."""

    meta: dict[str, Any]
    arrays: dict[str, Any]

    @classmethod
    def read(cls, workdir: str) -> Optional[FinishedRun]:
        """The finished run in ``workdir`` (its config is not checked); None when it has no final ticket."""
        checkpointer = ck.RunCheckpointer(workdir, None)
        try:
            restored = checkpointer.restore_latest()
        finally:
            checkpointer.close()
        if restored is None:
            return None
        meta, arrays = restored
        if (meta.get('progress') or {}).get('phase') != 'done' or ck.ArrayKey.FINAL not in arrays:
            return None
        return cls(meta, arrays)

    @property
    def split(self) -> Optional[str]:
        """The digest of the train/validation split it trained on (``data.fingerprint``), when recorded."""
        return ((self.meta.get('config') or {}).get('data') or {}).get('split')

    @property
    def num_tickets(self) -> int:
        return len(self.arrays[ck.ArrayKey.FINAL])

    def has_ticket(self, lane: int) -> bool:
        return ck.lane_name(lane) in self.arrays[ck.ArrayKey.FINAL]

    def ticket(self, lane: int) -> tuple[specs.ModelSpec, dict[str, Any], PyTree]:
        """(spec, trained variables, masks) of lane ``lane``'s final ticket."""
        name = ck.lane_name(lane)
        stored = self.arrays[ck.ArrayKey.FINAL][name]
        variables = ck.variables_from_storable(stored)
        return (specs.spec_from_config(self.meta['final_specs'][name]), variables,
                ck.masks_from_storable(stored.get('masks'), variables['params']))

    def theta0(self, lane: int) -> Optional[dict[str, Any]]:
        """Lane ``lane``'s initial variables (weight-reset runs keep them; grown networks have none)."""
        if ck.ArrayKey.THETA0 not in self.arrays:
            return None
        return ck.variables_from_storable(self.arrays[ck.ArrayKey.THETA0][ck.lane_name(lane)])
