"""Reports from records only: tables (one run, or aggregated over seeds and workdirs), juvenility
correlations, and ``write_report`` (``report.md`` + the figures of ``jst.analysis.figures``).

* ``summary_table``: one run's records as a Markdown table.
* ``aggregate_table``: per (variant, control, round): architecture, % weights
  remaining, val/test accuracy mean ± std over seeds, cumulative steps.
* ``juvenility_table``: Pearson r of each start-of-round diagnostic with the
  round's validation gain (pooled and within rounds) and the final test accuracy (study pages, beside
  ``juvenility_clustered_table``, the run report's, with intervals over runs).
"""

from __future__ import annotations

import collections
import json
import os
from typing import Any, Iterable, Sequence

import numpy as np
from absl import logging

from jst import errors
from jst.analysis import figures
from jst.analysis import paired
from jst.analysis import statistics
from jst.run import records
from jst.run import workdir as workdir_lib
from jst.run.records import Record


class ReportError(errors.UserError, ValueError):
    """Runs that cannot be reported together, or a record file that cannot be read; names the files."""


def _read_json(path: str, lines: bool = False) -> Any:
    try:
        with open(path) as f:
            return [json.loads(l) for l in f if l.strip()] if lines else json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ReportError(f'{path} is not valid JSON ({e}); rerun that workdir\'s command to rebuild its '
                          'records from the checkpoint.') from e


def _run_identity(workdir: str, summary: Sequence[Record]) -> tuple[str, dict[str, Any]]:
    """(variant, the config fields that define the run apart from seed and name) of one workdir."""
    path = os.path.join(workdir, workdir_lib.CONFIG_FILE)
    if not os.path.exists(path):
        raise ReportError(f'{path} is missing, so {workdir} cannot be checked against the other runs (they could '
                          'differ in any knob): rerun that workdir\'s command, which rewrites it from the checkpoint.')
    config = _read_json(path)
    variant = config.get('name') or config.get('method') or figures.variant(summary[0])
    fields = {k: v for k, v in workdir_lib.run_fields(config).items() if k not in ('seed', 'num_seeds', 'name')}
    return variant, fields


def check_comparable(runs: dict[str, list[Record]]) -> None:
    """Refuses to aggregate runs of one variant that differ in anything but the seed, or repeat a seed."""
    by_variant: dict[str, list[tuple[str, dict[str, Any], set[int]]]] = collections.defaultdict(list)
    for w, summary in runs.items():
        variant, fields = _run_identity(w, summary)
        by_variant[variant].append((w, fields, {r['seed'] for r in summary}))
    for variant, members in by_variant.items():
        first_dir, first_fields, _ = members[0]
        seen: dict[int, str] = {}
        for w, fields, seeds in members:
            diffs = workdir_lib.config_differences(first_fields, fields)
            if diffs:
                raise ReportError(f'Variant {variant!r}: {w} and {first_dir} are runs of different configs '
                                  f'({"; ".join(d.replace(" in the workdir", f" in {first_dir}") for d in diffs)}). '
                                  'Give them different --config.name values, or report them separately.')
            for seed in sorted(seeds):
                if seed in seen:
                    raise ReportError(f'Variant {variant!r}: seed {seed} appears twice ({seen[seed]} and {w}); '
                                      'each seed may be counted once.')
                seen[seed] = w


def load_runs(workdirs: Iterable[str]) -> tuple[list[Record], list[Record]]:
    """All summary records and metric rows of ``workdirs`` (each tagged with its workdir), after checking
    that runs of one variant differ only in their seed."""
    runs, metrics = {}, []
    for w in workdirs:
        path = os.path.join(w, workdir_lib.SUMMARY_FILE)
        if not os.path.exists(path):
            raise ReportError(f'{path} does not exist: pass workdirs of runs with finished rounds (a rerun of the '
                              'run\'s command rebuilds it from the checkpoint).')
        if w in runs:
            raise ReportError(f'{w} is given twice.')
        runs[w] = [{**records.upgraded(r), 'workdir': w} for r in _read_json(path)]
        holder = workdir_lib.running_holder(w)
        if holder:
            logging.warning('%s is still running (%s): the report shows its finished rounds only.', w, holder)
        mpath = os.path.join(w, workdir_lib.METRICS_FILE)
        if os.path.exists(mpath):
            metrics += [{**m, 'workdir': w} for m in _read_json(mpath, lines=True)]
    runs = {w: s for w, s in runs.items() if s}
    if not runs:
        raise ReportError(f'No records in {list(workdirs)}: pass workdirs of finished rounds.')
    check_comparable(runs)
    return [r for s in runs.values() for r in s], metrics


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    a = np.asarray(values, float)
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0


