"""Bad config values fail before any training, with a message naming the field and the fix."""

import os
import re
import stat

import pytest

from jst.run import configuration as C
from jst import driver
from jst.run import knob_docs
from jst.run import workdir
from tests.helpers import REPO, load_config, set_fields


def test_invalid_diagnostics_settings_are_named():
    config = load_config('tiny')
    config.juvenility = True
    config.juvenility_minibatches = 1
    with pytest.raises(C.ConfigError, match=r'config.juvenility_minibatches=1 must be >= 2'):
        C.validate_config(config)
    config.juvenility_minibatches, config.juvenility_probe_size = 8, 4
    with pytest.raises(C.ConfigError, match=r'config.juvenility_probe_size=4 must be >= '):
        C.validate_config(config)
    config.juvenility = False  # the switch turns the checks off with the diagnostics
    C.validate_config(config)


@pytest.mark.parametrize('field,value,message', [
    ('dataset', 'imagenet', r"config.dataset='imagenet' is unknown; choose one of"),
    ('method', 'magic', r"config.method='magic' is unknown"),
    ('model.family', 'transformer', r"config.model.family='transformer' is unknown"),
    ('prune_fraction', 1.0, r'config.prune_fraction=1.0 must be in \[0, 1\)'),
    ('prune_fraction', -0.1, r'config.prune_fraction=-0.1 must be in \[0, 1\)'),
    ('target_sparsity', 1.5, r'config.target_sparsity=1.5 must be in \[0, 1\)'),
    ('control', 'random_reinit,bogus', r"config.control has 'bogus'"),
    ('prune_scope', 'local', r"config.prune_scope='local'"),
    ('data_backend', 'torch', r"config.data_backend='torch'"),
    ('batch_size', 0, r'config.batch_size=0 must be positive'),
    ('rewind_step', 500, r'config.rewind_step=500 must be smaller than steps_per_round=150'),
    ('prune_include', '([', r"config.prune_include='\(\[' is not a valid regex"),
    ('train_limit', -5, r'config.train_limit=-5 must be >= 0'),
    ('steps_per_round', -3, r'config.steps_per_round=-3 must be >= 0'),
    ('eval_every', -1, r'config.eval_every=-1 must be >= 0'),
    ('growth', 'search', r"config.growth='search' applies to method='juvenile' only"),
    ('optimizer_state_on_growth', 'reset', r"config.optimizer_state_on_growth='reset' applies to method='juvenile' only; "
     r"config.method='lth' restarts the optimizer every round"),
    ('model.widths', (0, 100), r'config.model.widths=\(0, 100\) must hold positive sizes'),
    ('num_devices', 5, r'config.num_devices=5, but 1 device\(s\) are visible'),
    ('data_order', 'random', r"config.data_order='random' is unknown"),
    ('init_from_masks', 'bogus', r"config.init_from_masks='bogus' is unknown"),
    ('momentum', float('nan'), r'config.momentum=nan must be a finite number'),
    ('momentum', -5.0, r'config.momentum=-5.0 must be in \[0, 1\)'),
    ('noise_scale', float('inf'), r'config.noise_scale=inf must be a finite number'),
    ('learning_rate', float('inf'), r'config.learning_rate=inf must be a finite number'),
    ('epochs_per_round', float('inf'), r'config.epochs_per_round=inf must be a finite number'),
    ('split_seed', -1, r'config.split_seed=-1 must be >= 0'),
    ('seed', 2**40, r'config.seed=1099511627776 must be in \[0, 2\*\*31 - num_seeds\]'),
    ('checkpoint_every_epochs', -1, r'config.checkpoint_every_epochs=-1 must be >= 0'),
    ('checkpoint_min_interval_s', float('nan'), r'config.checkpoint_min_interval_s=nan must be a finite number'),
])
def test_invalid_values_are_named(field, value, message):
    config = set_fields(load_config('tiny'), {field: value})
    with pytest.raises(C.ConfigError, match=message):
        C.validate_config(config)


