"""``train_and_evaluate(config, workdir)``: the one entry point of the CLI, notebooks and tests."""

from __future__ import annotations

import json
import os
from typing import Any

import ml_collections
from absl import logging

from jst import configuration
from jst import experiment as exp_lib
from jst import lottery
from jst import reporting


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> list[dict[str, Any]]:
    """Validates the config, loads data, runs ``config.method``; returns the summary records."""
    configuration.validate_config(config)
    configuration.check_workdir_writable(workdir)
    reporting.atomic_write_text(os.path.join(workdir, reporting.CONFIG_FILE),
                                json.dumps(configuration.config_to_dict(config), indent=1))
    exp = exp_lib.make_experiment(config, workdir)
    logging.info('%d train / %d validation / %d test examples; %d steps per round (%d per epoch).',
                 len(exp.dataset.train), len(exp.dataset.validation), len(exp.dataset.test),
                 exp.steps_per_round, exp.steps_per_epoch)
    if config.method == 'lth':
        records = lottery.run_lth(exp)
    else:
        from jst import juvenile  # pylint: disable=g-import-not-at-top
        records = juvenile.run_juvenile(exp)
    table = reporting.summary_table(records)
    print(table, flush=True)
    reporting.atomic_write_text(os.path.join(workdir, 'summary.md'), table + '\n')
    return records
