"""The exceptions people see: bad input (configs, datasets, workdirs), a run that diverged, a write refused.

Raised anywhere below the experiment scripts; `jaxdl.cli.run` turns each into one line on stderr
starting `error: ` and an exit status of its own:
  2  UsageError   bad input; nothing already written was changed
  3  Diverged     non-finite training; the checkpoints are intact
  4  WriteFailed  the storage refused a write (disk full, directory gone or read-only); what was
                  complete before is intact, so the same command resumes once the storage is fixed
Everything else is a bug and keeps its traceback.
"""


class UsageError(Exception):
    """Bad input: the message names the problem and how to fix it, in one line."""


class Diverged(Exception):
    """Training produced non-finite losses or gradients too many steps in a row; checkpoints are intact."""


class WriteFailed(Exception):
    """The storage refused a write: the message names the path, the OS error and what to do, in one line."""
