"""Loads config files the way ``launch/main.py`` does, and sets dotted fields as ``--config.a.b=v`` would."""

import importlib.util
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