ci95 = statistics.ci95  # t-based 95% CI half-width over seeds


def summary_table(records_: Sequence[Record]) -> str:
    """Markdown table of one run: round, control, architecture, % remaining, val/test accuracy, steps."""
    lines = ['| round | method | control | architecture | % weights remaining | val acc (%) | '
             'test acc (%) | early-stop step | cumulative steps |',
             '|---|---|---|---|---|---|---|---|---|']
    for r in records_:
        lines.append(f"| {r['round']} | {r['method']} | {r['control']} | {r['architecture']} | "
                     f"{100 * r['fraction_remaining']:.2f} | {100 * r['val_accuracy']:.2f} | "
                     f"{100 * r['test_accuracy']:.2f}{' (diverged)' if r.get('diverged') else ''} | "
                     f"{r['best_step']} | {r['cumulative_steps']} |")
    return '\n'.join(lines)


def aggregate(summary: Sequence[Record]) -> list[dict[str, Any]]:
    """Rows per (method, control, round), aggregated over seeds."""
    groups = collections.defaultdict(list)
    for r in summary:
        groups[(figures.variant(r), r['method'], r['control'], r['round'])].append(r)
    rows = []
    for (variant, method, control, rnd), rs in sorted(groups.items()):
        archs = sorted({r['architecture'] for r in rs})
        val, val_sd = _mean_std([r['val_accuracy'] for r in rs])
        test, test_sd = _mean_std([r['test_accuracy'] for r in rs])
        val_ci, test_ci = ci95([r['val_accuracy'] for r in rs]), ci95([r['test_accuracy'] for r in rs])
        frac, _ = _mean_std([r['fraction_remaining'] for r in rs])
        steps, _ = _mean_std([r['cumulative_steps'] for r in rs])
        best, _ = _mean_std([r['best_step'] for r in rs])
        starts = [r['start_val_accuracy'] for r in rs if r.get('start_val_accuracy') is not None]
        rows.append({'variant': variant, 'method': method, 'control': control, 'round': rnd,
                     'architecture': ' / '.join(archs),
                     'fraction_remaining': frac, 'val': val, 'val_sd': val_sd, 'test': test,
                     'test_sd': test_sd, 'val_ci': val_ci, 'test_ci': test_ci, 'cumulative_steps': steps,
                     'best_step': best, 'seeds': len(rs),
                     'start_val': float(np.mean(starts)) if starts else float('nan'),
                     'params_remaining': float(np.mean([r['params_remaining'] for r in rs]))})
    return rows


def _mean_ci(mean: float, sd: float, ci: float) -> str:
    """'91.23 ± 0.45 (sd 0.20)' in %: mean ± 95% CI half-width; the mean alone for one seed."""
    return f'{100 * mean:.2f}' if np.isnan(ci) else f'{100 * mean:.2f} ± {100 * ci:.2f} (sd {100 * sd:.2f})'


def aggregate_table(summary: Sequence[Record]) -> str:
    """Per (variant, control, round): accuracies as mean ± 95% CI half-width (t, over seeds) and std."""
    lines = ['| variant | control | round | architecture | % weights remaining | params remaining | '
             'val acc (%): mean ± 95% CI | test acc (%): mean ± 95% CI | val acc at round start (%) | '
             'early-stop step | cumulative steps | seeds |', '|---|---|---|---|---|---|---|---|---|---|---|---|']
    for a in aggregate(summary):
        lines.append(
            f"| {a['variant']} | {a['control']} | {a['round']} | {a['architecture']} | "
            f"{100 * a['fraction_remaining']:.2f} | {a['params_remaining']:.0f} | "
            f"{_mean_ci(a['val'], a['val_sd'], a['val_ci'])} | {_mean_ci(a['test'], a['test_sd'], a['test_ci'])} | "
            f"{100 * a['start_val']:.1f} | {a['best_step']:.0f} | {a['cumulative_steps']:.0f} | {a['seeds']} |")
    bad = records.diverged_rounds(summary)  # included above; the `diverged` field of summary.json
    return '\n'.join(lines + (['', f'**Diverged**: {", ".join(bad)}.'] if bad else []))


