"""Report figures and tables from one or more workdirs (``summary.json`` + ``metrics.jsonl``).

* ``plot_accuracy_vs_sparsity``: test accuracy against % weights remaining,
  one line per (method, control), mean and std band over seeds: the classic
  lottery-ticket figure.
* ``plot_training_curves``: the seed paper's curves: train/validation accuracy
  and loss over the steps of each round, one colour per round, one column per
  method; several seeds as mean and band.
* ``plot_lineage``: depth, width and parameters remaining per round.
* ``aggregate_table``: per (method, control, round): architecture, % weights
  remaining, val/test accuracy mean ± std over seeds, cumulative steps.
"""

from __future__ import annotations

import collections
import os
from typing import Any, Iterable, Sequence

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import matplotlib.ticker  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

from jst import reporting  # pylint: disable=wrong-import-position

Record = dict[str, Any]


def load_runs(workdirs: Iterable[str]) -> tuple[list[Record], list[Record]]:
    """All summary records and metric rows of ``workdirs`` (each row tagged with its workdir)."""
    summary, metrics = [], []
    for w in workdirs:
        for r in reporting.read_summary(w):
            summary.append({**r, 'workdir': w})
        for m in reporting.read_metrics(w):
            metrics.append({**m, 'workdir': w})
    if not summary:
        raise FileNotFoundError(f'No summary.json in {list(workdirs)}: pass workdirs of finished rounds.')
    return summary, metrics


def _variant(r: Record) -> str:
    return r.get('variant') or r['method']


def _label(r: Record) -> str:
    return _variant(r) if r['control'] == 'none' else f"{_variant(r)} ({r['control']})"


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    a = np.asarray(values, float)
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0


def _save(fig: Any, path: str, dpi: int) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def aggregate(summary: Sequence[Record]) -> list[dict[str, Any]]:
    """Rows per (method, control, round), aggregated over seeds."""
    groups = collections.defaultdict(list)
    for r in summary:
        groups[(_variant(r), r['method'], r['control'], r['round'])].append(r)
    rows = []
    for (variant, method, control, rnd), rs in sorted(groups.items()):
        archs = sorted({r['architecture'] for r in rs})
        val, val_sd = _mean_std([r['val_accuracy'] for r in rs])
        test, test_sd = _mean_std([r['test_accuracy'] for r in rs])
        frac, _ = _mean_std([r['fraction_remaining'] for r in rs])
        steps, _ = _mean_std([r['cumulative_steps'] for r in rs])
        best, _ = _mean_std([r['best_step'] for r in rs])
        rows.append({'variant': variant, 'method': method, 'control': control, 'round': rnd, 'architecture': ' / '.join(archs),
                     'fraction_remaining': frac, 'val': val, 'val_sd': val_sd, 'test': test,
                     'test_sd': test_sd, 'cumulative_steps': steps, 'best_step': best, 'seeds': len(rs),
                     'params_remaining': float(np.mean([r['params_remaining'] for r in rs]))})
    return rows


def aggregate_table(summary: Sequence[Record]) -> str:
    lines = ['| variant | control | round | architecture | % weights remaining | params remaining | '
             'val acc (%) | test acc (%) | early-stop step | cumulative steps | seeds |',
             '|---|---|---|---|---|---|---|---|---|---|---|']
    for a in aggregate(summary):
        lines.append(
            f"| {a['variant']} | {a['control']} | {a['round']} | {a['architecture']} | "
            f"{100 * a['fraction_remaining']:.2f} | {a['params_remaining']:.0f} | "
            f"{100 * a['val']:.2f} ± {100 * a['val_sd']:.2f} | {100 * a['test']:.2f} ± {100 * a['test_sd']:.2f} | "
            f"{a['best_step']:.0f} | {a['cumulative_steps']:.0f} | {a['seeds']} |")
    return '\n'.join(lines)


