"""What the conv-net step benchmarks share: the two networks, one random batch, a median step timer, jst's Adam
step, and the machine's description. No absl flags here, so any benchmark can import it."""

from __future__ import annotations

import functools
import os
import platform
import statistics
import time
from typing import Any, Callable, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jst.data import datasets
from jst.models import networks
from jst.models import specs
from jst.ops import masks as masks_lib
from jst.training import train as train_lib

LR = 1e-3
NETWORKS = {  # name: (spec, batch size)
    'resnet': (lambda: specs.ResNetSpec(block_widths=(8,) * 7, stem_channels=8), 128),
    'conv2': (lambda: specs.ConvSpec(conv_channels=(64, 64), pool_after=(False, True), dense_widths=(256, 256)), 60),
}


def median_step_s(step: Callable[[], Any], steps: int, after_warm_up: Callable[[], None] = lambda: None) -> float:
    """Median wall time (s) of ``steps`` calls of ``step`` after two warm-up calls (and ``after_warm_up()``, e.g. a
    barrier that starts several processes' timed steps together)."""
    for _ in range(2):  # warm-up: compilation (JAX), allocator and kernel choice (PyTorch)
        step()
    after_warm_up()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def verdict(values: list[float], reference: list[float], higher_is_better: bool = False) -> str:
    """``faster`` when every round's value beat every round of the reference (a lower step time, or a higher
    throughput when ``higher_is_better``), ``slower`` the other way round, ``within noise`` otherwise."""
    if higher_is_better:
        values, reference = [-v for v in values], [-v for v in reference]
    if max(values) < min(reference):
        return 'faster'
    if min(values) > max(reference):
        return 'slower'
    return 'within noise'


T = TypeVar('T')


def rotated(items: list[str], by: int) -> list[str]:
    """``items`` rotated left ``by`` places (round r starts with the r-th item)."""
    by %= len(items)
    return list(items[by:]) + list(items[:by])


def measure_in_rounds(variants: list[str], rounds: int, measure: Callable[[str], T]) -> dict[str, list[T]]:
    """``measure(variant)`` for every variant once per round, the order rotated each round so that slow spells of a
    shared machine hit every variant; per variant, its results in round order."""
    runs: dict[str, list[T]] = {v: [] for v in variants}
    for r in range(rounds):
        for variant in rotated(variants, r):
            runs[variant].append(measure(variant))
    return runs


def random_batch(batch: int) -> tuple[np.ndarray, np.ndarray]:
    """A fixed random batch: uint8 images [batch, 32, 32, 3] and int32 labels [batch]."""
    rng = np.random.default_rng(0)
    return (rng.integers(0, 256, (batch, 32, 32, 3), dtype=np.uint8),
            rng.integers(0, 10, batch).astype(np.int32))


def jst_stepper(spec: specs.ModelSpec, batch: int, conv_form: str = 'auto') -> Callable[[], float]:
    """A function running one Adam step of jst's ``Trainer.train_step`` per call on one random batch (the state
    kept inside), returning that step's loss once computed; ``conv_form``: ``jst.models.convolution.CONV_FORMS``."""
    trainer = train_lib.Trainer(networks.build_model(spec, conv_form), optax.adam(LR), batch,
                                functools.partial(datasets.preprocess, dataset='cifar10'))
    variables = networks.init_variables(spec, jax.random.key(0), (32, 32, 3))
    box = {'s': train_lib.create_train_state(variables, masks_lib.create_masks(variables['params']), trainer.tx)}
    x, y = (jnp.asarray(a) for a in random_batch(batch))
    train_step = jax.jit(trainer.train_step)

    def step() -> float:
        box['s'], metrics = train_step(box['s'], x, y)
        return float(metrics['loss'])

    return step



def processor_name() -> str:
    """The CPU's model name (``/proc/cpuinfo`` where there is one), else what ``platform`` knows."""
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """Backend, CPU count, processor and jax version of this process (a results JSON's ``machine``)."""
    return {'backend': jax.default_backend(), 'cpus': os.cpu_count(), 'jax': jax.__version__,
            'processor': processor_name()}
