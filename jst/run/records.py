"""Run records: ``summary.json`` (one record per round and control), ``metrics.jsonl``, TensorBoard.

``summary.json`` is a JSON list; every record has at least the fields in
``SUMMARY_FIELDS``. Reports read it; later versions add fields but never
rename these. ``History`` is the run's records so far: it is checkpointed with
the run and rewritten to the workdir after every round.
"""

from __future__ import annotations

import dataclasses
import json
import os
import typing
from typing import Any, Iterable, Optional, Sequence, TypedDict, Union

from absl import logging

from jst.models import specs
from jst.ops import masks as masks_lib
from jst.run import workdir as workdir_lib



class RoundRecord(TypedDict, total=False):
    """One round's (or control's) record in ``summary.json``: every record has ``SUMMARY_FIELDS``; accuracies are
    at the round's early-stopping point (minimum validation loss); ``juvenility`` holds the start-of-round
    measures (``start``, ``end``, ``learning_potential``, seconds) when diagnostics ran."""

    round: int
    method: str
    control: str
    variant: str
    dataset: str  # the dataset's name ('mnist'), without its variants: see ``permute_pixels``
    permute_pixels: bool  # the permuted-pixel variant (a fixed permutation from config.split_seed)
    seed: int
    architecture: str
    fraction_remaining: float
    params_remaining: int
    val_accuracy: float
    test_accuracy: float
    best_step: int
    cumulative_steps: int
    val_loss: float
    test_loss: float
    final_val_accuracy: float
    final_test_accuracy: float
    steps: int
    seconds: float
    diverged: bool
    start_val_accuracy: Optional[float]
    start_test_accuracy: Optional[float]
    juvenility: Optional[dict[str, Any]]
    spec: dict[str, Any]
    data_backend: str
    layers: dict[str, list]
    growth: str  # the juvenile search's: how it grew, by what, what it probed, why it stopped
    grown_by: Optional[str]
    candidates: Optional[list[dict[str, Any]]]
    stop_reason: Optional[str]


Record = RoundRecord


class StartMeasures(TypedDict, total=False):
    """A round's start (before its first step; checkpointed with its training): the evaluation, and with
    diagnostics the juvenility measures at start and end, the learning potential and their seconds."""

    val_loss: float
    val_accuracy: float
    test_loss: float
    test_accuracy: float
    juvenility: dict[str, Any]
    juvenility_end: dict[str, Any]
    learning_potential: float
    juvenility_seconds: float
    juvenility_wait_seconds: float
SUMMARY_FIELDS = ('round', 'method', 'control', 'dataset', 'seed', 'architecture',
                  'fraction_remaining', 'params_remaining', 'val_accuracy', 'test_accuracy',
                  'best_step', 'cumulative_steps')
EVAL_KEYS = ('val_loss', 'val_accuracy', 'test_loss', 'test_accuracy')


@dataclasses.dataclass
class History:
    """The summary records and per-evaluation metric rows of a run so far."""

    summary: list[Record] = dataclasses.field(default_factory=list)
    metrics: list[Record] = dataclasses.field(default_factory=list)

    def add_round(self, record: Record, start: Optional[StartMeasures], evals: Sequence[dict[str, Any]]) -> None:
        """Appends a round's record, its start evaluation (step 0) and its evaluation rows."""
        self.summary.append(record)
        tags = {k: record[k] for k in ('round', 'method', 'control', 'seed', 'variant')}
        if start:
            self.metrics.append({**tags, 'step': 0, 'train_loss': None, 'train_accuracy': None,
                                 **{k: start[k] for k in EVAL_KEYS}})
        self.metrics.extend({**tags, **e} for e in evals)

    def write(self, workdir: str) -> None:
        write_summary(workdir, self.summary)
        write_metrics(workdir, self.metrics)


