"""A study's campaign: its cells trained part by part, each finished part's records copied (and committed) at once.

A part is one ``launch/main.py`` process: a cell's seeds as lanes, or k of them for a study with
``lanes_per_run=k``. ``run_study`` trains the parts in ``part_order`` (seed parts outermost), skips a part whose
``summary.json`` is under ``records/`` and resumes an unfinished one from the checkpoints in its workdir
(``<workdir_root>/<study>/<budget>/<policy>[/seed_S]``, outside the repository). SIGTERM or Ctrl-C stops the
training (it keeps its last checkpoint) and raises ``Paused``; the same call continues. ``status_table`` says
where each part stands. ``launch/study.py`` is its command line.
"""

import collections
import hashlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from typing import Any, Callable, Optional, Sequence

from jst import errors
from jst.studies import handoff
from jst.studies import study as study_lib
from jst.run import checkpoint_io
from jst.run import checkpointing
from jst.run import provenance
from jst.run import records as records_lib
from jst.run import workdir as workdir_lib

Part = tuple[int, int]  # (first seed, number of seeds): one launch/main.py process
RECORD_FILES = ('config.json', 'metrics.jsonl', 'summary.json')  # copied from a finished workdir (every evaluation)
COMMIT_METRICS_UP_TO = 1 << 20  # bytes: a larger metrics.jsonl stays in the workdir; run.json names its sha256


class Paused(Exception):
    """SIGTERM or Ctrl-C reached the runner: the training was stopped and keeps its checkpoints."""


class CampaignError(errors.UserError, ValueError):
    """A campaign asked for something its study does not have (a policy, a budget, a shard)."""


def main_args(repo: str, study: study_lib.Study, policy: str, budget: int, workdir: str, part: Part,
              workdir_root: str = 'STUDY_DIR') -> list[str]:
    """The ``launch/main.py`` command line (``sys.executable`` first) that trains ``part`` of a cell."""
    first, n = part
    return [sys.executable, os.path.join(repo, 'launch', 'main.py'), f'--config={study.config}',
            f'--config.seed={first}', f'--config.num_seeds={n}', '--config.juvenility=False',
            '--config.write_report=False', *study.flags(policy, budget, workdir_root, part).split(),
            f'--workdir={workdir}']


def run_child(args: Sequence[str], cwd: str) -> None:
    """Runs ``args`` in ``cwd``; SIGTERM/SIGINT to this process stop the child and raise ``Paused``; a failed
    child raises ``subprocess.CalledProcessError``."""
    print(' '.join(args[1:]), flush=True)
    child = subprocess.Popen(list(args), cwd=cwd)
    stop = {'signal': None}

    def forward(signum, _frame):
        stop['signal'] = signum
        child.send_signal(signal.SIGTERM)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        code = child.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if stop['signal'] is not None:
        raise Paused()
    if code != 0:
        raise subprocess.CalledProcessError(code, list(args))


def machine_name() -> str:
    """The GPU's name (nvidia-smi) or the CPU's, and the core count: where a part's records were made."""
    try:
        gpu = subprocess.run(['nvidia-smi', '--query-gpu=name', '--format=csv,noheader'], capture_output=True,
                             text=True, timeout=30).stdout.strip().splitlines()
    except (OSError, subprocess.SubprocessError):
        gpu = []
    return gpu[0] if gpu else f'{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs'


def head_commit(repo: str) -> str:
    """The checkout's commit ('' outside git)."""
    proc = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=repo, capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else ''


