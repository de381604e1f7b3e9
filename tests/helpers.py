"""Loads config files the way ``launch/main.py`` does, and sets dotted fields as ``--config.a.b=v`` would."""

import importlib.util
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# XLA:CPU compiles for the CPU it runs on, and its code differs by instruction set: on an AVX2 AMD EPYC (measured
# 2026-12-06) FMA contraction's last bits, grown over 150 training steps, moved the golden ``tiny`` run's val_loss by
# 1.5e-3 relative, while capped at AVX (or SSE4.2) the EPYC reproduced the records of an AVX-512 CPU to 8 digits.
# The golden runs (``golden_runs.run``) therefore run in processes of their own compiled for AVX (every x86-64 CPU
# of the last decade has it); the rest of the suite compiles for its host.
PORTABLE_XLA_FLAGS = '--xla_cpu_max_isa=AVX'


def load_config(name: str, arg=None):
    path = os.path.join(REPO, 'configs', f'{name}.py')
    spec = importlib.util.spec_from_file_location(f'config_{name}', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config() if arg is None else module.get_config(arg)


def set_fields(config, overrides):
    """Sets ``{'a.b': value}`` overrides on a ConfigDict (nested fields by dotted name); returns it."""
    for key, value in overrides.items():
        node = config
        *parents, leaf = key.split('.')
        for p in parents:
            node = node[p]
        node[leaf] = value
    return config
