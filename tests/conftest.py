"""Shared fixtures (the offline dataset folders beside the repository) and the test tiers.

* ``python -m pytest -q -n 2 -m "not slow" tests``: the inner loop (ops, config checks, data readers, reports,
  layout, golden tolerances, the study runner's sharding), under two minutes on 2 cores (measured 2026-12-06 on a
  2-core AMD EPYC, no dataset: 99.7 s wall; 146 s on one core without ``-n 2``). Every test that launches a
  process or trains a whole run is ``slow`` (marked here, by module, or by the test itself).
* ``python -m pytest -q -n 2 tests`` (the README's command, CI): everything but ``extended``, 981 s and 769 s
  on 2 cores (two runs on 2026-12-07, a 2-core AMD EPYC, from an empty compilation cache); it shares one XLA compilation cache across
  its processes (``share_compiled_programs``).
* MNIST for the data tests comes from ``$JST_MANUAL_DIR`` (when it holds the four original files), else the offline
  folder (``$JST_SHARED_DATASETS/mnist``, default ``../shared/datasets/mnist``), else, online, TFDS's registered
  files downloaded once into ``~/.cache/jst/datasets/mnist`` (checked against TFDS's checksums); with none of
  these they fail in one line naming both places. The JPEG copy of CIFAR-10 (``cifar10-jpeg75``) exists only
  beside this project's machines: the tests that read it skip without it, naming the folder
  (``JST_REQUIRE_DATASETS=1``, CI, makes that a failure). A test that needs a dataset is ``slow``: the inner loop
  needs none.
* ``python -m pytest -q -n 2 -m extended tests``: the minutes-long checks CI leaves out (two-process training, an
  interrupted study campaign, more kill-and-resume points and checkpoint tampering, the CIFAR-10 golden, the sweep
  script, the GPU pack's rehearsal, every benchmark at toy scale; ``EXTENDED_TESTS``). Run it before a change to
  resuming, checkpoints, the searches or the launch scripts lands.
"""

import os
import socket
import sys
import tempfile
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


def share_compiled_programs() -> str:
    """One persistent XLA compilation cache for the whole suite: both xdist workers and every run a test launches
    (they inherit the environment). Many tests launch ``launch/main.py`` on the same tiny configs; each such
    process spent about 15 of its 40 s compiling what an earlier one had compiled. A cached program is the same
    program (its key holds the computation, the compile options, the XLA flags and the jaxlib version), so no result
    changes; only compile time goes. ``JAX_COMPILATION_CACHE_DIR`` set beforehand wins."""
    folder = os.environ.setdefault('JAX_COMPILATION_CACHE_DIR',
                                   os.path.join(tempfile.gettempdir(), f'jst-tests-xla-cache-{os.getuid()}'))
    os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
    os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '-1')
    if 'jax' in sys.modules:  # a plugin imported jax before this file: its config read the environment already
        import jax  # pylint: disable=g-import-not-at-top
        jax.config.update('jax_compilation_cache_dir', folder)
        jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
        jax.config.update('jax_persistent_cache_min_entry_size_bytes', -1)
    return folder


share_compiled_programs()


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
               'test_study_runner.py::test_handoff_archives_never_go_into_the_repository',
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


# The default run keeps one test per guarantee (kill-and-resume to the same result, a corrupt checkpoint falling
# back, a changed config refused, NaN keeping the last good state, each search end to end, the goldens of the tiny
# and MNIST runs, seeds as lanes); these further cases of the same guarantees, minutes each, are ``extended``
# (measured 2026-12-07 on 2 cores: together about 53 of the suite's 90 worker-minutes).
EXTENDED_TESTS = (
    'test_resume.py::test_sigkill_and_resume_gives_identical_result[after_save:9]',
    'test_resume.py::test_sigkill_and_resume_gives_identical_result[random]',
    'test_resume.py::test_killed_and_resumed[lth-2-after_save:6-extra2]',
    'test_resume.py::test_tampered_meta_is_detected_and_the_good_checkpoint_survives',
    'test_resume.py::test_checkpoint_knows_its_config_whatever_config_json_says',
    'test_resume.py::test_resume_on_other_data_is_refused_naming_it',
    'test_resume.py::test_same_size_corruption_is_detected_and_the_good_checkpoint_survives',
    'test_resume.py::test_one_writer_per_workdir',
    'test_resume.py::test_checkpoint_of_an_older_layout_is_refused_naming_the_fix',
    'test_resume.py::test_nothing_readable_then_overwrite_really_starts_over',
    'test_golden.py::test_same_summary_as_recorded[cifar10_juvenile]',
    'test_golden.py::test_same_summary_as_recorded[mnist_search]',
    'test_juvenile.py::test_random_reinit_and_random_mask_controls_of_a_grown_ticket',
    'test_juvenile.py::test_init_from_another_split_is_refused',
    'test_end_to_end.py::test_sweep_script',
    'test_end_to_end.py::test_compare_runs_the_papers_question_and_its_control_paired_by_seed',
    'test_end_to_end.py::test_registry_pruners_run_from_the_config[lth-erk]',
    'test_end_to_end.py::test_registry_pruners_run_from_the_config[lth-rigl]',
    'test_end_to_end.py::test_registry_pruners_run_from_the_config[juvenile-gmp]',
    'test_notebooks.py::test_quickstart_runs_headless_in_a_fresh_venv_from_the_wheel',  # CI: in its no-TF venv
    'test_gpu_pack.py::test_data_parts_reassemble_and_the_check_runs_every_step',
    'test_seeds.py::test_each_seed_equals_its_own_run[juvenile_search]',
    'test_seeds.py::test_each_seed_equals_its_own_run[juvenile_paper]',
    'test_config.py::test_a_diverged_run_is_marked_and_exits_non_zero',
    'test_diagnostics.py::test_runs_record_diagnostics_and_transfer_a_ticket',
    'test_docs.py::test_examples_run[library.md]',
    'test_parallel.py::test_eight_devices_two_seeds_match_one_device',
    'test_golden.py::test_same_summary_as_recorded[tiny_controls_rewind_global]',
    'test_config.py::test_init_from_an_empty_folder_creates_nothing_there_and_the_corrected_rerun_proceeds',
    'test_juvenile.py::test_prune_and_continue_optimizer_treatment',
    'test_resume.py::test_deleted_records_of_a_finished_run_are_rebuilt',
    'test_diagnostics.py::test_background_start_diagnostics_are_those_of_the_start_state',
)


def pytest_collection_modifyitems(items):
    """Marks ``slow`` every test outside the fast modules and fast tests, and every test that reads a dataset
    (the extended tier is slow too); marks ``extended`` the tests of ``EXTENDED_TESTS``."""
    for item in items:
        if any(item.nodeid.endswith(t) for t in EXTENDED_TESTS):
            item.add_marker(pytest.mark.extended)
        module = item.module.__name__.rsplit('.', 1)[-1]
        needs_data = any(f in getattr(item, 'fixturenames', ()) for f in DATASET_FIXTURES)
        if needs_data or not (module in FAST_MODULES or any(item.nodeid.endswith(t) for t in FAST_TESTS)):
            item.add_marker(pytest.mark.slow)
