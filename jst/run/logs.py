"""What a run's absl log shows: the INFO chatter of the libraries jst drives is dropped at default verbosity."""

from __future__ import annotations

import logging as std_logging

from absl import logging

NOISY_LIBRARIES = ('orbax', 'tensorflow_datasets', 'xla_bridge')  # INFO chatter dropped at default verbosity


class _QuietLibraries:
    """Drops the INFO lines of orbax (one per save), TFDS (dataset info, readers) and JAX's backend probe (the
    libtpu line) from the absl log at default verbosity; keeps their warnings, and everything with --verbosity=1."""

    def filter(self, record) -> bool:  # pylint: disable=missing-function-docstring
        noisy = any(name in record.pathname for name in NOISY_LIBRARIES)
        return not noisy or record.levelno >= std_logging.WARNING or logging.get_verbosity() >= 1


def quiet_library_logs() -> None:
    """Installs the filter on the absl logger and handler (JAX logs through its own logger to the root handler)."""
    targets = [std_logging.getLogger('absl'), logging.get_absl_handler()]
    for target in targets:
        if not any(isinstance(f, _QuietLibraries) for f in target.filters):
            target.addFilter(_QuietLibraries())
