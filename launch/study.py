"""Runs a study's cells and writes its results page from the committed records.

    python launch/study.py run paper_mnist [--policy=NAME] [--budget=STEPS] [--commit]  # runs missing cells
    python launch/study.py page paper_mnist [--check]                                   # docs/results/paper_mnist.md
    python launch/study.py status conv2                       # each part: done, running, paused or not started
    python launch/study.py status                             # every study: parts committed
    python launch/study.py page index [--check]               # docs/results/README.md and the README's verdict
    python launch/study.py handoff cifar10_paper [--handoff_dir=DIR]  # packs paused parts for the next machine

``run`` advances a study part by part (``jst.studies.campaign``): each (budget, policy) cell is one
``launch/main.py`` process with all its seeds as lanes, or, for a study with ``lanes_per_run=k``, processes of k
seeds one after another. A part whose records are already under ``docs/results/<study>/records/`` is skipped; an
unfinished part resumes from the checkpoints in its workdir (``--workdir_root/<study>/<budget>/<policy>[/seed_S]``,
outside the repository). A finished part's ``summary.json``, ``config.json`` and ``metrics.jsonl`` (every
evaluation; one over 1 MB stays in the workdir, named by its sha256 in ``run.json``) are copied under ``records/``
with ``run.json`` (workdir, command, seconds, commit), and
the study's page is regenerated; ``--commit`` commits them at once. SIGTERM (or Ctrl-C) pauses: the training stops,
keeps its last checkpoint, and the same command continues. ``--shard=I/N`` lets N runners share a study.
``handoff`` packs each paused part's workdir (a few hundred kB each) into ``--handoff_dir`` (``jst.studies.handoff``;
default ``$JST_HANDOFF_DIR``, else ``<workdir_root>/handoff``; never inside the repository: checkpoints are not
committed); carry that folder to the next machine, where ``run`` (same ``--handoff_dir``) unpacks an archive into
an empty workdir, resumes where it stopped, and deletes the archive when the part's records land.
``page`` renders the page and the figure from the records only (``jst.studies.pages``); ``--check`` exits 1 when
the committed page differs (what ``tests/test_results.py`` runs). Offline: set ``JST_MANUAL_DIR``.
"""

import os
import subprocess
import sys

from absl import app
from absl import flags
from absl import logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=g-import-not-at-top,wrong-import-position
from jst import errors
from jst.studies import campaign
from jst.studies import handoff
from jst.studies import pages
from jst.studies import results_index
from jst.studies import speed_page
from jst.studies import study as study_lib
from jst.studies.catalog import STUDIES, TEST_STUDIES
# pylint: enable=g-import-not-at-top,wrong-import-position

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, 'docs', 'results')
README = os.path.join(REPO, 'README.md')

_POLICY = flags.DEFINE_string('policy', None, 'run: only this policy.')
_BUDGET = flags.DEFINE_integer('budget', None, 'run: only this budget (steps per round).')
_CHECK = flags.DEFINE_bool('check', False, 'page: exit 1 when the committed page differs.')
_COMMIT = flags.DEFINE_bool('commit', False, 'run: git-commit each finished part\'s records at once.')
_MAX_PARTS = flags.DEFINE_integer('max_parts', 0, 'run: stop after training this many parts (0: all).')
DEFAULT_WORKDIR_ROOT = os.path.join(os.path.expanduser('~'), '.cache', 'jst', 'studies')
_WORKDIR_ROOT = flags.DEFINE_string(
    'workdir_root', os.environ.get('JST_STUDY_DIR') or DEFAULT_WORKDIR_ROOT,
    'run: where the cells\' workdirs (checkpoints) live; outside the repository so a fresh checkout keeps them.')
_HANDOFF_DIR = flags.DEFINE_string(
    'handoff_dir', os.environ.get('JST_HANDOFF_DIR'),
    'handoff: where paused parts are packed; run: where they are resumed from (default <workdir_root>/handoff; a '
    'folder outside the repository that you carry to the next machine).')
_RESULTS_DIR = flags.DEFINE_string('results_dir', None, 'Where records and pages live (default: docs/results).')
_SHARD = flags.DEFINE_string(
    'shard', '0/1', 'run: I/N trains only every N-th part from the I-th (N runners side by side, e.g. one per core '
    'pinned with taskset: they never share a part). Whether that beats one runner on every core is measured per '
    'network by benchmarks/bench_threads.py (docs/results/speed.md).')


def _study(name: str) -> study_lib.Study:
    known = {**STUDIES, **TEST_STUDIES}
    if name not in known:
        raise app.UsageError(f'unknown study {name!r}; choose one of {sorted(STUDIES)}')
    return known[name]


def write_pages(study: study_lib.Study, check: bool = False) -> list[str]:
    """Writes (or, with ``check``, compares) the study's page, its figure and its README block; returns the paths."""
    page, write_figure = pages.render(RESULTS, study)
    outputs = {os.path.join(RESULTS, f'{study.name}.md'): page}
    if study.name in pages.README_HEADLINES:
        with open(README) as f:
            outputs[README] = pages.readme_with_headline(f.read(), RESULTS, study)
    write_or_check(outputs, study.name, check)
    if check:
        return list(outputs)
    write_figure()
    return list(outputs) + [os.path.join(RESULTS, study.name)] + write_index()


