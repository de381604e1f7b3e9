"""One convolution, seven formulations, side by side in one run: which form of the same math XLA:CPU runs fastest for
the layers of the seed paper's ResNet and of Conv-2 (issue 34 item 1).

    python benchmarks/bench_conv_forms.py [--repeats=20] [--cpu_kernels=xla|library] [--out=benchmarks/results]

Formulations (all the same math: a stride-1 'SAME' cross-correlation, NHWC input, HWIO kernel):

* ``xla_nhwc``: ``lax.conv_general_dilated`` in NHWC (what ``flax.linen.Conv`` and jst run);
* ``xla_nchw``: the same in NCHW (transposes in and out);
* ``im2col_dot``: the kh*kw shifted slices of the padded input concatenated on channels, then one dot with the
  reshaped kernel [kh*kw*C_in, C_out];
* ``shifted_dots``: the sum over the kh*kw taps of a dot of each shifted slice with its [C_in, C_out] tap;
* ``broadcast_reduce``: the taps stacked [N, H, W, kh*kw, C_in] and contracted with one einsum;
* ``row_toeplitz``: each image row cut into tiles of ``TILE`` output pixels, and each of the kh kernel rows a
  banded [(TILE+kw-1)*C_in, TILE*C_out] matrix: kh dots whose operands are contiguous row slices (no minor-axis
  shuffles, at (TILE+kw-1)/kw times the multiply-adds);
* ``space_to_depth``: ``jst.models.convolution``: 2x2 pixel blocks folded into channels, one 'VALID'
  ``lax.conv_general_dilated`` with a blocked kernel of 4x the channels, unfolded (what jst's ``conv_form='auto'``
  runs for layers of at most 8 input and output channels).

The backward of each is JAX's autodiff of that same form (so ``im2col_dot``'s weight gradient is one dot of the
patches with the output gradient, and its input gradient a dot plus the transposed slicing). Each: the median wall
time of ``--repeats`` forward passes and of ``--repeats`` forward+backward passes (gradient of sum(tanh(y)) with
respect to input and kernel) after a compiling call, and the largest error relative to ``xla_nhwc``'s
(max |difference| / max |reference|) of the output and of both gradients. The last table sums each form over the
convolutions of one training step (the ResNet: the stem and 14 block convs; Conv-2: its two convs).
``--cpu_kernels`` picks XLA:CPU's kernels for the whole run (``jst.training.cpu_kernels``): ``xla``, its own;
``library``, the YNNPACK/XNNPACK fusions that jst's conv nets use by default, which take the dots of the dot-based
forms (not ``lax.conv_general_dilated``). Results: ``--out/conv_forms_<platform>.json`` (``xla``) or
``conv_forms_library_<platform>.json``, and ``.md``; ``docs/results/speed.md`` shows both tables.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from typing import Any, Callable

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
from jax import lax
import jax.numpy as jnp
from jst.models import convolution
from jst.training import cpu_kernels
import conv_steps
import results_files
# pylint: enable=g-import-not-at-top,wrong-import-position

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_REPEATS = flags.DEFINE_integer('repeats', 20, 'Timed calls per formulation and direction (after one compile).')
_BATCH_SCALE = flags.DEFINE_float('batch_scale', 1.0, 'Multiplies every batch size (toy runs: 0.05).')
_CPU_KERNELS = flags.DEFINE_enum('cpu_kernels', 'xla', ['xla', 'library'], "XLA:CPU's kernels for every form.")
_OUT = flags.DEFINE_string('out', os.path.join(REPO, 'benchmarks', 'results'), 'Output folder.')

Array = jax.Array
# name: (network, batch, height/width, kernel size, C_in, C_out, how many per training step)
LAYERS = {
    'resnet stem 7x7 3->8': ('resnet', 128, 32, 7, 3, 8, 1),
    'resnet block 3x3 8->8': ('resnet', 128, 32, 3, 8, 8, 14),
    'conv2 conv_0 3x3 3->64': ('conv2', 60, 32, 3, 3, 64, 1),
    'conv2 conv_1 3x3 64->64': ('conv2', 60, 32, 3, 64, 64, 1),
}


def xla_nhwc(x: Array, w: Array) -> Array:
    """[N, H, W, Ci] * [kh, kw, Ci, Co] -> [N, H, W, Co] by ``lax.conv_general_dilated`` (the reference)."""
    return lax.conv_general_dilated(x, w, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def xla_nchw(x: Array, w: Array) -> Array:
    y = lax.conv_general_dilated(jnp.transpose(x, (0, 3, 1, 2)), w, (1, 1), 'SAME',
                                 dimension_numbers=('NCHW', 'HWIO', 'NCHW'))
    return jnp.transpose(y, (0, 2, 3, 1))


def _taps(x: Array, kh: int, kw: int) -> list[Array]:
    """The kh*kw shifted [N, H, W, Ci] slices of ``x`` zero-padded as 'SAME' pads it (row-major tap order)."""
    ph, pw = (kh - 1) // 2, (kw - 1) // 2
    xp = jnp.pad(x, ((0, 0), (ph, kh - 1 - ph), (pw, kw - 1 - pw), (0, 0)))
    h, w = x.shape[1], x.shape[2]
    return [xp[:, i:i + h, j:j + w, :] for i in range(kh) for j in range(kw)]


def im2col_dot(x: Array, w: Array) -> Array:
    kh, kw, ci, co = w.shape
    return jnp.dot(jnp.concatenate(_taps(x, kh, kw), axis=-1), w.reshape(kh * kw * ci, co))


def shifted_dots(x: Array, w: Array) -> Array:
    kh, kw, ci, co = w.shape
    taps = w.reshape(kh * kw, ci, co)
    return sum(jnp.dot(t, taps[k]) for k, t in enumerate(_taps(x, kh, kw)))


def broadcast_reduce(x: Array, w: Array) -> Array:
    kh, kw, ci, co = w.shape
    return jnp.einsum('nhwkc,kcd->nhwd', jnp.stack(_taps(x, kh, kw), axis=-2), w.reshape(kh * kw, ci, co))


TILE = 8  # output pixels per row tile of row_toeplitz (measured best of 4, 8, 16, 32 for the 8-channel layers)


def row_toeplitz(x: Array, w: Array) -> Array:
    kh, kw, ci, co = w.shape
    n, h, width, _ = x.shape
    ph, pw = (kh - 1) // 2, (kw - 1) // 2
    rows = jnp.pad(x, ((0, 0), (ph, kh - 1 - ph), (pw, kw - 1 - pw), (0, 0))).reshape(n, h + kh - 1, -1)
    span = (TILE + kw - 1) * ci
    tiles = jnp.stack([rows[:, :, s * TILE * ci:s * TILE * ci + span] for s in range(width // TILE)], axis=2)
    band = (jnp.arange(TILE + kw - 1)[None, :, None] ==  # [kw, TILE+kw-1, TILE]: input column p feeds output q
            jnp.arange(TILE)[None, None, :] + jnp.arange(kw)[:, None, None]).astype(x.dtype)
    banded = jnp.einsum('dpq,hdco->hpcqo', band, w).reshape(kh, span, TILE * co)
    y = sum(jnp.einsum('nhsp,pq->nhsq', tiles[:, i:i + h], banded[i]) for i in range(kh))
    return y.reshape(n, h, width, co)


FORMS: dict[str, Callable[[Array, Array], Array]] = {
    'xla_nhwc': xla_nhwc, 'xla_nchw': xla_nchw, 'im2col_dot': im2col_dot, 'shifted_dots': shifted_dots,
    'broadcast_reduce': broadcast_reduce, 'row_toeplitz': row_toeplitz,
    'space_to_depth': convolution.conv_space_to_depth}


def _median_s(fn: Callable[[], Any], repeats: int) -> float:
    jax.block_until_ready(fn())  # compile
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _grads(form: Callable[[Array, Array], Array]) -> Callable[[Array, Array], tuple[Array, Array]]:
    return jax.grad(lambda x, w: jnp.sum(jnp.tanh(form(x, w))), argnums=(0, 1))


def _relative_error(a: Array, b: Array) -> float:
    return float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))


def measure_layer(batch: int, size: int, k: int, ci: int, co: int, repeats: int) -> dict[str, dict[str, float]]:
    """{form: {'forward_ms', 'forward_backward_ms', 'max_relative_error'}} for one layer shape."""
    x = jax.random.normal(jax.random.PRNGKey(0), (batch, size, size, ci))
    w = jax.random.normal(jax.random.PRNGKey(1), (k, k, ci, co)) * (2.0 / (k * k * ci)) ** 0.5
    reference = (xla_nhwc(x, w), *_grads(xla_nhwc)(x, w))
    out = {}
    for name, form in FORMS.items():
        forward, backward = jax.jit(form), jax.jit(_grads(form))
        got = (forward(x, w), *backward(x, w))
        out[name] = {'forward_ms': 1e3 * _median_s(lambda: forward(x, w), repeats),
                     'forward_backward_ms': 1e3 * _median_s(lambda: backward(x, w), repeats),
                     'max_relative_error': max(_relative_error(a, b) for a, b in zip(got, reference))}
    return out


def step_sums(result: dict[str, Any]) -> dict[str, dict[str, float]]:
    """{network: {form: ms}}: forward+backward of every convolution of one training step, summed by layer count."""
    return {network: {name: round(sum(result['layers'][layer][name]['forward_backward_ms'] * v[6]
                                      for layer, v in LAYERS.items() if v[0] == network), 2) for name in FORMS}
            for network in sorted({v[0] for v in LAYERS.values()})}


def render(result: dict[str, Any]) -> str:
    kernels = result.get('cpu_kernels', 'xla')
    lines = [f'# One convolution, {len(FORMS)} formulations, {kernels} kernels ({result["platform"]}, '
             f'{result["cpus"]} CPUs, {result["machine"]}, jax {result["jax"]}, {result["date"]})', '',
             f'Median of {result["repeats"]} calls after a compiling one; forward+backward is the gradient with '
             'respect to input and kernel; error: largest of output and both gradients, relative to xla_nhwc.', '',
             '| layer (batch) | form | forward (ms) | forward+backward (ms) | vs xla_nhwc | max rel. error |',
             '|---|---|---|---|---|---|']
    for layer, (network, batch, _, _, _, _, _) in LAYERS.items():
        forms = result['layers'][layer]
        base = forms['xla_nhwc']['forward_backward_ms']
        for name, m in forms.items():
            lines.append(f'| {layer} ({round(batch * result["batch_scale"])}) | {name} | {m["forward_ms"]:.2f} | '
                         f'{m["forward_backward_ms"]:.2f} | {m["forward_backward_ms"] / base:.2f}x | '
                         f'{m["max_relative_error"]:.1e} |')
    lines += ['', '| network: every convolution of one training step | ' + ' | '.join(FORMS) + ' |',
              '|---|' + '---|' * len(FORMS)]
    for network, sums in step_sums(result).items():
        lines.append(f'| {network} (forward+backward, ms) | ' + ' | '.join(f'{s:.1f}' for s in sums.values()) + ' |')
    return '\n'.join(lines) + '\n'


def main(argv):
    del argv
    kernels = cpu_kernels.apply_cpu_kernels(_CPU_KERNELS.value, library_wins=True)  # before JAX starts
    result = {'platform': jax.devices()[0].platform, 'cpu_kernels': kernels, 'cpus': os.cpu_count(), 'jax': jax.__version__,
              'machine': conv_steps.processor_name(), 'repeats': _REPEATS.value,
              'batch_scale': _BATCH_SCALE.value, 'date': time.strftime('%Y-%m-%d'), 'layers': {}}
    for layer, (_, batch, size, k, ci, co, _) in LAYERS.items():
        result['layers'][layer] = measure_layer(max(1, round(batch * _BATCH_SCALE.value)), size, k, ci, co,
                                                _REPEATS.value)
        print(layer, {n: round(m['forward_backward_ms'], 2) for n, m in result['layers'][layer].items()}, flush=True)
    result['step_sums_ms'] = step_sums(result)
    name = 'conv_forms' + ('_library' if kernels == 'library' else '')
    results_files.write_results(_OUT.value, f'{name}_{result["platform"]}', result, render(result))


if __name__ == '__main__':
    app.run(main)
