"""Shared fixtures (the offline dataset folders beside the repository) and the test tiers.

* ``python -m pytest -q -n 2 -m "not slow" tests``: the inner loop (ops, config checks, data readers, reports,
  layout, golden tolerances, the study runner's sharding), under two minutes on 2 cores (measured 2026-12-06 on a
  2-core AMD EPYC, no dataset: 99.7 s wall; 146 s on one core without ``-n 2``). Every test that launches a
  process or trains a whole run is ``slow`` (marked here, by module, or by the test itself).
* ``python -m pytest -q -n 2 tests`` (the README's command, CI): everything but ``extended``, about 20 minutes.
* MNIST for the data tests comes from ``$JST_MANUAL_DIR`` (when it holds the four original files), else the offline
  folder (``$JST_SHARED_DATASETS/mnist``, default ``../shared/datasets/mnist``), else, online, TFDS's registered
  files downloaded once into ``~/.cache/jst/datasets/mnist`` (checked against TFDS's checksums); with none of
  these they fail in one line naming both places. The JPEG copy of CIFAR-10 (``cifar10-jpeg75``) exists only
  beside this project's machines: the tests that read it skip without it, naming the folder
  (``JST_REQUIRE_DATASETS=1``, CI, makes that a failure). A test that needs a dataset is ``slow``: the inner loop
  needs none.
* ``python -m pytest -q -m extended tests``: the minutes-long checks CI leaves out (two-process training, an
  interrupted study campaign, more kill-and-resume points, every benchmark at toy scale).
"""

import os
import socket
import urllib.parse
import urllib.request

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get('JST_SHARED_DATASETS', os.path.join(REPO, '..', 'shared', 'datasets'))
DOWNLOADS = os.path.join(os.path.expanduser('~'), '.cache', 'jst', 'datasets')
DATASET_FIXTURES = ('mnist_dir', 'cifar10_dir')


def _holds_mnist(path: str) -> bool:
    from jst.data import readers  # pylint: disable=g-import-not-at-top
    return bool(path) and all(os.path.isfile(os.path.join(path, f)) for f in readers.expected_files('mnist'))


def download_mnist(dest: str) -> str:
    """TFDS's registered MNIST files downloaded into ``dest`` (once; each checked against TFDS's checksum)."""
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    from jst.data import tfds_backend  # pylint: disable=g-import-not-at-top
    with tfds_backend.preparation_lock(dest):  # test workers (-n 2) download one at a time
        os.makedirs(dest, exist_ok=True)
        for url, info in tfds.builder_cls('mnist').url_infos.items():
            path = os.path.join(dest, info.filename)
            if not os.path.isfile(path):
                socket.create_connection((urllib.parse.urlparse(url).hostname, 443), timeout=5).close()
                urllib.request.urlretrieve(url, path + '.part')
                os.replace(path + '.part', path)
    bad = tfds_backend.tfds_checksum_mismatches('mnist', dest)
    if bad:
        raise OSError(f'downloaded {", ".join(bad)} differ from TFDS\'s checksums')
    return dest


def find_mnist_dir() -> str:
    """The folder the data tests read MNIST from (see the module docstring); fails in one line naming both."""
    for path in (os.environ.get('JST_MANUAL_DIR', ''), os.path.join(SHARED, 'mnist')):
        if _holds_mnist(path):
            return os.path.abspath(path)
    try:
        return download_mnist(os.path.join(DOWNLOADS, 'mnist'))
    except Exception as e:  # pylint: disable=broad-except
        error = e
    pytest.fail(f'MNIST not found in $JST_MANUAL_DIR or {os.path.abspath(os.path.join(SHARED, "mnist"))}, and '
                f'TFDS\'s download failed ({type(error).__name__}: {error}): set JST_MANUAL_DIR to a folder with '
                'the four *-ubyte.gz files, or run online.', pytrace=False)


def _dataset_dir(name: str) -> str:
    path = os.path.abspath(os.path.join(SHARED, name))
    if not os.path.isdir(path):
        message = (f'{path} not found: the tests that read {name} need the offline dataset folder; set '
                   f'JST_SHARED_DATASETS to the folder holding {name}/.')
        if os.environ.get('JST_REQUIRE_DATASETS'):  # CI: a missing folder fails, never skips
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope='session')
def mnist_dir() -> str:
    return find_mnist_dir()


@pytest.fixture(scope='session')
def cifar10_dir() -> str:
    return _dataset_dir('cifar10-jpeg75')


@pytest.fixture(scope='session')
def tfds_data_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp('tfds'))


# Modules that launch no process and train no whole run; every other test is ``slow``.
FAST_MODULES = ('test_layout', 'test_masks', 'test_report', 'test_expand', 'test_library', 'test_config', 'test_data',
                 'test_library_refusals', 'test_sparsity', 'test_provenance', 'test_progress', 'test_pruners')
FAST_TESTS = ('test_train.py::test_lanes_evaluate_the_test_split_only_where_a_lane_has_a_new_minimum',
               'test_golden.py::test_tolerances_are_tight_where_results_live',
               'test_study_runner.py::test_shards_split_the_parts_without_overlap',
               'test_study_runner.py::test_handoff_packs_a_paused_part_and_a_fresh_workdir_resumes_from_it',
               'test_study_runner.py::test_a_committed_handoff_is_deleted_in_the_records_commit',
               'test_study_runner.py::test_a_prerequisite_run_is_trained_once_without_naming_its_study_in_the_cli',
               'test_study_runner.py::test_a_part_counts_as_finished_only_with_all_its_records',
               'test_study_runner.py::test_campaign_refuses_what_its_study_lacks',
               'test_study_runner.py::test_large_metrics_stay_in_the_workdir_named_by_their_digest',
               'test_study_runner.py::test_commit_is_retried_while_the_index_is_held_and_commits_only_its_paths',
               'test_results.py::test_truncation_counts_by_hand',
               'test_results.py::test_convergence_sentence_by_hand',
               'test_results.py::test_a_study_naming_a_policy_it_lacks_is_refused',
               'test_results.py::test_comparisons_sentence_by_hand',
               'test_results.py::test_readme_headline_needs_its_markers',
               'test_results.py::test_a_study_without_records_gets_its_planned_page',
               'test_results.py::test_readme_states_each_levels_headline_as_its_page_does',
               'test_results.py::test_level_lists_join_runs_of_consecutive_levels',
               'test_results.py::test_a_levels_page_of_one_seed_renders_without_tests_or_intervals',
               'test_study_runner.py::test_status_tells_done_running_paused_and_not_started_parts')


def pytest_collection_modifyitems(items):
    """Marks ``slow`` every test outside the fast modules and fast tests, and every test that reads a dataset
    (the extended tier is slow too)."""
    for item in items:
        module = item.module.__name__.rsplit('.', 1)[-1]
        needs_data = any(f in getattr(item, 'fixturenames', ()) for f in DATASET_FIXTURES)
        if needs_data or not (module in FAST_MODULES or any(item.nodeid.endswith(t) for t in FAST_TESTS)):
            item.add_marker(pytest.mark.slow)