def copy_records(workdir: str, out: str, run_info: dict) -> None:
    """Copies a finished workdir's records and ``run_info`` (as ``run.json``) into ``out``, ``summary.json`` last:
    a part counts as finished only when all its files are there (an interrupted copy is redone). A
    ``metrics.jsonl`` over ``COMMIT_METRICS_UP_TO`` bytes (e.g. 5 lanes x 46 trainings validated every 100 steps:
    32 MB) is not copied: a repository holds no data files; ``run.json`` names its path, size and sha256."""
    os.makedirs(out, exist_ok=True)
    names = []
    for name in RECORD_FILES:
        source = os.path.join(workdir, name)
        if name == 'metrics.jsonl' and os.path.getsize(source) > COMMIT_METRICS_UP_TO:
            with open(source, 'rb') as f:
                digest = hashlib.sha256(f.read()).hexdigest()  # file_digest needs Python 3.11; we support 3.10
            run_info = {**run_info, 'metrics_not_committed': {'path': source, 'bytes': os.path.getsize(source),
                                                              'sha256': digest}}
            continue
        shutil.copy(source, os.path.join(out, f'.{name}.tmp'))
        names.append(name)
    with open(os.path.join(out, '.run.json.tmp'), 'w') as f:
        json.dump(run_info, f, indent=1)
    for name in sorted(names + ['run.json'], key=lambda n: n == 'summary.json'):  # summary.json last
        os.replace(os.path.join(out, f'.{name}.tmp'), os.path.join(out, name))


def read_metrics(folder: str) -> list[dict[str, Any]]:
    """Every evaluation row of a part's records (``metrics.jsonl``); [] when it has none (records made before
    metrics were committed, or too large to commit: ``copy_records``)."""
    path = os.path.join(folder, 'metrics.jsonl')
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def commit_paths(repo: str, paths: Sequence[str], message: str, attempts: int = 5, wait_s: float = 3.0) -> bool:
    """``git add`` and commit only ``paths``, retried while another git command (e.g. a second runner's commit)
    holds the index; when git still refuses, the files stay and a line says how to commit them by hand."""
    for attempt in range(attempts):
        try:
            subprocess.run(['git', 'add', *paths], cwd=repo, check=True)
            subprocess.run(['git', 'commit', '-q', '-m', message, '--', *paths], cwd=repo, check=True)
            return True
        except subprocess.CalledProcessError:
            if attempt + 1 < attempts:
                time.sleep(wait_s)
    print(f'campaign: could not commit {paths[0]}; commit it by hand ({message!r}).', file=sys.stderr)
    return False


def run_part(repo: str, study: study_lib.Study, policy: str, budget: int, part: Part, results_dir: str,
             workdir_root: str, commit: bool = False,
             after_records: Optional[Callable[[], list[str]]] = None, handoff_dir: Optional[str] = None) -> bool:
    """Trains (or resumes) one part of a cell and copies its records under ``records/``; False when its records
    were already there (nothing trained). ``after_records`` (e.g. regenerating the page) returns more paths to
    commit with them. A part packed into ``handoff_dir`` by an earlier machine (``jst.studies.handoff``) resumes
    from its archive when its workdir has no checkpoint; the archive goes when the records land."""
    if part_done(study, budget, policy, part, results_dir):
        return False
    out = study_lib.records_dir(results_dir, study, budget, policy, part)
    workdir = os.path.join(workdir_root, study.workdir(policy, budget, part))
    source = study.source_workdir(policy, budget, workdir_root, part)
    if source and not run_finished(source):  # e.g. on a fresh machine: (re)train it first
        run_child(main_args(repo, study, dict(study.sources)[policy], budget, source, part, workdir_root), cwd=repo)
    args = main_args(repo, study, policy, budget, workdir, part, workdir_root)
    archive = handoff.archive_path(handoff_dir, study, budget, policy, part) if handoff_dir else ''
    if archive and handoff.unpack(archive, workdir):  # an earlier machine's checkpoints (launch/study.py handoff)
        print(f'{study.name}: resuming {workdir} from {archive}', flush=True)
    t0 = time.time()
    run_child(args, cwd=repo)
    copy_records(workdir, out, {
        'workdir': workdir, 'command': ' '.join(args[1:]), 'seconds_this_process': round(time.time() - t0, 1),
        'finished': time.strftime('%Y-%m-%d %H:%M:%S %Z'), 'jst_commit': head_commit(repo),  # when copied
        'machine': machine_name(), 'invocations': provenance.invocations(workdir)})  # each process's own commit
    paths = [out] + (after_records() if after_records else [])
    if archive and os.path.exists(archive):  # the records replace the handed-off checkpoints
        os.remove(archive)
    if commit:
        first, n = part
        commit_paths(repo, paths, f'{study.name}: records of {policy} at {budget} steps/round, seeds '
                                  f'{first}-{first + n - 1}; page regenerated')
    return True


