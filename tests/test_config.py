"""Bad config values fail before any training, with a message naming the field and the fix."""

import os
import stat

import pytest

from jst import configuration as C
from jst import driver
from jst import workdir
from tests.helpers import load_config


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
])
def test_invalid_values_are_named(field, value, message):
    config = load_config('tiny')
    node = config
    *parents, leaf = field.split('.')
    for p in parents:
        node = node[p]
    node[leaf] = value
    with pytest.raises(C.ConfigError, match=message):
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
