"""jst.models.convolution: the space-to-depth form computes lax.conv_general_dilated's convolution (forward and both
gradients within 1e-5 relative), falls back to it wherever it does not apply, and the models' conv_form knob
changes how, never what (same parameters, same outputs within 1e-5)."""

import chex
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import pytest

from jst.models import convolution
from jst.models import networks
from jst.models import specs

RTOL = 1e-5  # relative to the largest magnitude: float32 sums in another order, on any CPU and BLAS build


def reference(x, kernel):
    return lax.conv_general_dilated(x, kernel, (1, 1), 'SAME', dimension_numbers=convolution.NHWC)


def relative_error(a, b) -> float:
    return float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))


def value_and_grads(conv, x, kernel):
    """The output, and the gradients of sum(tanh(output)) with respect to input and kernel."""
    grads = jax.grad(lambda x, k: jnp.sum(jnp.tanh(conv(x, k))), argnums=(0, 1))(x, kernel)
    return (conv(x, kernel), *grads)


@pytest.mark.parametrize('shape', [
    (4, 32, 32, 7, 7, 3, 8),    # the paper's ResNet stem
    (3, 8, 6, 3, 3, 8, 8),      # a BasicBlock conv, non-square image
    (2, 10, 12, 3, 3, 3, 64),   # Conv-2's first conv
    (2, 6, 6, 5, 3, 2, 5),      # a non-square kernel
    (2, 6, 4, 2, 4, 3, 5),      # even kernels: 'SAME' pads one more after than before
    (2, 4, 4, 1, 1, 3, 5),      # a 1x1 kernel
])
def test_space_to_depth_matches_lax_forward_and_gradients(shape):
    n, h, w, kh, kw, ci, co = shape
    x = jax.random.normal(jax.random.key(0), (n, h, w, ci))
    kernel = jax.random.normal(jax.random.key(1), (kh, kw, ci, co)) / np.sqrt(kh * kw * ci)
    got = jax.jit(lambda x, k: value_and_grads(convolution.conv_space_to_depth, x, k))(x, kernel)
    want = value_and_grads(reference, x, kernel)
    for name, a, b in zip(('output', 'input gradient', 'kernel gradient'), got, want):
        chex.assert_equal_shape((a, b))
        assert relative_error(a, b) < RTOL, name


def test_blocked_kernel_holds_every_weight_where_its_taps_use_it():
    """Each weight appears once per (output pixel, input pixel) pair it links: 4 times for every weight of a 3x3
    kernel (once per output position in the 2x2 block), the rest of the blocked kernel is zero."""
    kernel = jnp.arange(1.0, 1.0 + 3 * 3 * 2 * 5).reshape(3, 3, 2, 5)
    blocked = np.asarray(convolution.blocked_kernel(kernel))
    assert blocked.shape == (2, 2, 8, 20)
    values, counts = np.unique(blocked, return_counts=True)
    assert values[0] == 0 and set(values[1:]) == set(np.asarray(kernel).ravel())
    assert set(counts[1:]) == {4}


def test_space_to_depth_and_back_are_inverse_permutations():
    x = jax.random.normal(jax.random.key(2), (2, 6, 4, 3))
    folded = convolution.space_to_depth(x)
    assert folded.shape == (2, 3, 2, 12)
    chex.assert_trees_all_equal(convolution.depth_to_space(folded, 3), x)
    np.testing.assert_array_equal(folded[0, 1, 0, :3], x[0, 2, 0])  # block (1, 0)'s top-left pixel comes first


def test_space_to_depth_under_vmap_over_kernels():
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
    kernels = jax.random.normal(jax.random.key(1), (4, 7, 7, 3, 8)) / 12
    got = jax.jit(jax.vmap(convolution.conv_space_to_depth, in_axes=(None, 0)))(x, kernels)
    want = jax.vmap(reference, in_axes=(None, 0))(x, kernels)
    assert relative_error(got, want) < RTOL


def test_an_odd_image_size_is_refused_with_the_fix():
    with pytest.raises(ValueError, match="even height and width.*conv_form='xla'"):
        convolution.conv_space_to_depth(jnp.zeros((1, 5, 4, 3)), jnp.zeros((3, 3, 3, 8)))


