"""The exceptions people see: bad input (configs, datasets, workdirs) and a run that diverged.

Raised anywhere below the experiment scripts; `jaxdl.cli.run` turns a UsageError
into one line on stderr and exit status 2, a Diverged into one line and exit
status 3. Everything else is a bug and keeps its traceback.
"""


class UsageError(Exception):
    """Bad input: the message names the problem and how to fix it, in one line."""


class Diverged(Exception):
    """Training produced non-finite losses or gradients too many steps in a row; checkpoints are intact."""
