"""``train_and_evaluate(config, workdir)``: the one entry point of the CLI, notebooks and tests."""

from __future__ import annotations

import json
import logging as std_logging
import os
from typing import Any

import ml_collections
from absl import logging

from jst import checkpointing
from jst import configuration
from jst import experiment as exp_lib
from jst import juvenile
from jst import lottery
from jst import reporting


class _QuietOrbax:
    """Drops orbax's INFO chatter (one line per save) from the absl log; keeps its warnings."""

    def filter(self, record) -> bool:  # pylint: disable=missing-function-docstring
        return 'orbax' not in record.pathname or record.levelno >= std_logging.WARNING


def quiet_orbax_logs() -> None:
    logger = std_logging.getLogger('absl')
    if not any(isinstance(f, _QuietOrbax) for f in logger.filters):
        logger.addFilter(_QuietOrbax())


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> list[dict[str, Any]]:
    """Validates the config, loads data, runs (or resumes) ``config.method``; returns the summary.

    Running again on the same workdir resumes from the last checkpoint; a
    workdir holding a run of a different config is refused (see
    ``config.overwrite``). At the end, ``summary.md`` and a report with plots
    (``report/``) are written.
    """
    quiet_orbax_logs()
    configuration.validate_config(config)
    configuration.check_workdir_writable(workdir)
    config_dict = configuration.config_to_dict(config)
    checkpointing.claim_workdir(workdir, config_dict, config.overwrite, reporting.CONFIG_FILE)
    reporting.atomic_write_text(os.path.join(workdir, reporting.CONFIG_FILE), json.dumps(config_dict, indent=1))
    exp = exp_lib.make_experiment(config, workdir)
    exp.checkpointer = checkpointing.RunCheckpointer(workdir)
    exp.writer = reporting.make_metric_writer(workdir)
    logging.info('%d train / %d validation / %d test examples; %d steps per round (%d per epoch).',
                 len(exp.dataset.train), len(exp.dataset.validation), len(exp.dataset.test),
                 exp.steps_per_round, exp.steps_per_epoch)
    try:
        records = lottery.run_lth(exp) if config.method == 'lth' else juvenile.run_juvenile(exp)
    finally:
        exp.checkpointer.close()
        if exp.writer is not None:
            exp.writer.close()
    table = reporting.summary_table(records)
    print(table, flush=True)
    reporting.atomic_write_text(os.path.join(workdir, 'summary.md'), table + '\n')
    if config.write_report:
        from jst import plots  # pylint: disable=g-import-not-at-top
        path = plots.write_report([workdir], os.path.join(workdir, 'report'),
                                  f'{config.method} on {config.dataset}')
        logging.info('Report: %s', path)
    return records
