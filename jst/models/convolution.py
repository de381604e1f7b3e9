"""Convolutions with few channels, as a space-to-depth convolution with wider channels: same math, faster.

A stride-1 'SAME' convolution of 3- or 8-channel maps (the paper's ResNet: its 7x7 3->8 stem, its 3x3 8->8 blocks)
gives XLA:CPU's convolution kernels matrix products of 3 or 8 columns, far from this CPU's matrix-product speed.
Folding each 2x2 block of pixels into channels (``space_to_depth``: [N, H, W, C] -> [N, H/2, W/2, 4C]) turns it into
a 'VALID' convolution with a ``ceil((k + 1) / 2)``-tap kernel of 4C_in inputs and 4C_out outputs (``blocked_kernel``,
built from the same [k, k, C_in, C_out] weights, with zeros where a block tap holds no weight), then back
(``depth_to_space``). The output and both gradients equal ``lax.conv_general_dilated``'s up to the summation
order (``tests/test_convolution.py``: within 1e-5 relative); the parameters keep their shape, so masks, expansion
and checkpoints never see the difference. It does about 1.3x (7x7) to 1.8x (3x3) the multiply-adds, in kernels
that run them several times faster: ``benchmarks/bench_conv_forms.py`` measures every layer of the studies' nets.

``conv_general_dilated`` is a drop-in for ``lax.conv_general_dilated`` (flax's ``nn.Conv(conv_general_dilated=...)``)
that takes this form where it applies (stride 1, 'SAME', no dilation or groups, NHWC/HWIO, even H and W) and
falls back to ``lax.conv_general_dilated`` otherwise. ``pick`` says which form a layer runs; ``CONV_FORMS``:
``'auto'`` (space-to-depth on the CPU for layers of at most ``AUTO_MAX_CHANNELS`` input and output channels, the
paper's ResNet, where it was measured faster; XLA's convolution elsewhere), ``'xla'`` (always XLA's: every record
before this knob) and ``'space_to_depth'`` (wherever it applies). Imports only jax and numpy.
"""

from __future__ import annotations

import functools
from typing import Any, Optional, Sequence

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
CONV_FORMS: tuple[str, ...] = ('auto', 'xla', 'space_to_depth')
BLOCK = 2  # pixels per side folded into channels
# 'auto' takes space-to-depth on the CPU for layers with at most this many input and output channels: in
# benchmarks/results/conv_forms_library_cpu.md the ResNet's 7x7 3->8 stem and 3x3 8->8 block convs ran faster in
# it, Conv-2's 3x3 3->64 and 64->64 convs slower.
AUTO_MAX_CHANNELS = 8
NHWC = ('NHWC', 'HWIO', 'NHWC')


