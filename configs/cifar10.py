"""The seed paper's CIFAR-10 experiment (arXiv 2109.03862).

Network: 7x7 conv stem 3->8 channels + BN + ReLU, k ResNet BasicBlocks of 8
channels, global average pooling, Dense 8->10. Adam 1e-3, seed 42, 80%
sparsity on the hidden blocks only (stem and output are not pruned), 7 rounds.

* ``method='juvenile'`` (default), ``growth='paper'``: start with no block,
  insert one BasicBlock per round (identity-initialised, see
  ``jst.training.growth.deepen``), never reset weights.
* ``--config.method=lth``: 7 blocks from the start, reset to theta_0 each round.

Choices the paper does not state (same for both policies): batch 128 and
``epochs_per_round`` (default 2; the CPU schedule in the README says what was
run), geometric level schedule reaching 80% at round 7; validation every 88
steps (about 4 times per epoch) for the per-round curves. With the shared copy
use --config.manual_dir=../shared/datasets/cifar10-jpeg75 and label figures
"CIFAR-10 (JPEG q75 copy)".
"""

from jst.run import configuration

NUM_ROUNDS = 7


def get_config():
    c = configuration.default_config()
    c.dataset = 'cifar10'
    c.seed = 42
    c.method = 'juvenile'
    c.growth = 'paper'
    c.model = {'family': 'resnet', 'block_widths': (), 'stem_channels': 8, 'init': 'he_normal'}
    c.lth_model = {'family': 'resnet', 'block_widths': (8,) * NUM_ROUNDS, 'stem_channels': 8,
                   'init': 'he_normal'}
    c.optimizer = 'adam'
    c.learning_rate = 1e-3
    c.batch_size = 128
    c.epochs_per_round = 2.0
    c.eval_every = 88  # ~4 evaluations per epoch of 351 steps, for the paper's per-round curves
    c.num_rounds = NUM_ROUNDS
    c.pruning = 'level'
    c.target_sparsity = 0.8
    c.level_schedule = 'geometric'
    c.prune_include = r'^block_\d+/.*kernel$'
    c.block_init = 'paper'  # the paper's identity (Dirac) kernels; 'zero' is exactly function-preserving
    c.juvenility = False  # diagnostics cost a compile per architecture; on a CPU, turn on explicitly
    return c
