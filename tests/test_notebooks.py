"""Both notebooks run top to bottom (small settings), and are stored without outputs; the quickstart runs in a
fresh venv from a locally built wheel, installed by its own first cell."""

import configparser
import json
import os
import shutil
import subprocess
import sys

import nbformat
import pytest
import setuptools
from nbclient import NotebookClient

from tests.helpers import REPO

NOTEBOOKS = ['quickstart.ipynb', 'use_masks_in_your_model.ipynb']
WHEEL_SOURCES = ('setup.cfg', 'pyproject.toml', 'README.md', 'jst', 'configs')
# pip offline and without dependencies: the venvs below take them from this interpreter's site-packages.
OFFLINE_PIP = {'PIP_NO_INDEX': '1', 'PIP_NO_DEPS': '1', 'PIP_FORCE_REINSTALL': '1',
               'PIP_DISABLE_PIP_VERSION_CHECK': '1'}


@pytest.fixture(scope='module')
def wheel(tmp_path_factory) -> str:
    """jst's wheel, built (without network) from a copy of the checkout's packaged files."""
    src, out = tmp_path_factory.mktemp('src'), tmp_path_factory.mktemp('dist')
    for name in WHEEL_SOURCES:
        copy = shutil.copytree if os.path.isdir(os.path.join(REPO, name)) else shutil.copy
        copy(os.path.join(REPO, name), src / name)
    subprocess.run([sys.executable, '-m', 'pip', 'wheel', '-q', '--no-deps', '--no-build-isolation', '-w', str(out),
                    str(src)], check=True, env={**os.environ, **OFFLINE_PIP})
    (path,) = out.glob('jst-*.whl')
    return str(path)


def _venv(path, *, system_site_packages: bool) -> str:
    """A new venv's python."""
    args = [sys.executable, '-m', 'venv'] + (['--system-site-packages'] if system_site_packages else []) + [str(path)]
    subprocess.run(args, check=True)
    return os.path.join(str(path), 'bin', 'python')


def _cells(name: str) -> list:
    return nbformat.read(os.path.join(REPO, 'colabs', name), as_version=4).cells


def _run(nb, tmp_path, kernel_name: str = 'python3') -> None:
    NotebookClient(nb, timeout=600, kernel_name=kernel_name, resources={'metadata': {'path': str(tmp_path)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == 'code' for o in c.get('outputs', [])
              if o.get('output_type') == 'error']
    assert not errors, errors


def test_install_cell_installs_jst_and_its_configs_from_a_wheel_into_a_bare_venv(wheel, tmp_path):
    """The quickstart's first cell (standard library only) installs the wheel where no jst exists."""
    python = _venv(tmp_path / 'venv', system_site_packages=False)
    install = next(c.source for c in _cells('quickstart.ipynb') if c.cell_type == 'code')
    env = {**os.environ, **OFFLINE_PIP, 'JST_SOURCE': wheel}
    out = subprocess.run([python, '-c', install], env=env, capture_output=True, text=True, check=True,
                         cwd=tmp_path).stdout
    assert f'jst from {tmp_path / "venv"}' in out, out
    probe = ("import importlib.util as u; print(u.find_spec('jst.configs.mnist').origin, "
             "u.find_spec('jst.ops.masks').origin)")
    origins = subprocess.run([python, '-c', probe], capture_output=True, text=True, check=True,
                             cwd=tmp_path).stdout.split()
    assert all(o.startswith(str(tmp_path / 'venv')) for o in origins), origins


def test_install_cell_without_a_source_says_how_to_make_one(tmp_path):
    python = _venv(tmp_path / 'venv', system_site_packages=False)
    install = next(c.source for c in _cells('quickstart.ipynb') if c.cell_type == 'code')
    env = {k: v for k, v in os.environ.items() if k != 'JST_SOURCE'}
    run = subprocess.run([python, '-c', install], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode != 0 and 'pip wheel --no-deps -w dist .' in run.stderr.splitlines()[-1], run.stderr


def test_quickstart_runs_headless_in_a_fresh_venv_from_the_wheel(wheel, mnist_dir, monkeypatch, tmp_path):
    """The user's path: a new environment, the wheel, the notebook top to bottom (its first cell installs jst)."""
    python = _venv(tmp_path / 'venv', system_site_packages=True)  # jax & co. as a Colab runtime has them
    kernels = tmp_path / 'kernels' / 'jst-venv'
    kernels.mkdir(parents=True)
    (kernels / 'kernel.json').write_text(json.dumps({
        'argv': [python, '-m', 'ipykernel_launcher', '-f', '{connection_file}'], 'display_name': 'jst venv',
        'language': 'python'}))
    for key, value in {**OFFLINE_PIP, 'JST_SOURCE': wheel, 'JST_NOTEBOOK_SCALE': 'ci', 'JST_MANUAL_DIR': mnist_dir,
                       'JST_WORKDIR_ROOT': str(tmp_path / 'runs'), 'JUPYTER_PATH': str(tmp_path)}.items():
        monkeypatch.setenv(key, value)
    nb = nbformat.read(os.path.join(REPO, 'colabs', 'quickstart.ipynb'), as_version=4)
    _run(nb, tmp_path, kernel_name='jst-venv')
    printed = ''.join(o.get('text', '') for c in nb.cells if c.cell_type == 'code' for o in c.get('outputs', []))
    assert f'jst from {tmp_path / "venv"}' in printed
    assert "SCALE='ci'" in printed and 'Paired over seeds' in printed
    assert os.path.isfile(tmp_path / 'runs' / 'quickstart_ci' / 'grow' / 'summary.json')


def test_masks_notebook_runs(mnist_dir, monkeypatch, tmp_path):
    monkeypatch.setenv('JST_NOTEBOOK_SCALE', 'ci')
    monkeypatch.setenv('JST_MANUAL_DIR', mnist_dir)
    _run(nbformat.read(os.path.join(REPO, 'colabs', 'use_masks_in_your_model.ipynb'), as_version=4), tmp_path)


def test_the_wheel_packages_every_jst_package_and_the_configs():
    """setup.cfg lists packages by hand (configs/ is mapped to jst.configs); a new jst subpackage must join it."""
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(REPO, 'setup.cfg'))
    listed = cfg.get('options', 'packages').split()
    found = setuptools.find_packages(REPO, include=['jst', 'jst.*'])
    assert sorted(listed) == sorted(found + ['jst.configs']), 'add the new package to setup.cfg [options] packages'


@pytest.mark.parametrize('name', NOTEBOOKS)
def test_notebook_outputs_are_stripped(name):
    nb = nbformat.read(os.path.join(REPO, 'colabs', name), as_version=4)
    for cell in nb.cells:
        if cell.cell_type == 'code':
            assert not cell.outputs and cell.execution_count is None


def test_install_source_is_setup_cfg_url():
    """One place says where jst installs from; no badge or address until setup.cfg has one."""
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
