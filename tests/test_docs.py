"""The documentation names every public command, option and config (the project's rule)."""
import argparse
import re
from pathlib import Path

import pytest

from diffengine.entry_point import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = "\n".join(path.read_text() for path in [ROOT / "README.md", *sorted((ROOT / "configs").glob("*/README.md"))])


def _commands() -> dict[str, argparse.ArgumentParser]:
    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(subparsers.choices)


def _options(parser: argparse.ArgumentParser, prefix: str) -> list[tuple[str, str]]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _options(sub, f"{prefix} {name}")
        found += [(prefix, option) for option in action.option_strings
                  if option.startswith("--") and option not in ("--help", "--debug")]
    return found


@pytest.mark.parametrize("command", sorted(_commands()))
def test_every_command_is_in_the_readme(command):
    assert f"diffengine {command}" in DOCS


def test_every_long_option_is_documented():
    missing = [f"{command} {option}" for name, parser in _commands().items()
               for command, option in _options(parser, name)
               if not re.search(rf"{re.escape(option)}(?![\w-])", DOCS)]
    assert not missing, f"options not in README.md or configs/*/README.md: {missing}"


def test_every_packaged_config_is_documented():
    configs = [path.stem for path in (ROOT / "configs").glob("*/*.py") if path.parent.name != "_base_"]
    assert configs
    assert not [name for name in configs if name not in DOCS]
