"""The errors diffengine reports to users in one line (import-free, for the CLI's error path)."""


class ConfigError(ValueError):
    """A config, option or input that cannot run the requested command (exit status 2)."""


class ModelFolderError(OSError):
    """A model folder that from_pretrained cannot load: files missing or unreadable (exit status 2)."""


class NoUsableSampleError(RuntimeError):
    """The training shards gave no sample to train on: all empty, unreadable or filtered (exit status 2)."""


class NonFiniteTrainingError(RuntimeError):
    """Training stopped because its loss or gradients stayed non-finite (exit status 1)."""


class NonFiniteImagesError(NonFiniteTrainingError):
    """A model generated images with non-finite pixels, which PIL would save black (exit status 1)."""


class NonFiniteLatentsError(NonFiniteTrainingError):
    """A VAE encoded images into non-finite latents, on which a bridge would train only NaN (exit status 1)."""


class TrainingStopped(RuntimeError):
    """Training stopped on a signal (SIGTERM) after saving a checkpoint (exit status 128 + signal)."""

    def __init__(self, message: str, signal_number: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signal_number


# the exit status of a command interrupted by Ctrl-C, as a shell reports one ended by SIGINT (128 + 2)
INTERRUPTED_STATUS = 130


class UnreadableCheckpointError(ValueError):
    """A checkpoint that is truncated, corrupt, or holds objects refused as unsafe to unpickle."""


def one_line(error: BaseException) -> str:
    """The error's message on one line; one re-raised from a DataLoader worker (its message
    holds the worker's traceback) gives the original last line, without the type name."""
    message = str(error)
    if "Original Traceback" in message:
        message = message.strip().splitlines()[-1].split(": ", 1)[-1]
    return " ".join(message.split())


# what building the runner and loading or resuming raise for a bad input (a path, a value, a file)
SETUP_ERRORS = (ValueError, TypeError, KeyError, OSError, NotImplementedError)


def describe_error(error: BaseException) -> str:
    """One line saying what went wrong (the exception's own message, with its kind if unclear)."""
    message = " ".join(str(error).split())
    return message if isinstance(error, (ValueError, OSError)) and message else f"{type(error).__name__}: {message}"


# the errors a command reports in one line, and what a torchrun worker passes on to its launcher
REPORTED_ERRORS = (ConfigError, NoUsableSampleError, NonFiniteTrainingError, TrainingStopped)


def exit_status(error: BaseException) -> int:
    """The exit status a command reporting ``error`` ends with: 1 non-finite training, 128 +
    signal a stopped one, 2 any user input error."""
    if isinstance(error, TrainingStopped):
        return error.exit_code
    return 1 if isinstance(error, NonFiniteTrainingError) else 2


def report_line(error: BaseException) -> str:
    """The command's last line on stderr for a reported error."""
    kind = "" if isinstance(error, TrainingStopped) else "error: "
    return f"diffengine: {kind}{one_line(error)}"


def error_of_status(status: int, message: str) -> Exception:
    """An error that ``exit_status`` maps to ``status`` (a worker's error, re-raised by the launcher)."""
    if status > 128:
        return TrainingStopped(message, status - 128)
    return NonFiniteTrainingError(message) if status == 1 else ConfigError(message)
