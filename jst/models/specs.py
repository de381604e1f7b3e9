"""Structure specs: the model families and everything the searches ask of them.

A spec is a frozen dataclass that fully determines an architecture; a changed
spec is a changed architecture. Each family answers the questions that the
growth operators and the searches ask (depth, valid growth positions,
widenable layers, whether it has convolutions, which parameters a widening
touches), so that no other module tests a spec's type. A new family is one
class here, one Flax module in ``jst.models.networks`` and one line in each registry.

Parameter names encode position (``hidden_0``, ``hidden_1``, ..., ``output``;
``block_0``, ...): layers are ordered by the spec, never by sorting names
(``hidden_10`` sorts before ``hidden_2``). Imports only ``jst.errors``.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, ClassVar, Literal, Sequence, Union

from jst import errors

Family = Literal['mlp', 'resnet', 'conv']
# A leaf that widening a layer touches: (path, units axis, kind); kinds 'mean'/'var' live in batch_stats.
Producer = tuple[str, int, str]
Consumer = tuple[str, int]


class SpecError(errors.UserError, ValueError):
    """A model config that does not describe a spec (unknown family, a value that does not fit its field)."""


@dataclasses.dataclass(frozen=True)
class Insertion:
    """What deepening inserts: a ``kind`` of identity layer named ``name``, and the renaming it causes.

    kind: 'dense_identity' (Dense(w, w), kernel I), 'conv_dirac' (3x3 Conv(c, c), Dirac kernel) or
    'residual_block' (a BasicBlock of inner width ``width`` on ``channels`` channels).
    """

    kind: str
    name: str
    width: int
    channels: int
    rename: dict[str, str]


def _shift(prefix: str, start: int, stop: int) -> dict[str, str]:
    """Renaming of layers ``prefix_start .. prefix_{stop-1}`` one position up."""
    return {f'{prefix}_{j}': f'{prefix}_{j + 1}' for j in range(start, stop)}


def _plus(values: tuple[int, ...], index: int, amount: int) -> tuple[int, ...]:
    return values[:index] + (values[index] + amount,) + values[index + 1:]


class _Family:
    """What every family's spec shares: a growable stack of hidden layers (the field named ``_stack``)."""

    _stack: ClassVar[str]
    _first_position: ClassVar[int] = 1  # lowest deepen position

    def to_dict(self) -> dict[str, Any]:
        """JSON form of the spec (``spec_from_config`` reads it back)."""
        return spec_to_dict(self)

    @property
    def depth(self) -> int:
        """Number of hidden layers (blocks)."""
        return len(getattr(self, self._stack))

    @property
    def deepen_positions(self) -> range:
        """Where ``growth.deepen`` may insert a layer (``p``: before hidden layer ``p``)."""
        return range(self._first_position, len(getattr(self, self._stack)) + 1)

    @property
    def widenable_layers(self) -> Sequence[int]:
        """Layers ``growth.widen`` (and the structure search) may widen."""
        return range(len(getattr(self, self._stack)))


@dataclasses.dataclass(frozen=True)
class MLPSpec(_Family):
    """Dense layers of ``widths`` with ReLU, then a linear output (LeNet-300-100, the paper's MNIST MLP)."""

    widths: tuple[int, ...]
    num_classes: int = 10
    init: str = 'glorot_normal'
    family: ClassVar[str] = 'mlp'
    has_convolutions: ClassVar[bool] = False
    preactivation_pattern: ClassVar[str] = r'^hidden_\d+$'  # modules whose outputs feed a ReLU
    _stack: ClassVar[str] = 'widths'  # a new layer goes after a ReLU layer: identity is exact

    def describe(self) -> str:
        return 'MLP[' + '-'.join(str(w) for w in self.widths) + f'-{self.num_classes}]'

    def deepened(self, pos: int) -> tuple[MLPSpec, Insertion]:
        width = self.widths[pos - 1]
        return (dataclasses.replace(self, widths=self.widths[:pos] + (width,) + self.widths[pos:]),
                Insertion('dense_identity', f'hidden_{pos}', width, width, _shift('hidden', pos, self.depth)))

    def widened(self, layer: int, amount: int) -> MLPSpec:
        return dataclasses.replace(self, widths=_plus(self.widths, layer, amount))

    def unit_group(self, layer: int) -> tuple[list[Producer], list[Consumer]]:
        nxt = f'hidden_{layer + 1}' if layer + 1 < self.depth else 'output'
        return ([(f'hidden_{layer}/kernel', -1, 'kernel'), (f'hidden_{layer}/bias', -1, 'bias')],
                [(f'{nxt}/kernel', 0)])


