"""Validation for the mask functions: every bad input is refused with the path and the fix.

* ``check_masks``: a mask tree fits a parameter tree (paths, shapes, dtypes).
* ``conform``: masks in the structure of the params they apply to, by path
  (a plain dict of masks on an NNX ``State`` and vice versa), as boolean arrays.
* ``check_fraction``: a pruning fraction or sparsity lies in [0, 1]. Concrete
  values are checked at once; a value traced under ``jit``/``vmap`` is checked
  when the compiled function runs (a ``jax.debug.callback`` that raises, so the
  call fails with this module's message inside a ``JaxRuntimeError``).
* ``compile_pattern``: a layer-selecting regex, with an error that names the argument.

Imports only ``jst.ops.pytrees``: part of the ops layer other JAX projects use.
"""

from __future__ import annotations

import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jst.ops import pytrees

PyTree = Any
__all__ = ['check_masks', 'conform', 'check_fraction', 'compile_pattern', 'check_concrete']
MASK_DTYPES = (jnp.dtype(jnp.bool_), jnp.dtype(jnp.uint8))


def _check_leaf(path: str, mask: Any, shape: tuple[int, ...]) -> None:
    if isinstance(mask, (bool, int, float)):
        raise ValueError(f'Mask leaf {path!r} is the Python value {mask!r} (optax.masked style); jst masks hold a '
                         'boolean array per prunable leaf and None for "not prunable".')
    if jnp.dtype(mask.dtype) not in MASK_DTYPES:
        raise ValueError(f'Mask leaf {path!r} has dtype {mask.dtype}; use bool (or uint8, nonzero = kept).')
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(f'Mask {path!r} has shape {tuple(mask.shape)} but its parameter has shape '
                         f'{tuple(shape)}: a stale mask (e.g. from before widening) or a transposed '
                         'one? Use the masks the expansion returns (or create_masks(params)).')


def check_masks(masks: PyTree, params: PyTree) -> None:
    """Raises ``ValueError`` naming the path unless every mask leaf is ``None`` or a boolean (or uint8,
    nonzero = kept) array of its parameter's shape, with the same leaf paths as the params (a linen dict
    and an NNX ``State`` of the same paths match)."""
    flat_m, flat_p = pytrees.flatten(masks), pytrees.flatten(params)
    if set(flat_m) != set(flat_p):
        extra, missing = sorted(set(flat_m) - set(flat_p)), sorted(set(flat_p) - set(flat_m))
        raise ValueError(f'The masks do not have the structure of the params (masks only: {extra[:5]}; params '
                         f'only: {missing[:5]}). After a structural change use the masks the expansion returns.')
    for path, m in flat_m.items():
        if m is not None:
            _check_leaf(path, m, jnp.shape(flat_p[path]))


def check_mask_leaves(masks: PyTree) -> None:
    """The dtype part of ``check_masks`` for functions that take masks alone."""
    for path, m in pytrees.flatten(masks).items():
        if m is not None:
            _check_leaf(path, m, jnp.shape(m))


def conform(masks: PyTree, like: PyTree) -> PyTree:
    """``masks`` checked against ``like`` (params or scores) and rebuilt in ``like``'s structure, by path,
    as boolean arrays (uint8 nonzero = kept); ``None`` where not prunable."""
    check_masks(masks, like)
    flat = pytrees.flatten(masks)

    def leaf(path: Any, _: Any) -> Any:
        m = flat[pytrees.path_str(path)]
        return None if m is None else jnp.asarray(m).astype(jnp.bool_)

    return jax.tree_util.tree_map_with_path(leaf, like, is_leaf=pytrees.is_none)


def _raise_outside_unit_interval(name: str, value: np.ndarray) -> None:
    value = np.asarray(value)
    if not np.all((value >= 0.0) & (value <= 1.0)):
        raise ValueError(f'{name}={value.tolist()} must be in [0, 1] (checked when the compiled function ran: '
                         'the value was traced under jit/vmap).')


def check_fraction(name: str, value: Any) -> None:
    """Refuses a fraction outside [0, 1] (NaN included): concrete values now, traced ones at run time."""
    leaves = [v for v in jax.tree.leaves(value) if v is not None]
    for v in leaves:
        if isinstance(v, jax.core.Tracer):
            jax.debug.callback(_raise_outside_unit_interval, name, v)
        elif not np.all((np.asarray(v, np.float64) >= 0.0) & (np.asarray(v, np.float64) <= 1.0)):
            raise ValueError(f'{name}={np.asarray(v).tolist()} must be in [0, 1].')


def compile_pattern(name: str, pattern: str) -> re.Pattern:
    """``re.compile(pattern)``, or a ``ValueError`` naming the argument and the regex error."""
    try:
        return re.compile(pattern)
    except (re.error, TypeError) as err:
        raise ValueError(f'{name}={pattern!r} is not a valid regular expression ({err}); paths are "/"-joined, '
                         "e.g. r'^Dense_0/kernel$' (NNX: r'^l1/kernel$', no '/value').") from None


def check_concrete(tree: PyTree, function: str, alternative: str) -> None:
    """Refuses traced leaves in a host-side function, naming the traceable ``alternative``."""
    if any(isinstance(v, jax.core.Tracer) for v in jax.tree.leaves(tree)):
        raise TypeError(f'{function} reads concrete values on the host and cannot run under jit/vmap; '
                        f'call it outside, or use {alternative} inside.')