@pytest.mark.parametrize('overrides,message', [
    ({'method': 'juvenile', 'growth': 'search', 'search.probe_steps': -10}, r'config.search.probe_steps=-10 must be'),
    ({'method': 'juvenile', 'growth': 'search', 'search.widen_by': (-32,)}, r'config.search.widen_by=\(-32,\) must'),
    ({'method': 'juvenile', 'grow_position': 99}, r'config.grow_position=99 is not a place to insert a layer in '
     r'MLP\[300-100-10\]: use -1 \(the end\) or one of \[1, 2\]'),
    ({'method': 'juvenile', 'grow_position': -3}, r'config.grow_position=-3 is not a place'),
    ({'juvenility': True, 'juvenility_rho': float('nan')}, r'config.juvenility_rho=nan must be a finite number'),
    ({'juvenility': True, 'learning_potential_steps': -5}, r'config.learning_potential_steps=-5 must be >= 1'),
    ({'model.init': 'foo'}, r"config.model: Unknown init 'foo'; choose one of"),
    ({'prune_include': 'nomatch'}, r"config.prune_include='nomatch' \(prune_exclude=''\) selects no weight of "
     r"MLP\[300-100-10\]; its parameters are \['hidden_0/bias', 'hidden_0/kernel'"),
    ({'prune_exclude': 'kernel'}, r"config.prune_include=.* \(prune_exclude='kernel'\) selects no weight"),
])
def test_late_failures_are_caught_before_training(overrides, message):
    """Issue 20: values that used to fail after round 0 had trained (or record NaN diagnostics silently)."""
    with pytest.raises(C.ConfigError, match=message):
        C.validate_config(set_fields(load_config('tiny'), overrides))


@pytest.mark.parametrize('field', ['data_dir', 'manual_dir'])
def test_a_data_folder_that_is_a_file_is_refused(field, tmp_path):
    (tmp_path / 'a_file').write_text('')
    config = load_config('tiny')
    config[field] = str(tmp_path / 'a_file')
    with pytest.raises(C.ConfigError, match=f"config.{field}='.*a_file' is a file: give a folder"):
        C.validate_config(config)


@pytest.mark.slow  # trains a run
def test_init_from_an_empty_folder_creates_nothing_there_and_the_corrected_rerun_proceeds(mnist_dir, tmp_path):
    """The probe's ``init_from`` an empty folder created ``checkpoints/`` inside it, and the refused run's
    ``config.json`` then refused the corrected command as another config."""
    empty, work = tmp_path / 'empty', tmp_path / 'work'
    empty.mkdir()
    config = set_fields(load_config('tiny'), {'manual_dir': mnist_dir, 'method': 'juvenile', 'num_rounds': 0,
                                              'init_from': str(empty), 'write_report': False})
    with pytest.raises(C.ConfigError, match='holds no finished run'):
        driver.train_and_evaluate(config, str(work))
    assert not os.listdir(empty)
    config.init_from = ''
    assert driver.train_and_evaluate(config, str(work))[0]['round'] == 0  # nothing trained before: it proceeds


def test_lane_memory_estimate_is_the_stated_formula():
    """MLP 784-128-10: 101,770 parameters, module outputs 128 + 10 (+ the model's own 10) per example; at batch
    128 the evaluation chunk (1,000 examples) is the larger activation term."""
    from jst.models import specs
    from jst.training import train  # pylint: disable=g-import-not-at-top
    spec = specs.MLPSpec((128,))
    assert train.lane_memory_bytes(spec, (28, 28, 1), 128) == 28 * 101_770 + 4 * 148 * 1000
    assert train.lane_memory_bytes(spec, (28, 28, 1), 1000) == 28 * 101_770 + 4 * 148 * 3000


def test_more_seeds_than_memory_holds_are_refused_before_any_work(monkeypatch):
    """The probe's num_seeds=10000 was OOM-killed without a message: now refused up front, naming how many fit."""
    from jst.training import train  # pylint: disable=g-import-not-at-top
    monkeypatch.setattr(train, 'available_memory_bytes', lambda: 200_000_000)
    config = load_config('mnist')
    config.num_seeds = 10_000
    with pytest.raises(C.ConfigError, match=r'config.num_seeds=10000: the lanes need about 83.1 GB .* 8.3 MB per '
                                            r'seed at batch 128.* at most 24 seeds fit'):
        C.validate_config(config)
    config.num_seeds = 24
    C.validate_config(config)
    monkeypatch.setattr(train, 'available_memory_bytes', lambda: None)  # unknown: not checked
    config.num_seeds = 10_000
    C.validate_config(config)


def test_all_shipped_configs_validate():
    for name, arg in [('tiny', None), ('mnist', None), ('cifar10', None), ('mnist_lenet300', None),
                      ('cifar10_conv', 'conv2'), ('cifar10_conv', 'conv4'), ('cifar10_conv', 'conv6')]:
        C.validate_config(load_config(name, arg))