@dataclasses.dataclass(frozen=True)
class ResNetSpec(_Family):
    """The seed paper's CIFAR-10 net: 7x7 stem + BN + ReLU, BasicBlocks (inner widths ``block_widths``),
    global average pooling and a linear output."""

    block_widths: tuple[int, ...] = ()
    stem_channels: int = 8
    num_classes: int = 10
    init: str = 'he_normal'
    family: ClassVar[str] = 'resnet'
    has_convolutions: ClassVar[bool] = True
    preactivation_pattern: ClassVar[str] = r'^(stem_bn|block_\d+/bn1)$'
    _stack: ClassVar[str] = 'block_widths'
    _first_position: ClassVar[int] = 0  # a block may go right after the stem

    def describe(self) -> str:
        blocks = ','.join(str(w) for w in self.block_widths)
        return f'ResNet[stem{self.stem_channels}x7x7; {len(self.block_widths)} blocks({blocks})]'

    def deepened(self, pos: int) -> tuple[ResNetSpec, Insertion]:
        w = self.block_widths
        width = w[pos - 1] if pos > 0 else (w[0] if w else self.stem_channels)
        return (dataclasses.replace(self, block_widths=w[:pos] + (width,) + w[pos:]),
                Insertion('residual_block', f'block_{pos}', width, self.stem_channels,
                          _shift('block', pos, self.depth)))

    def widened(self, layer: int, amount: int) -> ResNetSpec:
        return dataclasses.replace(self, block_widths=_plus(self.block_widths, layer, amount))

    def unit_group(self, layer: int) -> tuple[list[Producer], list[Consumer]]:
        b = f'block_{layer}'
        return ([(f'{b}/conv1/kernel', -1, 'kernel'), (f'{b}/bn1/scale', -1, 'bn_scale'),
                 (f'{b}/bn1/bias', -1, 'bn_bias'), (f'{b}/bn1/mean', -1, 'mean'), (f'{b}/bn1/var', -1, 'var')],
                [(f'{b}/conv2/kernel', -2)])


@dataclasses.dataclass(frozen=True)
class ConvSpec(_Family):
    """Frankle & Carbin's Conv-2/4/6: 3x3 convs (ReLU) with 2x2 max-pooling where ``pool_after`` says,
    then Dense layers and the output. Layers are numbered convs first, then dense."""

    conv_channels: tuple[int, ...]
    pool_after: tuple[bool, ...]
    dense_widths: tuple[int, ...] = (256, 256)
    num_classes: int = 10
    init: str = 'glorot_normal'
    family: ClassVar[str] = 'conv'
    has_convolutions: ClassVar[bool] = True
    preactivation_pattern: ClassVar[str] = r'^(conv|dense)_\d+$'
    _stack: ClassVar[str] = 'conv_channels'  # deepening inserts convs

    def __post_init__(self):
        if len(self.conv_channels) != len(self.pool_after):
            raise ValueError('ConvSpec: conv_channels and pool_after must have the same length, '
                             f'got {len(self.conv_channels)} and {len(self.pool_after)}.')

    def describe(self) -> str:
        convs = ''.join(f'{c}{"P" if p else ""},' for c, p in zip(self.conv_channels, self.pool_after))
        return f'Conv[{convs.rstrip(",")}|' + '-'.join(map(str, self.dense_widths)) + f'-{self.num_classes}]'

    @property
    def depth(self) -> int:
        return len(self.conv_channels) + len(self.dense_widths)

    @property
    def widenable_layers(self) -> list[int]:
        """Every conv but the last (it feeds the flattened dense layer), then every dense layer."""
        nc = len(self.conv_channels)
        return list(range(nc - 1)) + list(range(nc, nc + len(self.dense_widths)))

    def deepened(self, pos: int) -> tuple[ConvSpec, Insertion]:
        c, nc = self.conv_channels[pos - 1], len(self.conv_channels)
        new = dataclasses.replace(self, conv_channels=self.conv_channels[:pos] + (c,) + self.conv_channels[pos:],
                                  pool_after=self.pool_after[:pos] + (False,) + self.pool_after[pos:])
        return new, Insertion('conv_dirac', f'conv_{pos}', c, c, _shift('conv', pos, nc))

    def widened(self, layer: int, amount: int) -> ConvSpec:
        nc = len(self.conv_channels)
        if layer < nc:
            return dataclasses.replace(self, conv_channels=_plus(self.conv_channels, layer, amount))
        return dataclasses.replace(self, dense_widths=_plus(self.dense_widths, layer - nc, amount))

    def unit_group(self, layer: int) -> tuple[list[Producer], list[Consumer]]:
        nc, nd = len(self.conv_channels), len(self.dense_widths)
        if layer < nc:
            return ([(f'conv_{layer}/kernel', -1, 'kernel'), (f'conv_{layer}/bias', -1, 'bias')],
                    [(f'conv_{layer + 1}/kernel', -2)])
        d = layer - nc
        nxt = f'dense_{d + 1}' if d + 1 < nd else 'output'
        return ([(f'dense_{d}/kernel', -1, 'kernel'), (f'dense_{d}/bias', -1, 'bias')], [(f'{nxt}/kernel', 0)])


