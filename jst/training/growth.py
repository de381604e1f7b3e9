"""Growing jst's spec-built networks: the generic ``jst.ops.expand`` operations applied per family.

* ``deepen``: insert one function-preserving hidden layer at ``position``
  (-1: end of the hidden stack), of the kind the family says
  (``spec.deepened``):
  - MLP: Dense(w, w) with identity kernel and zero bias after a ReLU layer:
    relu(I h + 0) = h for h >= 0, exactly function-preserving.
  - Conv net: a 3x3 Dirac conv (zero bias), exactly preserving.
  - ResNet: a BasicBlock. ``block_init='zero'`` (default) initialises conv1
    and conv2 randomly and the last BatchNorm's scale to 0, so the residual
    branch outputs 0 and the block is the identity after the ReLU in train
    *and* eval mode (exactly preserving). ``block_init='paper'`` is the seed
    paper's identity (Dirac) kernels with default BatchNorm: it does *not*
    preserve the function (BatchNorm normalises the branch, and the branch is
    added to the skip: the block roughly doubles its input in eval mode).
* ``widen``: add ``amount`` units/channels to layer ``layer``
  (``spec.widenable_layers``), ``'zero_fanout'`` or ``'net2net'``.

Both return an ``expand.Expansion`` whose ``spec`` is the grown spec, and run
under ``jax.jit`` with the spec, sizes and options static::

    grow = jax.jit(growth.deepen, static_argnames=('spec', 'position', 'options'))
"""

from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jst.models import networks
from jst.models import specs
from jst.ops import expand
from jst.ops import widening
from jst.training import train as train_lib

Array = jax.Array
PyTree = Any


def deepen(params: PyTree, masks: PyTree, spec: specs.ModelSpec, key: Array, *,
           position: int = -1, batch_stats: Optional[PyTree] = None,
           options: expand.GrowthOptions = expand.GrowthOptions()) -> expand.Expansion:
    """Inserts one function-preserving hidden layer (block) at ``position`` (-1: end of the stack)."""
    positions = spec.deepen_positions
    pos = positions[-1] if position < 0 else position
    if pos not in positions:
        raise expand.ExpansionError(f'position {position} out of range [{positions[0]}, {positions[-1]}] '
                                    f'(or -1 for the end) for {spec.describe()}.')
    new_spec, insertion = spec.deepened(pos)
    k_init, k_mask, k_noise = jax.random.split(key, 3)
    new, keep, new_stats = _identity_layer(insertion, spec.init, k_init, k_noise, options)
    return expand.insert_leaves(params, masks, batch_stats, new, new_stats, insertion.rename, keep, k_mask,
                                options, spec=new_spec)


# An inserted layer that computes the identity, by ``specs.Insertion.kind``: width -> (params, kept positions).
IDENTITY_LAYERS: dict[str, Any] = {
    'dense_identity': lambda width: (expand.identity_dense(width), np.eye(width, dtype=bool)),
    'conv_dirac': lambda width: (expand.dirac_conv(width), expand.dirac_kernel(width) != 0),
}


def _identity_layer(insertion: specs.Insertion, init: str, k_init: Array, k_noise: Array,
                    options: expand.GrowthOptions) -> tuple[dict[str, Array], dict[str, np.ndarray], dict[str, Array]]:
    """(new params, positions their masks must keep, new batch_stats) of the inserted layer."""
    name, width = insertion.name, insertion.width
    if insertion.kind == 'residual_block':
        return _residual_block(insertion, init, k_init, k_noise, options)
    if insertion.kind not in IDENTITY_LAYERS:  # a spec's new kind: add its identity here, never guess a conv
        raise expand.ExpansionError(f'{name}: no identity layer for insertion kind {insertion.kind!r}; known: '
                                    f'{sorted(IDENTITY_LAYERS) + ["residual_block"]} (jst.training.growth).')
    layer, keep = IDENTITY_LAYERS[insertion.kind](width)
    kernel = f'{name}/kernel'
    new = {kernel: expand.add_noise(layer['kernel'], k_noise, options), f'{name}/bias': layer['bias']}
    return new, {kernel: keep}, {}