def plot_accuracy_vs_sparsity(summary: Sequence[Record], path: str, title: str = '',
                              x_key: str = 'fraction_remaining') -> str:
    """Test accuracy against % prunable weights remaining (or ``x_key='params_remaining'``)."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    by_label = collections.defaultdict(list)
    for a in aggregate(summary):
        by_label[_label(a)].append(a)
    scale = 100.0 if x_key == 'fraction_remaining' else 1.0
    for label, rows in sorted(by_label.items()):
        rows.sort(key=lambda a: a['round'])  # the trajectory, round by round
        x = np.array([scale * a[x_key] for a in rows])
        y = np.array([100 * a['test'] for a in rows])
        sd = np.array([100 * a['test_sd'] for a in rows])
        ax.plot(x, y, marker='o', label=f'{label} (n={rows[0]["seeds"]})')
        ax.fill_between(x, y - sd, y + sd, alpha=0.2)
    ax.set_xscale('log')
    ticks = [t for t in ((100, 50, 20, 10, 5, 2, 1, 0.5, 0.2) if x_key == 'fraction_remaining' else
                         (1e7, 3e6, 1e6, 3e5, 1e5, 5e4, 2e4, 1e4, 5e3, 2e3, 1e3))]
    lo, hi = ax.get_xlim()
    ax.set_xticks([t for t in ticks if min(lo, hi) <= t <= max(lo, hi)])
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f'{v:,.0f}' if v >= 1 else f'{v:g}'))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.invert_xaxis()
    ax.set_xlabel('% of prunable weights remaining (log scale)' if x_key == 'fraction_remaining'
                  else 'parameters remaining (log scale)')
    ax.set_ylabel('test accuracy at early stopping (%)')
    ax.set_title(title or 'Test accuracy vs. sparsity')
    ax.grid(True, which='both', alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path, 120)


def plot_training_curves(metrics: Sequence[Record], path: str, title: str = '',
                         control: str = 'none') -> str:
    """Rows: train acc, val acc, train loss, val loss; columns: methods; colour: round."""
    rows_spec = [('train_accuracy', 'train accuracy'), ('val_accuracy', 'validation accuracy'),
                 ('train_loss', 'train loss'), ('val_loss', 'validation loss')]
    metrics = [m for m in metrics if m.get('control', 'none') == control]
    methods = sorted({_variant(m) for m in metrics})
    if not methods:
        raise ValueError('No metric rows to plot.')
    rounds = sorted({m['round'] for m in metrics})
    cmap = plt.get_cmap('viridis', max(len(rounds), 2))
    fig, axes = plt.subplots(len(rows_spec), len(methods), figsize=(5.5 * len(methods), 11),
                             squeeze=False, sharex='col')
    for col, method in enumerate(methods):
        for row, (key, label) in enumerate(rows_spec):
            ax = axes[row][col]
            for ri, rnd in enumerate(rounds):
                pts = collections.defaultdict(list)
                for m in metrics:
                    if _variant(m) == method and m['round'] == rnd and m.get(key) is not None:
                        pts[m['step']].append(m[key])
                if not pts:
                    continue
                steps = np.array(sorted(pts))
                mean = np.array([np.mean(pts[s]) for s in steps])
                sd = np.array([np.std(pts[s]) for s in steps])
                ax.plot(steps, mean, color=cmap(ri), label=f'round {rnd}')
                if max(len(v) for v in pts.values()) > 1:
                    ax.fill_between(steps, mean - sd, mean + sd, color=cmap(ri), alpha=0.15)
            if 'loss' in key:
                ax.set_yscale('log')
            ax.set_ylabel(label)
            ax.grid(True, alpha=0.3)
            if row == 0:
                ax.set_title(method)
            if row == len(rows_spec) - 1:
                ax.set_xlabel('training step within the round')
        axes[0][col].legend(fontsize=7, ncol=2)
    fig.suptitle(title or 'Training curves per round (mean ± std over seeds)')
    return _save(fig, path, 110)


def plot_lineage(summary: Sequence[Record], path: str, title: str = '') -> str:
    """Depth, total hidden width and parameters remaining per round, per method."""
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    by_label = collections.defaultdict(dict)
    for r in summary:
        if r['control'] != 'none':
            continue
        spec = r.get('spec', {})
        widths = spec.get('widths') or spec.get('block_widths') or spec.get('conv_channels') or []
        by_label[_label(r)].setdefault(r['round'], []).append(
            (len(widths), sum(widths), r['params_remaining']))
    for label, rounds in sorted(by_label.items()):
        xs = sorted(rounds)
        for ax, i, name in zip(axes, range(3), ('depth (Dense layers before the output / blocks)', 'total hidden width',
                                                 'parameters remaining')):
            ax.plot(xs, [np.mean([v[i] for v in rounds[x]]) for x in xs], marker='o', label=label)
            ax.set_xlabel('round')
            ax.set_ylabel(name)
            ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title or 'Architecture lineage')
    return _save(fig, path, 110)


JUVENILITY_FACTORS = ('learning_potential', 'grad_norm', 'grad_snr', 'hessian_trace', 'sharpness',
                      'dead_fraction_mean', 'effective_rank_mean', 'weight_mean_abs')


def juvenility_rows(summary: Sequence[Record]) -> list[dict[str, Any]]:
    """One row per (run, round >= 1): diagnostics at the round's start, the round's validation gain
    over the previous round, and the run's final test accuracy."""
    runs = collections.defaultdict(list)
    for r in summary:
        if r['control'] == 'none' and r.get('juvenility'):
            runs[r['workdir']].append(r)
    rows = []
    for rs in runs.values():
        rs.sort(key=lambda r: r['round'])
        final = rs[-1]['test_accuracy']
        for prev, cur in zip(rs, rs[1:]):
            j = cur['juvenility']
            factors = {k: j['start'][k] for k in JUVENILITY_FACTORS if k in (j['start'] or {})}
            factors['learning_potential'] = j.get('learning_potential')
            rows.append({'variant': _variant(cur), 'round': cur['round'], 'workdir': cur['workdir'], **factors,
                         'gain': cur['val_accuracy'] - prev['val_accuracy'], 'final_test': final})
    return rows


