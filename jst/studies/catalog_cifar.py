"""The CIFAR-10 studies behind docs/results/ (the seed paper's residual net, Frankle & Carbin's Conv-2; CIFAR-10,
JPEG q75 copy): each a base config, seeds, budgets and policies. ``jst.studies.catalog`` collects them.
"""

from jst.analysis import claims
from jst.studies import study as study_lib

CIFAR_FINAL_ARCH = '--config.model.block_widths=(8,8,8,8,8,8,8)'
CIFAR_BUDGET = 702  # steps per round: 2 epochs of 351, a CPU-reduced budget (see cifar10_budget)
CIFAR_EVAL_EVERY = 234  # validation every 2/3 epoch (each costs 5,000 forward passes; test only at new minima)
CIFAR_PILOT_EVAL_EVERY = 117  # three validations per epoch for the budget's curve
CONV2_BUDGET = 3000  # iterations per level: a CPU-reduced schedule (Frankle & Carbin: 20,000)
CIFAR_PILOT_STEPS = 2808  # 8 epochs of 351 steps: the dense network's validation curve (cifar10_budget)
CIFAR_CURVE_STEPS = 40 * 351  # the dense curve the converged study's budget is read from (cifar10_dense_curve)
CIFAR_PREREGISTRATION = 'docs/results/preregistration/cifar10_converged.md'
CIFAR_LONG_CURVE_STEPS = 120 * 351  # the curve extended when the 40-epoch one still improved (cifar10_dense_curve_long)
CIFAR_LONG_PREREGISTRATION = 'docs/results/preregistration/cifar10_dense_curve_long.md'
# The converged study's per-round budget: None until cifar10_dense_curve_long's rule chooses it; then committed with
# the study (``converged_study``) before any of its records, as its pre-registration (step 1) requires; a test checks
# it equals ``pages.chosen_budget`` on the curve's committed records and that git history shows that order.
CIFAR_CONVERGED_BUDGET: int | None = None
# Its pre-registered fallback when compute runs short: these four policies at all five seeds first.
CIFAR_DECISIVE_POLICIES = ('weight_reset', 'prune_continue', 'grow_dense_new', 'dense_same_steps')
CONV2_FULL_BUDGET = 20_000  # Frankle & Carbin's iterations per level (conv2_converged)
CONV2_FULL_LEVELS = 14  # to about 4.6% of weights
CONV2_PREREGISTRATION = 'docs/results/preregistration/conv2_converged.md'
# TOST margin (jst.analysis.claims): CIFAR-10 here sits near 35-70% test accuracy.
CIFAR_MARGIN_FIXED = ('on 2026-11-29, after seed 42\'s records and before any second seed (the first comparison '
                      'needs two)')
CIFAR_MARGIN_WHY = ('at 35-70% test accuracy one point is 2-3% of the remaining error, below the CIFAR-10 '
                    "differences these pages discuss (3-13 points) and Frankle & Carbin's Conv-2 effect (+3.4 points).")

# The policies cifar10_paper (the pilot) and cifar10_converged share, word for word: (name, flags, description).
CIFAR_WEIGHT_RESET = ('weight_reset', '--config.method=lth', 'classic lottery ticket: 7 residual blocks from the '
                      'start, level pruning of the blocks each round to 80% at round 7, survivors reset to theta_0')
CIFAR_PRUNE_CONTINUE = ('prune_continue', f'--config.method=juvenile --config.growth=none {CIFAR_FINAL_ARCH}',
                        'the final architecture (7 blocks) from the start, pruned each round, trained weights kept '
                        '(no reset, no growth): the control for growth')
CIFAR_GROWTH_AND_DENSE = (
    ('grow_dense_new', '--config.method=juvenile',
     'the paper: from the stem alone, prune, then insert one identity-initialised (Dirac) block per round, weights '
     'kept'),
    ('grow_sparse_new', '--config.method=juvenile --config.new_layer_mask=sparse',
     'as the paper, the new block starts at the blocks\' current density'),
    ('dense_same_steps', '--config.method=lth --config.num_rounds=0 --config.steps_per_round={total}',
     'the dense 7-block network trained once for the cumulative steps of the 8 trainings'),
)

