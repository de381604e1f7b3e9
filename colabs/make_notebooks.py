"""Writes the notebooks in this folder from the cell sources below (outputs stripped).

    python colabs/make_notebooks.py

Edit the cells here, not the .ipynb files, so that notebooks stay reviewable.
"""

import configparser
import os

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = os.path.dirname(os.path.abspath(__file__))


def project_url() -> str:
    """The one place that says where jst is installed from: ``url`` in setup.cfg ('' until it has a home)."""
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(HERE, '..', 'setup.cfg'))
    return cfg.get('metadata', 'url', fallback='').strip()


URL = project_url()
PUBLIC_HOME = f"\n    found.append('git+{URL}')  # the project's public home (setup.cfg url)" if URL else ''
# Cell 1, standard library only: installs jst where it is missing (tests/test_notebooks.py runs it in a fresh venv).
INSTALL = """# Installs jst where it is missing (a fresh Colab runtime). Sources, first found wins: $JST_SOURCE (installed even
# over an existing jst: a wheel, a checkout folder or a pip requirement), a jst wheel uploaded to /content or to
# Drive, a checkout at /content/drive/MyDrive/jst. Make the wheel in a checkout: python -m pip wheel --no-deps -w dist .
# (it carries the library and configs/, as jst.configs).
import glob, importlib, importlib.util, os, subprocess, sys


def jst_source() -> str:
    \"\"\"The first place jst can be installed from, or '' when there is none.\"\"\"
    found = [os.environ.get('JST_SOURCE', '')]
    found += sorted(glob.glob('/content/jst-*.whl') + glob.glob('/content/drive/MyDrive/jst-*.whl'), reverse=True)
    found += [d for d in ('/content/drive/MyDrive/jst',) if os.path.isfile(os.path.join(d, 'setup.cfg'))]""" + \
    PUBLIC_HOME + """
    return next((s for s in found if s), '')


if os.environ.get('JST_SOURCE') or importlib.util.find_spec('jst') is None:
    source = jst_source()
    if not source:
        raise ImportError('jst is not installed here and no source was found: upload a wheel (python -m pip wheel '
                          '--no-deps -w dist . in a checkout) to /content, or set JST_SOURCE to a wheel or checkout.')
    subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', source], check=True)
    importlib.invalidate_caches()
print('jst from', importlib.util.find_spec('jst').origin)"""
SETUP = """import jax

# One knob, from the devices unless JST_NOTEBOOK_SCALE says: 'cpu' (a few minutes), 'gpu' (any accelerator: the
# paper's schedule, 5 seeds), 'ci' (seconds, for tests).
SCALE = os.environ.get('JST_NOTEBOOK_SCALE') or ('cpu' if jax.default_backend() == 'cpu' else 'gpu')
# Runs go where a disconnect does not lose them: Drive when mounted (from google.colab import drive;
# drive.mount('/content/drive')), else ~/jst_runs; JST_WORKDIR_ROOT overrides. Re-running resumes a run.
DRIVE = '/content/drive/MyDrive'
WORKDIR_ROOT = os.environ.get('JST_WORKDIR_ROOT') or os.path.join(
    DRIVE if os.path.isdir(DRIVE) else os.path.expanduser('~'), 'jst_runs')
MANUAL_DIR = os.environ.get('JST_MANUAL_DIR', '')  # offline: folder with the MNIST files; '' = TFDS downloads
print(f'devices {jax.devices()}; SCALE={SCALE!r}; runs under {WORKDIR_ROOT}')"""


def badge(name: str) -> list:
    """An Open-in-Colab badge when the project has a public GitHub home; until then, a line saying how to open it."""
    if not URL.startswith('https://github.com/'):
        return [new_markdown_cell('*Open in Colab*: jst has no public home yet, so no badge. At '
                                  'colab.research.google.com, File → Upload notebook (this file), then upload a jst '
                                  'wheel (`python -m pip wheel --no-deps -w dist .` in a checkout) to `/content`; the '
                                  'first cell installs it.')]
    path = URL.removeprefix('https://github.com/').removesuffix('.git')
    return [new_markdown_cell(f'[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]'
                              f'(https://colab.research.google.com/github/{path}/blob/main/colabs/{name})')]


