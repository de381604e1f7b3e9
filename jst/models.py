"""Pure Flax modules built from a frozen structure spec.

A changed spec is a changed architecture: the expansion operators in
``jst.expand`` return a new spec together with new parameters, and
``build_model(new_spec)`` applies to them.

Parameter names encode position (``hidden_0``, ``hidden_1``, ..., ``output``;
``block_0``, ...), and every helper orders layers by the spec, never by
sorting names (``hidden_10`` sorts before ``hidden_2``).

Families:

* ``MLPSpec``: Dense layers of the given widths with ReLU, then a linear
  output. The seed paper's MNIST net is ``widths=(128,) + (128,) * k``;
  LeNet-300-100 is ``widths=(300, 100)``.
* ``ResNetSpec``: the seed paper's CIFAR-10 net: 7x7 conv stem (3 -> 8
  channels) + BN + ReLU, ``len(block_widths)`` BasicBlocks
  (conv3x3-BN-ReLU-conv3x3-BN, plus identity skip, ReLU), global average
  pooling and a linear output. ``block_widths[i]`` is block i's inner width.
* ``ConvSpec``: Frankle & Carbin's Conv-2/4/6: 3x3 convs (ReLU) with 2x2
  max-pooling where ``pool_after`` says, then Dense layers and the output.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

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


@dataclasses.dataclass(frozen=True)
class MLPSpec:
    widths: tuple[int, ...]
    num_classes: int = 10
    init: str = 'glorot_normal'

    def describe(self) -> str:
        return 'MLP[' + '-'.join(str(w) for w in self.widths) + f'-{self.num_classes}]'


@dataclasses.dataclass(frozen=True)
class ResNetSpec:
    block_widths: tuple[int, ...] = ()
    stem_channels: int = 8
    num_classes: int = 10
    init: str = 'he_normal'

    def describe(self) -> str:
        blocks = ','.join(str(w) for w in self.block_widths)
        return f'ResNet[stem{self.stem_channels}x7x7; {len(self.block_widths)} blocks({blocks})]'


@dataclasses.dataclass(frozen=True)
class ConvSpec:
    conv_channels: tuple[int, ...]
    pool_after: tuple[bool, ...]
    dense_widths: tuple[int, ...] = (256, 256)
    num_classes: int = 10
    init: str = 'glorot_normal'

    def __post_init__(self):
        if len(self.conv_channels) != len(self.pool_after):
            raise ValueError('ConvSpec: conv_channels and pool_after must have the same length, '
                             f'got {len(self.conv_channels)} and {len(self.pool_after)}.')

    def describe(self) -> str:
        convs = ''.join(f'{c}{"P" if p else ""},' for c, p in zip(self.conv_channels, self.pool_after))
        return f'Conv[{convs.rstrip(",")}|' + '-'.join(map(str, self.dense_widths)) + f'-{self.num_classes}]'


ModelSpec = Union[MLPSpec, ResNetSpec, ConvSpec]


def _init(name: str) -> Callable[..., Any]:
    if name not in INITIALIZERS:
        raise ValueError(f'Unknown init {name!r}; choose one of {sorted(INITIALIZERS)}.')
    return INITIALIZERS[name]


class MLP(nn.Module):
    """[N, ...] -> logits [N, num_classes]; inputs are flattened."""

    spec: MLPSpec

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        del train
        init = _init(self.spec.init)
        x = x.reshape((x.shape[0], -1))
        for i, width in enumerate(self.spec.widths):
            x = nn.relu(nn.Dense(width, kernel_init=init, name=f'hidden_{i}')(x))
        return nn.Dense(self.spec.num_classes, kernel_init=init, name='output')(x)


class BasicBlock(nn.Module):
    """ResNet BasicBlock with identity skip: [N, H, W, C] -> [N, H, W, C]."""

    channels: int
    width: int
    init: Callable[..., Any]

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        norm = lambda name: nn.BatchNorm(use_running_average=not train, momentum=0.9, name=name)
        y = nn.Conv(self.width, (3, 3), use_bias=False, kernel_init=self.init, name='conv1')(x)
        y = nn.relu(norm('bn1')(y))
        y = nn.Conv(self.channels, (3, 3), use_bias=False, kernel_init=self.init, name='conv2')(y)
        y = norm('bn2')(y)
        return nn.relu(x + y)


class ResNet(nn.Module):
    """[N, 32, 32, 3] -> logits [N, num_classes]."""

    spec: ResNetSpec

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        init = _init(self.spec.init)
        c = self.spec.stem_channels
        x = nn.Conv(c, (7, 7), use_bias=False, kernel_init=init, name='stem')(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, name='stem_bn')(x)
        x = nn.relu(x)
        for i, width in enumerate(self.spec.block_widths):
            x = BasicBlock(c, width, init, name=f'block_{i}')(x, train)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.spec.num_classes, kernel_init=init, name='output')(x)


class ConvNet(nn.Module):
    """Conv-2/4/6: [N, H, W, C] -> logits [N, num_classes]."""

    spec: ConvSpec

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        del train
        init = _init(self.spec.init)
        for i, (channels, pool) in enumerate(zip(self.spec.conv_channels, self.spec.pool_after)):
            x = nn.relu(nn.Conv(channels, (3, 3), kernel_init=init, name=f'conv_{i}')(x))
            if pool:
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = x.reshape((x.shape[0], -1))
        for i, width in enumerate(self.spec.dense_widths):
            x = nn.relu(nn.Dense(width, kernel_init=init, name=f'dense_{i}')(x))
        return nn.Dense(self.spec.num_classes, kernel_init=init, name='output')(x)


def build_model(spec: ModelSpec) -> nn.Module:
    """The Flax module for ``spec``."""
    if isinstance(spec, MLPSpec):
        return MLP(spec)
    if isinstance(spec, ResNetSpec):
        return ResNet(spec)
    if isinstance(spec, ConvSpec):
        return ConvNet(spec)
    raise TypeError(f'Unknown model spec {spec!r}.')


def init_variables(spec: ModelSpec, key: Array, input_shape: Sequence[int]) -> dict[str, Any]:
    """Initial variables ({'params': ..., maybe 'batch_stats': ...}) for one example shape [H, W, C]."""
    model = build_model(spec)
    return dict(model.init(key, jnp.zeros((1, *input_shape), jnp.float32), train=False))


def lenet_300_100(init: str = 'glorot_normal') -> MLPSpec:
    return MLPSpec(widths=(300, 100), init=init)


def paper_mlp(num_hidden: int, width: int = 128, init: str = 'torch_default') -> MLPSpec:
    """The seed paper's MNIST MLP: 784 -> width, ``num_hidden`` Dense(width, width), -> 10."""
    return MLPSpec(widths=(width,) * (1 + num_hidden), init=init)