def train_prerequisite(repo: str, study: study_lib.Study, studies: dict[str, study_lib.Study]) -> None:
    """Trains ``study.prerequisite`` (another study's policy at one budget, into a workdir of the repository) when
    its ``summary.json`` is missing; its records are not copied (it is the start of ``study``'s policies)."""
    if not study.prerequisite:
        return
    name, policy, budget, workdir, seeds = study.prerequisite
    if not os.path.exists(os.path.join(repo, workdir, workdir_lib.SUMMARY_FILE)):
        source = studies[name]
        run_child(main_args(repo, source, policy, budget, os.path.join(repo, workdir), (source.first_seed, seeds)),
                  cwd=repo)


def run_finished(workdir: str) -> bool:
    """Whether ``workdir``'s newest checkpoint is of a finished run (its final tickets are there)."""
    if not os.path.isdir(workdir):
        return False
    meta = checkpoint_io.RunCheckpointer(workdir, None).latest_meta() or {}
    return checkpointing.is_finished(meta)


def part_order(study: study_lib.Study) -> list[tuple[int, str, Part]]:
    """(budget, policy, part) in the order a campaign trains them: seed parts outermost, so that a campaign cut
    short holds every policy for its first seeds (paired comparisons need both sides); the study's ``run_first``
    policies come first, at all their seeds, in that order, then the others."""
    first = list(study.run_first)
    groups = [first, [p for p in study.policy_names if p not in first]]
    order = []
    for group in (g for g in groups if g):
        cells = [(b, p, study.parts(p)) for b in study.budgets for p in group]
        depth = max(len(parts) for _, _, parts in cells)
        order += [(b, p, parts[i]) for i in range(depth) for b, p, parts in cells if i < len(parts)]
    return order


def parse_shard(text: str) -> tuple[int, int]:
    """'I/N' -> (I, N) with 0 <= I < N."""
    try:
        index, count = (int(x) for x in text.split('/'))
    except ValueError:
        index, count = -1, 0
    if not 0 <= index < count:
        raise CampaignError(f'--shard={text!r} must be I/N with 0 <= I < N (e.g. 0/2 and 1/2 for two runners).')
    return index, count


def run_study(repo: str, study: study_lib.Study, results_dir: str, workdir_root: str, policy: Optional[str] = None,
              budget: Optional[int] = None, commit: bool = False, max_parts: int = 0,
              shard: tuple[int, int] = (0, 1), after_records: Optional[Callable[[], list[str]]] = None,
              handoff_dir: Optional[str] = None) -> int:
    """Advances ``study`` part by part in ``part_order``; returns the parts trained. ``shard=(i, n)``: only parts
    i, i + n, i + 2n, ... of that order (n runners side by side never share a part); ``handoff_dir``: where an
    earlier machine's archives of paused parts are (``run_part``)."""
    policies = study.policy_names
    if policy is not None and policy not in policies:
        raise CampaignError(f'--policy={policy!r} is not a policy of {study.name}; choose one of {policies}')
    if budget is not None and budget not in study.budgets:
        raise CampaignError(f'--budget={budget} is not a budget of {study.name}; choose one of {list(study.budgets)}')
    trained = 0
    for b, p, part in part_order(study)[shard[0]::shard[1]]:
        if (policy or p) != p or (budget or b) != b:
            continue
        if max_parts and trained >= max_parts:
            return trained
        trained += run_part(repo, study, p, b, part, results_dir, workdir_root, commit, after_records, handoff_dir)
    return trained


