"""``WORKDIR/run.json``: where a run came from, one entry per invocation (a resumed run gets one per start).

Each entry: the time, the command line, the jst checkout's commit and whether it had uncommitted changes (empty
outside git), the versions of the packages that shape the numbers, Python, and the devices JAX sees.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
from typing import Any

import jax

from jst.run import workdir as workdir_lib

RUN_FILE = workdir_lib.RUN_FILE
PACKAGES = ('jax', 'jaxlib', 'flax', 'optax', 'chex', 'orbax-checkpoint', 'numpy', 'ml_collections',
            'tensorflow', 'tensorflow-cpu', 'tensorflow-datasets')
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _git(*args: str) -> str:
    try:
        proc = subprocess.run(['git', *args], cwd=REPO, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return ''
    return proc.stdout.strip() if proc.returncode == 0 else ''


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """{distribution: version or None when not installed}."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def invocation(argv: list[str]) -> dict[str, Any]:
    """This process's provenance entry."""
    devices = jax.devices()
    commit = _git('rev-parse', 'HEAD')
    return {'started': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
            'command': [os.path.basename(sys.executable), *argv],
            'commit': commit, 'dirty': bool(_git('status', '--porcelain', '--untracked-files=no')) if commit else None,
            'packages': package_versions(), 'python': platform.python_version(),
            'devices': {'platform': devices[0].platform, 'kind': devices[0].device_kind, 'count': len(devices),
                        'processes': jax.process_count()},
            'host': platform.node()}


def record_invocation(workdir: str, argv: list[str]) -> dict[str, Any]:
    """Appends this process's entry to ``WORKDIR/run.json`` (atomically) and returns the file's content."""
    path = os.path.join(workdir, RUN_FILE)
    content: dict[str, Any] = {'invocations': []}
    if os.path.exists(path):
        try:
            with open(path) as f:
                content = json.load(f)
        except (OSError, ValueError):
            content = {'invocations': [], 'unreadable_before': True}
    content.setdefault('invocations', []).append(invocation(argv))
    workdir_lib.atomic_write_text(path, json.dumps(content, indent=1) + '\n')
    return content


def invocations(workdir: str) -> list[dict[str, Any]]:
    """The entries of ``WORKDIR/run.json`` (each process that ran there, with its commit); [] when there is none or
    it cannot be read."""
    try:
        with open(os.path.join(workdir, RUN_FILE)) as f:
            return list(json.load(f).get('invocations', []))
    except (OSError, ValueError, AttributeError):
        return []
