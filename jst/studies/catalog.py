"""The studies behind docs/results/, as code: each is a base config, seeds, budgets and policies.

``python launch/study.py run NAME`` trains a study's cells; ``python launch/study.py page NAME`` writes its page
from the committed records. A policy is a set of config overrides; ``{budget}`` and ``{total}`` in them stand for
the per-round budget and trainings x budget, ``{source}`` for the workdir of the run a control starts from. The
published studies live in ``studies_mnist`` and ``studies_cifar``; the tests' toy study is here.
"""

from jst.studies import study as study_lib
from jst.studies.catalog_cifar import CIFAR_STUDIES
from jst.studies.catalog_mnist import MNIST_STUDIES

STUDIES = {**MNIST_STUDIES, **CIFAR_STUDIES}


# Studies the tests run (not published): a toy campaign on configs/tiny.py, two seeds per policy run one after
# another, to check that ``launch/study.py run`` resumes a half-finished study to the same records.
TEST_STUDIES = {
    'toy': study_lib.Study(
        name='toy', title='Toy campaign (tests only)', config='configs/tiny.py', first_seed=0, num_seeds=2,
        budgets=(40,), trainings=2, lanes_per_run=1,
        policies=(('lth', '--config.num_rounds=1 --config.eval_every=20 --config.train_limit=1200 '
                   '--config.validation_size=500 --config.checkpoint_min_interval_s=0', 'weight reset'),
                  ('prune_continue', '--config.method=juvenile --config.growth=none --config.num_rounds=1 '
                   '--config.eval_every=20 --config.train_limit=1200 --config.validation_size=500 '
                   '--config.checkpoint_min_interval_s=0', 'prune and continue')),
        comparisons=()),
}
