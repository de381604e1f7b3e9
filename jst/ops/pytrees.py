"""Small pytree helpers shared by every module: "/"-joined leaf paths, flat dicts, stacking.

A leaf of a Flax variable tree is addressed by its path joined with "/"
(``'hidden_0/kernel'``, ``'block_3/conv1/kernel'``); a Flax NNX ``State`` by
the same path (``'l1/kernel'``: the ``.value`` of its ``Variable`` is not part
of the path), so one regex means one layer on linen and NNX alike. ``flatten`` and
``unflatten`` convert between a nested tree and ``{path: leaf}``; ``None``
leaves (unprunable positions of a mask tree) are kept. Imports no other jst
module.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax
import jax
import jax.numpy as jnp
from flax import nnx
from flax import traverse_util

PyTree = Any


def is_none(x: Any) -> bool:
    return x is None


def path_str(path: Sequence[Any]) -> str:
    """Joins a jax key path (dict keys, attributes, indices) into ``'a/b/kernel'``; the ``.value`` attribute
    that ends an NNX ``Variable``'s path is dropped (``'l1/kernel'``, as in ``nnx.to_pure_dict``)."""
    path = tuple(path)
    if path and isinstance(path[-1], jax.tree_util.GetAttrKey) and path[-1].name == 'value':
        path = path[:-1]
    return '/'.join(str(getattr(k, 'key', getattr(k, 'name', getattr(k, 'idx', k)))) for k in path)


def as_pure_dict(tree: PyTree) -> PyTree:
    """A Flax NNX ``State`` as the nested dict of its values (``nnx.to_pure_dict``); anything else as is.
    Back: ``nnx.replace_by_pure_dict(state, pure)`` (same shapes) or a new module's state."""
    if isinstance(tree, nnx.State):
        return nnx.to_pure_dict(tree)
    return tree


def flatten(tree: PyTree) -> dict[str, Any]:
    """``{path: leaf}`` in tree order; ``None`` leaves are kept; an NNX State by its values' paths."""
    flat, _ = jax.tree_util.tree_flatten_with_path(as_pure_dict(tree), is_leaf=is_none)
    return {path_str(p): v for p, v in flat}


def flatten_dict(tree: PyTree) -> dict[str, Any]:
    """``{path: leaf}`` of a nested (frozen) dict or NNX State, ``None`` leaves included; {} when empty."""
    tree = as_pure_dict(tree)
    if not tree:
        return {}
    return traverse_util.flatten_dict(flax.core.unfreeze(tree), sep='/')


def unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    """Inverse of ``flatten_dict``: a nested dict from ``{path: leaf}``."""
    return traverse_util.unflatten_dict(flat, sep='/') if flat else {}


def leaf_paths(tree: PyTree) -> list[str]:
    """Paths of the leaves of ``tree`` (``None`` leaves included) in tree order."""
    return list(flatten(tree))


def stack(trees: Sequence[PyTree]) -> PyTree:
    """[N] trees of one structure -> one tree whose leaves carry a leading axis of size N."""
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def unstack(tree: PyTree, n: int) -> list[PyTree]:
    """Inverse of ``stack``: the ``n`` trees along the leading axis."""
    return [jax.tree.map(lambda x, i=i: x[i], tree) for i in range(n)]


def count(tree: PyTree) -> int:
    """Number of scalars in the leaves of ``tree``."""
    return int(sum(x.size for x in jax.tree.leaves(tree)))


def flax_variables(params: PyTree, batch_stats: PyTree) -> dict[str, Any]:
    """``{'params': ..., 'batch_stats': ...}`` for ``Module.apply`` (no empty ``batch_stats``)."""
    return {'params': params, 'batch_stats': batch_stats} if batch_stats else {'params': params}
