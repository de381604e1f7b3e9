"""``launch/study.py run`` advances a campaign part by part and resumes a half-finished one to the same records.

The toy study (``jst/studies/catalog.py: TEST_STUDIES['toy']``): 2 policies x 2 seeds, one process per seed.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from jst.studies import campaign
from jst.studies.catalog import STUDIES
from tests import golden_runs
from tests.helpers import REPO

STUDY_PY = os.path.join(REPO, 'launch', 'study.py')
PARTS = [('lth', 0), ('prune_continue', 0), ('lth', 1), ('prune_continue', 1)]  # seed parts outermost


def _cmd(results, root, *extra):
    return [sys.executable, STUDY_PY, 'run', 'toy', f'--results_dir={results}', f'--workdir_root={root}', *extra]


def _env(mnist_dir, **extra):
    env = {k: v for k, v in os.environ.items() if k != 'JST_CRASH_AT'}
    return {**env, 'JST_MANUAL_DIR': mnist_dir, **extra}


def _run(results, root, mnist_dir, *extra, **env):
    return subprocess.run(_cmd(results, root, *extra), env=_env(mnist_dir, **env), cwd=REPO, capture_output=True,
                          text=True, timeout=900)


def _part_records(results, policy, seed):
    path = os.path.join(results, 'toy', 'records', '40', policy, f'seed_{seed}', 'summary.json')
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return golden_runs.strip_volatile(json.load(f))


def _finished(results):
    return [p for p in PARTS if _part_records(results, *p) is not None]


@pytest.mark.extended  # about 3 minutes of child processes; the extended tier runs it
def test_interrupted_campaign_resumes_to_the_same_records(mnist_dir, tmp_path):
    ref, ref_root = str(tmp_path / 'ref'), str(tmp_path / 'ref_work')
    proc = _run(ref, ref_root, mnist_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _finished(ref) == PARTS

    out, root = str(tmp_path / 'out'), str(tmp_path / 'work')
    # Between parts: a bounded stretch stops after one part.
    proc = _run(out, root, mnist_dir, '--max_parts=1')
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _finished(out) == PARTS[:1]
    # Inside a part: the training is killed right after its 2nd checkpoint; no records for it, its checkpoints kept.
    proc = _run(out, root, mnist_dir, JST_CRASH_AT='after_save:2')
    assert proc.returncode == 1 and 'Rerunning the same command resumes it' in proc.stderr, proc.stderr[-3000:]
    assert _finished(out) == PARTS[:1]
    assert os.listdir(os.path.join(root, 'toy', '40', 'prune_continue', 'seed_0', 'checkpoints'))
    # A fresh machine: the paused part is packed into <workdir_root>/handoff (the folder one carries), its workdir
    # lost, and resumed from the archive.
    proc = subprocess.run([sys.executable, STUDY_PY, 'handoff', 'toy', f'--results_dir={out}', f'--workdir_root={root}'],
                          env=_env(mnist_dir), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and 'toy: 1 paused part(s) packed into' in proc.stdout, proc.stdout + proc.stderr
    archive = os.path.join(root, 'handoff', 'toy', '40', 'prune_continue', 'seed_0.tar.gz')
    assert os.path.isfile(archive), proc.stdout
    shutil.rmtree(os.path.join(root, 'toy', '40', 'prune_continue', 'seed_0'))
    # SIGTERM while a part trains: paused (exit 143), nothing half-written under records/.
    runner = subprocess.Popen(_cmd(out, root), env=_env(mnist_dir), cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    ckpts = os.path.join(root, 'toy', '40', 'lth', 'seed_1', 'checkpoints')
    deadline = time.time() + 600
    while time.time() < deadline and not (os.path.isdir(ckpts) and os.listdir(ckpts)) and runner.poll() is None:
        time.sleep(0.2)
    runner.send_signal(signal.SIGTERM)
    _, err = runner.communicate(timeout=300)
    assert runner.returncode == 143 and 'paused' in err, err[-3000:]
    assert _finished(out) == PARTS[:2]
    assert not [n for _, _, files in os.walk(os.path.join(out, 'toy')) for n in files if n.endswith('.tmp')]
    # The same command finishes the study.
    proc = _run(out, root, mnist_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _finished(out) == PARTS
    assert not os.path.exists(archive), 'the records replace the handed-off checkpoints'
    for policy, seed in PARTS:
        diffs = golden_runs.differences(_part_records(ref, policy, seed), _part_records(out, policy, seed),
                                        rel=0.0, abs_=0.0)
        assert not diffs, (policy, seed, diffs[:10])
    run_json = json.load(open(os.path.join(out, 'toy', 'records', '40', 'lth', 'seed_1', 'run.json')))
    assert run_json['workdir'] == os.path.join(root, 'toy', '40', 'lth', 'seed_1')
    starts = run_json['invocations']  # each process that trained the part, with the commit it ran
    assert starts and all(len(s['commit']) in (0, 40) and 'packages' in s for s in starts), starts
    assert starts[-1]['command'][-1] == '--workdir=' + run_json['workdir'], starts
    # Nothing left to do: a rerun trains nothing.
    proc = _run(out, root, mnist_dir)
    assert proc.returncode == 0 and '0 part(s) trained' in proc.stdout, proc.stdout + proc.stderr


def test_unknown_policy_or_budget_is_refused(mnist_dir, tmp_path):
    for flag, name in (('--policy=nosuch', 'nosuch'), ('--budget=123', '123')):
        proc = _run(str(tmp_path / 'r'), str(tmp_path / 'w'), mnist_dir, flag)
        assert proc.returncode != 0 and name in proc.stderr and 'choose one of' in proc.stderr, proc.stderr[-2000:]
        assert not os.path.exists(tmp_path / 'r')


def test_shards_split_the_parts_without_overlap():
    """--shard=I/N: N runners side by side train disjoint parts that together cover the study."""
    study = STUDIES['cifar10_paper']
    order = campaign.part_order(study)
    assert [p for _, p, _ in order[:5]] == study.policy_names  # seed 42 of every policy first
    halves = [order[i::2] for i in range(2)]
    assert sorted(halves[0] + halves[1]) == sorted(order) and not set(halves[0]) & set(halves[1])
    assert campaign.parse_shard('1/2') == (1, 2)
    for bad in ('2/2', 'x', '1'):
        with pytest.raises(campaign.CampaignError, match='must be I/N'):
            campaign.parse_shard(bad)


def test_a_part_counts_as_finished_only_with_all_its_records(tmp_path):
    """copy_records writes summary.json last: a copy that fails midway leaves no summary.json, so the part is
    trained (resumed) again instead of being skipped with half its records."""
    workdir, out = tmp_path / 'work', tmp_path / 'records'
    workdir.mkdir()
    (workdir / 'config.json').write_text('{"seed": 0}')
    (workdir / 'summary.json').write_text('[]')  # metrics.jsonl missing: the copy fails
    with pytest.raises(FileNotFoundError):
        campaign.copy_records(str(workdir), str(out), {'workdir': str(workdir)})
    assert not (out / 'summary.json').exists()
    (workdir / 'metrics.jsonl').write_text('{"step": 1}\n')
    campaign.copy_records(str(workdir), str(out), {'workdir': str(workdir)})
    assert sorted(os.listdir(out)) == ['config.json', 'metrics.jsonl', 'run.json', 'summary.json']
    assert json.load(open(out / 'run.json')) == {'workdir': str(workdir)}


def test_large_metrics_stay_in_the_workdir_named_by_their_digest(tmp_path, monkeypatch):
    """A metrics.jsonl over the bound is not copied (no data files in the repository): run.json names its path,
    size and sha256, and campaign.read_metrics gives []; a small one is copied and read back row for row."""
    import hashlib  # pylint: disable=g-import-not-at-top
    workdir = tmp_path / 'work'
    workdir.mkdir()
    rows = [{'round': 0, 'step': 100 * i, 'val_loss': 1.0 / (i + 1)} for i in range(50)]
    (workdir / 'config.json').write_text('{}')
    (workdir / 'summary.json').write_text('[]')
    text = ''.join(json.dumps(r) + '\n' for r in rows)
    (workdir / 'metrics.jsonl').write_text(text)
    monkeypatch.setattr(campaign, 'COMMIT_METRICS_UP_TO', 100)
    campaign.copy_records(str(workdir), str(tmp_path / 'a'), {'workdir': str(workdir)})
    assert sorted(os.listdir(tmp_path / 'a')) == ['config.json', 'run.json', 'summary.json']
    assert json.load(open(tmp_path / 'a' / 'run.json')) == {'workdir': str(workdir), 'metrics_not_committed': {
        'path': str(workdir / 'metrics.jsonl'), 'bytes': len(text),
        'sha256': hashlib.sha256(text.encode()).hexdigest()}}
    assert campaign.read_metrics(str(tmp_path / 'a')) == []
    monkeypatch.setattr(campaign, 'COMMIT_METRICS_UP_TO', 1 << 20)
    campaign.copy_records(str(workdir), str(tmp_path / 'c'), {})
    assert campaign.read_metrics(str(tmp_path / 'c')) == rows and (tmp_path / 'c' / 'metrics.jsonl').exists()
    assert campaign.read_metrics(str(tmp_path)) == []


def test_campaign_refuses_what_its_study_lacks(tmp_path):
    """A policy or budget the study does not have is named with the choices, before anything trains."""
    study = STUDIES['cifar10_paper']
    with pytest.raises(campaign.CampaignError, match='choose one of'):
        campaign.run_study(REPO, study, str(tmp_path), str(tmp_path), policy='nosuch')
    with pytest.raises(campaign.CampaignError, match='choose one of'):
        campaign.run_study(REPO, study, str(tmp_path), str(tmp_path), budget=1)
    assert not os.listdir(tmp_path)


def test_commit_is_retried_while_the_index_is_held_and_commits_only_its_paths(tmp_path, monkeypatch):
    """Two runners side by side commit their parts at once: a held index (index.lock) is waited for; other
    changes in the checkout stay uncommitted."""
    for key in ('GIT_AUTHOR_NAME', 'GIT_COMMITTER_NAME', 'GIT_AUTHOR_EMAIL', 'GIT_COMMITTER_EMAIL'):
        monkeypatch.setenv(key, 'test@example.com' if 'EMAIL' in key else 'test')
    repo = tmp_path / 'repo'
    repo.mkdir()
    git = lambda *a: subprocess.run(['git', *a], cwd=repo, check=True, capture_output=True, text=True).stdout
    git('init', '-q')
    (repo / 'other.txt').write_text('not mine')
    (repo / 'records').mkdir()
    (repo / 'records' / 'summary.json').write_text('[]')
    lock = repo / '.git' / 'index.lock'
    lock.write_text('')
    threading.Timer(1.0, lock.unlink).start()  # the other runner's commit ends after a second
    assert campaign.commit_paths(str(repo), [str(repo / 'records')], 'records', attempts=5, wait_s=0.5)
    assert not campaign.commit_paths(str(repo), [str(repo / 'missing')], 'nothing', attempts=2, wait_s=0.1)
    assert git('log', '--format=%s').split() == ['records']
    assert git('status', '--porcelain').strip() == '?? other.txt'


def test_status_tells_done_running_paused_and_not_started_parts(tmp_path):
    import fcntl  # pylint: disable=g-import-not-at-top
    from jst.studies.catalog import TEST_STUDIES  # pylint: disable=g-import-not-at-top
    study, results, root = TEST_STUDIES['toy'], str(tmp_path / 'results'), str(tmp_path / 'work')
    done = os.path.join(results, 'toy', 'records', '40', 'lth', 'seed_0')
    os.makedirs(done)
    open(os.path.join(done, 'summary.json'), 'w').write('[]')
    paused = os.path.join(root, 'toy', '40', 'prune_continue', 'seed_0')
    os.makedirs(paused)
    json.dump([{'round': 0, 'control': 'none'}, {'round': 1, 'control': 'none'}],
              open(os.path.join(paused, 'summary.json'), 'w'))
    json.dump({'method': 'lth', 'num_rounds': 3, 'control': 'random_reinit,random_prune',  # 1 + 3 + 3 x 2
               'steps_per_round': 5000},
              open(os.path.join(paused, 'config.json'), 'w'))
    from jst.run import checkpoint_io  # pylint: disable=g-import-not-at-top
    checkpoint_io.RunCheckpointer(paused, {}).save(
        {'stages': {'start': {}}, 'training': {'stage': 'round 2: ticket', 'step': 1200}}, {'w': np.zeros(2)})
    running = os.path.join(root, 'toy', '40', 'lth', 'seed_1')
    os.makedirs(running)
    from jst.run import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
    with open(os.path.join(running, workdir_lib.LOCK_FILE), 'w') as lock:  # held as by another process
        lock.write('pid 123 on host h\n')
        lock.flush()
        fcntl.flock(lock, fcntl.LOCK_EX)
        text = campaign.status_table(study, results, root)
    lines = text.splitlines()
    assert lines[1].split()[:5] == ['0', '40', 'lth', 'seed_0', 'done'], text
    assert lines[2].endswith('paused       2 of 10 trainings finished; checkpoint: round 2: ticket step 1,200 of 5,000'), text
    assert lines[3].split()[4:] == ['running', 'pid', '123', 'on', 'host', 'h'], text
    assert lines[4].split()[4:] == ['not', 'started'], text
    assert lines[-1] == '1 done, 1 running, 1 paused, 1 not started', text


def test_handoff_packs_a_paused_part_and_a_fresh_workdir_resumes_from_it(tmp_path, monkeypatch):
    """``launch/study.py handoff``: a part with checkpoints and no records is packed into the hand-off folder (not
    its lock); a running part is refused; ``run_part`` unpacks it into an empty workdir (never over newer
    checkpoints), and removes it when the records land."""
    from jst.studies import handoff  # pylint: disable=g-import-not-at-top
    from jst.studies.catalog import TEST_STUDIES  # pylint: disable=g-import-not-at-top
    from jst.run import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
    study, results, root = TEST_STUDIES['toy'], str(tmp_path / 'results'), str(tmp_path / 'work')
    carried = str(tmp_path / 'carried')  # the hand-off folder one carries to the next machine
    workdir = os.path.join(root, study.workdir('lth', 40, (0, 1)))
    os.makedirs(os.path.join(workdir, 'checkpoints', '120'))
    files = {'checkpoints/120/state.bin': os.urandom(2048), 'config.json': b'{"seed": 0}', '.lock': b'pid 1'}
    for name, data in files.items():
        with open(os.path.join(workdir, name), 'wb') as f:
            f.write(data)
    order = campaign.part_order(study)
    holder = subprocess.Popen([sys.executable, '-c', 'import sys, time; from jst.run import workdir; '
                               f'workdir.WorkdirLock({workdir!r}).__enter__(); print("locked", flush=True); '
                               'time.sleep(60)'], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert holder.stdout.readline().strip() == 'locked'
        with pytest.raises(workdir_lib.WorkdirError, match='pause its runner first'):
            handoff.pack_study(study, results, root, carried, order, campaign.part_done)
    finally:
        holder.kill()
        holder.wait()
    written = handoff.pack_study(study, results, root, carried, order, campaign.part_done)
    archive = os.path.join(carried, 'toy', '40', 'lth', 'seed_0.tar.gz')
    assert written == [archive], 'only the part with checkpoints'
    shutil.rmtree(root)  # the machine goes
    seen = []

    def fake_child(args, cwd):  # the training: finds the unpacked workdir, leaves records
        seen.append({n: open(os.path.join(workdir, n), 'rb').read() for n in ('checkpoints/120/state.bin',
                                                                             'config.json')})
        assert not os.path.exists(os.path.join(workdir, '.lock')), 'a lock is never handed on'

    monkeypatch.setattr(campaign, 'run_child', fake_child)
    monkeypatch.setattr(campaign, 'copy_records', lambda w, out, info: (os.makedirs(out, exist_ok=True), open(
        os.path.join(out, 'summary.json'), 'w').write('[]')))
    assert campaign.run_part(REPO, study, 'lth', 40, (0, 1), results, root, handoff_dir=carried)
    assert seen == [{n: files[n] for n in ('checkpoints/120/state.bin', 'config.json')}]
    assert not os.path.exists(archive)
    os.makedirs(os.path.dirname(archive), exist_ok=True)  # an archive older than the workdir's checkpoints
    open(archive, 'wb').write(b'not read')
    assert not handoff.unpack(archive, workdir)


def test_a_prerequisite_run_is_trained_once_without_naming_its_study_in_the_cli(tmp_path, monkeypatch):
    """Issue 36: ``launch/study.py`` special-cased ``transfer_mnist``; its source ticket is now the study's
    ``prerequisite`` (another study's policy at one budget), trained by ``campaign.train_prerequisite`` when its
    summary is missing and skipped once it is there."""
    from jst.studies.catalog import STUDIES  # pylint: disable=g-import-not-at-top
    assert STUDIES['transfer_mnist'].prerequisite == ('paper_mnist', 'grow_dense_new', 1287,
                                                      'runs/paper_mnist/1287/grow_dense_new', 5)
    assert 'transfer_mnist' not in open(STUDY_PY).read().split('"""', 2)[2], 'no study is named in the CLI\'s code'
    calls = []
    monkeypatch.setattr(campaign, 'run_child', lambda args, cwd: calls.append(args))
    campaign.train_prerequisite(str(tmp_path), STUDIES['transfer_mnist'], STUDIES)
    (args,) = calls
    assert '--config.seed=42' in args and '--config.num_seeds=5' in args and '--config.steps_per_round=1287' in args
    assert args[-1] == f'--workdir={tmp_path}/runs/paper_mnist/1287/grow_dense_new'
    os.makedirs(tmp_path / 'runs/paper_mnist/1287/grow_dense_new')
    (tmp_path / 'runs/paper_mnist/1287/grow_dense_new/summary.json').write_text('[]')
    campaign.train_prerequisite(str(tmp_path), STUDIES['transfer_mnist'], STUDIES)
    campaign.train_prerequisite(str(tmp_path), STUDIES['paper_mnist'], STUDIES)  # none: nothing to train
    assert len(calls) == 1


def test_handoff_archives_never_go_into_the_repository(tmp_path):
    """Hand-off archives hold checkpoints: a hand-off folder inside the repository is refused naming the fix,
    ``handoff --commit`` is refused, and git ignores any ``docs/results/<study>/handoff/`` left by older versions."""
    from jst import errors  # pylint: disable=g-import-not-at-top
    from jst.studies import handoff  # pylint: disable=g-import-not-at-top
    for inside in (REPO, os.path.join(REPO, 'docs', 'results', 'toy', 'handoff')):
        with pytest.raises(errors.UserError, match='outside it'):
            handoff.outside_repository(inside, REPO)
    assert handoff.outside_repository(str(tmp_path / 'carried'), REPO) == os.path.realpath(tmp_path / 'carried')
    proc = subprocess.run([sys.executable, STUDY_PY, 'handoff', 'toy', '--commit', f'--workdir_root={tmp_path}'],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and 'never committed' in proc.stderr, proc.stderr[-2000:]
    ignored = subprocess.run(['git', 'check-ignore', '-q', 'docs/results/cifar10_paper/handoff/40/lth/seed_0.tar.gz'],
                             cwd=REPO, check=False)
    assert ignored.returncode == 0, '.gitignore must keep hand-off archives out of commits'


def test_the_converged_cifar_study_is_its_preregistered_design(tmp_path):
    """``catalog_cifar.converged_study`` against ``docs/results/preregistration/cifar10_converged.md``: the policies
    and the 8 comparisons in its order (one Holm family), seeds 42-46, 8 trainings, the +-1 point margin, and the
    pre-registered fallback order (the four decisive policies at every seed before the rest)."""
    import re  # pylint: disable=g-import-not-at-top
    from jst.studies import catalog_cifar  # pylint: disable=g-import-not-at-top
    with open(os.path.join(REPO, catalog_cifar.CIFAR_PREREGISTRATION)) as f:
        text = f.read()
    policies = re.findall(r'^\| `(\w+)` \|', text, flags=re.M)
    comparisons = [tuple(m) for m in re.findall(r'^\d+\. `(\w+) - (\w+)`', text, flags=re.M)]
    study = catalog_cifar.converged_study(14040)
    assert study.policy_names == policies and len(policies) == 8
    assert list(study.comparisons) == comparisons and len(comparisons) == 8
    assert (study.first_seed, study.num_seeds, study.trainings, study.budgets) == (42, 5, 8, (14040,))
    assert study.equivalence_margin == 0.01 and study.headline == ('grow_dense_new', 'weight_reset')
    decisive = re.search(r'the four decisive policies \(([^)]*)\)', text).group(1)
    assert study.run_first == tuple(re.findall(r'`(\w+)`', decisive))
    order = [(policy, part[0]) for _, policy, part in campaign.part_order(study)]
    assert order[:20] == [(p, seed) for seed in range(42, 47) for p in study.run_first]
    assert sorted(order) == sorted((p, seed) for p in policies for seed in range(42, 47))
    # Defined in the catalog only once its budget is committed (before any of its records).
    assert ('cifar10_converged' in STUDIES) == (catalog_cifar.CIFAR_CONVERGED_BUDGET is not None)
    # Every policy's command line gives a valid config (the grown ticket's controls read grow_dense_new's workdir).
    import ast  # pylint: disable=g-import-not-at-top
    from jst.run import configuration  # pylint: disable=g-import-not-at-top
    from tests.helpers import load_config, set_fields  # pylint: disable=g-import-not-at-top
    os.makedirs(tmp_path / study.workdir('grow_dense_new', 14040, (42, 1)))
    for policy in policies:
        args = campaign.main_args(REPO, study, policy, 14040, str(tmp_path / 'w'), (42, 1), str(tmp_path))
        overrides = dict(a[len('--config.'):].split('=', 1) for a in args if a.startswith('--config.'))
        values = {k: (ast.literal_eval(v) if re.fullmatch(r'[-\d(),.]+|True|False', v) else v)
                  for k, v in overrides.items()}
        config = set_fields(load_config('cifar10'), values)
        configuration.validate_config(config)
        assert config.steps_per_round == (8 * 14040 if policy in ('dense_same_steps', 'grown_random_reinit',
                                                                  'grown_random_mask') else 14040), policy
        assert config.eval_every == 351 and config.num_seeds == 1, policy


def test_a_policy_that_runs_first_needs_its_source_first():
    from jst.studies import study as study_lib  # pylint: disable=g-import-not-at-top
    policies = (('a', '', ''), ('b', '--config.init_from={source}', ''))
    with pytest.raises(ValueError, match="'b' runs first, so its source 'a' must be in run_first"):
        study_lib.Study(name='x', title='', config='configs/tiny.py', first_seed=0, num_seeds=1, budgets=(10,),
                        policies=policies, comparisons=(), sources=(('b', 'a'),), run_first=('b',))
    with pytest.raises(ValueError, match=r"names \['c'\]"):
        study_lib.Study(name='x', title='', config='configs/tiny.py', first_seed=0, num_seeds=1, budgets=(10,),
                        policies=policies, comparisons=(), run_first=('c',))
