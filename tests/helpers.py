"""Loads config files the way ``launch/main.py`` does."""

import importlib.util
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config(name: str, arg=None):
    path = os.path.join(REPO, 'configs', f'{name}.py')
    spec = importlib.util.spec_from_file_location(f'config_{name}', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config() if arg is None else module.get_config(arg)
