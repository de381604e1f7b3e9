"""Pure Flax modules built from a structure spec (``jst.models.specs``).

``build_model(spec)`` returns the module of a spec's family; a changed spec
(after ``jst.training.growth``) is a changed architecture, and ``build_model(new_spec)``
applies to the expanded parameters. ``conv_form`` (``jst.models.convolution.CONV_FORMS``) picks how each
convolution is computed (the same parameters and math). Imports only ``jst.models`` and ``jst.ops.pytrees``.

* ``MLP``: Dense layers (``hidden_i``) with ReLU, then ``output``.
* ``ResNet``: 7x7 conv ``stem`` + ``stem_bn`` + ReLU, BasicBlocks ``block_i``
  (conv3x3-BN-ReLU-conv3x3-BN plus identity skip, ReLU), global average
  pooling and ``output``; BN is ``batch_norm.BatchNorm`` (flax's layer and variables, one-pass backward).
* ``ConvNet``: 3x3 convs ``conv_i`` (ReLU) with 2x2 max-pooling where the spec
  says, then Dense ``dense_i`` and ``output``.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jst.models import batch_norm
from jst.models import convolution
from jst.models import specs
from jst.ops import pytrees

Array = jax.Array

INITIALIZERS: dict[str, Callable[..., Any]] = {
    'glorot_normal': nn.initializers.glorot_normal(),
    'glorot_uniform': nn.initializers.glorot_uniform(),
    'lecun_normal': nn.initializers.lecun_normal(),
    'he_normal': nn.initializers.he_normal(),
    # PyTorch's default Linear/Conv init (kaiming_uniform with a=sqrt(5)):
    # U(-1/sqrt(fan_in), 1/sqrt(fan_in)) == variance_scaling(1/3, fan_in, uniform).
    'torch_default': nn.initializers.variance_scaling(1.0 / 3.0, 'fan_in', 'uniform'),
}


def initializer(name: str) -> Callable[..., Any]:
    """The kernel initializer called ``name`` (see ``INITIALIZERS``)."""
    if name not in INITIALIZERS:
        raise ValueError(f'Unknown init {name!r}; choose one of {sorted(INITIALIZERS)}.')
    return INITIALIZERS[name]


def _dense_head(x: Array, widths: Sequence[int], prefix: str, num_classes: int, init: Callable[..., Any]) -> Array:
    """Flatten, Dense ``prefix_i`` layers with ReLU, then the linear ``output`` (inside a compact call)."""
    x = x.reshape((x.shape[0], -1))
    for i, width in enumerate(widths):
        x = nn.relu(nn.Dense(width, kernel_init=init, name=f'{prefix}_{i}')(x))
    return nn.Dense(num_classes, kernel_init=init, name='output')(x)


class MLP(nn.Module):
    """[N, ...] -> logits [N, num_classes]; inputs are flattened."""

    spec: specs.MLPSpec

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        del train
        return _dense_head(x, self.spec.widths, 'hidden', self.spec.num_classes, initializer(self.spec.init))


def conv(features: int, size: int, in_channels: int, conv_form: str, **kwargs: Any) -> nn.Conv:
    """flax's ``nn.Conv`` (a ``size`` x ``size`` kernel; its parameters whatever the form), computed in the form
    ``convolution.pick`` chooses for ``in_channels`` inputs under ``conv_form``."""
    return nn.Conv(features, (size, size),
                   conv_general_dilated=convolution.conv_function(conv_form, in_channels, features), **kwargs)


class BasicBlock(nn.Module):
    """ResNet BasicBlock with identity skip: [N, H, W, C] -> [N, H, W, C]."""

    channels: int
    width: int
    init: Callable[..., Any]
    conv_form: str = 'auto'

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        norm = lambda name: batch_norm.BatchNorm(use_running_average=not train, momentum=0.9, name=name)
        y = conv(self.width, 3, x.shape[-1], self.conv_form, use_bias=False, kernel_init=self.init, name='conv1')(x)
        y = nn.relu(norm('bn1')(y))
        y = conv(self.channels, 3, self.width, self.conv_form, use_bias=False, kernel_init=self.init, name='conv2')(y)
        y = norm('bn2')(y)
        return nn.relu(x + y)


class ResNet(nn.Module):
    """[N, 32, 32, 3] -> logits [N, num_classes]."""

    spec: specs.ResNetSpec
    conv_form: str = 'auto'  # convolution.CONV_FORMS

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        init = initializer(self.spec.init)
        c = self.spec.stem_channels
        x = conv(c, 7, x.shape[-1], self.conv_form, use_bias=False, kernel_init=init, name='stem')(x)
        x = batch_norm.BatchNorm(use_running_average=not train, momentum=0.9, name='stem_bn')(x)
        x = nn.relu(x)
        for i, width in enumerate(self.spec.block_widths):
            x = BasicBlock(c, width, init, self.conv_form, name=f'block_{i}')(x, train)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.spec.num_classes, kernel_init=init, name='output')(x)


class ConvNet(nn.Module):
    """Conv-2/4/6: [N, H, W, C] -> logits [N, num_classes]."""

    spec: specs.ConvSpec
    conv_form: str = 'auto'  # convolution.CONV_FORMS

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        del train
        init = initializer(self.spec.init)
        for i, (channels, pool) in enumerate(zip(self.spec.conv_channels, self.spec.pool_after)):
            x = nn.relu(conv(channels, 3, x.shape[-1], self.conv_form, kernel_init=init, name=f'conv_{i}')(x))
            if pool:
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
        return _dense_head(x, self.spec.dense_widths, 'dense', self.spec.num_classes, init)


MODULES: dict[str, type] = {'mlp': MLP, 'resnet': ResNet, 'conv': ConvNet}


def build_model(spec: specs.ModelSpec, conv_form: str = 'auto') -> nn.Module:
    """The Flax module for ``spec``; ``conv_form`` (``convolution.CONV_FORMS``): how its convolutions are computed."""
    if getattr(spec, 'family', None) not in MODULES:
        raise TypeError(f'Unknown model spec {spec!r}; families are {sorted(MODULES)}.')
    convolution.pick(conv_form, 0, 0, backend='cpu')  # an unknown form fails here, not at the first trace
    return MODULES[spec.family](spec) if spec.family == 'mlp' else MODULES[spec.family](spec, conv_form)


def init_module_variables(model: nn.Module, key: Array, input_shape: Sequence[int]) -> dict[str, Any]:
    """Initial variables ({'params': ..., maybe 'batch_stats': ...}) of ``model`` for one example shape."""
    return dict(model.init(key, jnp.zeros((1, *input_shape), jnp.float32), train=False))


@functools.lru_cache(maxsize=64)
def abstract_variables(spec: specs.ModelSpec, input_shape: tuple[int, ...]) -> dict[str, Any]:
    """``spec``'s model's variables and module outputs ('intermediates') for one example, as shapes only
    (``jax.eval_shape``: nothing allocated; cached per architecture). An unknown init raises ``ValueError``."""
    model = build_model(spec)
    _, variables = jax.eval_shape(lambda x: model.init_with_output(
        jax.random.key(0), x, train=False, capture_intermediates=True), jnp.zeros((1, *input_shape), jnp.float32))
    return variables


def footprint(spec: specs.ModelSpec, input_shape: Sequence[int]) -> tuple[int, int]:
    """(parameters and batch statistics, module-output elements per example) of ``spec``'s model."""
    variables = abstract_variables(spec, tuple(input_shape))
    size = lambda tree: sum(int(np.prod(a.shape)) for a in jax.tree.leaves(tree))
    return size({k: v for k, v in variables.items() if k != 'intermediates'}), size(variables['intermediates'])


def param_shapes(spec: specs.ModelSpec, input_shape: Sequence[int]) -> dict[str, tuple[int, ...]]:
    """{parameter path: shape} of ``spec``'s model."""
    params = abstract_variables(spec, tuple(input_shape))['params']
    return {pytrees.path_str(path): tuple(leaf.shape) for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}


def kernel_positions(spec: specs.ModelSpec, input_shape: Sequence[int]) -> dict[str, tuple[int, int]]:
    """{kernel path: (its weights, the output positions each weight is used at per example)}: 1 for a Dense
    kernel, H x W of the output for a Conv kernel."""
    variables = abstract_variables(spec, tuple(input_shape))
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(variables['params'])[0]:
        names = pytrees.path_str(path).split('/')
        if names[-1] == 'kernel':
            node = variables['intermediates']
            for name in names[:-1]:
                node = node[name]
            out['/'.join(names)] = (int(np.prod(leaf.shape)), int(np.prod(node['__call__'][0].shape[1:-1])))
    return out


def init_variables(spec: specs.ModelSpec, key: Array, input_shape: Sequence[int]) -> dict[str, Any]:
    """Initial variables of ``spec``'s model for one example shape [H, W, C]."""
    return init_module_variables(build_model(spec), key, input_shape)
