"""The module layout stays readable: small modules in named layers that import only downwards, peers that do not
import each other, ops modules free of training code, and family knowledge only where the families are defined."""

import ast
import glob
import os
import re

import pytest

from tests.helpers import REPO

MODULES = {os.path.splitext(os.path.basename(p))[0]: p for p in glob.glob(os.path.join(REPO, 'jst', '*.py'))
           if not p.endswith('__init__.py')}
MAX_LINES = 310
# The layers, bottom up (docs/library.md's module map): a module imports only modules of its own layer or below.
LAYERS = (
    ('ops', {'pytrees', 'mask_checks', 'masks', 'expand', 'widening', 'nnx_growth', 'sparsity', 'sparse_training',
             'errors', 'statistics'}),
    ('data and models', {'specs', 'models', 'readers', 'data', 'parallel', 'workdir'}),
    ('training', {'train', 'train_loop', 'pruning', 'growth'}),
    ('run', {'checkpoint_io', 'records', 'checkpointing', 'configuration', 'context'}),
    ('searches', {'diagnostics', 'prune_and_grow', 'tickets', 'rounds', 'lth', 'juvenile', 'searches'}),
    ('analysis', {'figures', 'claims', 'report', 'study', 'level_study', 'compute'}),
    ('driver', {'driver'}),
)
LAYER_OF = {m: i for i, (_, modules) in enumerate(LAYERS) for m in modules}
# Ops modules other JAX projects use: they may import only each other.
OPS = {"masks": {"mask_checks", "pytrees"}, "mask_checks": {"pytrees"}, "expand": {"masks", "pytrees"},
       "widening": {"expand", "masks", "pytrees"}, "nnx_growth": {"expand", "pytrees"}, "pytrees": set(),
       "sparsity": {"masks", "mask_checks", "pytrees"}, "sparse_training": {"masks", "mask_checks", "pytrees"}}
SPEC_CLASSES = ('MLPSpec', 'ResNetSpec', 'ConvSpec')


def sibling_imports(path: str) -> set[str]:
    """jst modules that ``path`` imports (``from jst import x``, ``from jst.x import y``, ``import jst.x``)."""
    out = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.ImportFrom) and node.module == 'jst':
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or '').startswith('jst.'):
            out.add(node.module.split('.')[1])
        elif isinstance(node, ast.Import):
            out |= {a.name.split('.')[1] for a in node.names if a.name.startswith('jst.')}
    return out & set(MODULES)


def test_every_module_has_a_layer():
    assert set(MODULES) == set(LAYER_OF), (sorted(set(MODULES) - set(LAYER_OF)), sorted(set(LAYER_OF) - set(MODULES)))


@pytest.mark.parametrize('name', sorted(MODULES))
def test_module_is_small_documented_and_imports_only_downwards(name):
    path = MODULES[name]
    source = open(path).read()
    assert len(source.splitlines()) <= MAX_LINES, f'{name}.py has {len(source.splitlines())} lines'
    assert ast.get_docstring(ast.parse(source)), f'{name}.py has no module docstring'
    upward = sorted(m for m in sibling_imports(path) if LAYER_OF[m] > LAYER_OF[name])
    assert not upward, (f'{name}.py ({LAYERS[LAYER_OF[name]][0]}) imports {upward} from a layer above: '
                        + ', '.join(f'{m} is {LAYERS[LAYER_OF[m]][0]}' for m in upward))


def test_searches_are_peers():
    assert 'juvenile' not in sibling_imports(MODULES['lth'])
    assert 'lth' not in sibling_imports(MODULES['juvenile'])


@pytest.mark.parametrize('name', sorted(OPS))
def test_ops_modules_import_no_training_code(name):
    assert sibling_imports(MODULES[name]) <= OPS[name], sorted(sibling_imports(MODULES[name]))


def test_no_family_type_tests_outside_specs():
    pattern = re.compile(r'isinstance\([^)]*(' + '|'.join(SPEC_CLASSES) + ')|type\(spec\)')
    offenders = [n for n, p in MODULES.items() if n != 'specs' and pattern.search(open(p).read())]
    assert not offenders, offenders


def test_no_import_cycles():
    graph = {n: sibling_imports(p) for n, p in MODULES.items()}

    def visit(node, stack):
        assert node not in stack, ' -> '.join(stack + [node])
        for nxt in graph[node]:
            visit(nxt, stack + [node])

    for n in graph:
        visit(n, [])
