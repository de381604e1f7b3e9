"""Each figure kind renders from hand-made records with one distinct legend entry (colour and marker) per line and
axis labels that say what the band is (issue 37: a label bug, a 10-colour cycle for 13 policies)."""

from matplotlib import colors
import numpy as np
import pytest

from jst.analysis import figures

POLICIES = [f'policy_{i:02d}' for i in range(14)]  # more lines than a 10-colour cycle holds


@pytest.fixture
def captured(monkeypatch):
    figs = []

    def keep(fig, path, dpi):
        figs.append(fig)
        return path
    monkeypatch.setattr(figures, '_save', keep)
    return figs


def _legend(ax):
    handles, labels = ax.get_legend_handles_labels()
    styles = []
    for h in handles:
        line = h[0] if isinstance(h, tuple) else getattr(h, 'lines', [h])[0]
        styles.append((tuple(np.round(colors.to_rgba(line.get_color()), 3)), line.get_marker(), line.get_linestyle()))
    return labels, styles


def _assert_distinct(ax, expected):
    labels, styles = _legend(ax)
    assert labels == expected, labels
    assert len(set(styles)) == len(styles), 'two legend entries look alike'


def test_accuracy_vs_sparsity_lines_are_distinct_and_the_band_is_named(captured, tmp_path):
    rows = [{'variant': p, 'method': 'lth', 'control': 'none', 'round': r, 'fraction_remaining': 0.8 ** r,
             'test': 0.9 + 0.001 * i, 'test_ci': 0.01, 'seeds': 2} for i, p in enumerate(POLICIES) for r in range(6)]
    figures.plot_accuracy_vs_sparsity(rows, str(tmp_path / 'a.png'))
    ax = captured[-1].axes[0]
    _assert_distinct(ax, [f'{p} (n=2)' for p in POLICIES])
    assert '95% CI' in ax.get_ylabel() and ax.get_xscale() == 'log'
    few = [dict(r, fraction_remaining=1.0 - 0.05 * r['round']) for r in rows[:12]]  # 100% to 85%: one log tick
    figures.plot_accuracy_vs_sparsity(few, str(tmp_path / 'b.png'))
    ax = captured[-1].axes[0]
    assert ax.get_xscale() == 'linear' and len(ax.get_xticks()) > 2
    band = [c for c in ax.collections][0].get_paths()[0].vertices[:, 1]
    assert band.max() <= 100.0  # a wide band is clipped at 100% accuracy


def test_lineage_legend_names_the_policies_not_the_panels(captured, tmp_path):
    summary = [{'variant': p, 'method': 'juvenile', 'control': 'none', 'round': r, 'params_remaining': 100 * r,
                'spec': {'widths': [128] * (r + 1)}} for p in ('grow_dense_new', 'weight_reset') for r in range(3)]
    figures.plot_lineage(summary, str(tmp_path / 'l.png'))
    fig = captured[-1]
    _assert_distinct(fig.axes[0], ['grow_dense_new', 'weight_reset'])
    assert fig.axes[2].get_ylabel().startswith('parameters remaining')


def test_budget_level_juvenility_and_training_figures_render_distinct_lines(captured, tmp_path):
    curve = {'steps': [1, 2], 'sparse': [1e9, 2e9], 'dense': [2e9, 4e9], 'test': [90, 91], 'ci': [0.5, 0.5]}
    figures.plot_budget_curves({429: [(p, curve) for p in POLICIES]}, str(tmp_path / 'b.png'))
    ax = captured[-1].axes[0]
    _assert_distinct(ax, POLICIES)
    assert '95% CI over seeds' in ax.get_ylabel()
    levels = {'percent': [100, 80, 64], 'test': [98, 98.1, 98.2], 'test_ci': [0.1] * 3, 'steps': [5, 4, 3],
              'steps_ci': [1] * 3}
    figures.plot_level_curves({n: levels for n in ('ticket', 'random re-init', 'random pruning')},
                              str(tmp_path / 'v.png'))
    _assert_distinct(captured[-1].axes[0], ['ticket', 'random re-init', 'random pruning'])
    rows = [{'variant': p, 'round': r, 'grad_norm': 1.0 + r} for p in POLICIES[:3] for r in range(3)]
    figures.plot_juvenility(rows, ['grad_norm'], str(tmp_path / 'j.png'))
    _assert_distinct(captured[-1].axes[0], POLICIES[:3])
    metrics = [{'variant': 'v', 'round': r, 'step': s, 'control': 'none', 'train_accuracy': 0.5, 'val_accuracy': 0.5,
                'train_loss': 1.0 + s, 'val_loss': 1.0 + s} for r in range(2) for s in (1, 2) for _ in range(2)]
    figures.plot_training_curves(metrics, str(tmp_path / 't.png'))
    assert 'sd over seeds' in captured[-1].axes[0].get_ylabel()