ModelSpec = Union[MLPSpec, ResNetSpec, ConvSpec]
SPEC_CLASSES: dict[str, type] = {cls.family: cls for cls in (MLPSpec, ResNetSpec, ConvSpec)}
FAMILIES: tuple[str, ...] = tuple(SPEC_CLASSES)
_DEFAULT_INIT = {'mlp': 'glorot_normal', 'resnet': 'he_normal', 'conv': 'glorot_normal'}


def spec_from_config(model_cfg: Any) -> ModelSpec:
    """Builds a spec from a mapping with ``family`` and that family's fields (missing ones default)."""
    family = model_cfg['family']
    if family not in SPEC_CLASSES:
        raise SpecError(f'Unknown model family {family!r}; choose one of {FAMILIES}.')
    cls = SPEC_CLASSES[family]
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(model_cfg) - set(names) - {'family'})
    if unknown:
        raise SpecError(f'model.{unknown[0]} is not a field of the {family} family (its fields: {", ".join(names)}).')
    values = {}
    for field in dataclasses.fields(cls):
        if field.name in model_cfg:
            value = model_cfg[field.name]
            values[field.name] = tuple(value) if isinstance(value, (list, tuple)) else value
    values.setdefault('init', _DEFAULT_INIT[family])
    return cls(**_coerce(cls, values))


def _coerce(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """Config values (JSON lists, ints stored as floats) to the spec's field types; a value that does not fit its
    field (a fractional width, a word for a count) is refused, naming the field, never rounded."""
    hints = typing.get_type_hints(cls)
    return {k: _coerce_value(cls.family, k, hints[k], v) for k, v in values.items()}


def _coerce_value(family: str, name: str, hint: Any, value: Any) -> Any:
    if typing.get_origin(hint) is tuple:
        item = typing.get_args(hint)[0]
        if not isinstance(value, (list, tuple)):
            raise SpecError(f'model.{name}={value!r} ({family}): give a list of {item.__name__}s, e.g. [128, 128].')
        return tuple(_coerce_value(family, f'{name}[{i}]', item, v) for i, v in enumerate(value))
    if hint is bool:
        if value not in (True, False, 0, 1):
            raise SpecError(f'model.{name}={value!r} ({family}): give True or False.')
        return bool(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or float(value) != int(value):
            raise SpecError(f'model.{name}={value!r} ({family}): give a whole number (it counts units, layers or '
                            'classes; it is never rounded).')
        return int(value)
    if hint is str:
        if not isinstance(value, str):
            raise SpecError(f'model.{name}={value!r} ({family}): give a name (a string).')
        return value
    raise SpecError(f'{family} spec field {name!r} has type {hint}, which spec_from_config cannot read: add it to '
                    'jst.models.specs._coerce_value.')


def spec_to_dict(spec: ModelSpec) -> dict[str, Any]:
    """JSON form of a spec (``spec_from_config`` reads it back)."""
    return {'family': spec.family, **{k: list(v) if isinstance(v, tuple) else v
                                      for k, v in dataclasses.asdict(spec).items()}}


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
