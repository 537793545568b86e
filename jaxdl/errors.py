"""The one exception type for bad input from people (configs, datasets, workdirs).

Raised anywhere below the experiment scripts; `jaxdl.cli.run` turns it into one
line on stderr and exit status 2. Everything else is a bug and keeps its traceback.
"""


class UsageError(Exception):
    """Bad input: the message names the problem and how to fix it, in one line."""