def make_record(*, round_index: int, method: str, control: str, variant: str, dataset: str, permute_pixels: bool,
                seed: int, data_backend: str, spec: specs.ModelSpec, params: Any, masks: Any, best: Any, final: Any,
                steps: int, seconds: float, start: Optional[StartMeasures], cumulative_steps: int,
                diverged: bool = False, **extra: Any) -> Record:
    """One ``summary.json`` record: a round's early-stopping point ``best`` and last evaluation ``final``
    (``early_stopping.EvalRecord``), its network's sparsity and size, the start-of-round measures, and whether
    the round's training diverged (``early_stopping.diverged``; such a run ends with a non-zero exit code).
    ``seconds`` is wall-clock since this process started or resumed the training: a resumed one counts its last
    part only, so compare compute by ``steps``, never by ``seconds``."""
    stats = masks_lib.sparsity_stats(masks)
    start = start or {}
    record = {
        'round': round_index, 'method': method, 'control': control, 'variant': variant,
        'dataset': dataset, 'permute_pixels': bool(permute_pixels), 'seed': int(seed), 'architecture': spec.describe(),
        'fraction_remaining': stats['fraction_remaining'],
        'params_remaining': stats['kept'] + masks_lib.count_nonprunable(params, masks),
        'val_accuracy': best.val_accuracy, 'test_accuracy': best.test_accuracy,
        'best_step': best.step, 'cumulative_steps': cumulative_steps,
        'val_loss': best.val_loss, 'test_loss': best.test_loss,
        'final_val_accuracy': final.val_accuracy, 'final_test_accuracy': final.test_accuracy,
        'steps': steps, 'seconds': round(seconds, 3), 'diverged': bool(diverged),
        'start_val_accuracy': start.get('val_accuracy'), 'start_test_accuracy': start.get('test_accuracy'),
        'juvenility': ({'start': start.get('juvenility'), 'end': start.get('juvenility_end'),
                        'learning_potential': start.get('learning_potential'),
                        'seconds': start.get('juvenility_seconds'),
                        'wait_seconds': start.get('juvenility_wait_seconds')}
                       if 'juvenility' in start else None),
        'spec': specs.spec_to_dict(spec), 'data_backend': data_backend,
        'layers': {k: list(v) for k, v in stats['layers'].items()},
    }
    record.update(extra)
    return record


_JSON_TYPES = {int: 'integer', float: 'number', str: 'string', bool: 'boolean', dict: 'object', list: 'array'}


def _json_type(hint: Any) -> list[str]:
    args = typing.get_args(hint)
    if typing.get_origin(hint) is Union:
        return sorted({t for a in args for t in _json_type(a)})
    if hint is type(None):
        return ['null']
    return [_JSON_TYPES[typing.get_origin(hint) or hint]]


def record_schema() -> dict[str, Any]:
    """The JSON schema of a ``RoundRecord`` (draft 2020-12): the fields' types, ``SUMMARY_FIELDS`` required; later
    versions may add fields (``additionalProperties`` stays open)."""
    hints = typing.get_type_hints(RoundRecord)
    return {'$schema': 'https://json-schema.org/draft/2020-12/schema', 'title': 'jst round record',
            'type': 'object', 'required': list(SUMMARY_FIELDS),
            'properties': {k: {'type': _json_type(h)} for k, h in hints.items()}}


def record_problems(record: dict[str, Any]) -> list[str]:
    """Where ``record`` breaks ``record_schema()``: missing required fields and fields of the wrong JSON type."""
    schema = record_schema()
    out = [f'lacks {k!r}' for k in schema['required'] if k not in record]
    kinds = {'integer': lambda v: isinstance(v, int) and not isinstance(v, bool),
             'number': lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
             'string': lambda v: isinstance(v, str), 'boolean': lambda v: isinstance(v, bool),
             'object': lambda v: isinstance(v, dict), 'array': lambda v: isinstance(v, list),
             'null': lambda v: v is None}
    for k, v in record.items():
        allowed = schema['properties'].get(k, {}).get('type')
        if allowed and not any(kinds[t](v) for t in allowed):
            out.append(f'{k!r} is {v!r}, not {" or ".join(allowed)}')
    return out


def write_summary(workdir: str, records: Sequence[Record]) -> None:
    """Rewrites ``summary.json`` (atomically); a record that breaks ``record_schema()`` is refused by field."""
    for r in records:
        problems = record_problems(r)
        if problems:
            raise ValueError(f'summary record of round {r.get("round")} seed {r.get("seed")}: {"; ".join(problems)}')
    workdir_lib.atomic_write_text(os.path.join(workdir, workdir_lib.SUMMARY_FILE),
                                  json.dumps(list(records), indent=1))


