"""The GPU pack (launch/gpu_data.sh, launch/gpu_check.sh) rehearsed at toy scale on CPU, so it cannot rot: the
data go in parts and come back checksum-identical, and every step of the check runs and is archived."""

import os
import subprocess
import tarfile

from tests.helpers import REPO


def test_data_parts_reassemble_and_the_check_runs_every_step(tmp_path, mnist_dir):
    shared = os.path.dirname(mnist_dir)
    parts, data, out = tmp_path / 'parts', tmp_path / 'data', tmp_path / 'out'
    env = {**os.environ, 'JST_GPU_NO_WHEELS': '1'}
    subprocess.run(['bash', 'launch/gpu_data.sh', 'pack', shared, str(parts), '60'], cwd=REPO, env=env, check=True)
    pieces = sorted(os.listdir(parts))
    assert pieces[0] == 'p0' and len(pieces) >= 4  # 166 MB of CIFAR-10 in parts of 60 MB
    assert all(os.path.getsize(os.path.join(parts, p, f)) <= 60 * 2 ** 20
               for p in pieces[1:] for f in os.listdir(parts / p))
    subprocess.run(['bash', 'launch/gpu_data.sh', 'assemble', str(parts), str(data)], cwd=REPO, check=True)
    os.remove(parts / 'p2' / os.listdir(parts / 'p2')[0])
    broken = subprocess.run(['bash', 'launch/gpu_data.sh', 'assemble', str(parts), str(tmp_path / 'broken')],
                            cwd=REPO, capture_output=True, text=True)
    assert broken.returncode == 1 and 'checksums differ' in broken.stderr

    env = {**os.environ, 'JST_GPU_CHECK_SCALE': 'toy', 'JST_GPU_CHECK_BUDGET_S': '900'}
    subprocess.run(['bash', 'launch/gpu_check.sh', str(out), str(data)], cwd=REPO, env=env, check=True)
    steps = (out / 'steps.txt').read_text()
    for name in ('machine', 'tests', 'seeds', 'cells_toy'):
        assert f'{name} rc=0' in steps, steps
    assert 'toy: 0 paused part(s) packed into' in (out / 'logs' / 'cells_toy.txt').read_text()  # a finished part only
    with tarfile.open(out / 'gpu_check.tar.gz') as archive:
        names = archive.getnames()
    assert 'steps.txt' in names and any(n.startswith('bench/seeds_') for n in names), names
    assert any(n.startswith('results/toy/') and n.endswith('summary.json') for n in names), names