JUVENILITY_CLUSTERED_NOTE = ('Computed inside each run (seed) and averaged over the runs, r [95% CI] with the runs '
                             'as the sample (pooled (run, round) pairs are not independent: see the juvenility '
                             'study page, `docs/results/`); n/a below 3 runs.')
JUVENILITY_FACTORS = ('learning_potential', 'grad_norm', 'grad_snr', 'hessian_trace', 'sharpness',
                      'dead_fraction_mean', 'effective_rank_mean', 'weight_mean_abs')


def juvenility_rows(summary: Sequence[Record]) -> list[dict[str, Any]]:
    """One row per (run, round >= 1): diagnostics at the round's start, the round's validation gain
    over the previous round, and the run's final test accuracy."""
    runs = collections.defaultdict(list)
    for r in summary:  # a run is a (workdir, seed): a workdir of ``num_seeds`` lanes holds several
        if r['control'] == 'none' and r.get('juvenility'):
            runs[(r.get('workdir', figures.variant(r)), r.get('seed'))].append(r)
    rows = []
    for key, rs in runs.items():
        rs.sort(key=lambda r: r['round'])
        final = rs[-1]['test_accuracy']
        for prev, cur in zip(rs, rs[1:]):
            j = cur['juvenility']
            factors = {k: j['start'][k] for k in JUVENILITY_FACTORS if k in (j['start'] or {})}
            factors['learning_potential'] = j.get('learning_potential')
            rows.append({'variant': figures.variant(cur), 'round': cur['round'], 'run': key, **factors,
                         'gain': cur['val_accuracy'] - prev['val_accuracy'], 'final_test': final})
    return rows


def juvenility_correlations(rows: Sequence[dict[str, Any]], factor: str) -> tuple[float, float, float]:
    """(r with the round's gain, the same within rounds (round index partialled out), r with final test)."""
    xs = [r.get(factor, float('nan')) for r in rows]
    gains = [r['gain'] for r in rows]
    return (statistics.pearson(xs, gains), statistics.pearson_within(xs, gains, [r['round'] for r in rows]),
            statistics.pearson(xs, [r['final_test'] for r in rows]))


def juvenility_table(summary: Sequence[Record]) -> str:
    """Pearson correlation of each diagnostic (at a round's start) with that round's validation gain
    (also within rounds, removing the round-index trend) and with the run's final test accuracy,
    pooled and per variant, with the number of (run, round) pairs."""
    rows = juvenility_rows(summary)
    if not rows:
        return ''
    groups = {'all': rows}
    for v in sorted({r['variant'] for r in rows}):
        groups[v] = [r for r in rows if r['variant'] == v]
    header = '| factor (at round start) | ' + ' | '.join(
        f'{g}: r(gain) / r(gain, within round) / r(final test), n={len(rs)} pairs of '
        f"{len({r['run'] for r in rs})} runs" for g, rs in groups.items()) + ' |'
    lines = [header, '|---' * (1 + len(groups)) + '|']
    for f in JUVENILITY_FACTORS:
        cells = [' / '.join(f'{r:+.2f}' if np.isfinite(r) else 'n/a' for r in juvenility_correlations(rs, f))
                 for rs in groups.values()]
        lines.append(f'| {f} | ' + ' | '.join(cells) + ' |')
    text = '\n'.join(lines)
    if 'n/a' in text:
        text += ('\n\nn/a: a correlation needs >= 3 values with a spread (>= 3 runs for r with the final test '
                 'accuracy, which each run has once; >= 3 (run, round) pairs otherwise).')
    return text