QUICKSTART = [
    new_markdown_cell('''# jst quickstart: lottery tickets that keep growing

The classic **lottery-ticket** loop (Frankle & Carbin, 2019) trains a network, prunes the smallest weights,
*resets* the survivors to their initial values and retrains: every round starts from scratch.

The **juvenile** (recursive) ticket of arXiv 2109.03862 keeps the learned weights instead: after each round's
training and pruning it *inserts a new layer initialised to the identity* (so the network computes the same
function), and trains and prunes again. This notebook runs both on MNIST, with the control that separates
growth from keeping the trained weights (prune-and-continue on the final architecture), and compares them.

The first cell installs jst when the runtime lacks it. `SCALE` (second cell) follows the devices: on a CPU
runtime a few minutes with 3 seeds; on a GPU/TPU runtime the paper's full schedule with 5 seeds, trained as lanes
of one compiled program (`num_seeds`); `JST_NOTEBOOK_SCALE` overrides it. Results carry 95% confidence
intervals.'''),
    new_code_cell(INSTALL),
    new_code_cell(SETUP),
    new_code_cell('''from jst import driver
from jst.analysis import report
from jst.configs import mnist  # configs/mnist.py: the command line's main run

SETTINGS = {  # (training examples, rounds, steps per round, seeds trained together as lanes of one program)
    'ci': dict(train_limit=3000, num_rounds=2, steps_per_round=60, eval_every=30, num_seeds=2),
    'cpu': dict(train_limit=20000, num_rounds=3, steps_per_round=600, eval_every=100, num_seeds=3),
    'gpu': dict(train_limit=0, num_rounds=5, steps_per_round=1287, eval_every=108, num_seeds=5),
}[SCALE]


def paper_config():
    """configs/mnist.py (the seed paper's MNIST setting, method='compare'), shortened by SETTINGS."""
    c = mnist.get_config()
    c.manual_dir, c.write_report = MANUAL_DIR, False
    c.lth_model.widths = (128,) * (1 + SETTINGS['num_rounds'])  # weight reset starts at growth's final depth
    c.validation_size = 5000 if SCALE != 'ci' else 1000
    for k, v in SETTINGS.items():
        c[k] = v
    return c'''),
    new_markdown_cell('''## Run the paper's question and its control

`train_and_evaluate(config, workdir)` is the function the command line runs
(`python launch/main.py --config=configs/mnist.py`). With `method='compare'` it trains weight reset, the paper's
growth and prune-and-continue on the final architecture (each in `WORKDIR/<policy>`, every seed a lane), then
prints one table and the three paired comparisons in the results pages' wording.'''),
    new_code_cell('''workdir = os.path.join(WORKDIR_ROOT, f'quickstart_{SCALE}')
records = driver.train_and_evaluate(paper_config(), workdir)'''),
    new_markdown_cell('''## Results

`% weights remaining` counts prunable kernels. The growing network gains one identity-initialised layer per
round and never resets; weight reset and prune-and-continue have the final depth from the start.'''),
    new_code_cell('''from IPython.display import Image, Markdown, display
display(Markdown(open(os.path.join(workdir, 'summary.md')).read()))
out = os.path.join(workdir, 'report')
report.write_report([os.path.join(workdir, p) for p in driver.COMPARED_POLICIES], out, 'quickstart')
for name in ('training_curves.png', 'accuracy_vs_params.png'):
    display(Image(os.path.join(out, name)))'''),
    new_markdown_cell('''## What to try next

* `c.new_layer_mask = 'sparse'`: new layers start at the network's current density, so both policies end with the
  same structure and the same number of weights.
* `c.growth = 'search'`: each round, try deepening at every position and widening every layer, probe-train each
  candidate briefly and keep the best on the validation split.
* `launch/report.py WORKDIR...` writes the same report for runs made from the command line.'''),
]

