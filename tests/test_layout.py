"""The module layout stays readable: small modules in named layers that import only downwards, peers that do not
import each other, ops modules free of training code, and family knowledge only where the families are defined."""

import ast
import glob
import os
import re
import subprocess
import sys

import pytest

from tests.helpers import REPO

def _module_name(path: str) -> str:
    rel = os.path.relpath(path, os.path.join(REPO, 'jst'))
    return os.path.splitext(rel)[0].replace(os.sep, '.')


MODULES = {_module_name(p): p for p in glob.glob(os.path.join(REPO, 'jst', '**', '*.py'), recursive=True)
           if not p.endswith('__init__.py')}
PACKAGES = {os.path.basename(os.path.dirname(p)) for p in glob.glob(os.path.join(REPO, 'jst', '*', '__init__.py'))}
MAX_LINES = 310
MAX_WIDTH = 120  # characters per line, in jst/ and launch/
# The layers, bottom up: a module imports only from its own package or a lower layer; packages that share a
# layer are peers and import nothing of each other. The top-level modules are layers of their own.
LAYERS = (
    ('errors',),                # the one user-error base class
    ('ops',),                   # the library other JAX projects import
    ('models', 'data'),
    ('training',),
    ('run',),
    ('searches', 'analysis'),
    ('studies',),               # the published studies: catalog, campaigns, pages
    ('driver',),
)
LAYER_OF = {unit: i for i, units in enumerate(LAYERS) for unit in units}
SPEC_CLASSES = ('MLPSpec', 'ResNetSpec', 'ConvSpec')


def unit(module: str) -> str:
    """The package of a module (``'ops'`` for ``'ops.masks'``), or the module itself at the top level."""
    return module.split('.')[0]


def sibling_imports(path: str) -> set[str]:
    """jst modules that ``path`` imports, as dotted names under ``jst`` (``'ops.masks'``, ``'errors'``)."""
    out = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.ImportFrom) and (node.module or '').split('.')[0] == 'jst':
            base = node.module[len('jst.'):] if node.module != 'jst' else ''
            for a in node.names:
                name = f'{base}.{a.name}' if base else a.name
                out.add(name if name in MODULES else base)
        elif isinstance(node, ast.Import):
            out |= {a.name[len('jst.'):] for a in node.names if a.name.startswith('jst.')}
    return out & set(MODULES)


def test_every_module_sits_in_a_layer():
    assert {unit(m) for m in MODULES} == set(LAYER_OF), sorted({unit(m) for m in MODULES} ^ set(LAYER_OF))
    assert PACKAGES == {u for u in LAYER_OF if u not in ('errors', 'driver')}, PACKAGES


@pytest.mark.parametrize('package', sorted(PACKAGES))
def test_package_init_is_a_docstring_only(package):
    """Each sub-package's ``__init__`` says what it holds and re-exports nothing: one home per name."""
    tree = ast.parse(open(os.path.join(REPO, 'jst', package, '__init__.py')).read())
    assert ast.get_docstring(tree), f'jst/{package}/__init__.py has no docstring'
    assert len(tree.body) == 1, f'jst/{package}/__init__.py holds code; import from the module itself'


@pytest.mark.parametrize('name', sorted(MODULES))
def test_module_is_small_documented_and_imports_only_downwards(name):
    path = MODULES[name]
    source = open(path).read()
    assert len(source.splitlines()) <= MAX_LINES, f'{name}.py has {len(source.splitlines())} lines'
    assert ast.get_docstring(ast.parse(source)), f'{name}.py has no module docstring'
    mine = LAYER_OF[unit(name)]
    bad = sorted(m for m in sibling_imports(path) if unit(m) != unit(name) and LAYER_OF[unit(m)] >= mine)
    assert not bad, (f'jst.{name} (layer {unit(name)}) imports {bad}: a module imports only its own package or a '
                     f'layer below ({" < ".join("/".join(u) for u in LAYERS)})')


def test_lines_fit_the_width():
    """Every line of the library and the entry points fits ``MAX_WIDTH`` (setup.cfg's style)."""
    paths = sorted(glob.glob(os.path.join(REPO, 'jst', '**', '*.py'), recursive=True) +
                   glob.glob(os.path.join(REPO, 'launch', '*.py')))
    wide = [f'{os.path.relpath(p, REPO)}:{i}' for p in paths for i, line in enumerate(open(p).read().splitlines(), 1)
            if len(line) > MAX_WIDTH]
    assert not wide, f'lines over {MAX_WIDTH} characters: {wide}'


def test_searches_are_peers():
    assert 'searches.juvenile' not in sibling_imports(MODULES['searches.lth'])
    assert 'searches.lth' not in sibling_imports(MODULES['searches.juvenile'])


@pytest.mark.slow  # launches a Python process
def test_ops_import_alone():
    """``jst.ops`` is the library other projects use: importing all of it loads no other jst package."""
    ops = [m for m in MODULES if unit(m) == 'ops']
    code = ('import sys\n' + ''.join(f'import jst.{m}\n' for m in ops) +
            "other = sorted(m for m in sys.modules if m.startswith('jst.') and not m.startswith('jst.ops'))\n"
            'assert not other, other\n')
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_no_family_type_tests_outside_specs():
    pattern = re.compile(r'isinstance\([^)]*(' + '|'.join(SPEC_CLASSES) + ')|type\(spec\)')
    offenders = [n for n, p in MODULES.items() if n != 'models.specs' and pattern.search(open(p).read())]
    assert not offenders, offenders


def test_no_import_cycles():
    graph = {n: sibling_imports(p) for n, p in MODULES.items()}

    def visit(node, stack):
        assert node not in stack, ' -> '.join(stack + [node])
        for nxt in graph[node]:
            visit(nxt, stack + [node])

    for n in graph:
        visit(n, [])