def part_done(study: study_lib.Study, budget: int, policy: str, part: Part, results_dir: str) -> bool:
    """Whether the part's records are complete under ``records/`` (``copy_records`` writes ``summary.json`` last)."""
    return os.path.exists(os.path.join(study_lib.records_dir(results_dir, study, budget, policy, part),
                                       'summary.json'))


def part_state(study: study_lib.Study, budget: int, policy: str, part: Part, results_dir: str,
               workdir_root: str) -> tuple[str, str]:
    """(state, detail) of one part: 'done' (records under ``records/``), 'running' (a process holds its workdir),
    'paused' (a workdir without records: the next ``run`` resumes it) or 'not started'; the detail says how far
    a workdir got (trainings finished, where its newest checkpoint stands: what a resume starts from)."""
    if part_done(study, budget, policy, part, results_dir):
        return 'done', ''
    workdir = os.path.join(workdir_root, study.workdir(policy, budget, part))
    if not os.path.isdir(workdir):
        return 'not started', ''
    details = []
    if os.path.exists(os.path.join(workdir, workdir_lib.SUMMARY_FILE)):
        finished = len({(r['round'], r['control']) for r in records_lib.read_summary(workdir)})
        details.append(f'{finished}{_of_trainings(os.path.join(workdir, "config.json"))} trainings finished')
    meta = checkpoint_io.RunCheckpointer(workdir, None).latest_meta() or {}
    if meta.get('training'):
        details.append(f'checkpoint: {meta["training"]["stage"]} step {meta["training"]["step"]:,}'
                       f'{_of_steps(os.path.join(workdir, "config.json"))}')
    elif meta.get('stages'):
        details.append(f'checkpoint: {len(meta["stages"])} stage(s) done, the last {list(meta["stages"])[-1]!r}')
    holder = workdir_lib.running_holder(workdir)
    return ('running', '; '.join(details + [holder])) if holder else ('paused', '; '.join(details))


def _of_trainings(config_path: str) -> str:
    """' of N' (the trainings a run makes: rounds 0..num_rounds, and each control from round 1 for the lottery
    ticket search) from the run's ``config.json``; '' when it has none."""
    if not os.path.exists(config_path):
        return ''
    with open(config_path) as f:
        config = json.load(f)
    controls = [c for c in str(config.get('control') or '').split(',') if c and c != 'none']
    rounds = int(config['num_rounds'])
    return f' of {rounds + 1 + (rounds * len(controls) if config.get("method") == "lth" else 0)}'


def _of_steps(config_path: str) -> str:
    """' of N' (the steps of one training, ``steps_per_round`` of the run's ``config.json``); '' when it has none
    (an ``epochs_per_round`` run, or no config yet)."""
    if not os.path.exists(config_path):
        return ''
    with open(config_path) as f:
        steps = json.load(f).get('steps_per_round')
    return f' of {int(steps):,}' if steps else ''


def status_table(study: study_lib.Study, results_dir: str, workdir_root: str) -> str:
    """One line per part in ``part_order`` (its shard index first) and a count per state: where a campaign stands."""
    order = part_order(study)
    states = [part_state(study, b, p, part, results_dir, workdir_root) for b, p, part in order]
    lines = [f'{study.name}: {len(order)} parts; workdirs under {os.path.join(workdir_root, study.name)}']
    for i, ((b, p, part), (state, detail)) in enumerate(zip(order, states)):
        name = study.part_name(part) or f'seeds {part[0]}-{part[0] + part[1] - 1}'
        lines.append(f'  {i:>3}  {b:>6}  {p:<22} {name:<14} {state:<12} {detail}'.rstrip())
    counts = collections.Counter(state for state, _ in states)
    lines.append(', '.join(f'{counts[s]} {s}' for s in ('done', 'running', 'paused', 'not started')))
    return '\n'.join(lines)