def write_index(check: bool = False) -> list[str]:
    """Writes (or checks) docs/results/README.md and the README's verdict block from every study's records."""
    with open(README) as f:
        readme = results_index.readme_with_verdict(f.read(), RESULTS, STUDIES)
    outputs = {os.path.join(RESULTS, 'README.md'): results_index.index_page(RESULTS, STUDIES), README: readme}
    write_or_check(outputs, 'index', check)
    return list(outputs)


def write_or_check(outputs: dict[str, str], page: str, check: bool = False) -> None:
    """Writes each {path: text}; with ``check``, exits 1 naming the first file that differs."""
    for path, text in outputs.items():
        if check:
            with open(path) as f:
                if f.read() != text:
                    print(f'{path} differs from what the records of {page} give: rerun '
                          f'`python launch/study.py page {page}` and commit it.', file=sys.stderr)
                    sys.exit(1)
            print(f'{path}: every number of {page} matches its records.')
        else:
            with open(path, 'w') as f:
                f.write(text)
            print(f'wrote {path}')


def run(study: study_lib.Study) -> None:
    """``run STUDY``: trains the missing parts; exits 143 when paused, 1 when a training failed."""
    results = _RESULTS_DIR.value or RESULTS
    published = os.path.abspath(results) == RESULTS  # a published study's page follows its records
    try:
        campaign.train_prerequisite(REPO, study, STUDIES)  # the run its policies start from, when it has one
        n = campaign.run_study(REPO, study, results, _WORKDIR_ROOT.value, _POLICY.value, _BUDGET.value,
                               _COMMIT.value, _MAX_PARTS.value, campaign.parse_shard(_SHARD.value),
                               after_records=(lambda: write_pages(study)) if published else None,
                               handoff_dir=handoff_dir())
    except campaign.Paused:
        print(f'study.py: paused; the same command continues {study.name} from its checkpoints.', file=sys.stderr)
        sys.exit(143)
    except subprocess.CalledProcessError as e:
        print(f'study.py: a training failed (exit {e.returncode}); its message is above. Rerunning the same '
              'command resumes it.', file=sys.stderr)
        sys.exit(1)
    print(f'{study.name}: {n} part(s) trained; every selected part has records.', flush=True)


def handoff_dir() -> str:
    """``--handoff_dir`` (or ``<workdir_root>/handoff``): where ``run`` looks for archives and ``handoff`` writes
    them (only writing is refused inside the repository)."""
    return _HANDOFF_DIR.value or os.path.join(_WORKDIR_ROOT.value, 'handoff')


def hand_off(study: study_lib.Study) -> None:
    """``handoff STUDY``: packs every paused part (checkpoints, no records) for the next machine."""
    if _COMMIT.value:
        raise errors.UserError('handoff --commit: hand-off archives hold checkpoints, which are never committed; '
                               'carry --handoff_dir to the next machine instead.')
    folder = handoff.outside_repository(handoff_dir(), REPO)
    written = handoff.pack_study(study, _RESULTS_DIR.value or RESULTS, _WORKDIR_ROOT.value, folder,
                                 campaign.part_order(study), campaign.part_done)
    for path in written:
        print(f'packed {path} ({os.path.getsize(path) / 1e3:,.0f} kB)')
    print(f'{study.name}: {len(written)} paused part(s) packed into {folder}; carry it to the next machine and run '
          f'with --handoff_dir there.')


def main(argv):
    if argv[1:] == ['status']:
        for name, study in STUDIES.items():
            done, total = results_index.parts_done(_RESULTS_DIR.value or RESULTS, study)
            print(f'{name:<22} {done:>3} of {total:>3} parts committed')
        return None
    if len(argv) != 3 or argv[1] not in ('run', 'page', 'status', 'handoff'):
        raise app.UsageError('usage: python launch/study.py run|page|status|handoff STUDY [--policy=..] [--budget=..] '
                             f'[--check]; STUDY: one of {sorted(STUDIES)}, or index / speed for page; status alone '
                             'lists every study')
    try:
        if argv[1:] == ['page', 'index']:
            write_index(_CHECK.value)
            return None
        if argv[1:] == ['page', 'speed']:
            speed = speed_page.render(os.path.join(REPO, 'benchmarks', 'results'))
            return write_or_check({os.path.join(RESULTS, 'speed.md'): speed}, 'speed', _CHECK.value)
        study = _study(argv[2])
        if argv[1] == 'run':
            return run(study)
        if argv[1] == 'handoff':
            return hand_off(study)
        if argv[1] == 'status':
            logging.set_verbosity(logging.WARNING)  # orbax's restore logs would bury the table
            return print(campaign.status_table(study, _RESULTS_DIR.value or RESULTS, _WORKDIR_ROOT.value))
        write_pages(study, check=_CHECK.value)
    except errors.UserError as e:
        raise app.UsageError(str(e)) from e


if __name__ == '__main__':
    app.run(main)
