"""The errors diffengine reports to users in one line (import-free, for the CLI's error path)."""


class ConfigError(ValueError):
    """A config, option or input that cannot run the requested command (exit status 2)."""


class NoUsableSampleError(RuntimeError):
    """The training shards gave no sample to train on: all empty, unreadable or filtered (exit status 2)."""


class NonFiniteTrainingError(RuntimeError):
    """Training stopped because its loss or gradients stayed non-finite (exit status 1)."""


class UnreadableCheckpointError(ValueError):
    """A checkpoint that is truncated, corrupt, or holds objects refused as unsafe to unpickle."""