CIFAR_STUDIES = {
    'cifar10_budget': study_lib.Study(
        name='cifar10_budget',
        title="Choosing the CIFAR-10 budget: where the paper's dense residual net stops improving on validation "
              '(CIFAR-10, JPEG q75 copy)',
        config='configs/cifar10.py', first_seed=42, num_seeds=3, budgets=(CIFAR_PILOT_STEPS,), trainings=1,
        lanes_per_run=1,
        policies=(('dense', f'--config.method=lth --config.num_rounds=0 --config.eval_every={CIFAR_PILOT_EVAL_EVERY}',
                   'the dense 7-block network (the weight-reset policy\'s round 0), trained once for 8 epochs'),),
        comparisons=(), dense_policy='dense',
        notes=f'''
The seed paper gives no training length per round for CIFAR-10. As for MNIST, we read the budget per round off the
dense network's validation curve: `configs/cifar10.py`'s 7-block residual net (Adam 1e-3, batch 128, 45,000
training images, 351 steps per epoch) trained for 8 epochs with validation every {CIFAR_PILOT_EVAL_EVERY} steps. Its
validation loss still falls at 8 epochs (the sentence and curve below), so no budget that converges fits a 2-core
CPU for 8 trainings x 5 policies x 3 seeds: `cifar10_paper` uses a stated reduced budget of {CIFAR_BUDGET:,} steps
per round and counts its truncated trainings; a converged budget waits for a GPU. Seeds run one process each, one
after another; the page lists the seeds measured so far.
''',
    ),
    'cifar10_dense_curve': study_lib.Study(
        name='cifar10_dense_curve', preregistration=CIFAR_PREREGISTRATION, preregistered_in='28ab1a8',
        chooses_budget=True,
        title="The CIFAR-10 budget, to convergence: the paper's dense residual net for 40 epochs (CIFAR-10, JPEG q75 "
              'copy)',
        config='configs/cifar10.py', first_seed=42, num_seeds=3, budgets=(CIFAR_CURVE_STEPS,), trainings=1,
        lanes_per_run=1,
        policies=(('dense', '--config.method=lth --config.num_rounds=0 --config.eval_every=351',
                   'the dense 7-block network (the weight-reset policy\'s round 0), trained once for 40 epochs, '
                   'validated every epoch'),),
        comparisons=(), dense_policy='dense',
        notes=f'''
Issue 34's budget, chosen before the converged study by the rule its pre-registration (`{CIFAR_PREREGISTRATION}`)
fixed before this study's first record: `jst.studies.compute.budget_from_curve` over this curve's mean validation
loss (the first whole epoch within 2% of its minimum; none while the minimum lies in the curve's last tenth, which
extends the curve instead). `configs/cifar10.py`'s 7-block residual net, Adam 1e-3, batch 128, 45,000 training
images (351 steps per epoch), a fresh batch order each epoch; validation only, test never enters the choice. One
process per seed, one after another, each short enough to finish within one working session on this CPU.
''',
    ),
    'cifar10_dense_curve_long': study_lib.Study(
        name='cifar10_dense_curve_long', preregistration=CIFAR_LONG_PREREGISTRATION, preregistered_in='c5d1ebd',
        chooses_budget=True, budget_if_improving=True,
        title="The CIFAR-10 budget, extended: the paper's dense residual net for 120 epochs (CIFAR-10, JPEG q75 "
              'copy)',
        config='configs/cifar10.py', first_seed=42, num_seeds=3, budgets=(CIFAR_LONG_CURVE_STEPS,), trainings=1,
        lanes_per_run=1,
        policies=(('dense', '--config.method=lth --config.num_rounds=0 --config.eval_every=351',
                   'the dense 7-block network (the weight-reset policy\'s round 0), trained once for 120 epochs, '
                   'validated every epoch'),),
        comparisons=(), dense_policy='dense',
        notes=f'''
`cifar10_dense_curve`'s 40-epoch curve still improved at its end, so the budget rule chose nothing; this study
extends it to 120 epochs under the same rule, as both pre-registrations (`{CIFAR_PREREGISTRATION}`,
`{CIFAR_LONG_PREREGISTRATION}`) fixed before its first record, fallback included (a minimum still in the last
tenth gives the 2% rule's budget anyway, and the converged study's claims become bounds). Same network, optimiser,
data and seeds as `cifar10_dense_curve`; validation only, test never enters the choice. Seed 42 ran with XLA's
convolutions (0.35-0.55 s per step on this project's 2-core CPU, four to six hours); seeds 43-44 run under
`conv_form='auto'`, which on this CPU computes the net's convolutions as space-to-depth convolutions
(`jst/models/convolution.py`: the same math in another summation order, within 1e-5 relative of XLA's on outputs
and gradients, tested), at 0.25-0.28 s per step, about 3.3 hours a seed. Either is longer than a working session,
so seeds run in the background across sessions from workdirs outside the repository (the runner's default,
`~/.cache/jst/studies`), pausing and resuming exactly. Once the rule below gives a budget, `CIFAR_CONVERGED_BUDGET` in
`jst/studies/catalog_cifar.py` is set to it in one commit, which defines `cifar10_converged` (`converged_study`:
the design its pre-registration fixed) before any of that study's records.
''',
    ),
    'cifar10_paper': study_lib.Study(
        name='cifar10_paper',
        title="The seed paper's CIFAR-10 experiment: growing a residual net against its controls "
              '(CIFAR-10, JPEG q75 copy)',
        config='configs/cifar10.py', first_seed=42, num_seeds=3, budgets=(CIFAR_BUDGET,), trainings=8,
        lanes_per_run=1, base_flags=f'--config.eval_every={CIFAR_EVAL_EVERY}',
        policies=(
            CIFAR_WEIGHT_RESET,
            CIFAR_PRUNE_CONTINUE,
            *CIFAR_GROWTH_AND_DENSE,
        ),
        comparisons=(('grow_dense_new', 'weight_reset'), ('grow_sparse_new', 'prune_continue'),
                     ('grow_dense_new', 'prune_continue'), ('prune_continue', 'weight_reset'),
                     ('grow_dense_new', 'dense_same_steps')),
        dense_policy='weight_reset',
        headline=('grow_dense_new', 'weight_reset'),
        headline_question="Does the paper's growth beat the weight-reset lottery ticket on CIFAR-10?",
        equivalence_margin=claims.CIFAR_MARGIN, margin_fixed=CIFAR_MARGIN_FIXED, margin_why=CIFAR_MARGIN_WHY,
        notes=f'''
`configs/cifar10.py` (arXiv 2109.03862's CIFAR-10 setting): 7x7 stem conv 3->8 + BatchNorm, BasicBlocks of 8
channels, global average pooling, Dense 8->10; He init, Adam 1e-3, batch 128; the blocks' kernels level-pruned to
80% sparsity at round 7 (stem and output unpruned); 5,000 training images held out for validation; a fresh batch
order every round; the end-of-round weights are pruned (as the paper and Frankle & Carbin do). Budget: a reduced
one for a 2-core CPU, {CIFAR_BUDGET:,} steps per round ({CIFAR_BUDGET // 351} epochs of 351 steps; the config's
default). The dense 7-block network is still improving on validation well past it (`cifar10_budget.md`), so
rounds are truncated (counted below) and the continuing policies gain from their cumulative steps, which
`prune_continue` and `dense_same_steps` control for; a converged budget needs a GPU. CIFAR-10 here is the JPEG q75
copy (`../shared/datasets/cifar10-jpeg75`): accuracies sit below published CIFAR-10 figures; compare policies with
each other. Seeds run one process each, seed by seed across policies (lanes of vmapped convolutions cost 4.7x
per lane on this CPU: `benchmarks/results/conv_lanes_cpu.md`), two runners side by side (`--shard`).
Validation every {CIFAR_EVAL_EVERY} steps. In the flags, `{{total}}` stands for 8 x the per-round budget.
''',
    ),
    'conv2': study_lib.Study(
        name='conv2',
        title='The lottery-ticket pattern for a conv net: Conv-2 on CIFAR-10 (Frankle & Carbin), reduced schedule '
              '(CIFAR-10, JPEG q75 copy)',
        config='configs/cifar10_conv.py', first_seed=42, num_seeds=3, budgets=(CONV2_BUDGET,), trainings=6,
        lanes_per_run=1, page='levels', equivalence_margin=claims.CIFAR_MARGIN, margin_why=CIFAR_MARGIN_WHY,
        margin_fixed='on 2026-11-29, before any of its records (with the CIFAR-10 margin of cifar10_paper)',
        policies=(
            ('imp', '--config.num_rounds=5 --config.control=random_reinit,random_prune --config.eval_every=500',
             'iterative magnitude pruning with reset to theta_0; controls: the same masks with a fresh random '
             'init (random_reinit), random masks with the same per-layer counts (random_prune)'),
        ),
        comparisons=(),
        notes=f'''
`configs/cifar10_conv.py` (Frankle & Carbin 2019, Figure 5): Conv-2 (3x3 convs of 64 and 64, 2x2 max-pooling,
Dense 256, 256, 10), Glorot init, Adam 2e-4, batch 60; per level the convs lose 10%, the dense layers 20% and the
output 10% of their remaining weights (layerwise magnitude), survivors reset to theta_0. Reduced schedule for a
2-core CPU (one Adam step of Conv-2 takes 157 ms here: `docs/results/speed.md`): {CONV2_BUDGET:,} iterations per
level (F&C: 20,000) with validation every 500, and 5 levels (to 59% of conv and 33% of dense weights), so trainings
are truncated (counted below); F&C's schedule waits for a GPU. Seeds run one process each (lanes of vmapped
convolutions cost 4.7x per lane on this CPU), two runners side by side (`--shard`).
''',
    ),
    'conv2_converged': study_lib.Study(
        name='conv2_converged', preregistration=CONV2_PREREGISTRATION, preregistered_in='ccc98df',
        title="The lottery-ticket pattern for a conv net at Frankle & Carbin's schedule: Conv-2 on CIFAR-10 "
              '(CIFAR-10, JPEG q75 copy)',
        config='configs/cifar10_conv.py', first_seed=42, num_seeds=5, budgets=(CONV2_FULL_BUDGET,), trainings=15,
        lanes_per_run=1, page='levels', equivalence_margin=claims.CIFAR_MARGIN, margin_why=CIFAR_MARGIN_WHY,
        margin_fixed=f'in {CONV2_PREREGISTRATION}, before any of its records',
        policies=(
            ('imp', f'--config.num_rounds={CONV2_FULL_LEVELS} --config.control=random_reinit,random_prune '
                    '--config.eval_every=100',
             'iterative magnitude pruning with reset to theta_0; controls at every level: the same masks with a fresh '
             'random init (random_reinit), random masks with the same per-layer counts (random_prune)'),
        ),
        comparisons=(),
        notes=f'''
As pre-registered in `{CONV2_PREREGISTRATION}` before its first record: `configs/cifar10_conv.py` (Frankle &
Carbin 2019, Figure 5: Conv-2, Glorot init, Adam 2e-4, batch 60) at their {CONV2_FULL_BUDGET:,} iterations per
level with validation every 100, levels 0-{CONV2_FULL_LEVELS} (to about 4.6% of weights), survivors reset to
theta_0, both controls at every level, seeds 42-46. Each seed is 43 trainings, 860,000 Adam steps: about 49 hours
on this project's 2-core CPU (`docs/results/speed.md`), so this study runs on a lent GPU through the GPU pack
(`launch/gpu_check.sh`); `conv2` is its reduced pilot.
''',
    ),
}


