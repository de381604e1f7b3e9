"""Writes a benchmark's measurement as ``<stem>.json`` and its table as ``<stem>.md`` (what docs/results/speed.md
shows), and prints the table."""

from __future__ import annotations

import json
import os
from typing import Any


def write_results(out_dir: str, name: str, result: Any, table: str) -> str:
    """``out_dir/name.json`` (``result``) and ``out_dir/name.md`` (``table``); returns the stem path."""
    os.makedirs(out_dir, exist_ok=True)
    stem = os.path.join(out_dir, name)
    with open(stem + '.json', 'w') as f:
        json.dump(result, f, indent=1)
    with open(stem + '.md', 'w') as f:
        f.write(table)
    print(table)
    return stem
