"""The errors diffengine reports to users in one line (import-free, for the CLI's error path)."""


class ConfigError(ValueError):
    """A config, option or input that cannot run the requested command (exit status 2)."""


class NoUsableSampleError(RuntimeError):
    """The training shards gave no sample to train on: all empty, unreadable or filtered (exit status 2)."""


class NonFiniteTrainingError(RuntimeError):
    """Training stopped because its loss or gradients stayed non-finite (exit status 1)."""


class UnreadableCheckpointError(ValueError):
    """A checkpoint that is truncated, corrupt, or holds objects refused as unsafe to unpickle."""


def one_line(error: BaseException) -> str:
    """The error's message on one line; one re-raised from a DataLoader worker (its message
    holds the worker's traceback) gives the original last line, without the type name."""
    message = str(error)
    if "Original Traceback" in message:
        message = message.strip().splitlines()[-1].split(": ", 1)[-1]
    return " ".join(message.split())