def test_batch_larger_than_split_is_refused(mnist_dir, tmp_path):
    config = load_config('tiny')
    config.manual_dir = mnist_dir
    config.train_limit = 100
    config.batch_size = 200
    with pytest.raises(C.ConfigError, match=r'batch_size=200 is larger than the training split \(100'):
        driver.train_and_evaluate(config, str(tmp_path))


def test_missing_data_names_manual_dir(tmp_path):
    config = load_config('tiny')
    config.manual_dir = str(tmp_path)
    config.data_backend = 'numpy'
    with pytest.raises(Exception, match=r'train-images-idx3-ubyte.gz.*--config.manual_dir'):
        driver.train_and_evaluate(config, str(tmp_path / 'work'))


@pytest.mark.skipif(os.geteuid() == 0, reason='root can write anywhere')
def test_unwritable_workdir(tmp_path):
    locked = tmp_path / 'locked'
    locked.mkdir()
    locked.chmod(stat.S_IREAD | stat.S_IEXEC)
    with pytest.raises(workdir.WorkdirError, match='not writable'):
        workdir.check_writable(str(locked / 'run'))


def test_workdir_that_is_a_file(tmp_path):
    f = tmp_path / 'file'
    f.write_text('x')
    with pytest.raises(workdir.WorkdirError, match=r'workdir .* is not writable.*--workdir'):
        workdir.check_writable(str(f))


@pytest.mark.slow  # launches the CLI
def test_bad_config_writes_nothing_and_prints_one_line(mnist_dir, tmp_path):
    """Finding 7: num_devices=5 on one device fails before data loading and before config.json is
    written (so the corrected rerun is accepted), as one line and exit code 2, no traceback."""
    import subprocess  # pylint: disable=g-import-not-at-top
    import sys  # pylint: disable=g-import-not-at-top
    from tests.helpers import REPO  # pylint: disable=g-import-not-at-top
    workdir = tmp_path / 'work'
    cmd = [sys.executable, os.path.join(REPO, 'launch', 'main.py'), '--config=' + os.path.join(REPO, 'configs', 'tiny.py'),
           f'--config.manual_dir={mnist_dir}', '--config.num_devices=5', f'--workdir={workdir}']
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.returncode == 2
    assert 'jst: ConfigError: config.num_devices=5' in out.stderr and 'Traceback' not in out.stderr
    assert not os.path.exists(workdir / 'config.json')
    out = subprocess.run(cmd + ['--verbosity=1'], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert 'Traceback' in out.stderr  # the traceback on request


def test_divergence_is_warned(caplog):
    """Finding 7: Adam at learning rate 1e6 runs to the end with a huge loss; a warning says so."""
    import functools  # pylint: disable=g-import-not-at-top
    import jax  # pylint: disable=g-import-not-at-top
    import numpy as np  # pylint: disable=g-import-not-at-top
    from jst.data import datasets
    from jst.ops import masks
    from jst.models import networks, specs
    from jst.training import early_stopping, train, train_loop  # pylint: disable=g-import-not-at-top
    rng = np.random.default_rng(0)
    split = lambda n: datasets.Split(rng.integers(0, 256, (n, 8, 8, 1), dtype=np.uint8), rng.integers(0, 10, n).astype(np.int32))
    ds = datasets.Dataset('mnist', split(600), split(100), split(100), 10, 'numpy')
    spec = specs.MLPSpec((32,))
    trainer = train.Trainer(networks.build_model(spec), train.make_optimizer('adam', 1e6), 30,
                            functools.partial(datasets.preprocess, dataset='mnist'))
    variables = networks.init_variables(spec, jax.random.key(0), (8, 8, 1))
    state = train.create_train_state(variables, masks.create_masks(variables['params']), trainer.tx)
    seg = train_loop.make_segment_fn(trainer, 600)
    with caplog.at_level('WARNING'):
        _, records = train_loop.train_steps(seg, state, train.device_data(ds), jax.random.key(1), 0, 40, spe=20,
                                            eval_every=20, label='round 0')
    assert 'training is diverging' in caplog.text
    assert early_stopping.diverged(records, start_val_loss=2.3)


def test_divergence_is_judged_from_the_records_against_the_round_start():
    from jst.training.early_stopping import EvalRecord, diverged  # pylint: disable=g-import-not-at-top
    rec = lambda train_loss, val_loss=2.0: EvalRecord(20, train_loss, 0.1, val_loss, 0.1, float('nan'), float('nan'))
    assert diverged([rec(1.5), rec(1.8e8), rec(2.31)], start_val_loss=2.3)  # spiked, then sat at chance (Adam, lr 1)
    assert not diverged([rec(2.0), rec(0.4), rec(0.1)], start_val_loss=2.3)
    assert not diverged([rec(2000.0)], start_val_loss=2.3)  # under 1000x the start
    assert not diverged([rec(5.0)], start_val_loss=0.0004)  # a near-perfect start: the reference is floored at 0.01
    assert diverged([rec(11.0)], start_val_loss=0.0004)
    assert diverged([rec(3000.0, val_loss=2.0)], start_val_loss=None)  # no step-0 evaluation: the first one
    assert not diverged([], start_val_loss=2.3)


@pytest.mark.slow  # launches the CLI
def test_a_diverged_run_is_marked_and_exits_non_zero(mnist_dir, tmp_path):
    """The probe's lr=100 run ended rc 0 with chance-level records: now each round carries ``diverged`` and the
    command ends with one line and exit code 3, on the first run and on a rerun of the finished run alike."""
    import json  # pylint: disable=g-import-not-at-top
    import subprocess  # pylint: disable=g-import-not-at-top
    import sys  # pylint: disable=g-import-not-at-top
    from tests.helpers import REPO  # pylint: disable=g-import-not-at-top
    cmd = [sys.executable, os.path.join(REPO, 'launch', 'main.py'), '--config=configs/tiny.py',
           f'--config.manual_dir={mnist_dir}', '--config.learning_rate=100', '--config.num_rounds=0',
           f'--workdir={tmp_path / "work"}']
    for _ in range(2):
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)
        assert out.returncode == 3, out.stderr[-2000:]
        assert 'jst: training diverged in' in out.stderr and 'Traceback' not in out.stderr
    with open(tmp_path / 'work' / 'summary.json') as f:
        assert all(r['diverged'] for r in json.load(f))