PERMUTED_SUFFIX = '_permuted'  # how records before the ``permute_pixels`` field named the variant ('mnist_permuted')


def upgraded(record: dict[str, Any]) -> Record:
    """``record`` as this version writes it: an older record's ``dataset`` 'mnist_permuted' becomes 'mnist' with
    ``permute_pixels`` True (a record without the field was made without permutation)."""
    name = record.get('dataset', '')
    if 'permute_pixels' in record or not isinstance(name, str):
        return record
    permuted = name.endswith(PERMUTED_SUFFIX)
    return {**record, 'dataset': name.removesuffix(PERMUTED_SUFFIX), 'permute_pixels': permuted}


def read_summary_file(path: str) -> list[Record]:
    """The records of a ``summary.json`` at ``path`` ([] when there is none), ``upgraded``: the one reader."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [upgraded(r) for r in json.load(f)]


def read_summary(workdir: str) -> list[Record]:
    return read_summary_file(os.path.join(workdir, workdir_lib.SUMMARY_FILE))


def write_metrics(workdir: str, rows: Iterable[Record]) -> None:
    """Rewrites ``metrics.jsonl`` (atomically) with ``rows``."""
    workdir_lib.atomic_write_text(os.path.join(workdir, workdir_lib.METRICS_FILE),
                                  ''.join(json.dumps(r) + '\n' for r in rows))


def read_metrics(workdir: str) -> list[Record]:
    path = os.path.join(workdir, workdir_lib.METRICS_FILE)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def make_metric_writer(workdir: str) -> Any:
    """A clu TensorBoard ``SummaryWriter`` in ``WORKDIR/tensorboard`` (None without clu/tensorboard/TF:
    the JSON files are always written; None on the other processes of a multi-process run)."""
    if not workdir_lib.is_primary_process():
        return None
    try:
        from clu import metric_writers  # pylint: disable=g-import-not-at-top
        return metric_writers.SummaryWriter(os.path.join(workdir, workdir_lib.TENSORBOARD_DIR))
    except Exception as e:  # pylint: disable=broad-except
        logging.info('TensorBoard summaries off (%s); JSON metrics only.', e)
        return None


def write_round_scalars(writer: Any, record: Record, evals: Sequence[Record]) -> None:
    """Per-evaluation and per-round scalars, tagged ``variant/control/seed_S/name`` (one curve per seed, its steps
    rising), step = cumulative steps."""
    if writer is None:
        return
    prefix = f"{record.get('variant', record['method'])}/{record['control']}/seed_{record['seed']}"
    offset = record['cumulative_steps'] - record.get('steps', 0)
    for e in evals:
        values = {f'{prefix}/{k}': v for k, v in e.items()
                  if k in ('train_loss', 'train_accuracy', 'val_loss', 'val_accuracy', 'test_accuracy')
                  and v is not None and v == v}
        if values:
            writer.write_scalars(offset + int(e['step']), values)
    writer.write_scalars(record['cumulative_steps'], {
        f'{prefix}/round/val_accuracy': record['val_accuracy'],
        f'{prefix}/round/test_accuracy': record['test_accuracy'],
        f'{prefix}/round/fraction_remaining': record['fraction_remaining'],
        f'{prefix}/round/params_remaining': record['params_remaining']})
    writer.flush()


def round_line(r: Record) -> str:
    """One readable line for a finished round."""
    return (f"[{r.get('variant') or r['method']}/{r['control']} seed {r['seed']}] round {r['round']}: "
            f"{r['architecture']}  "
            f"{100 * r['fraction_remaining']:.2f}% weights remaining  "
            f"val {100 * r['val_accuracy']:.2f}%  test {100 * r['test_accuracy']:.2f}%  "
            f"(early-stop step {r['best_step']}, cumulative steps {r['cumulative_steps']})"
            + ('  DIVERGED' if r.get('diverged') else ''))


def diverged_rounds(records: Sequence[Record]) -> list[str]:
    """'method/control seed S round R' of each record marked ``diverged`` (records before the mark: none)."""
    return [f"{r['method']}/{r['control']} seed {r['seed']} round {r['round']}" for r in records if r.get('diverged')]
