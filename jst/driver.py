"""``train_and_evaluate(config, workdir)``: the one entry point of the CLI, notebooks and tests."""

from __future__ import annotations

import os
import sys
from typing import Any, Optional

import ml_collections
from absl import logging

from jst.analysis import paired
from jst.analysis import report
from jst.data import datasets as data_lib
from jst.run import configuration
from jst.run import context as context_lib
from jst.run import host_malloc
from jst.run import logs
from jst.run import provenance
from jst.run import workdir as workdir_lib
from jst.searches import registry
from jst.training import cpu_kernels
from jst.training import progress as progress_lib
from jst.training import pruning


COMPARED_METHODS = ('juvenile', 'lth')  # the methods method='compare' runs (its policies below)
# method='compare' (configs/mnist.py's default): the paper's question and its control, each policy's overrides
COMPARED_POLICIES: dict[str, dict[str, Any]] = {
    'weight_reset': {'method': 'lth'},                           # the classic lottery ticket
    'grow': {'method': 'juvenile'},                              # config.growth (the paper's: an identity layer)
    'prune_continue': {'method': 'juvenile', 'growth': 'none'},  # the final architecture, weights kept, no growth
}
COMPARED_PAIRS = (('grow', 'weight_reset'), ('grow', 'prune_continue'), ('prune_continue', 'weight_reset'))


def compared_config(config: ml_collections.ConfigDict, policy: str) -> ml_collections.ConfigDict:
    """The config of one policy of method='compare': its overrides, its name, and for prune_continue the
    architecture weight reset starts from (``lth_model``, else ``model``)."""
    one = config.copy_and_resolve_references()
    for key, value in COMPARED_POLICIES[policy].items():
        one[key] = value
    one.name, one.write_report = policy, False
    if policy == 'prune_continue' and len(config.lth_model):
        one.model = config.lth_model.copy_and_resolve_references()
    return one


def compare_methods(config: ml_collections.ConfigDict, workdir: str) -> list[dict[str, Any]]:
    """``method='compare'``: each of ``COMPARED_POLICIES`` in ``WORKDIR/<policy>`` (its seeds as lanes; each
    resumes on its own), then one table of all with 95% intervals, the paired final-round comparisons of
    ``COMPARED_PAIRS`` in the results pages' wording (``WORKDIR/summary.md``) and one report."""
    records, configs = [], {policy: compared_config(config, policy) for policy in COMPARED_POLICIES}
    dataset = context_lib.load_run_data(config)  # once for all policies (they differ in method and model only)
    with progress_lib.running([(policy, _planned_trainings(c)) for policy, c in configs.items()]):
        for i, (policy, one) in enumerate(configs.items()):
            logging.info('Policy %d/%d: %s.', i + 1, len(configs), policy)
            records += train_and_evaluate(one, os.path.join(workdir, policy), print_table=False, dataset=dataset)
    margin = paired.margin_for([config.dataset])
    text = report.aggregate_table(records) + '\n\n' + paired.paired_claims(records, COMPARED_PAIRS, margin)
    print(text, flush=True)
    workdir_lib.atomic_write_text(os.path.join(workdir, workdir_lib.SUMMARY_TABLE_FILE), text + '\n')
    if config.write_report and workdir_lib.is_primary_process():
        path = report.write_report([os.path.join(workdir, p) for p in COMPARED_POLICIES],
                                   os.path.join(workdir, workdir_lib.REPORT_DIR),
                                   f'{" vs ".join(COMPARED_POLICIES)} on {config.dataset}')
        logging.info('Report: %s', path)
    return records


def _planned_trainings(config: ml_collections.ConfigDict) -> int:
    return progress_lib.planned_trainings(config.method, config.num_rounds, len(pruning.control_names(config.control)))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *, print_table: bool = True,
                       dataset: Optional[data_lib.Dataset] = None) -> list[dict[str, Any]]:
    """Validates the config, claims the workdir, loads data, runs (or resumes) ``config.method``
    (``'compare'``: ``compare_methods``).

    Running again on the same workdir resumes from the last checkpoint; a
    workdir holding a run of a different config, or in use by another
    process, is refused (see ``config.overwrite``). Returns the summary records; writes ``summary.md``
    and, with ``config.write_report``, a report with plots (``report/``). ``dataset``: already loaded data of
    this config (``context.load_run_data``), else loaded here.
    """
    logs.quiet_library_logs()
    reused = host_malloc.reuse_freed_memory()  # before JAX starts its thread pools (their arenas)
    if dataset is None:  # else a policy of a main run (compare), which said it once
        logging.info('Host malloc: %s (%s).', 'freed blocks reused' if reused else "glibc's defaults",
                     f'${host_malloc.OPT_OUT_VARIABLE}=glibc keeps them' if reused else 'not glibc, or opted out')
    if config.get('cpu_kernels') in cpu_kernels.CPU_KERNELS:  # before JAX starts (validate_config starts it)
        families = {configuration.start_spec(config, m).family for m in COMPARED_METHODS}
        wins = bool(families & set(cpu_kernels.LIBRARY_WINS_FOR))
        in_effect = cpu_kernels.apply_cpu_kernels(config.cpu_kernels, wins)
        if dataset is None:  # else a policy of a main run (compare), which said it once
            logging.info('XLA:CPU kernels: %s (config.cpu_kernels=%r).', in_effect, config.cpu_kernels)
    configuration.validate_config(config)
    if config.method == 'compare':
        return compare_methods(config, workdir)
    workdir_lib.check_writable(workdir)
    with workdir_lib.WorkdirLock(workdir):
        workdir_lib.claim(workdir, configuration.config_to_dict(config), config.overwrite)
        if workdir_lib.is_primary_process():
            provenance.record_invocation(workdir, sys.argv)
        name = config.name or config.method
        with context_lib.make_context(config, workdir, dataset) as ctx, \
                progress_lib.running([(name, _planned_trainings(config))]):
            logging.info('%d train / %d validation / %d test examples; %d steps per round (%d per epoch).',
                         ctx.num_train, len(ctx.dataset.validation), len(ctx.dataset.test),
                         ctx.steps_per_round, ctx.steps_per_epoch)
            progress_lib.start_policy(name, ctx.steps_per_round)
            records = registry.run(ctx)
        table = report.summary_table(records) if config.num_seeds == 1 else report.aggregate_table(records)
        if print_table:  # method='compare' prints one table of all its policies instead
            print(table, flush=True)
        workdir_lib.atomic_write_text(os.path.join(workdir, workdir_lib.SUMMARY_TABLE_FILE), table + '\n')
        if config.write_report and workdir_lib.is_primary_process():
            path = report.write_report([workdir], os.path.join(workdir, workdir_lib.REPORT_DIR),
                                       f'{config.method} on {config.dataset}')
            logging.info('Report: %s', path)
    return records
