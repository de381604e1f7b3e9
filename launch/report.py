"""Markdown report and PNG plots for finished runs.

    python launch/report.py WORKDIR [WORKDIR ...] [--out=DIR] [--title=...]

Reads each workdir's summary.json and metrics.jsonl (several seeds and methods
are aggregated as mean ± std) and writes report.md, accuracy_vs_sparsity.png,
training_curves.png and lineage.png into --out (default: the first workdir). With several variants it
prints each one's paired comparison with the first workdir's variant (final rounds, paired by seed).
"""

import os
import sys

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from jst.analysis import paired  # pylint: disable=g-import-not-at-top,wrong-import-position
from jst.analysis import report  # pylint: disable=g-import-not-at-top,wrong-import-position
from jst.run import logs  # pylint: disable=g-import-not-at-top,wrong-import-position

_OUT = flags.DEFINE_string('out', None, 'Output folder (default: the first workdir).')
_TITLE = flags.DEFINE_string('title', 'jst report', 'Report title.')


def main(argv):
    logs.quiet_library_logs()
    workdirs = argv[1:]
    if not workdirs:
        raise app.UsageError('Pass one or more workdirs.')
    out = _OUT.value or workdirs[0]
    if os.path.isfile(out):
        print(f'jst: --out={out} is a file: pass --out=DIR, a folder for the report.', file=sys.stderr)
        sys.exit(2)
    try:
        path = report.write_report(workdirs, out, _TITLE.value)
    except (report.ReportError, OSError) as e:
        if flags.FLAGS.verbosity >= 1:
            raise
        message = (f'ReportError: {e}' if isinstance(e, report.ReportError) else
                   f'cannot write the report to {out!r} ({e.strerror}): pass --out=DIR, a folder you can write.')
        print(f'jst: {message}', file=sys.stderr)
        sys.exit(2)
    comparison = paired.paired_against_first(report.load_runs(workdirs)[0])
    if comparison:  # several variants (a sweep's): each against the first workdir given, paired by seed
        print(comparison)
    print(path)


if __name__ == '__main__':
    app.run(main)
