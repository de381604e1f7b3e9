"""Both notebooks run top to bottom (small settings), and are stored without outputs."""

import os

import nbformat
import pytest
from nbclient import NotebookClient

from tests.helpers import REPO

NOTEBOOKS = ['quickstart.ipynb', 'use_masks_in_your_model.ipynb']


@pytest.mark.parametrize('name', NOTEBOOKS)
def test_notebook_runs(name, mnist_dir, monkeypatch, tmp_path):
    monkeypatch.setenv('JST_NOTEBOOK_SCALE', 'ci')
    monkeypatch.setenv('JST_MANUAL_DIR', mnist_dir)
    nb = nbformat.read(os.path.join(REPO, 'colabs', name), as_version=4)
    NotebookClient(nb, timeout=600, kernel_name='python3',
                   resources={'metadata': {'path': str(tmp_path)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == 'code' for o in c.get('outputs', [])
              if o.get('output_type') == 'error']
    assert not errors


@pytest.mark.parametrize('name', NOTEBOOKS)
def test_notebook_outputs_are_stripped(name):
    nb = nbformat.read(os.path.join(REPO, 'colabs', name), as_version=4)
    for cell in nb.cells:
        if cell.cell_type == 'code':
            assert not cell.outputs and cell.execution_count is None


def test_install_source_is_setup_cfg_url():
    """One place says where jst installs from; no badge or address until setup.cfg has one."""
    import configparser  # pylint: disable=g-import-not-at-top
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(REPO, 'setup.cfg'))
    url = cfg.get('metadata', 'url').strip()
    for name in NOTEBOOKS:
        text = open(os.path.join(REPO, 'colabs', name)).read()
        assert 'github.com/jst-research' not in text
        if url:
            assert f'git+{url}' in text and 'colab-badge' in text
        else:
            assert 'colab-badge' not in text and 'pip wheel --no-deps' in text


@pytest.mark.parametrize('name', NOTEBOOKS)
def test_notebook_is_what_make_notebooks_writes(name):
    """The committed notebooks are regenerated from colabs/make_notebooks.py (cell ids aside)."""
    import importlib.util  # pylint: disable=g-import-not-at-top
    spec = importlib.util.spec_from_file_location('make_notebooks', os.path.join(REPO, 'colabs', 'make_notebooks.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cells = module.badge(name) + {'quickstart.ipynb': module.QUICKSTART,
                                  'use_masks_in_your_model.ipynb': module.MASKS}[name]
    stored = nbformat.read(os.path.join(REPO, 'colabs', name), as_version=4)
    assert [(c.cell_type, c.source) for c in stored.cells] == [(c.cell_type, c.source) for c in cells], (
        f'colabs/{name} is stale: run python colabs/make_notebooks.py')