def juvenility_clustered_table(summary: Sequence[Record]) -> str:
    """Per policy: each diagnostic's within-round correlation with the round's gain computed per run (seed) and
    averaged over runs (``statistics.clustered_correlation``), 'r [95% CI]' with the runs as the sample."""
    rows = juvenility_rows(summary)
    variants = sorted({r['variant'] for r in rows})
    lines = ['| factor (at round start) | ' + ' | '.join(variants) + ' |', '|---' * (1 + len(variants)) + '|']
    for f in JUVENILITY_FACTORS:
        cells = []
        for v in variants:
            rs = [r for r in rows if r['variant'] == v]
            c = statistics.clustered_correlation([r.get(f, float('nan')) for r in rs], [r['gain'] for r in rs],
                                                 [r['run'] for r in rs], [r['round'] for r in rs])
            cells.append(f'{c.r:+.2f} [{c.ci_low:+.2f}, {c.ci_high:+.2f}] ({c.clusters} runs)'
                         if np.isfinite(c.ci_low) else 'n/a')
        lines.append(f'| {f} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines) if rows else ''


def write_report(workdirs: Sequence[str], out_dir: str, title: str = 'jst report') -> str:
    """Writes ``report.md`` and PNG figures for ``workdirs`` into ``out_dir``; returns the report path."""
    os.makedirs(out_dir, exist_ok=True)
    summary, metrics = load_runs(workdirs)
    datasets = sorted({r['dataset'] for r in summary})
    suffix = ', '.join(datasets)
    if 'cifar10' in datasets:
        suffix = suffix.replace('cifar10', 'CIFAR-10 (JPEG q75 copy)' if any(
            r.get('data_backend') == 'numpy' for r in summary) else 'cifar10')
    rows = aggregate(summary)
    figs = [figures.plot_accuracy_vs_sparsity(rows, os.path.join(out_dir, 'accuracy_vs_sparsity.png'),
                                              f'Test accuracy vs. weights remaining: {suffix}'),
            figures.plot_accuracy_vs_sparsity(rows, os.path.join(out_dir, 'accuracy_vs_params.png'),
                                              f'Test accuracy vs. parameters remaining: {suffix}',
                                              x_key='params_remaining')]
    variants = sorted({figures.variant(m) for m in metrics if m.get('control', 'none') == 'none'})
    chunks = [variants[i:i + 3] for i in range(0, len(variants), 3)]
    for i, chunk in enumerate(chunks):
        name = 'training_curves.png' if len(chunks) == 1 else f'training_curves_{i + 1}.png'
        figs.append(figures.plot_training_curves([m for m in metrics if figures.variant(m) in chunk],
                                         os.path.join(out_dir, name), f'Training curves per round: {suffix}'))
    figs.append(figures.plot_lineage(summary, os.path.join(out_dir, 'lineage.png'),
                                     f'Architecture per round: {suffix}'))
    lines = [f'# {title}', '', f'Data: {suffix}. Runs: {len(set(r["workdir"] for r in summary))} workdir(s).', '',
             aggregate_table(summary), '']
    chosen = [r for r in summary if r.get('candidates')]
    if chosen:
        lines += ['## Growth steps chosen by the search (validation accuracy of each candidate after its probe)', '']
        for r in chosen:
            cands = ', '.join(f"{c['name']}: {100 * c['val_accuracy']:.2f}" for c in r['candidates'])
            lines.append(f"- seed {r['seed']} round {r['round']}: **{r['grown_by']}** ({cands})")
        lines.append('')
    stops = [r for r in summary if r.get('stop_reason')]
    if stops:
        reasons = [f"seed {r['seed']} {r['method']}: {r['stop_reason']} (round {r['round']})" for r in stops]
        lines += ['Stop reasons: ' + '; '.join(reasons), '']
    comparison = paired.paired_against_first(summary)
    if comparison:
        lines += ['## Paired across variants (each against the first workdir given)', '', comparison, '']
    table = juvenility_clustered_table(summary)
    if table:
        figs.append(figures.plot_juvenility(juvenility_rows(summary), JUVENILITY_FACTORS,
                                            os.path.join(out_dir, 'juvenility.png'),
                                            f'Juvenility diagnostics at round start: {suffix}'))
        lines += ['## Juvenility: within-round correlation of each diagnostic with the round\'s validation gain',
                  '', JUVENILITY_CLUSTERED_NOTE, '', table, '']
    lines += [f'![{os.path.basename(f)}]({os.path.basename(f)})' for f in figs]
    path = os.path.join(out_dir, 'report.md')
    workdir_lib.atomic_write_text(path, '\n'.join(lines) + '\n')
    return path
