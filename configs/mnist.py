"""The seed paper's MNIST experiment (arXiv 2109.03862, "Juvenile state hypothesis").

Network: Dense 784->128 + ReLU, k hidden Dense(128,128)+ReLU, Dense 128->10;
PyTorch's default init (the paper used PyTorch). Adam 1e-3, seed 42,
cross-entropy, NNI-style level pruning of every Dense kernel, reaching 95%
sparsity at the last of 5 rounds.

* ``method='compare'`` (default): the paper's question and its control, side by
  side: weight reset, growth and prune-and-continue on the final architecture
  (``WORKDIR/weight_reset``, ``WORKDIR/grow``, ``WORKDIR/prune_continue``), 3 seeds
  as lanes of one program each, one table with 95% intervals and the paired
  comparisons in the results pages' wording (about 5 minutes on a 2-core CPU).
* ``--config.method=juvenile``, ``growth='paper'``: the "structure growing
  policy": start with no hidden layer; after each round's training and
  pruning insert one Dense(128,128) with identity weight and zero bias; never
  reset weights. After 5 rounds: 5 hidden layers.
* ``--config.method=lth``: the "weight reset policy" baseline on 5 hidden
  layers from the start, survivors reset to theta_0 each round.

Choices the paper does not state (same for both policies): batch size 128 and
3 epochs (1,287 steps on the 55,000 training examples) per round, a common
short MNIST budget at which the dense net is already near its best validation
loss with Adam 1e-3; the level schedule is geometric (each round removes the
same fraction of the remaining weights, 95% at the last round), as NNI's
lottery-ticket pruner does. 5,000 training examples are held out for
validation (early stopping and any selection); the test set is only reported.
"""

from jst.run import configuration

NUM_ROUNDS = 5


def get_config():
    c = configuration.default_config()
    c.dataset = 'mnist'
    c.seed = 42
    c.num_seeds = 3  # seeds 42, 43, 44 as lanes of one compiled program
    c.method = 'compare'
    c.growth = 'paper'
    c.model.family = 'mlp'
    c.model.widths = (128,)  # the growing policy starts with no hidden layer
    c.model.init = 'torch_default'
    c.lth_model = {'family': 'mlp', 'widths': (128,) * (1 + NUM_ROUNDS), 'init': 'torch_default'}
    c.optimizer = 'adam'
    c.learning_rate = 1e-3
    c.batch_size = 128
    c.epochs_per_round = 3.0
    c.eval_every = 108  # ~4 evaluations per epoch, for the paper's curves (cheap for this MLP)
    c.num_rounds = NUM_ROUNDS
    c.pruning = 'level'
    c.target_sparsity = 0.95
    c.level_schedule = 'geometric'
    c.prune_include = r'(^|/)kernel$'
    return c
