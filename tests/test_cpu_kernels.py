"""The YNNPACK/XNNPACK CPU kernels (``jst.training.cpu_kernels``): same math as XLA's own within 1e-5 relative on
the forward pass and every gradient of the paper's ResNet and Conv-2, and the knob's choices."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from jst.training import cpu_kernels
from tests.helpers import REPO

# Forward logits and parameter gradients of one training-mode loss, written as .npz by a fresh process whose
# XLA_FLAGS the test chooses (the flags are read once per process).
_PROBE = r'''
import sys, json
sys.path.insert(0, REPO)
from jst.training import cpu_kernels
choice, family, out = sys.argv[1:4]
in_effect = cpu_kernels.apply_cpu_kernels(choice, family != 'mlp')
import jax, jax.numpy as jnp, numpy as np, optax
from jst.models import networks, specs
spec = {'resnet': specs.ResNetSpec(block_widths=(8,) * 2, stem_channels=8),
        'conv': specs.ConvSpec(conv_channels=(16, 16), pool_after=(False, True), dense_widths=(32,)),
        'mlp': specs.MLPSpec(widths=(64,))}[family]
model = networks.build_model(spec)
variables = networks.init_variables(spec, jax.random.key(0), (32, 32, 3))
rng = np.random.default_rng(0)
x = jnp.asarray(rng.random((16, 32, 32, 3), dtype=np.float32))
y = jnp.asarray(rng.integers(0, 10, 16))
def loss(params):
    logits, _ = model.apply({**variables, 'params': params}, x, train=True, mutable=['batch_stats'])
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), logits
(_, logits), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(variables['params'])
leaves = {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(grads)[0]}
np.savez(out, logits=np.asarray(logits), **leaves)
print(json.dumps({'in_effect': in_effect, 'started_after': cpu_kernels.apply_cpu_kernels('library', True)}))
'''.replace('REPO', repr(REPO))


def _probe(tmp_path, choice: str, family: str) -> tuple[dict, dict]:
    out = str(tmp_path / f'{choice}_{family}.npz')
    env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
    done = subprocess.run([sys.executable, '-c', _PROBE, choice, family, out], env=env, capture_output=True,
                          text=True, timeout=300, check=True)
    with np.load(out) as arrays:
        return json.loads(done.stdout.strip().splitlines()[-1]), dict(arrays)


@pytest.mark.slow
@pytest.mark.parametrize('family', ['resnet', 'conv'])
def test_library_kernels_match_xla_on_forward_and_gradients(tmp_path, family):
    fast_info, fast = _probe(tmp_path, 'library', family)
    ref_info, ref = _probe(tmp_path, 'xla', family)
    assert (fast_info['in_effect'], ref_info['in_effect']) == ('library', 'xla')
    # Once JAX has started, the flags cannot change: the answer says what the process runs with.
    assert (fast_info['started_after'], ref_info['started_after']) == ('library', 'xla')
    assert sorted(fast) == sorted(ref) and len(ref) > 3
    for name, want in ref.items():
        got = fast[name]
        assert got.shape == want.shape
        relative = float(np.max(np.abs(got - want)) / max(float(np.max(np.abs(want))), 1e-30))
        assert relative <= 1e-5, f'{family} {name}: {relative:.2e} relative to XLA\'s own kernels'
        assert np.all(np.isfinite(got))


@pytest.mark.parametrize('choice,library_wins,wanted', [
    ('auto', True, True), ('auto', False, False), ('library', False, True), ('xla', True, False)])
def test_choice_asks_for_library_kernels_where_it_should(choice, library_wins, wanted):
    assert cpu_kernels.wants_library_kernels(choice, library_wins) is wanted


def test_unknown_choice_is_refused_by_name():
    with pytest.raises(ValueError, match="cpu_kernels must be one of .*'fast'"):
        cpu_kernels.wants_library_kernels('fast', True)


def test_flags_are_added_once_and_a_users_own_fusion_flag_wins():
    mine = '--xla_force_host_platform_device_count=2 --xla_cpu_experimental_xnn_fusion_type=dot'
    flags = cpu_kernels.xla_flags_with_library(mine)
    assert flags.split()[:2] == mine.split()
    assert flags.count('xnn_fusion_type') == 1 and flags.count('ynn_fusion_type') == 1
    assert cpu_kernels.xla_flags_with_library(flags) == flags