MASKS = [
    new_markdown_cell('''# Add pruning and growth to your own Flax model

This notebook takes a plain Flax MLP and a plain optax loop and adds, with jst's library functions:

1. magnitude pruning with masks kept *beside* the parameters (`jst.ops.masks`),
2. an optax wrapper that keeps pruned weights at exactly zero (two lines),
3. a function-preserving deepening: insert an identity layer into your own module (`jst.ops.expand`).'''),
    new_code_cell(INSTALL),
    new_code_cell(SETUP),
    new_code_cell('''import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jst.data import datasets, readers
from jst.ops import expand, masks, widening

STEPS = {'ci': 30, 'cpu': 600, 'gpu': 2000}[SCALE]
# MNIST with numpy alone (no TensorFlow): the four original files in MANUAL_DIR (downloaded once if unset).
# Offline: set JST_MANUAL_DIR to a folder holding them (e.g. ../shared/datasets/mnist) before starting the kernel.
if not MANUAL_DIR:
    import urllib.request
    MANUAL_DIR = os.path.abspath('mnist')
    os.makedirs(MANUAL_DIR, exist_ok=True)
    for fname in readers.MNIST_FILES.values():
        if not os.path.exists(os.path.join(MANUAL_DIR, fname)):
            try:
                urllib.request.urlretrieve(f'https://storage.googleapis.com/cvdf-datasets/mnist/{fname}',
                                           os.path.join(MANUAL_DIR, fname))
            except OSError as err:
                raise RuntimeError(f'Cannot download {fname} ({err}): offline, set JST_MANUAL_DIR to a folder with '
                                   'the four MNIST files and restart the kernel.') from None
train, test = readers.read_mnist_numpy(MANUAL_DIR)
n = 3000 if SCALE == 'ci' else len(train)
train_x = jnp.asarray(datasets.preprocess(train.images[:n], 'mnist').reshape(n, -1))
train_y = jnp.asarray(train.labels[:n])
test_x = jnp.asarray(datasets.preprocess(test.images, 'mnist').reshape(len(test), -1))
test_y = jnp.asarray(test.labels)


class MLP(nn.Module):
    """Your model: any number of hidden layers."""
    widths: tuple

    @nn.compact
    def __call__(self, x):
        for w in self.widths:
            x = nn.relu(nn.Dense(w)(x))
        return nn.Dense(10)(x)


def accuracy(model, params):
    return float(jnp.mean(jnp.argmax(model.apply({'params': params}, test_x), -1) == test_y))'''),
    new_markdown_cell('## A plain optax training loop, with two added lines'),
    new_code_cell('''tx = masks.keep_pruned_at_zero(optax.adam(1e-3))          # added line 1


def train(model, params, m, steps, opt_state=None, seed=0):
    opt_state = tx.init(params) if opt_state is None else opt_state

    @jax.jit
    def step(params, opt_state, idx):
        def loss(p):
            logits = model.apply({'params': p}, train_x[idx])
            return optax.softmax_cross_entropy_with_integer_labels(logits, train_y[idx]).mean()
        grads = jax.grad(loss)(params)
        updates, opt_state = tx.update(grads, opt_state, params, masks=m)   # added line 2: masks=...
        return optax.apply_updates(params, updates), opt_state

    key = jax.random.key(seed)
    for i in range(steps):
        idx = jax.random.randint(jax.random.fold_in(key, i), (128,), 0, train_x.shape[0])
        params, opt_state = step(params, opt_state, idx)
    return params, opt_state


model = MLP((256,))
params = model.init(jax.random.key(0), train_x[:1])['params']
m = masks.create_masks(params)                     # all kernels prunable; biases get None
params, opt_state = train(model, params, m, STEPS)
print('dense test accuracy:', accuracy(model, params))'''),
    new_markdown_cell('## Prune 80% of every layer by magnitude, keep training'),
    new_code_cell('''m = masks.magnitude_prune(params, m, 0.8)             # exact: round(0.8 * remaining) per layer
params = masks.apply_masks(params, m)
print('after pruning:', accuracy(model, params))
params, opt_state = train(model, params, m, STEPS, opt_state, seed=1)  # Adam's moments carried on
print('after retraining the sparse net:', accuracy(model, params))
print({k: f'{kept}/{total}' for k, (kept, total) in masks.sparsity_stats(m)['layers'].items()})
leaked = masks.map_masked(lambda mm, p: jnp.abs(p[~mm]).max(), m, params)
assert all(float(v) == 0 for v in jax.tree.leaves(leaked)), "pruned weights moved"
'''),
    new_markdown_cell('''## Grow it without changing what it computes

`expand.insert_layer` inserts an identity `Dense(256, 256)` after the hidden layer. With ReLU before it,
`relu(I h + 0) = h`, so the deeper model computes exactly the same function. Flax names layers in order of
creation, so the old output layer `Dense_1` becomes `Dense_2`: the expansion renames it, grows the masks (the new
layer dense, the pruned weights still pruned) and returns a plan with which `expand.extend_optimizer_state`
carries Adam's moments over (zero for the new layer). Every function here is pure and works under `jax.jit` and
`jax.vmap` (e.g. over seeds' keys).'''),
    new_code_cell('''deeper_model = MLP((256, 256))
grown = expand.insert_layer(params, m, 'Dense_0')
before = model.apply({'params': params}, test_x[:256])
after = deeper_model.apply({'params': grown.params}, test_x[:256])
print('max |difference| after deepening:', float(jnp.max(jnp.abs(after - before))))
deeper_state = expand.extend_optimizer_state(tx, opt_state, grown.params, grown.plan)
deeper, _ = train(deeper_model, grown.params, grown.masks, STEPS, deeper_state, seed=2)
print('deeper sparse net, trained on:', accuracy(deeper_model, deeper))'''),
    new_markdown_cell('''Widening works the same way on any `Dense`/`Conv` that feeds another:
`widening.widen_layer(params, m, key, producer='Dense_0', consumer='Dense_1', amount=64)` adds 64 units with
fresh incoming and zero outgoing weights (or Net2Net copies with `GrowthOptions(widen_method='net2net')`).'''),
    new_code_cell('''wide = widening.widen_layer(params, m, jax.random.key(3), producer='Dense_0', consumer='Dense_1', amount=64)
print(float(jnp.max(jnp.abs(MLP((320,)).apply({'params': wide.params}, test_x[:256]) - before))))'''),
]


def write(name, cells):
    nb = new_notebook(cells=badge(name) + cells, metadata={
        'kernelspec': {'display_name': 'Python 3', 'language': 'python', 'name': 'python3'},
        'language_info': {'name': 'python'}, 'colab': {'provenance': []}, 'accelerator': 'GPU'})
    nbformat.write(nb, os.path.join(HERE, name))


if __name__ == '__main__':
    write('quickstart.ipynb', QUICKSTART)
    write('use_masks_in_your_model.ipynb', MASKS)
