"""Report figures (PNG, matplotlib) from summary records and metric rows; no file reading here.

* ``plot_accuracy_vs_sparsity``: test accuracy against % weights remaining,
  one line per (variant, control), mean and 95% CI band over seeds: the classic
  lottery-ticket figure.
* ``plot_training_curves``: the seed paper's curves: train/validation accuracy
  and loss over the steps of each round, one colour per round, one column per
  variant; several seeds as mean and band.
* ``plot_lineage``: depth, width and parameters remaining per round.
* ``plot_juvenility``: each diagnostic at every round's start, per variant.
* ``plot_budget_curves``: a study's test accuracy against cumulative steps, sparse and dense-equivalent
  multiply-adds, one column per budget (``compute.budget_curves``).
* ``plot_level_curves``: a pruning-level study's accuracy and early-stop iteration per level, one line per control.
"""

from __future__ import annotations

import collections
import os
from typing import Any, Sequence

import numpy as np

from jst.run.records import Record


def variant(r: Record) -> str:
    return r.get('variant') or r['method']


def label(r: Record) -> str:
    return variant(r) if r['control'] == 'none' else f"{variant(r)} ({r['control']})"


def _pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend, imported on first use: training and records need no
    matplotlib (GPU boxes without it run every command with ``write_report=False``)."""
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
    import matplotlib.ticker  # pylint: disable=g-import-not-at-top,unused-import
    return plt


MARKERS = ('o', 's', '^', 'D', 'v', 'P', 'X', '*', '<', '>', 'h', 'p')


def style(i: int) -> dict[str, Any]:
    """Line ``i``'s colour (tab20: 20 colours), marker and line style: distinct for any 20 lines, and the
    (colour, marker) pair distinct far beyond."""
    color = _pyplot().get_cmap('tab20')(i % 20)
    return {'color': color, 'marker': MARKERS[i % len(MARKERS)], 'linestyle': ('-', '--', ':', '-.')[(i // 20) % 4]}


def _save(fig: Any, path: str, dpi: int) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    _pyplot().close(fig)
    return path


def plot_accuracy_vs_sparsity(aggregated: Sequence[Record], path: str, title: str = '',
                              x_key: str = 'fraction_remaining') -> str:
    """Test accuracy against % prunable weights remaining (or ``x_key='params_remaining'``), from the rows
    of ``report.aggregate`` (mean and 95% confidence band over seeds)."""
    fig, ax = _pyplot().subplots(figsize=(7, 4.5))
    by_label = collections.defaultdict(list)
    for a in aggregated:
        by_label[label(a)].append(a)
    scale = 100.0 if x_key == 'fraction_remaining' else 1.0
    for i, (name, rows) in enumerate(sorted(by_label.items())):
        rows.sort(key=lambda a: a['round'])  # the trajectory, round by round
        x = np.array([scale * a[x_key] for a in rows])
        y = np.array([100 * a['test'] for a in rows])
        ci = np.nan_to_num(np.array([100 * a['test_ci'] for a in rows]))  # 95% CI half-width (0 for one seed)
        ax.plot(x, y, label=f'{name} (n={rows[0]["seeds"]})', **style(i))
        ax.fill_between(x, np.clip(y - ci, 0, 100), np.clip(y + ci, 0, 100), color=style(i)['color'], alpha=0.2)
    xs = [scale * a[x_key] for a in aggregated]
    if max(xs) < 2 * min(xs):  # few levels close together: a log axis would show one tick
        ax.invert_xaxis()
        ax.set_xlabel('% of prunable weights remaining' if x_key == 'fraction_remaining' else 'parameters remaining')
        return _finish_accuracy_axes(ax, fig, path, title)
    ax.set_xscale('log')
    ticks = [t for t in ((100, 50, 20, 10, 5, 2, 1, 0.5, 0.2) if x_key == 'fraction_remaining' else
                         (1e7, 3e6, 1e6, 3e5, 1e5, 5e4, 2e4, 1e4, 5e3, 2e3, 1e3))]
    lo, hi = ax.get_xlim()
    ax.set_xticks([t for t in ticks if min(lo, hi) <= t <= max(lo, hi)])
    ticker = _pyplot().matplotlib.ticker
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f'{v:,.0f}' if v >= 1 else f'{v:g}'))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.invert_xaxis()
    ax.set_xlabel('% of prunable weights remaining (log scale)' if x_key == 'fraction_remaining'
                  else 'parameters remaining (log scale)')
    return _finish_accuracy_axes(ax, fig, path, title)


def _finish_accuracy_axes(ax: Any, fig: Any, path: str, title: str) -> str:
    ax.set_ylabel('test accuracy at early stopping (%),\nmean and 95% CI band over n seeds')
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
    methods = sorted({variant(m) for m in metrics})
    if not methods:
        raise ValueError('No metric rows to plot.')
    rounds = sorted({m['round'] for m in metrics})
    cmap = _pyplot().get_cmap('viridis', max(len(rounds), 2))
    fig, axes = _pyplot().subplots(len(rows_spec), len(methods), figsize=(5.5 * len(methods), 11),
                             squeeze=False, sharex='col')
    for col, method in enumerate(methods):
        for row, (key, label) in enumerate(rows_spec):
            ax = axes[row][col]
            for ri, rnd in enumerate(rounds):
                pts = collections.defaultdict(list)
                for m in metrics:
                    if variant(m) == method and m['round'] == rnd and m.get(key) is not None:
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
            ax.set_ylabel(f'{label} (mean ± sd over seeds)')
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
    fig, axes = _pyplot().subplots(1, 3, figsize=(14, 4))
    by_label = collections.defaultdict(dict)
    for r in summary:
        if r['control'] != 'none':
            continue
        spec = r.get('spec', {})
        widths = spec.get('widths') or spec.get('block_widths') or spec.get('conv_channels') or []
        by_label[label(r)].setdefault(r['round'], []).append(
            (len(widths), sum(widths), r['params_remaining']))
    ylabels = ('depth (Dense layers before the output / blocks)', 'total hidden width', 'parameters remaining')
    for j, (name, rounds) in enumerate(sorted(by_label.items())):
        xs = sorted(rounds)
        for ax, i, ylabel in zip(axes, range(3), ylabels):
            ax.plot(xs, [np.mean([v[i] for v in rounds[x]]) for x in xs], label=name, **style(j))
            ax.set_xlabel('round')
            ax.set_ylabel(f'{ylabel} (mean over seeds)')
            ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title or 'Architecture lineage')
    return _save(fig, path, 110)


def plot_juvenility(rows: Sequence[Record], factors: Sequence[str], path: str, title: str = '') -> str:
    """Each diagnostic in ``factors`` at the start of every round, per variant (mean over seeds), from
    the rows of ``report.juvenility_rows``."""
    fig, axes = _pyplot().subplots(2, 4, figsize=(16, 7))
    for ax, f in zip(axes.ravel(), factors):
        for j, v in enumerate(sorted({r['variant'] for r in rows})):
            pts = collections.defaultdict(list)
            for r in rows:
                if r['variant'] == v and r.get(f) is not None and np.isfinite(r[f]):
                    pts[r['round']].append(r[f])
            xs = sorted(pts)
            ax.plot(xs, [np.mean(pts[x]) for x in xs], label=v, **style(j))
        ax.set_title(f'{f} (mean over seeds)')
        ax.set_xlabel('round')
        if f in ('grad_snr', 'hessian_trace', 'sharpness'):
            ax.set_yscale('log')
        ax.grid(True, alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title or 'Juvenility diagnostics at the start of each round')
    return _save(fig, path, 100)


def plot_budget_curves(curves: dict[int, list[tuple[str, dict[str, list[float]]]]], path: str) -> None:
    """Test accuracy (mean ± 95% CI) per round against cumulative steps, sparse training multiply-adds and
    dense-equivalent ones (rows); one column per budget, one line per policy; written to ``path``."""
    plt = _pyplot()
    fig, axes = plt.subplots(3, len(curves), figsize=(6 * len(curves), 13), squeeze=False)
    rows = (('steps', 'cumulative training steps'), ('sparse', 'training multiply-adds, sparse (weights kept)'),
            ('dense', 'training multiply-adds, dense-equivalent (all weights)'))
    for col, (budget, lines) in enumerate(curves.items()):
        for i, (policy, c) in enumerate(lines):
            for row, (key, _) in enumerate(rows):
                axes[row][col].errorbar(c[key], c['test'], yerr=c['ci'], capsize=3, label=policy, **style(i))
        for row, (_, xlabel) in enumerate(rows):
            ax = axes[row][col]
            ax.set(xlabel=xlabel, ylabel='test accuracy (%), mean ± 95% CI over seeds',
                   title=f'{budget:,} steps per round')
            ax.set_xscale('log' if row else 'linear')
            ax.xaxis.set_minor_formatter(plt.matplotlib.ticker.NullFormatter())  # decades only: labels collide
            ax.grid(alpha=0.3)
    if axes[0][0].get_legend_handles_labels()[0]:
        axes[0][0].legend(fontsize=8)
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    _save(fig, path, 110)


def plot_level_curves(curves: dict[str, dict[str, list[float]]], path: str) -> None:
    """Test accuracy and early-stop iteration (mean ± 95% CI) against % of weights remaining, one line per
    ``{label: level_study.level_curves(...)}``; written to ``path``."""
    plt = _pyplot()
    fig, (acc, steps) = plt.subplots(1, 2, figsize=(12, 4.5))
    for i, (label_, c) in enumerate(curves.items()):
        acc.errorbar(c['percent'], c['test'], yerr=c['test_ci'], capsize=3, label=label_, **style(i))
        steps.errorbar(c['percent'], c['steps'], yerr=c['steps_ci'], capsize=3, label=label_, **style(i))
    for ax, ylabel in ((acc, 'test accuracy (%)'), (steps, 'early-stop iteration')):
        ax.set(xscale='log', xlabel='% of weights remaining', ylabel=f'{ylabel}, mean ± 95% CI over seeds')
        ax.invert_xaxis()
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    _save(fig, path, 110)