@pytest.mark.parametrize('call', [
    dict(window_strides=(2, 2), padding='SAME'),
    dict(window_strides=(1, 1), padding='VALID'),
    dict(window_strides=(1, 1), padding=((1, 1), (1, 1))),
    dict(window_strides=(1, 1), padding='SAME', rhs_dilation=(2, 2)),
    dict(window_strides=(1, 1), padding='SAME', feature_group_count=3),
    dict(window_strides=(1, 1), padding='SAME', precision=lax.Precision.HIGHEST),
])
def test_calls_it_does_not_compute_fall_back_to_lax_exactly(call):
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
    kernel = jax.random.normal(jax.random.key(1), (3, 3, 3 // call.get('feature_group_count', 1), 6))
    args = dict(dimension_numbers=convolution.NHWC, **call)
    assert not convolution.applies(x.shape, kernel.shape, call['window_strides'], call['padding'],
                                   call.get('lhs_dilation'), call.get('rhs_dilation'), convolution.NHWC,
                                   call.get('feature_group_count', 1), 1) or 'precision' in call
    chex.assert_trees_all_equal(convolution.conv_general_dilated(x, kernel, **args),
                                lax.conv_general_dilated(x, kernel, **args))


def test_other_layouts_and_odd_sizes_fall_back():
    nchw = ('NCHW', 'OIHW', 'NCHW')
    assert not convolution.applies((2, 3, 8, 8), (8, 3, 3, 3), (1, 1), 'SAME', None, None, nchw, 1, 1)
    assert not convolution.applies((2, 7, 8, 3), (3, 3, 3, 8), (1, 1), 'SAME', None, None, convolution.NHWC, 1, 1)
    assert convolution.applies((2, 8, 8, 3), (3, 3, 3, 8), (1, 1), 'SAME', None, None, convolution.NHWC, 1, 1)
    x, kernel = jnp.ones((1, 7, 7, 3)), jnp.ones((3, 3, 3, 2))
    chex.assert_trees_all_equal(convolution.conv_general_dilated(x, kernel, (1, 1), 'SAME',
                                                                 dimension_numbers=convolution.NHWC),
                                reference(x, kernel))


def test_pick_auto_takes_space_to_depth_for_few_channels_on_the_cpu_only():
    assert convolution.pick('auto', 3, 8, backend='cpu') == 'space_to_depth'  # the ResNet's stem
    assert convolution.pick('auto', 8, 8, backend='cpu') == 'space_to_depth'  # its blocks
    assert convolution.pick('auto', 3, 64, backend='cpu') == 'xla'  # Conv-2's first conv (measured slower)
    assert convolution.pick('auto', convolution.AUTO_MAX_CHANNELS + 1, 8, backend='cpu') == 'xla'
    assert convolution.pick('auto', 3, 8, backend='gpu') == 'xla'
    assert convolution.pick('xla', 3, 8, backend='cpu') == 'xla'
    assert convolution.pick('space_to_depth', 64, 64, backend='gpu') == 'space_to_depth'
    with pytest.raises(ValueError, match='conv_form must be one of'):
        convolution.pick('im2col', 3, 8)


@pytest.mark.parametrize('spec', [specs.ResNetSpec(block_widths=(8, 8)),
                                  specs.ConvSpec(conv_channels=(8, 8), pool_after=(False, True), dense_widths=(16,))])
def test_models_conv_form_changes_how_not_what(spec):
    """Every conv form builds the same parameters (names, shapes, initial values) and computes the same logits
    and parameter gradients within RTOL."""
    x = jax.random.normal(jax.random.key(0), (4, 32, 32, 3))
    variables = {form: networks.init_module_variables(networks.build_model(spec, form), jax.random.key(3),
                                                      (32, 32, 3)) for form in convolution.CONV_FORMS}
    chex.assert_trees_all_equal(variables['xla'], variables['space_to_depth'], variables['auto'])
    out = {}
    for form in convolution.CONV_FORMS:
        model = networks.build_model(spec, form)
        loss = lambda p, form=form, model=model: jnp.sum(jnp.tanh(model.apply(
            {**variables[form], 'params': p}, x, train=False)))
        out[form] = (model.apply(variables[form], x, train=False), jax.grad(loss)(variables[form]['params']))
    for form in ('auto', 'space_to_depth'):
        logits, grads = out[form]
        assert relative_error(logits, out['xla'][0]) < RTOL
        for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(out['xla'][1])):
            assert relative_error(a, b) < RTOL


def test_an_unknown_conv_form_fails_when_the_model_is_built():
    with pytest.raises(ValueError, match="conv_form must be one of .*'space_to_depth'"):
        networks.build_model(specs.ResNetSpec(block_widths=(8,)), 'winograd')
