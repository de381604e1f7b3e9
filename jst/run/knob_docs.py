"""``--config_help``: every knob of a config with its value and its meaning, read from docs/configs.md's tables.

Pure text functions; ``launch/main.py`` prints ``config_help(config, knob_docs(path))``.
"""

from __future__ import annotations

import re

import ml_collections


def knob_docs(path: str) -> dict[str, str]:
    """{knob: meaning} from the knob tables of docs/configs.md: the knobs a row names in its first cell, then
    those named (in backticks) only inside a row's meaning."""
    rows = []
    with open(path) as f:
        for line in f:
            cells = [c.strip() for c in line.strip().strip('|').split('|')]
            if len(cells) >= 2 and cells[0].startswith('`') and not cells[0].startswith('`configs/'):
                rows.append((cells[0], ' | '.join(cells[1:])))
    out: dict[str, str] = {}
    for first, doc in rows:
        for name in re.findall(r'`([^`]+)`', first):
            out.setdefault(name.split('=')[0].strip(), doc)
    for first, doc in rows:
        for name in re.findall(r'`([A-Za-z_][\w.]*)`', doc):
            out.setdefault(name, f'(see {first}) {doc}')
    return out


def config_help(config: ml_collections.ConfigDict, docs: dict[str, str]) -> str:
    """One line per knob of ``config`` (nested fields dotted): its value and its meaning (or the knob above it)."""
    def walk(node, prefix=''):
        for key in sorted(node.keys()):
            value = node[key]
            if hasattr(value, 'keys') and len(value):
                yield from walk(value, f'{prefix}{key}.')
            else:
                yield f'{prefix}{key}', value
    lines = ['Knobs of this config (override with --config.NAME=VALUE; docs/configs.md):']
    for name, value in walk(config):
        doc = docs.get(name) or docs.get(name.split('.')[0]) or '(no entry in docs/configs.md)'
        lines.append(f'  --config.{name}={value!r}\n      {doc}')
    return '\n'.join(lines)