def _residual_block(insertion: specs.Insertion, init: str, key: Array, k_noise: Array,
                    options: expand.GrowthOptions) -> tuple[dict[str, Array], dict[str, np.ndarray], dict[str, Array]]:
    name, width, c = insertion.name, insertion.width, insertion.channels
    k1, k2 = jax.random.split(key)
    if options.block_init == 'zero':
        conv1 = networks.initializer(init)(k1, (3, 3, c, width), jnp.float32)
        conv2 = networks.initializer(init)(k2, (3, 3, width, c), jnp.float32)
        bn2_scale, keep = jnp.zeros((c,)), {}
    elif options.block_init == 'paper':
        if width != c:
            raise expand.ExpansionError(f'{name}: paper (Dirac) block init needs width == channels '
                                        f'({width} != {c}).')
        dirac = expand.dirac_kernel(c)
        conv1 = conv2 = jnp.asarray(dirac)
        bn2_scale = jnp.ones((c,))
        dirac = dirac != 0
        keep = {f'{name}/conv1/kernel': dirac, f'{name}/conv2/kernel': dirac}
    else:
        raise ValueError(f"block_init must be 'zero' or 'paper', not {options.block_init!r}.")
    kn1, kn2 = jax.random.split(k_noise)
    params = {f'{name}/conv1/kernel': expand.add_noise(conv1, kn1, options),
              f'{name}/bn1/scale': jnp.ones((width,)), f'{name}/bn1/bias': jnp.zeros((width,)),
              f'{name}/conv2/kernel': expand.add_noise(conv2, kn2, options),
              f'{name}/bn2/scale': bn2_scale, f'{name}/bn2/bias': jnp.zeros((c,))}
    stats = {f'{name}/bn1/mean': jnp.zeros((width,)), f'{name}/bn1/var': jnp.ones((width,)),
             f'{name}/bn2/mean': jnp.zeros((c,)), f'{name}/bn2/var': jnp.ones((c,))}
    return params, keep, stats


def widen(params: PyTree, masks: PyTree, spec: specs.ModelSpec, key: Array, *,
          layer: int, amount: int, batch_stats: Optional[PyTree] = None,
          options: expand.GrowthOptions = expand.GrowthOptions()) -> expand.Expansion:
    """Adds ``amount`` units to layer ``layer`` of a jst model (function-preserving)."""
    if layer not in spec.widenable_layers:
        raise expand.ExpansionError(f'{spec.describe()} can widen layers {list(spec.widenable_layers)}; '
                                    f'not layer {layer}. (A conv layer that feeds the flattened dense layer '
                                    'cannot be widened.)')
    producers, consumers = spec.unit_group(layer)
    return widening.widen_units(params, masks, batch_stats, producers, consumers, key, amount, options,
                              spec=spec.widened(layer, amount))


def options_from_config(config: Any) -> expand.GrowthOptions:
    """The growth knobs of a run config."""
    return expand.GrowthOptions(new_mask=config.new_layer_mask, noise_scale=float(config.noise_scale),
                                block_init=config.block_init, widen_method=config.widen_method,
                                prune_include=config.prune_include, prune_exclude=config.prune_exclude or None)


def grown_state(state: train_lib.TrainState, grown: expand.Expansion, tx: Any,
                carry_optimizer_state: bool = True) -> train_lib.TrainState:
    """TrainState of the extended network: Adam moments of surviving weights carried over and new ones
    zero (``carry_optimizer_state``), or a fresh optimizer state."""
    if carry_optimizer_state:
        opt_state = expand.extend_optimizer_state(tx, state.opt_state, grown.params, grown.plan)
    else:
        opt_state = tx.init(grown.params)
    return train_lib.TrainState(step=state.step, params=grown.params, batch_stats=grown.batch_stats,
                                masks=grown.masks, opt_state=opt_state)
