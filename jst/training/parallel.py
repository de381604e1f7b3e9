"""Data parallelism with ``jax.sharding``: a 1-D ``Mesh`` over devices with axis ``'data'``.

Batches are sharded along their first axis (``NamedSharding(mesh, P('data'))``);
params, masks, optimizer state and the (small) datasets are replicated. XLA's
SPMD partitioner then splits every step across devices and all-reduces the
gradients, so the training code is the same as on one device and gives the
same results up to float summation order.

Multi-host (TPU pods, GPU clusters): start every host with
``JST_DISTRIBUTED=1`` so that ``launch/main.py`` calls
``initialize_distributed`` -> ``jax.distributed.initialize()`` (which reads
the coordinator address and process ids from the environment of Cloud TPU,
SLURM or Open MPI; elsewhere set ``JST_COORDINATOR=host:port``,
``JST_NUM_PROCESSES`` and ``JST_PROCESS_ID``), and set
``--config.num_devices=-1`` to use every device of every host. Every process
runs the same search on the same data; process 0 writes the records, orbax
writes each checkpoint once. Tested: two processes on one CPU machine
(``tests/test_distributed.py``).
"""

from __future__ import annotations

import os
from typing import Any, Optional

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = 'data'


def initialize_distributed(environ: Optional[dict[str, str]] = None) -> None:
    """``jax.distributed.initialize`` from the cluster's environment, or from ``JST_COORDINATOR``,
    ``JST_NUM_PROCESSES`` and ``JST_PROCESS_ID`` where set (CPU processes talk through gloo)."""
    env = os.environ if environ is None else environ
    kwargs = {}
    if env.get('JST_COORDINATOR'):
        kwargs = {'coordinator_address': env['JST_COORDINATOR'],
                  'num_processes': int(env['JST_NUM_PROCESSES']), 'process_id': int(env['JST_PROCESS_ID'])}
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(**kwargs)


def make_mesh(num_devices: int) -> Optional[Mesh]:
    """A data-parallel mesh over ``num_devices`` devices (-1: all); None for a single device."""
    devices = jax.devices()
    n = len(devices) if num_devices < 0 else num_devices
    if n > len(devices):
        raise ValueError(f'num_devices={num_devices} but only {len(devices)} devices are visible '
                         f'({jax.default_backend()}). On CPU, test with '
                         'XLA_FLAGS=--xla_force_host_platform_device_count=8.')
    if n <= 1:
        return None
    return Mesh(np.array(devices[:n]), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(DATA_AXIS))


def replicate(tree: Any, mesh: Optional[Mesh]) -> Any:
    """Puts every array of ``tree`` on all devices of ``mesh`` (no-op without a mesh)."""
    if mesh is None:
        return tree
    return jax.device_put(tree, replicated(mesh))


def shard_batch(x: jax.Array, mesh: Optional[Mesh]) -> jax.Array:
    """Inside ``jit``: constrains a batch [B, ...] to be split along B across the mesh."""
    if mesh is None:
        return x
    return jax.lax.with_sharding_constraint(x, batch_sharded(mesh))
