"""argparse value types shared by the commands (import-free: keeps ``--help`` fast)."""
import argparse


def positive_int(text: str) -> int:
    """A whole number >= 1, or argparse's one-line usage error."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value