def _pearson(x: Sequence[float], y: Sequence[float]) -> float:
    a, b = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    if a.size < 3 or a.std() == 0 or b.std() == 0:
        return float('nan')
    return float(np.corrcoef(a, b)[0, 1])


def _pearson_within(x: Sequence[float], y: Sequence[float], groups: Sequence[Any]) -> float:
    """Pearson r after subtracting each group's mean from x and y (e.g. within the same round index)."""
    a, b, g = np.asarray(x, float), np.asarray(y, float), np.asarray(groups)
    ok = np.isfinite(a) & np.isfinite(b)
    a, b, g = a[ok], b[ok], g[ok]
    for value in np.unique(g):
        sel = g == value
        a[sel] -= a[sel].mean()
        b[sel] -= b[sel].mean()
    return _pearson(a, b)


def juvenility_correlations(rows: Sequence[dict[str, Any]], factor: str) -> tuple[float, float, float]:
    """(r with the round's gain, the same within rounds (round index partialled out), r with final test)."""
    xs = [r.get(factor, float('nan')) for r in rows]
    gains = [r['gain'] for r in rows]
    return (_pearson(xs, gains), _pearson_within(xs, gains, [r['round'] for r in rows]),
            _pearson(xs, [r['final_test'] for r in rows]))


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
        f"{len({r['workdir'] for r in rs})} runs" for g, rs in groups.items()) + ' |'
    lines = [header, '|---' * (1 + len(groups)) + '|']
    for f in JUVENILITY_FACTORS:
        cells = [' / '.join(f'{r:+.2f}' for r in juvenility_correlations(rs, f)) for rs in groups.values()]
        lines.append(f'| {f} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def plot_juvenility(summary: Sequence[Record], path: str, title: str = '') -> str:
    """Each diagnostic at the start of every round, per variant (mean over seeds)."""
    rows = juvenility_rows(summary)
    fig, axes = plt.subplots(2, 4, figsize=(16, 7))
    for ax, f in zip(axes.ravel(), JUVENILITY_FACTORS):
        for v in sorted({r['variant'] for r in rows}):
            pts = collections.defaultdict(list)
            for r in rows:
                if r['variant'] == v and r.get(f) is not None and np.isfinite(r[f]):
                    pts[r['round']].append(r[f])
            xs = sorted(pts)
            ax.plot(xs, [np.mean(pts[x]) for x in xs], marker='o', label=v)
        ax.set_title(f)
        ax.set_xlabel('round')
        if f in ('grad_snr', 'hessian_trace', 'sharpness'):
            ax.set_yscale('log')
        ax.grid(True, alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title or 'Juvenility diagnostics at the start of each round')
    return _save(fig, path, 100)


def write_report(workdirs: Sequence[str], out_dir: str, title: str = 'jst report') -> str:
    """Writes ``report.md`` and PNG figures for ``workdirs`` into ``out_dir``; returns the report path."""
    os.makedirs(out_dir, exist_ok=True)
    summary, metrics = load_runs(workdirs)
    datasets = sorted({r['dataset'] for r in summary})
    suffix = ', '.join(datasets)
    if 'cifar10' in datasets:
        suffix = suffix.replace('cifar10', 'CIFAR-10 (JPEG q75 copy)' if any(
            r.get('data_backend') == 'numpy' for r in summary) else 'cifar10')
    figs = [plot_accuracy_vs_sparsity(summary, os.path.join(out_dir, 'accuracy_vs_sparsity.png'),
                                      f'Test accuracy vs. weights remaining: {suffix}')]
    figs.append(plot_accuracy_vs_sparsity(summary, os.path.join(out_dir, 'accuracy_vs_params.png'),
                                          f'Test accuracy vs. parameters remaining: {suffix}',
                                          x_key='params_remaining'))
    variants = sorted({_variant(m) for m in metrics if m.get('control', 'none') == 'none'})
    chunks = [variants[i:i + 3] for i in range(0, len(variants), 3)]
    for i, chunk in enumerate(chunks):
        name = 'training_curves.png' if len(chunks) == 1 else f'training_curves_{i + 1}.png'
        figs.append(plot_training_curves([m for m in metrics if _variant(m) in chunk],
                                         os.path.join(out_dir, name), f'Training curves per round: {suffix}'))
    figs.append(plot_lineage(summary, os.path.join(out_dir, 'lineage.png'), f'Architecture per round: {suffix}'))
    lines = [f'# {title}', '', f'Data: {suffix}. Runs: {len(set(r["workdir"] for r in summary))} workdir(s).', '',
             aggregate_table(summary), '']
    searches = [r for r in summary if r.get('candidates')]
    if searches:
        lines += ['## Growth steps chosen by the search (validation accuracy of each candidate after its probe)', '']
        for r in searches:
            cands = ', '.join(f"{c['name']}: {100 * c['val_accuracy']:.2f}" for c in r['candidates'])
            lines.append(f"- seed {r['seed']} round {r['round']}: **{r['grown_by']}** ({cands})")
        lines.append('')
    stops = [r for r in summary if r.get('stop_reason')]
    if stops:
        lines += ['Stop reasons: ' + '; '.join(f"seed {r['seed']} {r['method']}: {r['stop_reason']} (round {r['round']})"
                                               for r in stops), '']
    table = juvenility_table(summary)
    if table:
        figs.append(plot_juvenility(summary, os.path.join(out_dir, 'juvenility.png'),
                                    f'Juvenility diagnostics at round start: {suffix}'))
        lines += ['## Juvenility: correlation of each diagnostic with the round\'s validation gain and the '
                  'final test accuracy (Pearson r; n = (run, round) pairs)', '', table, '']
    lines += [f'![{os.path.basename(f)}]({os.path.basename(f)})' for f in figs]
    path = os.path.join(out_dir, 'report.md')
    reporting.atomic_write_text(path, '\n'.join(lines) + '\n')
    return path
