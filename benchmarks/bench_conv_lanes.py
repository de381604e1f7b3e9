"""Seeds as lanes (vmapped convolutions) vs seeds one after another, for the paper's CIFAR-10 ResNet on this machine.

    python benchmarks/bench_conv_lanes.py --manual_dir=../shared/datasets/cifar10-jpeg75 [--lanes=3] [--steps=8]

Side by side in one process: jst's jitted train step (``Trainer.train_step``, what the training loop calls per
step on CPU conv nets) and its evaluation of the 5,000-image validation split, for one network and for
``--lanes`` networks vmapped over a leading lane axis (what ``config.num_seeds`` compiles), each lane with its
own batch. Reported per lane: a ratio below 1 means lanes are faster than running the seeds one after another.
``jst/studies/catalog.py`` picks ``lanes_per_run`` from this. Results: ``--out/conv_lanes_<platform>.json`` and ``.md``.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
import jax.numpy as jnp

from jst.ops import masks
from jst.ops import pytrees
from jst.run import configuration
from jst.run import context
# pylint: enable=g-import-not-at-top,wrong-import-position

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_MANUAL_DIR = flags.DEFINE_string('manual_dir', os.environ.get('JST_MANUAL_DIR', ''), 'Offline CIFAR-10 folder.')
_LANES = flags.DEFINE_integer('lanes', 3, 'Seeds as lanes.')
_STEPS = flags.DEFINE_integer('steps', 8, 'Timed steps per variant (after one compile step).')
_OUT = flags.DEFINE_string('out', os.path.join(REPO, 'benchmarks', 'results'), 'Output folder.')


def _timed(fn, args_list) -> float:
    """Mean seconds per call of ``fn`` over ``args_list`` (results blocked on; the first call compiles)."""
    jax.block_until_ready(fn(*args_list[0]))
    t0 = time.perf_counter()
    for args in args_list[1:]:
        jax.block_until_ready(fn(*args))
    return (time.perf_counter() - t0) / (len(args_list) - 1)


def main(argv):
    del argv
    sys.path.insert(0, os.path.join(REPO, 'configs'))
    import cifar10  # pylint: disable=g-import-not-at-top
    config = cifar10.get_config()
    config.manual_dir, config.data_backend, config.method = _MANUAL_DIR.value, 'numpy', 'lth'
    configuration.validate_config(config)
    ctx = context.make_context(config, '/tmp/jst_bench_conv_lanes')
    spec = configuration.start_spec(config, 'lth')
    trainer = ctx.trainer(spec)
    n, bsz, d = _LANES.value, config.batch_size, ctx.data
    variables = [ctx.init_variables(spec, jax.random.key(i)) for i in range(n)]
    states = [ctx.new_state(spec, v, masks.create_masks(v['params'])) for v in variables]
    batch = lambda i: (d.train_x[i * bsz:(i + 1) * bsz], d.train_y[i * bsz:(i + 1) * bsz])
    step = jax.jit(trainer.train_step)
    lanes_step = jax.jit(jax.vmap(trainer.train_step))
    one = [(states[0], *batch(i)) for i in range(_STEPS.value + 1)]
    many = [(pytrees.stack(states), jnp.stack([batch(i * n + k)[0] for k in range(n)]),
             jnp.stack([batch(i * n + k)[1] for k in range(n)])) for i in range(_STEPS.value + 1)]
    evaluate = jax.jit(trainer.evaluate(None, unroll=True))
    lanes_eval = jax.jit(jax.vmap(trainer.evaluate(None, unroll=True), in_axes=(0, 0, None, None, None)))
    st = pytrees.stack(states)
    val = (d.val_x, d.val_y, d.val_w)
    rows = []
    for what, single, lanes in (
            ('train step, batch 128', _timed(lambda *a: step(*a)[0].params, one),
             _timed(lambda *a: lanes_step(*a)[0].params, many)),
            ('validation, 5,000 images', _timed(evaluate, [(states[0].params, states[0].batch_stats, *val)] * 3),
             _timed(lanes_eval, [(st.params, st.batch_stats, *val)] * 3))):
        rows.append({'what': what, 'one_network_s': round(single, 4), f'{n}_lanes_s': round(lanes, 4),
                     'per_lane_ratio': round(lanes / n / single, 3)})
        print(json.dumps(rows[-1]), flush=True)
    machine = {'platform': jax.default_backend(), 'device': str(jax.devices()[0].device_kind),
               'cpu_count': os.cpu_count(), 'jax': jax.__version__, 'machine': platform.machine(),
               'date': time.strftime('%Y-%m-%d')}
    result = {'machine': machine, 'network': spec.describe(), 'lanes': n, 'rows': rows}
    os.makedirs(_OUT.value, exist_ok=True)
    name = f"conv_lanes_{machine['platform']}"
    with open(os.path.join(_OUT.value, name + '.json'), 'w') as f:
        json.dump(result, f, indent=1)
    lines = [f"# Seeds as lanes vs one after another, conv nets ({machine['platform']}, {machine['device']}, "
             f"{machine['cpu_count']} CPUs, jax {machine['jax']}, {machine['date']})", '',
             f'{spec.describe()} (`configs/cifar10.py`, weight-reset architecture). Command: '
             f'`python benchmarks/bench_conv_lanes.py --lanes={n} --steps={_STEPS.value}`.', '',
             f'| what | one network (s) | {n} lanes (s) | per-lane ratio (lanes / one after another) |',
             '|---|---|---|---|']
    lines += [f"| {r['what']} | {r['one_network_s']} | {r[f'{n}_lanes_s']} | {r['per_lane_ratio']:.2f}x |"
              for r in rows]
    with open(os.path.join(_OUT.value, name + '.md'), 'w') as f:
        f.write('\n'.join(lines) + '\n')
    print('\n'.join(lines))


if __name__ == '__main__':
    app.run(main)