@pytest.mark.parametrize('args, expected', [
    (['--config=configs/mnst.py'], 'jst: cannot load --config=configs/mnst.py: no such config file'),
    (['--config=configs/tiny.py', '--config.model.nosuch=3'],
     "jst: --config.model.nosuch: the config has no knob 'nosuch'."),
    (['--config=configs/tiny.py', '--config.num_round=3'],
     'the config has no knob \'num_round\'. Did you mean "num_rounds" instead of "num_round"? (every knob and its '
     'values: --config_help'),
    (['--config=configs/cifar10.py:conv8'], 'get_config() takes 0 positional arguments but 1 was given'),
    (['--config=configs/tiny.py', '--config.learning_rate=abc'], "could not convert string to float: 'abc'"),
])
@pytest.mark.slow  # launches the CLI
def test_command_line_mistakes_are_one_line(args, expected, tmp_path):
    """A misspelt config path, an unknown knob or an unparsable value: one line naming it, exit 2, nothing written."""
    import subprocess  # pylint: disable=g-import-not-at-top
    import sys  # pylint: disable=g-import-not-at-top
    from tests.helpers import REPO  # pylint: disable=g-import-not-at-top
    out = subprocess.run([sys.executable, os.path.join(REPO, 'launch', 'main.py'), *args,
                          f'--workdir={tmp_path / "work"}'], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.returncode == 2, out.stderr
    assert expected in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert not os.path.exists(tmp_path / 'work')


@pytest.mark.slow  # launches the CLI
def test_ctrl_c_is_one_line_and_the_run_resumes(mnist_dir, tmp_path):
    """Ctrl-C during training: exit 130 and one line saying how to resume, no traceback."""
    import signal  # pylint: disable=g-import-not-at-top
    import subprocess  # pylint: disable=g-import-not-at-top
    import sys  # pylint: disable=g-import-not-at-top
    import time  # pylint: disable=g-import-not-at-top
    from tests.helpers import REPO  # pylint: disable=g-import-not-at-top
    log = tmp_path / 'stderr.txt'
    with open(log, 'w') as err:
        proc = subprocess.Popen([sys.executable, os.path.join(REPO, 'launch', 'main.py'), '--config=configs/tiny.py',
                                 f'--config.manual_dir={mnist_dir}', '--config.data_backend=numpy',
                                 '--config.steps_per_round=100000', f'--workdir={tmp_path / "work"}'],
                                stderr=err, stdout=subprocess.DEVNULL, cwd=REPO)
        deadline = time.time() + 240
        training = re.compile(r' step \d+/100000 ')  # a progress line: the run is inside its training
        while not training.search(log.read_text()) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail('no exit 120 s after Ctrl-C; its stderr ends:\n' + log.read_text()[-3000:])
        assert code == 130, log.read_text()[-3000:]
    text = log.read_text()
    assert 'jst: interrupted; the last checkpoint' in text and 'rerun the same command' in text
    assert 'Traceback' not in text


def test_a_knob_added_later_does_not_strand_a_run_made_before_it():
    """A run made before ``prune_weights`` existed resumes under the default that reproduces it ('final'); any
    other value is a different run (the campaign hit this when the knob was added mid-campaign)."""
    saved = {'seed': 43, 'method': 'lth'}
    assert workdir.config_differences(saved, {**saved, 'prune_weights': 'final'}) == []
    assert workdir.config_differences(saved, {**saved, 'prune_weights': 'best'}) == [
        "prune_weights: '<absent>' in the workdir, 'best' now"]
    assert workdir.config_differences(saved, {**saved, 'brand_new': 1}) == ["brand_new: '<absent>' in the workdir, 1 now"]


# The top-level knobs of a campaign run saved on 2026-12-04 (cifar10_dense_curve seed 43), before the later ones.
KNOBS_OF_SAVED_RUNS = frozenset((
    'batch_size block_init checkpoint_every_epochs checkpoint_min_interval_s control data_backend data_dir data_order '
    'dataset epochs_per_round eval_every eval_test grow_position growth init_from init_from_weights juvenility '
    'juvenility_background juvenility_hutchinson_samples juvenility_minibatches juvenility_probe_size juvenility_rho '
    'learning_potential_steps learning_rate level_schedule lth_model manual_dir method model momentum name '
    'new_layer_mask noise_scale num_devices num_rounds num_seeds optimizer optimizer_state_on_growth overwrite '
    'permute_pixels prune_exclude prune_fraction prune_include prune_rates prune_scope pruning rewind_step search '
    'seed split_seed step_loop steps_per_round target_sparsity train_limit validation_size widen_method '
    'write_report').split())


def test_every_knob_added_since_saved_runs_names_the_value_that_reproduces_them():
    """A knob added to ``default_config`` without an ``ADDED_KNOBS`` entry strands every run in progress (session 14
    found seed 43 of a campaign refused over three such knobs); each entry must be a value the knob accepts."""
    config = C.default_config()
    added = set(config) - KNOBS_OF_SAVED_RUNS
    assert added <= set(workdir.ADDED_KNOBS), f'add {sorted(added - set(workdir.ADDED_KNOBS))} to ADDED_KNOBS'
    for knob, value in workdir.ADDED_KNOBS.items():
        with config.unlocked():
            config[knob] = value
    C.validate_config(config)


@pytest.mark.parametrize('name', sorted(os.path.splitext(f)[0] for f in os.listdir(os.path.join(REPO, 'configs'))
                                        if f.endswith('.py') and not f.startswith('_')))
def test_config_help_gives_every_knob_a_meaning(name):
    """``--config_help`` lists every (dotted) knob of each config file with its meaning from docs/configs.md."""
    config = load_config(name)
    text = knob_docs.config_help(config, knob_docs.knob_docs(os.path.join(REPO, 'docs', 'configs.md')))
    assert '(no entry in docs/configs.md)' not in text, [l for l in text.splitlines() if 'no entry' in l]
    assert f'--config.model.family={config.model.family!r}' in text
    assert text.count('\n  --config.') + 1 >= len(config.keys())


def test_config_help_names_an_undocumented_knob():
    config = load_config('tiny')
    config.unlock()
    config.brand_new_knob = 1
    text = knob_docs.config_help(config, knob_docs.knob_docs(os.path.join(REPO, 'docs', 'configs.md')))
    assert "--config.brand_new_knob=1\n      (no entry in docs/configs.md)" in text


@pytest.mark.parametrize('model, message', [
    ({'family': 'mlp', 'widths': [1.5]}, r'model.widths\[0\]=1.5 \(mlp\): give a whole number'),
    ({'family': 'resnet', 'stem_channels': 2.7}, r'model.stem_channels=2.7 \(resnet\): give a whole number'),
    ({'family': 'resnet', 'num_blocks': 2}, r'model.num_blocks is not a field of the resnet family \(its fields: '),
    ({'family': 'resnet', 'stem_channels': '8'}, r"model.stem_channels='8' \(resnet\): give a whole number"),
    ({'family': 'conv', 'conv_channels': [8], 'pool_after': [2]}, r'model.pool_after\[0\]=2 \(conv\): give True'),
    ({'family': 'mlp', 'widths': 5}, r'model.widths=5 \(mlp\): give a list of ints'),
    ({'family': 'mlp', 'widths': [8], 'init': 3}, r'model.init=3 \(mlp\): give a name'),
    ({'family': 'transformer'}, r"Unknown model family 'transformer'")])
def test_a_model_value_that_does_not_fit_its_field_is_refused_never_rounded(model, message):
    """Issue 36's trap: ``_coerce`` cast every unknown field to int, so a fractional width was silently truncated."""
    from jst.models import specs  # pylint: disable=g-import-not-at-top
    with pytest.raises(specs.SpecError, match=message):
        specs.spec_from_config(model)
    ok = specs.spec_from_config({'family': 'mlp', 'widths': [128.0, 64], 'num_classes': 10.0})  # JSON's floats
    assert ok.widths == (128, 64) and isinstance(ok.widths[0], int) and ok.num_classes == 10


def test_the_head_follows_the_datasets_classes_and_a_contradicting_model_is_refused(monkeypatch):
    """Issue 36's trap: ``num_classes=10`` was hard-coded in the data and never read, so a 100-class dataset got a
    NaN loss. The head now takes ``readers.DATASETS[dataset].num_classes``; a model that says otherwise is refused."""
    import dataclasses  # pylint: disable=g-import-not-at-top
    from jst.data import readers  # pylint: disable=g-import-not-at-top
    config = load_config('tiny')
    assert C.start_spec(config, 'lth').num_classes == readers.DATASETS['mnist'].num_classes == 10
    wider = dict(readers.DATASETS, mnist=dataclasses.replace(readers.DATASETS['mnist'], num_classes=100))
    monkeypatch.setattr(readers, 'DATASETS', wider)
    assert C.start_spec(config, 'lth').num_classes == 100
    assert C.start_spec(config, 'lth').describe().endswith('-100]')
    config.model.num_classes = 10
    with pytest.raises(C.ConfigError, match=r'config.model.num_classes=10: mnist has 100 classes; drop the field'):
        C.start_spec(config, 'lth')


def test_variants_of_one_config_file_get_their_own_default_workdir():
    """Issue 37: ``configs/cifar10_conv.py:conv2`` and ``:conv4`` both defaulted to ``runs/cifar10_conv``."""
    assert workdir.default_workdir('configs/mnist.py') == os.path.join('runs', 'mnist')
    assert workdir.default_workdir('configs/cifar10_conv.py:conv4') == os.path.join('runs', 'cifar10_conv_conv4')
    assert workdir.default_workdir('configs/cifar10_conv.py:conv2') != workdir.default_workdir(
        'configs/cifar10_conv.py:conv4')


def test_compile_cache_builds_each_entry_once_across_threads_and_refuses_unknown_kinds():
    """The background diagnostics thread and the main thread share one cache: a (kind, architecture) asked for
    by eight threads at once is built once; a build may ask for another entry; an unknown kind names the fix."""
    import threading  # pylint: disable=g-import-not-at-top
    import time  # pylint: disable=g-import-not-at-top
    from jst.models import specs  # pylint: disable=g-import-not-at-top
    from jst.run import compile_cache  # pylint: disable=g-import-not-at-top
    cache, builds, spec = compile_cache.CompileCache(), [], specs.paper_mlp(1, width=8)
    barrier = threading.Barrier(8)

    def slow_build():
        builds.append(1)
        time.sleep(0.05)  # a window for a second thread to build it too, were there no lock
        return object()

    def ask(out, i):
        barrier.wait()
        out[i] = cache.get('eval', spec, lambda: (cache.get('trainer', spec, slow_build), slow_build())[1])

    out = [None] * 8
    threads = [threading.Thread(target=ask, args=(out, i)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(builds) == 2 and len(cache) == 2 and all(o is out[0] for o in out)
    with pytest.raises(ValueError, match="compiled kind 'evaluate' is unknown; add it to CompiledKind"):
        cache.get('evaluate', spec, object)
