"""Frankle & Carbin (2019): Conv-2/4/6 on CIFAR-10, iterative magnitude pruning.

Pick the network with the config argument: ``--config=configs/cifar10_conv.py:conv6``
(default conv2). Adam 2e-4 / 3e-4 / 3e-4, 20k / 25k / 30k iterations, batch 60;
per level conv layers lose 10% / 10% / 15%, dense layers 20%, the output 10%.
Offline: --config.manual_dir=../shared/datasets/cifar10-jpeg75 (figures from that
copy are "CIFAR-10 (JPEG q75 copy)").
"""

from jst.run import configuration

_HPARAMS = {  # name: (depth, learning rate, iterations, conv rate)
    'conv2': (2, 2e-4, 20_000, 0.10),
    'conv4': (4, 3e-4, 25_000, 0.10),
    'conv6': (6, 3e-4, 30_000, 0.15),
}


def get_config(arg: str = 'conv2'):
    if arg not in _HPARAMS:
        raise ValueError(f'Unknown variant {arg!r}; use one of {sorted(_HPARAMS)}.')
    depth, lr, steps, conv_rate = _HPARAMS[arg]
    c = configuration.default_config()
    c.dataset = 'cifar10'
    c.model = {'family': 'conv', 'conv_channels': (64, 64, 128, 128, 256, 256)[:depth],
               'pool_after': (False, True) * (depth // 2), 'dense_widths': (256, 256),
               'init': 'glorot_normal'}
    c.method = 'lth'
    c.optimizer = 'adam'
    c.learning_rate = lr
    c.batch_size = 60
    c.steps_per_round = steps
    c.eval_every = 1000
    c.num_rounds = 10
    c.pruning = 'imp'
    c.prune_scope = 'layerwise'
    c.prune_fraction = 0.2
    c.prune_rates = {'^conv_': conv_rate, '^output/': 0.1}
    return c
