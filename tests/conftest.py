"""Shared fixtures: the offline dataset folders beside the repository."""

import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get('JST_SHARED_DATASETS', os.path.join(REPO, '..', 'shared', 'datasets'))


def _dataset_dir(name: str) -> str:
    path = os.path.abspath(os.path.join(SHARED, name))
    if not os.path.isdir(path):
        pytest.fail(f'{path} not found: tests need the offline datasets; set '
                    'JST_SHARED_DATASETS to the folder holding mnist/ and cifar10-jpeg75/.')
    return path


@pytest.fixture(scope='session')
def mnist_dir() -> str:
    return _dataset_dir('mnist')


@pytest.fixture(scope='session')
def cifar10_dir() -> str:
    return _dataset_dir('cifar10-jpeg75')


@pytest.fixture(scope='session')
def tfds_data_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp('tfds'))
