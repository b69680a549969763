"""The one exception type that means "the user asked for something that cannot work"."""


class UsageError(Exception):
    """Bad input: a flag, config value, data path or workdir that cannot work.

    `jaxdl.main` prints the message as one line on stderr and exits with status 2. Raise it *before* anything
    in the workdir is written, and say how to fix the problem, not only what is wrong.
    """


class TrainingFailed(Exception):
    """The run cannot go on (e.g. the loss became NaN). `jaxdl.main` prints one line and exits with status 1; the
    checkpoints written before the failure are intact."""
