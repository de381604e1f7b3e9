"""``train_and_evaluate(config, workdir)``: the one entry point of the CLI, notebooks and tests."""

from __future__ import annotations

import logging as std_logging
import os
from typing import Any

import ml_collections
from absl import logging

from jst import configuration
from jst import context as context_lib
from jst import report
from jst import searches
from jst import workdir as workdir_lib


class _QuietOrbax:
    """Drops orbax's INFO chatter (one line per save) from the absl log; keeps its warnings."""

    def filter(self, record) -> bool:  # pylint: disable=missing-function-docstring
        return 'orbax' not in record.pathname or record.levelno >= std_logging.WARNING


def quiet_orbax_logs() -> None:
    logger = std_logging.getLogger('absl')
    if not any(isinstance(f, _QuietOrbax) for f in logger.filters):
        logger.addFilter(_QuietOrbax())


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> list[dict[str, Any]]:
    """Validates the config, claims the workdir, loads data, runs (or resumes) ``config.method``.

    Running again on the same workdir resumes from the last checkpoint; a
    workdir holding a run of a different config, or in use by another
    process, is refused (see ``config.overwrite``). Returns the summary records; writes ``summary.md``
    and, with ``config.write_report``, a report with plots (``report/``).
    """
    quiet_orbax_logs()
    configuration.validate_config(config)
    workdir_lib.check_writable(workdir)
    with workdir_lib.WorkdirLock(workdir):
        workdir_lib.claim(workdir, configuration.config_to_dict(config), config.overwrite)
        with context_lib.make_context(config, workdir) as ctx:
            logging.info('%d train / %d validation / %d test examples; %d steps per round (%d per epoch).',
                         ctx.num_train, len(ctx.dataset.validation), len(ctx.dataset.test),
                         ctx.steps_per_round, ctx.steps_per_epoch)
            records = searches.run(ctx)
        table = report.summary_table(records) if config.num_seeds == 1 else report.aggregate_table(records)
        print(table, flush=True)
        workdir_lib.atomic_write_text(os.path.join(workdir, workdir_lib.SUMMARY_TABLE_FILE), table + '\n')
        if config.write_report and workdir_lib.is_primary_process():
            path = report.write_report([workdir], os.path.join(workdir, workdir_lib.REPORT_DIR),
                                       f'{config.method} on {config.dataset}')
            logging.info('Report: %s', path)
    return records
