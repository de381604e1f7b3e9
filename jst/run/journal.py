"""A running search's checkpointed state behind typed accessors: the searches never see the storage format.

A search is a straight-line program of *stages* (train round r's ticket, a control, grow a lane):
``Journal.once(name, step)`` runs a stage, or, when a checkpoint says it completed, returns the result it
returned then (JSON) without running it, so a resumed search replays its loop to the first stage not done.
Inside a stage's training, ``jst.searches.rounds.train_round`` checkpoints its progress under the stage's name
and resumes there. Besides the completed stages the journal holds one tree per lane (seed) under each
``ArrayKey`` (variables, masks or train states, converted by ``checkpointing``; a stage's arrays are written
with its completion), the training in progress (``TrainingProgress`` and the stacked state), the final tickets
and the run's history; ``restore()`` and ``save()`` move all of it to and from the newest orbax checkpoint of
the workdir. ``FinishedRun`` reads another run's final tickets (``config.init_from``).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable, Optional, Sequence, TypeVar

from absl import logging

from jst.models import specs
from jst.run import checkpointing as ck
from jst.run import records as records_lib
from jst.training import train as train_lib

PyTree = Any
Json = Any  # what json.dumps writes
T = TypeVar('T')


class Journal:
    """A running search's checkpointed state: completed stages, arrays, training progress, history.

    Use as a context manager; ``restore()`` loads the newest checkpoint of ``search`` (False when there is
    none), ``save()`` writes one. A checkpoint of another schema or search is refused, or discarded when
    ``overwrite``.
    """

    def __init__(self, workdir: str, search: str, config: dict[str, Any], overwrite: bool = False):
        self.workdir, self.search, self._overwrite = workdir, search, overwrite
        self.stages: dict[str, Json] = {}  # completed stage -> its result, in the order they completed
        self.running: Optional[str] = None  # the stage being run (its training checkpoints under its name)
        self.finished = False
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

    def once(self, name: str, step: Callable[[], T]) -> Json:
        """Runs stage ``name`` (``step()``, returning a JSON-able result) and checkpoints its completion with
        what it wrote, or returns its saved result when it completed before. Either way the result is the
        JSON round-trip of what ``step`` returned, so a fresh and a resumed search see equal values."""
        if name in self.stages:
            return self.stages[name]
        if self.running is not None:
            raise RuntimeError(f'stage {name!r} started inside stage {self.running!r}: stages do not nest.')
        self.running = name
        try:
            result = json.loads(json.dumps(step()))
        finally:
            self.running = None
        self.stages[name] = result
        self.save()
        return result

    def finish(self) -> None:
        """Marks the search finished (``FinishedRun`` reads its final tickets) and checkpoints it once."""
        if not self.finished:
            self.finished = True
            self.save()

    def save(self) -> None:
        meta = {'schema_version': ck.SCHEMA_VERSION, 'search': self.search, 'stages': self.stages,
                'finished': self.finished,
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
        if meta.get('schema_version') != ck.SCHEMA_VERSION:
            return self._refuse(f'were written by another layout: {ck.stale_schema_line(meta)}')
        if meta.get('search') != self.search:
            return self._refuse(f"hold a {meta.get('search')!r} search, not {self.search!r}. Pass "
                                '--config.overwrite=True to start over, or use another --workdir.')
        self.stages, self.finished = dict(meta['stages']), bool(meta['finished'])
        self.training = ck.TrainingProgress(**meta['training']) if meta.get('training') else None
        self.final_specs, self.arrays = meta.get('final_specs') or {}, arrays
        self.history = records_lib.History(**meta['history'])
        self.history.write(self.workdir)
        inside = f'; inside {self.training.stage!r} at step {self.training.step}' if self.training else ''
        logging.info('Resuming from checkpoint: %d stage(s) done (the last: %r)%s.', len(self.stages),
                     next(reversed(self.stages), None), inside)
        return True

    def _refuse(self, why: str) -> bool:
        if not self._overwrite:
            raise ck.CheckpointError(f'The checkpoints in {self.checkpointer.directory} {why}')
        return self._start_over(why)

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
        if not ck.is_finished(meta) or ck.ArrayKey.FINAL not in arrays:
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
