"""The ops: pure functions over (masked) Flax parameter trees that other JAX projects import.

``masks`` (masks beside the params, magnitude pruning), ``mask_checks`` (their input checks), ``expand``
(function-preserving layer insertion), ``widening`` (function-preserving neuron/channel addition),
``nnx_growth`` (the same for Flax NNX models and their optimizers), ``sparsity`` (jaxpruner-style
distributions and schedules), ``sparse_training`` (SET, RigL), ``pytrees`` (leaf paths).
This package imports nothing else of jst (``tests/test_layout.py``).
"""
