"""The ``--cfg-options KEY=VALUE`` syntax: MMEngine's ``DictAction`` values, with spaces and quotes kept.

A VALUE is a number, ``true``/``false``, ``None`` or a string; ``[...]`` is a list, ``(...)`` a
tuple, and a comma outside brackets, braces and quotes makes a list too (``KEY=1,2,3``). Unlike
``DictAction``, which deletes every space of a value (``model.text_encoder=/data/my models/t5``
became ``/data/mymodels/t5``, a prompt lost its spaces), only the spaces around an element are
dropped; ``'...'`` or ``"..."`` keeps an element a string as typed, commas and brackets included
(``custom_hooks.3.prompts=["a red, round shape",a blue square]``; a quote inside an element, as in
``/home/o'neil``, is a character); a comma inside ``{...}`` belongs
to a shard pattern (``/data/{a,b}.tar``). Import-free beyond the standard library.
"""
from typing import Any

from diffengine.errors import ConfigError

_CLOSING = {"[": "]", "(": ")", "{": "}"}
_QUOTES = "'\""


def parse_cfg_options(pairs: list[str]) -> dict[str, Any]:
    """``--cfg-options KEY=VALUE ...`` as ``{KEY: value}``; ConfigError naming a pair it cannot read."""
    options = {}
    for pair in pairs:
        key, equals, text = pair.partition("=")
        if not equals or not key:
            raise ConfigError(f"--cfg-options {pair!r}: expected KEY=VALUE")
        if "dict(" in text:
            raise ConfigError(f"--cfg-options {pair!r}: dict(...) is not parsed: set its entries one by one "
                              "(e.g. param_scheduler.0.end=100 model.text_lora.rank=8)")
        try:
            options[key] = parse_value(text)
        except ValueError as error:
            raise ConfigError(f"--cfg-options {pair!r}: {error}") from None
    return options


def parse_value(text: str) -> Any:
    """One VALUE (see the module docstring)."""
    text = text.strip()
    elements = _split_top_level(text)
    if elements != [text]:  # a comma outside brackets: KEY=1,2 (or KEY=1, for a list of one)
        return [parse_value(element) for element in elements]
    if len(text) >= 2 and text[0] in "[(" and _matching_close(text, 0) == len(text) - 1:
        inner = text[1:-1].strip()
        values = [parse_value(element) for element in _split_top_level(inner)] if inner else []
        return values if text[0] == "[" else tuple(values)
    if len(text) >= 2 and _opens_string(text, 0) and _closing_quote(text, 0) == len(text) - 1:
        return text[1:-1]
    return _scalar(text)


def _scalar(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return None if text == "None" else text


def _split_top_level(text: str) -> list[str]:
    """``text`` cut at the commas outside brackets, braces and quotes (one element when there is none)."""
    elements, start, index = [], 0, 0
    while index < len(text):
        char = text[index]
        if _opens_string(text, index):
            index = _closing_quote(text, index)
        elif char in _CLOSING:
            index = _matching_close(text, index)
        elif char in ")]}":
            raise ValueError(f"unbalanced brackets: {char!r} closes nothing")
        elif char == ",":
            elements.append(text[start:index])
            start = index + 1
        index += 1
    elements.append(text[start:])
    if len(elements) > 1 and not elements[-1].strip():  # a trailing comma: (1,) is a tuple of one
        elements.pop()
    return [element.strip() for element in elements] if len(elements) > 1 or start else [text]


def _matching_close(text: str, start: int) -> int:
    """The index of the bracket that closes ``text[start]``."""
    expected, index = [_CLOSING[text[start]]], start + 1
    while index < len(text):
        char = text[index]
        if _opens_string(text, index):
            index = _closing_quote(text, index)
        elif char in _CLOSING:
            expected.append(_CLOSING[char])
        elif char in ")]}":
            if char != expected.pop():
                raise ValueError(f"unbalanced brackets: {char!r} does not close {text[start]!r}")
            if not expected:
                return index
        index += 1
    raise ValueError(f"unbalanced brackets: {text[start]!r} is never closed")


def _opens_string(text: str, index: int) -> bool:
    """A quote that starts an element and is closed later: ``'a, b'`` is one string, while the
    apostrophes of ``/home/o'neil`` or ``a dog's ball`` are characters like any other."""
    return (text[index] in _QUOTES and text[:index].rstrip()[-1:] in ("", "[", "(", ",")
            and text.find(text[index], index + 1) > 0)


def _closing_quote(text: str, start: int) -> int:
    """The index of the quote that closes the one at ``start`` (``_opens_string`` holds)."""
    return text.find(text[start], start + 1)
