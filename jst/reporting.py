"""Run records: ``summary.json`` (one record per round), ``metrics.jsonl``, tables.

``summary.json`` is a JSON list; every record has at least the fields in
``SUMMARY_FIELDS``. Plots, reports and comparisons read it; later versions add
fields but never rename these.
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterable, Sequence

SUMMARY_FIELDS = ('round', 'method', 'control', 'dataset', 'seed', 'architecture',
                  'fraction_remaining', 'params_remaining', 'val_accuracy', 'test_accuracy',
                  'best_step', 'cumulative_steps')
SUMMARY_FILE = 'summary.json'
METRICS_FILE = 'metrics.jsonl'
CONFIG_FILE = 'config.json'


def atomic_write_text(path: str, text: str) -> None:
    """Writes ``text`` to ``path`` via a temporary file and rename: never a half-written file."""
    tmp = f'{path}.tmp.{os.getpid()}'
    with open(tmp, 'w') as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_summary(workdir: str, records: Sequence[dict[str, Any]]) -> None:
    for r in records:
        missing = [k for k in SUMMARY_FIELDS if k not in r]
        if missing:
            raise ValueError(f'summary record lacks {missing}')
    atomic_write_text(os.path.join(workdir, SUMMARY_FILE), json.dumps(list(records), indent=1))


def read_summary(workdir: str) -> list[dict[str, Any]]:
    path = os.path.join(workdir, SUMMARY_FILE)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return json.load(f)


def write_metrics(workdir: str, rows: Iterable[dict[str, Any]]) -> None:
    """Rewrites ``metrics.jsonl`` (atomically) with ``rows``."""
    atomic_write_text(os.path.join(workdir, METRICS_FILE),
                      ''.join(json.dumps(r) + '\n' for r in rows))


def read_metrics(workdir: str) -> list[dict[str, Any]]:
    path = os.path.join(workdir, METRICS_FILE)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def make_metric_writer(workdir: str) -> Any:
    """A clu TensorBoard ``SummaryWriter`` in ``WORKDIR/tensorboard`` (None without clu/tensorboard/TF:
    the JSONL files are always written)."""
    try:
        from clu import metric_writers  # pylint: disable=g-import-not-at-top
        return metric_writers.SummaryWriter(os.path.join(workdir, 'tensorboard'))
    except Exception as e:  # pylint: disable=broad-except
        import logging  # pylint: disable=g-import-not-at-top
        logging.getLogger(__name__).info('TensorBoard summaries off (%s); JSONL metrics only.', e)
        return None


def write_round_scalars(writer: Any, record: dict[str, Any], evals: Sequence[dict[str, Any]]) -> None:
    """Per-evaluation and per-round scalars, tagged ``variant/control/name``, step = cumulative steps."""
    if writer is None:
        return
    prefix = f"{record.get('variant', record['method'])}/{record['control']}"
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


def round_line(r: dict[str, Any]) -> str:
    """One readable line for a finished round."""
    return (f"[{r['method']}/{r['control']}] round {r['round']}: {r['architecture']}  "
            f"{100 * r['fraction_remaining']:.2f}% weights remaining  "
            f"val {100 * r['val_accuracy']:.2f}%  test {100 * r['test_accuracy']:.2f}%  "
            f"(early-stop step {r['best_step']}, cumulative steps {r['cumulative_steps']})")


def summary_table(records: Sequence[dict[str, Any]]) -> str:
    """Markdown table: round, control, architecture, % remaining, val/test accuracy, steps."""
    lines = ['| round | method | control | architecture | % weights remaining | val acc (%) | '
             'test acc (%) | early-stop step | cumulative steps |',
             '|---|---|---|---|---|---|---|---|---|']
    for r in records:
        lines.append(f"| {r['round']} | {r['method']} | {r['control']} | {r['architecture']} | "
                     f"{100 * r['fraction_remaining']:.2f} | {100 * r['val_accuracy']:.2f} | "
                     f"{100 * r['test_accuracy']:.2f} | {r['best_step']} | {r['cumulative_steps']} |")
    return '\n'.join(lines)
