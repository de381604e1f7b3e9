"""``jst.run.host_malloc``: under its settings glibc hands a freed large block to the next ``malloc`` instead of
unmapping it (no fresh page faults), and ``$JST_HOST_MALLOC=glibc`` keeps glibc's defaults."""

import json
import os
import platform
import subprocess
import sys

import pytest

from jst.run import host_malloc
from tests.helpers import REPO

# Ten 80 MB arrays, one after another (each freed before the next), after a first one: the minor page faults
# they cost, in a fresh process with or without the settings (glibc reads no settings back; faults show them).
_ALLOCATE = r'''
import json, resource, sys
sys.path.insert(0, REPO)
import numpy as np
from jst.run import host_malloc
took = host_malloc.reuse_freed_memory() if sys.argv[1] == 'reuse' else False
np.ones(10_000_000).sum()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    np.ones(10_000_000).sum()
print(json.dumps({'took': took, 'faults': resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
'''.replace('REPO', repr(REPO))


def _faults(variant: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != host_malloc.OPT_OUT_VARIABLE}
    done = subprocess.run([sys.executable, '-c', _ALLOCATE, variant], env=env, capture_output=True, text=True,
                          timeout=300, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != 'glibc', reason='the settings are glibc mallopt parameters')
def test_freed_large_blocks_are_reused_instead_of_faulted_in_afresh():
    default, reuse = _faults('default'), _faults('reuse')
    assert reuse['took'], 'glibc refused a mallopt setting'
    # By default each array maps fresh memory: 80 MB is 19,531 pages of 4 KiB, or about 38 huge pages of 2 MiB
    # where transparent huge pages back it (6,250 faults for the ten on this project's machine); under the settings
    # the freed block is handed back (0 here).
    assert default['faults'] >= 10 * 20, default
    assert reuse['faults'] < default['faults'] / 10, (default, reuse)


def test_the_opt_out_keeps_glibcs_defaults(monkeypatch):
    monkeypatch.setenv(host_malloc.OPT_OUT_VARIABLE, 'glibc')
    assert host_malloc.reuse_freed_memory() is False
