"""A real end-to-end run on MNIST in well under a minute on a 2-core CPU (tests and CI).

LeNet-300-100 on 6,000 training examples, 3 IMP levels of 150 steps.
Offline: --config.manual_dir=../shared/datasets/mnist (or $JST_MANUAL_DIR).
"""

from jst.run import configuration


def get_config():
    c = configuration.default_config()
    c.dataset = 'mnist'
    c.train_limit = 6000
    c.validation_size = 2000
    c.model.widths = (300, 100)
    c.num_rounds = 2
    c.steps_per_round = 150
    c.eval_every = 50
    c.batch_size = 60
    c.learning_rate = 1.2e-3
    c.prune_fraction = 0.5
    c.juvenility = False  # tests that need the diagnostics turn them on
    return c