def space_to_depth(x: Array) -> Array:
    """[N, H, W, C] -> [N, H/2, W/2, 4C]: each 2x2 pixel block's values, (row, column, channel) order."""
    n, h, w, c = x.shape
    return x.reshape(n, h // BLOCK, BLOCK, w // BLOCK, BLOCK, c).transpose(0, 1, 3, 2, 4, 5).reshape(
        n, h // BLOCK, w // BLOCK, BLOCK * BLOCK * c)


def depth_to_space(y: Array, channels: int) -> Array:
    """[N, H, W, 4C] -> [N, 2H, 2W, C]: the inverse of ``space_to_depth``."""
    n, h, w, _ = y.shape
    return y.reshape(n, h, w, BLOCK, BLOCK, channels).transpose(0, 1, 3, 2, 4, 5).reshape(
        n, BLOCK * h, BLOCK * w, channels)


def block_taps(kernel_size: int) -> int:
    """Block taps per side of the blocked kernel: input blocks an output block reads (``ceil((k + 1) / 2)``)."""
    return -(-(BLOCK + kernel_size - 1) // BLOCK)


@functools.lru_cache(maxsize=None)
def _tap_index(kh: int, kw: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, column, valid) [T, T, 2, 2, 2, 2] over (tap row, tap column, in row, in column, out row, out column):
    which weight of a [kh, kw] kernel links an input pixel of a block tap to an output pixel."""
    th, tw = block_taps(kh), block_taps(kw)
    ta, tb, r, s, p, q = np.meshgrid(np.arange(th), np.arange(tw), *(np.arange(BLOCK),) * 4, indexing='ij')
    i, j = BLOCK * ta + r - p, BLOCK * tb + s - q
    valid = (i >= 0) & (i < kh) & (j >= 0) & (j < kw)
    return np.clip(i, 0, kh - 1), np.clip(j, 0, kw - 1), valid


def blocked_kernel(kernel: Array) -> Array:
    """[kh, kw, C_in, C_out] -> [T_h, T_w, 4 C_in, 4 C_out]: the kernel of the space-to-depth convolution (each
    weight copied to the block taps that use it, zeros elsewhere; differentiable, so gradients flow back)."""
    kh, kw, ci, co = kernel.shape
    rows, cols, valid = _tap_index(kh, kw)
    taps = jnp.where(valid[..., None, None], kernel[rows, cols], 0)  # [T, T, 2, 2, 2, 2, C_in, C_out]
    th, tw = rows.shape[:2]
    return taps.transpose(0, 1, 2, 3, 6, 4, 5, 7).reshape(th, tw, BLOCK * BLOCK * ci, BLOCK * BLOCK * co)


def conv_space_to_depth(x: Array, kernel: Array) -> Array:
    """[N, H, W, C_in] * [kh, kw, C_in, C_out] -> [N, H, W, C_out]: the stride-1 'SAME' cross-correlation
    (``lax.conv_general_dilated``'s), computed on 2x2 pixel blocks; H and W even."""
    (_, h, w, _), (kh, kw, _, co) = x.shape, kernel.shape
    if h % BLOCK or w % BLOCK:
        raise ValueError(f'conv_space_to_depth needs even height and width, got {h}x{w}; use lax.conv_general_dilated '
                         "(conv_form='xla') for this layer.")
    lo_h, lo_w = (kh - 1) // 2, (kw - 1) // 2  # 'SAME' padding before; after: up to whole blocks
    pads = ((0, 0), (lo_h, BLOCK * (block_taps(kh) - 1) - lo_h), (lo_w, BLOCK * (block_taps(kw) - 1) - lo_w), (0, 0))
    y = lax.conv_general_dilated(space_to_depth(jnp.pad(x, pads)), blocked_kernel(kernel), (1, 1), 'VALID',
                                 dimension_numbers=NHWC)
    return depth_to_space(y, co)


def applies(lhs_shape: Sequence[int], rhs_shape: Sequence[int], window_strides: Sequence[int], padding: Any,
            lhs_dilation: Optional[Sequence[int]], rhs_dilation: Optional[Sequence[int]], dimension_numbers: Any,
            feature_group_count: int, batch_group_count: int) -> bool:
    """Whether a ``lax.conv_general_dilated`` call is one ``conv_space_to_depth`` computes: 2 spatial dimensions,
    even, stride 1, 'SAME', no dilation, one group, NHWC input and HWIO kernel."""
    if len(lhs_shape) != 4 or len(rhs_shape) != 4 or lhs_shape[1] % BLOCK or lhs_shape[2] % BLOCK:
        return False
    ones = lambda v: v is None or all(int(d) == 1 for d in v)
    if not (ones(window_strides) and ones(lhs_dilation) and ones(rhs_dilation)):
        return False
    if padding != 'SAME' or feature_group_count != 1 or batch_group_count != 1:
        return False
    return lax.conv_dimension_numbers(lhs_shape, rhs_shape, dimension_numbers) == lax.conv_dimension_numbers(
        lhs_shape, rhs_shape, NHWC)


def conv_general_dilated(lhs: Array, rhs: Array, window_strides: Sequence[int], padding: Any,
                         lhs_dilation: Optional[Sequence[int]] = None, rhs_dilation: Optional[Sequence[int]] = None,
                         dimension_numbers: Any = None, feature_group_count: int = 1, batch_group_count: int = 1,
                         precision: Any = None, preferred_element_type: Any = None) -> Array:
    """``lax.conv_general_dilated``, computed by ``conv_space_to_depth`` where that ``applies``."""
    if precision is None and preferred_element_type is None and applies(
            lhs.shape, rhs.shape, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
            feature_group_count, batch_group_count):
        return conv_space_to_depth(lhs, rhs)
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
                                    feature_group_count, batch_group_count, precision, preferred_element_type)


def pick(conv_form: str, in_channels: int, out_channels: int, backend: Optional[str] = None) -> str:
    """The form a layer of ``in_channels`` -> ``out_channels`` runs under ``conv_form`` (``CONV_FORMS``): 'xla' or
    'space_to_depth'. ``backend``: JAX's default backend when None ('auto' takes space-to-depth only on 'cpu')."""
    if conv_form not in CONV_FORMS:
        raise ValueError(f'conv_form must be one of {CONV_FORMS}, not {conv_form!r}.')
    if conv_form != 'auto':
        return conv_form
    few_channels = max(in_channels, out_channels) <= AUTO_MAX_CHANNELS
    return 'space_to_depth' if few_channels and (backend or jax.default_backend()) == 'cpu' else 'xla'


def conv_function(conv_form: str, in_channels: int, out_channels: int) -> Optional[Any]:
    """What to pass as flax ``nn.Conv(conv_general_dilated=...)`` for a layer: ``conv_general_dilated`` when
    ``pick`` chooses space-to-depth, None (flax's default, ``lax.conv_general_dilated``) otherwise."""
    return conv_general_dilated if pick(conv_form, in_channels, out_channels) == 'space_to_depth' else None