def paper_resnet(num_blocks: int, channels: int = 8) -> ResNetSpec:
    return ResNetSpec(block_widths=(channels,) * num_blocks, stem_channels=channels)


def conv_n(n: int) -> ConvSpec:
    """Frankle & Carbin's Conv-2 / Conv-4 / Conv-6."""
    if n not in (2, 4, 6):
        raise ValueError(f'Conv-{n} is not defined; use 2, 4 or 6.')
    channels = (64, 64, 128, 128, 256, 256)[:n]
    return ConvSpec(conv_channels=channels, pool_after=(False, True) * (n // 2))


def spec_from_config(model_cfg: Any) -> ModelSpec:
    """Builds a spec from a config mapping with ``family`` and family fields."""
    family = model_cfg['family']
    get = lambda k, d=None: model_cfg.get(k, d) if hasattr(model_cfg, 'get') else d
    if family == 'mlp':
        return MLPSpec(tuple(int(w) for w in model_cfg['widths']),
                       num_classes=int(get('num_classes', 10)),
                       init=str(get('init', 'glorot_normal')))
    if family == 'resnet':
        return ResNetSpec(tuple(int(w) for w in model_cfg['block_widths']),
                          stem_channels=int(get('stem_channels', 8)),
                          num_classes=int(get('num_classes', 10)),
                          init=str(get('init', 'he_normal')))
    if family == 'conv':
        return ConvSpec(tuple(int(c) for c in model_cfg['conv_channels']),
                        tuple(bool(p) for p in model_cfg['pool_after']),
                        tuple(int(w) for w in get('dense_widths', (256, 256))),
                        num_classes=int(get('num_classes', 10)),
                        init=str(get('init', 'glorot_normal')))
    raise ValueError(f"Unknown model family {family!r}; choose 'mlp', 'resnet' or 'conv'.")


def spec_to_dict(spec: ModelSpec) -> dict[str, Any]:
    family = {MLPSpec: 'mlp', ResNetSpec: 'resnet', ConvSpec: 'conv'}[type(spec)]
    return {'family': family, **{k: list(v) if isinstance(v, tuple) else v
                                 for k, v in dataclasses.asdict(spec).items()}}


def count_params(tree: Any) -> int:
    return int(sum(x.size for x in jax.tree.leaves(tree)))
