"""Frankle & Carbin (2019): LeNet-300-100 on MNIST, iterative magnitude pruning.

Adam 1.2e-3, batch 60, 50k iterations per level, 20% of the hidden layers'
and 10% of the output layer's remaining weights pruned per level, reset to
theta_0, Glorot init. 12 levels reach ~7% of weights (0.8^12 hidden).
Shorter schedules: --config.steps_per_round=5000. Controls (same masks, random
re-init; random masks): --config.control=random_reinit,random_prune.
"""

from jst.run import configuration


def get_config():
    c = configuration.default_config()
    c.dataset = 'mnist'
    c.model.family = 'mlp'
    c.model.widths = (300, 100)
    c.model.init = 'glorot_normal'
    c.method = 'lth'
    c.optimizer = 'adam'
    c.learning_rate = 1.2e-3
    c.batch_size = 60
    c.steps_per_round = 50_000
    c.eval_every = 500  # F&C evaluate every 100 iterations; 500 keeps evaluation < 10% of the time
    c.num_rounds = 12
    c.pruning = 'imp'
    c.prune_scope = 'layerwise'
    c.prune_fraction = 0.2
    c.prune_rates = {'^output/': 0.1}
    c.control = 'random_reinit'
    return c
