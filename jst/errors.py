"""The one base class of the errors a user can fix: the CLI prints them as one line (``launch/main.py``).

Each subclass lives beside the code that raises it (``configuration.ConfigError``, ``readers.DataError``,
``checkpoint_io.CheckpointError``, ``workdir.WorkdirError``, ``train_loop.NonFiniteLossError``,
``report.ReportError``) and keeps its builtin base (``ValueError``, ``RuntimeError``, ...) for callers that catch
those. Imports nothing.
"""


class UserError(Exception):
    """A problem the user can fix; the message names the problem and the fix."""
