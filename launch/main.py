"""Runs one jst experiment: ``python launch/main.py --config=configs/mnist.py --workdir=DIR``."""

import os
import signal
import sys

# TensorFlow's C++ start-up lines unless --verbosity is given, set before any import can load TensorFlow (TFDS
# does): its oneDNN notice (absl-logged before InitializeLog, so no log level hides it) goes with oneDNN's TF
# graph rewrites, which jst never runs (TensorFlow only reads and decodes data; tests/test_data.py checks TFDS
# and the numpy reader give identical arrays).
if not any(a.startswith(('--verbosity', '-v')) for a in sys.argv):
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')

from absl import app
from absl import flags
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=g-import-not-at-top,wrong-import-position
from jst import driver
from jst import errors
from jst.run import knob_docs
from jst.run import records as records_lib
from jst.run import workdir as workdir_lib
from jst.training import parallel
# pylint: enable=g-import-not-at-top,wrong-import-position


CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configs')
_CONFIG = config_flags.DEFINE_config_file('config', None, 'Path to a config file.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Where results and checkpoints go '
                               '(default: runs/<config name>).')
_CONFIG_HELP = flags.DEFINE_bool('config_help', False, 'Print every knob of --config (value and meaning, from '
                                 'docs/configs.md) and exit.')
KNOB_DOCS = os.path.join(os.path.dirname(CONFIGS), 'docs', 'configs.md')


def _config_files() -> list[str]:
    return sorted(f for f in os.listdir(CONFIGS) if f.endswith('.py') and not f.startswith('_'))


def _fail(message: str, code: int = 2) -> None:
    print(f'jst: {message}', file=sys.stderr)
    sys.exit(code)


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with a one-line error naming the fix for a bad value or an unknown knob."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        _fail(flag_error_message(str(e)))
    except (AttributeError, KeyError) as e:
        _fail(unknown_knob_message(str(e.args[0]) if e.args else str(e), argv))
    return []


def flag_error_message(text: str) -> str:
    """absl's flag error in one line: its first line and, when that ends before the cause (a config file whose
    ``get_config`` raised), the traceback's last line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    head = lines[0] if lines else 'invalid flag'
    cause = lines[-1] if len(lines) > 1 and head.endswith(':') else ''
    return f'{head} {cause} (every knob and its values: --config_help or docs/configs.md)'.replace('  ', ' ')


def unknown_knob_message(text: str, argv: list[str]) -> str:
    """'--config.num_round: the config has no knob 'num_round'. Did you mean "num_rounds"? (...)': from
    ml_collections' KeyError text (the name, and on its next line a suggestion), as plain text."""
    text = text.strip('"\'').replace("\\'", "'").replace('\\n', '\n')  # ml_collections nests a KeyError's repr
    lines = text.splitlines()
    unknown = lines[0].strip().strip('"\'') if lines else text
    hint = f' {lines[1].strip()}' if len(lines) > 1 else ' A typo?'
    given = [a.split('=')[0] for a in argv if a.startswith('--config.') and a.split('=')[0].endswith(unknown)]
    return (f'{given[0] if given else unknown}: the config has no knob {unknown!r}.{hint} (every knob and its '
            'values: --config_help or docs/configs.md)')


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
    # Ctrl-C (SIGINT) pauses a run even when it was started with SIGINT ignored, as shells start background jobs.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        config = _CONFIG.value
        config.get('method')  # ml_collections defers a failed load to the first access
    except OSError:
        _fail(f'cannot load --config={flags.FLAGS["config"].config_filename}: no such config file (configs are '
              f'Python files such as configs/mnist.py; available: {", ".join(_config_files())}).')
    if _CONFIG_HELP.value:
        print(knob_docs.config_help(config, knob_docs.knob_docs(KNOB_DOCS)))
        return
    if os.environ.get('JST_DISTRIBUTED'):  # multi-host: coordinator and ids from the cluster env (parallel.py)
        parallel.initialize_distributed()
    config_path = flags.FLAGS['config'].config_filename
    workdir = _WORKDIR.value or workdir_lib.default_workdir(config_path)
    try:
        diverged = records_lib.diverged_rounds(driver.train_and_evaluate(config, workdir))
    except KeyboardInterrupt:
        _fail(f'interrupted; the last checkpoint in {workdir} is kept: rerun the same command to resume.', 130)
    except errors.UserError as e:  # names the problem and the fix: one line (traceback with --verbosity=1)
        if flags.FLAGS.verbosity >= 1:
            raise
        print(f'jst: {type(e).__name__}: {e}\n(run with --verbosity=1 for the traceback)', file=sys.stderr)
        sys.exit(2)
    if diverged:
        _fail(f'training diverged in {len(diverged)} round(s) ({", ".join(diverged[:3])}'
              f'{", ..." if len(diverged) > 3 else ""}); their records (summary.json under {workdir}) are marked '
              '"diverged": lower config.learning_rate (a new run: another --workdir or --config.overwrite=True).', 3)


if __name__ == '__main__':
    flags.mark_flags_as_required(['config'])
    app.run(main, flags_parser=parse_flags)
