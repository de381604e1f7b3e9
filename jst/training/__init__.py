"""Training: ``train`` (the masked step, evaluation, ``TrainState``), ``train_loop`` (compiled whole-epoch
segments), ``early_stopping`` (evaluation records, the early-stopping point, divergence), ``pruning`` (one round's
pruning and the random controls), ``growth`` (growing spec-built networks), ``parallel`` (data-parallel
sharding). Imports ops, models and data only."""