def converged_study(budget: int) -> study_lib.Study:
    """``cifar10_converged`` at ``budget`` steps per round, as ``docs/results/preregistration/cifar10_converged.md``
    (step 2) fixed it before any record: 8 trainings, seeds 42-46, eight policies, one Holm family of 8 paired
    comparisons with TOSTs against +-1 point, the four decisive policies first at every seed."""
    return study_lib.Study(
        name='cifar10_converged', preregistration=CIFAR_PREREGISTRATION, preregistered_in='28ab1a8',
        title="The seed paper's CIFAR-10 experiment at a converged budget: growing a residual net against the "
              'weight-reset lottery ticket and its controls (CIFAR-10, JPEG q75 copy)',
        config='configs/cifar10.py', first_seed=42, num_seeds=5, budgets=(budget,), trainings=8, lanes_per_run=1,
        base_flags='--config.eval_every=351',
        policies=(
            CIFAR_WEIGHT_RESET,
            ('weight_rewind', '--config.method=lth --config.rewind_step=500',
             'as weight_reset, survivors rewound to step 500 of round 0 (late rewinding)'),
            CIFAR_PRUNE_CONTINUE,
            *CIFAR_GROWTH_AND_DENSE,
            ('grown_random_reinit', '--config.method=lth --config.num_rounds=0 --config.steps_per_round={total} '
             '--config.init_from={source} --config.init_from_weights=fresh',
             'the final grown ticket of grow_dense_new (same seed): its architecture and masks, a fresh random '
             'init, trained once for the cumulative steps of the 8 trainings (Frankle & Carbin\'s random re-init)'),
            ('grown_random_mask', '--config.method=lth --config.num_rounds=0 --config.steps_per_round={total} '
             '--config.init_from={source} --config.init_from_weights=fresh --config.init_from_masks=random',
             'as grown_random_reinit, with random masks of the same per-layer kept counts (random pruning)'),
        ),
        sources=(('grown_random_reinit', 'grow_dense_new'), ('grown_random_mask', 'grow_dense_new')),
        comparisons=(('grow_dense_new', 'weight_reset'), ('grow_dense_new', 'prune_continue'),
                     ('grow_sparse_new', 'prune_continue'), ('prune_continue', 'weight_reset'),
                     ('weight_rewind', 'weight_reset'), ('grow_dense_new', 'dense_same_steps'),
                     ('grow_dense_new', 'grown_random_reinit'), ('grow_dense_new', 'grown_random_mask')),
        run_first=CIFAR_DECISIVE_POLICIES,
        dense_policy='weight_reset',
        headline=('grow_dense_new', 'weight_reset'),
        headline_question="Does the paper's growth beat the weight-reset lottery ticket on CIFAR-10, converged?",
        equivalence_margin=claims.CIFAR_MARGIN,
        margin_fixed=f'in the pre-registration (`{CIFAR_PREREGISTRATION}`), committed before any of its records',
        margin_why=CIFAR_MARGIN_WHY,
        notes=f'''
As pre-registered in `{CIFAR_PREREGISTRATION}` before any record of this study or of its budget's curve:
`configs/cifar10.py` (arXiv 2109.03862's CIFAR-10 setting) at {budget:,} steps per round ({budget // 351} epochs of
351 steps), the budget the pre-registered rule chose on the dense network's validation curve
(`cifar10_dense_curve_long`); the blocks' kernels level-pruned to 80% sparsity at round 7 (8 trainings); a fresh
batch order every round; the end-of-round weights pruned; validation every epoch. Seeds 42-46, one process each.
The four decisive policies (`{"`, `".join(CIFAR_DECISIVE_POLICIES)}`) run first at all five seeds, the
pre-registered fallback for a CPU that cannot finish the whole design; the page says which cells remain. The
`cifar10_paper` study at 702 steps per round is its pilot. In the flags, `{{total}}` stands for 8 x the per-round
budget.
''',
    )


if CIFAR_CONVERGED_BUDGET is not None:
    CIFAR_STUDIES['cifar10_converged'] = converged_study(CIFAR_CONVERGED_BUDGET)
