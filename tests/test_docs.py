"""Runs every ```python block of docs/*.md and the README (in order, one namespace per file)."""

import glob
import os
import re

import pytest

from tests.helpers import REPO

FILES = [p for p in sorted(glob.glob(os.path.join(REPO, 'docs', '*.md'))) + [os.path.join(REPO, 'README.md')]
         if '```python' in open(p).read()]


def _blocks(path):
    return re.findall(r'```python\n(.*?)```', open(path).read(), flags=re.S)


@pytest.mark.parametrize('path', FILES, ids=os.path.basename)
def test_examples_run(path, mnist_dir, monkeypatch):
    monkeypatch.setenv('JST_MANUAL_DIR', mnist_dir)
    blocks = _blocks(path)
    assert blocks
    namespace = {'__name__': f'doc_{os.path.basename(path)}'}
    for i, code in enumerate(blocks):
        try:
            exec(compile(code, f'{path}:block{i}', 'exec'), namespace)  # pylint: disable=exec-used
        except Exception as e:  # pragma: no cover - the message points at the block
            raise AssertionError(f'{os.path.basename(path)} block {i} failed: {e!r}') from e


def test_the_example_pages_are_executed():
    names = {os.path.basename(p) for p in FILES}
    assert {'library.md', 'README.md'} <= names, names
