"""Which XLA:CPU kernels run a network's convolutions: the one place that knows XLA:CPU's fusion flags.

XLA:CPU (jaxlib 0.10.2) can hand dots, elementwise ops and reductions to the YNNPACK and XNNPACK libraries
(``--xla_cpu_experimental_ynn_fusion_type``, ``--xla_cpu_experimental_xnn_fusion_type``). For Frankle &
Carbin's Conv-2 this makes one Adam step faster with the same math (same ``lax.conv_general_dilated``, same
parameters; only the kernels' summation order differs:
``tests/test_cpu_kernels.py`` bounds forward and gradients within 1e-5 relative; ``docs/results/speed.md``
measures it). The flags are process-wide and are read once, when JAX first starts its CPU backend, so
``apply_cpu_kernels`` must run before any JAX computation (``driver.train_and_evaluate`` calls it first).

* ``cpu_kernels='auto'``: the library kernels for the families in ``LIBRARY_WINS_FOR``, XLA's own otherwise.
  In ``docs/results/speed.md`` (``benchmarks/bench_xla_flags.py``, 3 rounds, 2026-12-07, a 2-core EPYC) one Adam
  step of Conv-2 is 5.67x faster with them and the paper's ResNet 2.03x, faster in every round (with
  ``jst.models.batch_norm``'s one-pass BatchNorm; a one-run measurement on a 2-core Xeon, 2026-12-06, in git
  history, gave 2.0x and 1.59x); dense MLPs: not measured faster;
* ``'library'``: always; ``'xla'``: never (how every record before this knob was made).

No other kernel flag of jaxlib 0.10.2 beat these in every round of ``benchmarks/bench_xla_flags.py`` (2026-12-07,
a 2-core EPYC: ``individual_convolution`` for YNNPACK, XNNPACK or oneDNN, ``--xla_cpu_use_onednn``, XNNPACK's
graph fusion modes); YNNPACK's convolution made Conv-2's step 4.7x slower.
"""

from __future__ import annotations

import os
from typing import Literal

CpuKernels = Literal['auto', 'library', 'xla']
CPU_KERNELS: tuple[str, ...] = ('auto', 'library', 'xla')
LIBRARY_WINS_FOR: tuple[str, ...] = ('conv', 'resnet')  # model families where 'auto' picks the library kernels
LIBRARY_FLAGS: tuple[str, ...] = ('--xla_cpu_experimental_ynn_fusion_type=dot,eltwise,reduce',
                                  '--xla_cpu_experimental_xnn_fusion_type=dot,eltwise,reduce')


def wants_library_kernels(choice: CpuKernels, library_wins: bool) -> bool:
    """Whether ``choice`` asks for the YNNPACK/XNNPACK kernels, for a network where they win or not."""
    if choice not in CPU_KERNELS:
        raise ValueError(f'cpu_kernels must be one of {CPU_KERNELS}, not {choice!r}.')
    return choice == 'library' or (choice == 'auto' and library_wins)


def xla_flags_with_library(xla_flags: str) -> str:
    """``xla_flags`` (an ``XLA_FLAGS`` value) with ``LIBRARY_FLAGS`` added; a fusion flag already set wins."""
    given = xla_flags.split()
    names = {f.split('=')[0] for f in given}
    return ' '.join(given + [f for f in LIBRARY_FLAGS if f.split('=')[0] not in names])


def library_kernels_active() -> bool:
    """Whether this process's ``XLA_FLAGS`` set the YNN fusion (what the CPU backend reads at its start)."""
    return LIBRARY_FLAGS[0].split('=')[0] in os.environ.get('XLA_FLAGS', '')


def backend_started() -> bool:
    """Whether JAX has started its backends (after which ``XLA_FLAGS`` changes nothing)."""
    from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top
    return xla_bridge.backends_are_initialized()


def apply_cpu_kernels(choice: CpuKernels, library_wins: bool) -> str:
    """Sets ``XLA_FLAGS`` for ``choice`` before JAX starts; returns what is in effect ('library' or 'xla').

    Once the backend has started (a notebook or test that already ran JAX), nothing changes and the answer says
    what that process runs with."""
    if wants_library_kernels(choice, library_wins) and not backend_started():
        os.environ['XLA_FLAGS'] = xla_flags_with_library(os.environ.get('XLA_FLAGS', ''))
    return 'library' if library_kernels_active() else 'xla'
