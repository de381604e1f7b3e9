"""Growing a Flax NNX model and its ``nnx.Optimizer`` in one call, after ``insert_layer``/``widen_layer``.

NNX keeps parameters and optimizer state inside objects; jst's expansions are
pure functions over their values. ``grow_optimizer`` joins the two: it loads
an ``Expansion``'s params into the module rebuilt at the new structure and
returns a new ``nnx.Optimizer`` whose moments and step count carry over by the
expansion's plan (new weights' moments zero). The expansion's masks (a plain
dict) work as they are with ``jst.ops.masks`` and ``keep_pruned_at_zero``::

    grown = widening.widen_layer(nnx.state(model, nnx.Param), masks, key, producer='fc1', consumer='fc2',
                                 amount=4)
    wider = Net(hidden=12, rngs=nnx.Rngs(0))               # the module at the new structure
    optimizer = nnx_growth.grow_optimizer(optimizer, wider, grown)
    optimizer.update(wider, grads, masks=grown.masks)

Imports only ``jst.ops.expand`` and ``jst.ops.pytrees``: part of the ops layer.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jst.ops import expand
from jst.ops import pytrees

__all__ = ['load_params', 'grow_optimizer']


def load_params(model: nnx.Module, params: dict, wrt: nnx.filterlib.Filter = nnx.Param) -> None:
    """Sets ``model``'s ``wrt`` variables to the pure dict ``params`` (same paths and shapes, else an
    ``ExpansionError`` naming them: rebuild the module at the expansion's structure first)."""
    state = nnx.state(model, wrt)
    have = {p: jnp.shape(v) for p, v in pytrees.flatten(state).items()}
    want = {p: jnp.shape(v) for p, v in pytrees.flatten(params).items()}
    if have != want:
        differ = sorted(p for p in set(have) | set(want) if have.get(p) != want.get(p))
        raise expand.ExpansionError(f'The module does not have the structure of these params at {differ[:6]} '
                                    f'(module: {[have.get(p) for p in differ[:6]]}, params: '
                                    f'{[want.get(p) for p in differ[:6]]}): build the module at the new structure '
                                    '(wider layer, inserted layer) before loading.')
    nnx.replace_by_pure_dict(state, params)
    nnx.update(model, state)


def grow_optimizer(optimizer: nnx.Optimizer, model: nnx.Module, expansion: expand.Expansion) -> nnx.Optimizer:
    """A new ``nnx.Optimizer`` for ``model`` (the module rebuilt at the expansion's structure), with
    ``expansion.params`` loaded into it and ``optimizer``'s moments and step count carried over by
    ``expansion.plan`` (``expand.extend_optimizer_state``). ``optimizer`` is left unchanged."""
    load_params(model, expansion.params, optimizer.wrt)
    grown = nnx.Optimizer(model, optimizer.tx, wrt=optimizer.wrt)
    carried = pytrees.flatten(expand.extend_optimizer_state(optimizer.tx, optimizer.opt_state,
                                                            expansion.params, expansion.plan))
    variables = jax.tree_util.tree_flatten_with_path(grown.opt_state,
                                                     is_leaf=lambda x: isinstance(x, nnx.Variable))[0]
    for path, variable in variables:
        if isinstance(variable, nnx.Variable):
            variable.value = carried[pytrees.path_str(path)]
    grown.step.value = optimizer.step.value
    return grown
