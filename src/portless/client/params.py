"""`--parameters` values, read the way the AWS CLI reads them.

Three forms reach `start-session --parameters`:

* JSON, when the text starts with `{`: `{"portNumber":["22"]}`;
* `file://path` (the file's text is then read as one of the other forms);
* the CLI's shorthand: `portNumber=22,localPortNumber=0`, explicit lists
  `portNumber=[8888]`, quoted values `command="echo a,b"`, escaped commas `a\\,b`,
  and `key=a,b` (a list).  As an extension, keys may be quoted
  (`"portNumber"=["8888"]`), which is seed 003's text when no shell removed the quotes.

StartSession wants a map of string to list of strings; scalars become one-element lists,
as the AWS CLI's back-compat visitor does for list-shaped members.
"""

from __future__ import annotations

import json
import os
import re
import string
from typing import Any

_KEY_CHARS = frozenset(string.ascii_letters + string.digits + "-_.#/:")


class ParameterError(ValueError):
    pass


def _in_ranges(ch: str, ranges: str) -> bool:
    """ranges: pairs of characters, inclusive; e.g. '!!#&' = '!' or '#'..'&'."""
    o = ord(ch)
    return any(ord(ranges[i]) <= o <= ord(ranges[i + 1]) for i in range(0, len(ranges), 2))


_TOP = "\uffff"
# Characters that may start an unquoted value: printable, minus quote, comma, '=', '[', '{'.
_START = "!!#&(+-<>Z\\z|" + _TOP
# Later characters of a first value: also '=', '[', '{', spaces; not ']', '}', ',', quotes.
_FIRST_FOLLOW = "!!#&(+-\\^|~" + _TOP
# Later characters of a following csv value: not '=' (that means a new key begins).
_SECOND_FOLLOW = "!!#&(+-<>" + _TOP


def _starts(ch: str) -> bool:
    return _in_ranges(ch, _START)


def _follows_first(ch: str) -> bool:
    return ch.isspace() or _in_ranges(ch, _FIRST_FOLLOW)


def _follows_second(ch: str) -> bool:
    return ch.isspace() or _in_ranges(ch, _SECOND_FOLLOW)


# A quoted value: backslash-quote does not end it (with regex backtracking, so a trailing
# backslash before the closing quote still closes).
_SINGLE_QUOTED = re.compile(r"'(?:\\'|[^'])*'")
_DOUBLE_QUOTED = re.compile(r'"(?:\\"|[^"])*"')


class _Backtrack(Exception):
    pass


class ShorthandParser:
    """A recursive-descent reader of the AWS CLI shorthand grammar."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.i = 0

    # ---------------------------------------------------------------- helpers
    def _eof(self) -> bool:
        return self.i >= len(self.text)

    def _cur(self) -> str:
        return self.text[self.i] if self.i < len(self.text) else ""

    def _ws(self) -> None:
        while not self._eof() and self.text[self.i].isspace():
            self.i += 1

    def _error(self, expected: str) -> ParameterError:
        got = "EOF" if self._eof() else repr(self._cur())
        return ParameterError(
            f"Error parsing parameter '--parameters': expected {expected}, received {got} "
            f"at position {self.i} of {self.text!r}")

    def _expect(self, ch: str, ws: bool = False) -> None:
        if ws:
            self._ws()
        if self._cur() != ch:
            raise self._error(repr(ch))
        self.i += 1
        if ws:
            self._ws()

    # ---------------------------------------------------------------- grammar
    def parse(self) -> dict[str, Any]:
        result: dict[str, Any] = {}
        while True:
            key, value = self._keyval()
            if key in result:
                raise ParameterError(
                    f'Second instance of key "{key}" in --parameters; this is often '
                    'because there is a preceding "," instead of a space.')
            result[key] = value
            if self._eof():
                return result
            self._expect(",", ws=True)

    def _keyval(self) -> tuple[str, Any]:
        key = self._key()
        self._expect("=", ws=True)
        return key, self._values()

    def _key(self) -> str:
        if self._cur() in ("'", '"'):
            return self._quoted()
        start = self.i
        while not self._eof() and self.text[self.i] in _KEY_CHARS:
            self.i += 1
        return self.text[start:self.i]  # may be empty, as in the AWS CLI

    def _values(self) -> Any:
        if self._eof():
            return ""
        if self._cur() == "[":
            return self._list()
        if self._cur() == "{":
            return self._hash()
        return self._csv()

    def _csv(self) -> Any:
        first = self._first()
        self._ws()
        if self._eof() or self._cur() != ",":
            return first
        items = [first]
        while True:
            self.i += 1  # the comma
            self._ws()
            try:
                item = self._second()
                self._ws()
                if not self._eof() and self._cur() != ",":
                    raise _Backtrack
            except (_Backtrack, ParameterError):
                if self._eof():
                    raise self._error("a value") from None
                # "a=b,c=d": 'c' starts a new key; go back to the last comma seen.
                self.i = self.text.rfind(",", 0, self.i + 1)
                break
            items.append(item)
            if self._eof():
                break
        return first if len(items) == 1 else items

    def _first(self) -> str:
        if self._cur() in ("'", '"'):
            return self._quoted()
        return self._unquoted(_follows_first, required=False)

    def _second(self) -> str:
        if self._cur() in ("'", '"'):
            return self._quoted()
        return self._unquoted(_follows_second, required=True)

    def _unquoted(self, follows: Any, *, required: bool) -> str:
        start = self.i
        text = self.text
        n = len(text)
        first = True
        while self.i < n:
            ch = text[self.i]
            if ch == "\\" and self.i + 1 < n and text[self.i + 1] == ",":
                self.i += 2
            elif (_starts(ch) if first else follows(ch)):
                self.i += 1
            else:
                break
            first = False
        if self.i == start:
            if required:
                raise _Backtrack
            return ""
        return text[start:self.i].replace("\\,", ",").rstrip()

    def _quoted(self) -> str:
        quote = self._cur()
        m = (_SINGLE_QUOTED if quote == "'" else _DOUBLE_QUOTED).match(self.text, self.i)
        if m is None:
            raise self._error(f"closing {quote}")
        self.i = m.end()
        return m.group()[1:-1].replace("\\" + quote, quote).replace("\\\\", "\\")

    def _list(self) -> list[Any]:
        self._expect("[", ws=True)
        items: list[Any] = []
        while self._cur() != "]":
            if self._eof():
                raise self._error("']'")
            if self._cur() == "[":
                items.append(self._list())
            elif self._cur() == "{":
                items.append(self._hash())
            else:
                items.append(self._first())
            self._ws()
            if self._cur() != "]":
                self._expect(",")
                self._ws()
        self._expect("]")
        return items

    def _hash(self) -> dict[str, Any]:
        self._expect("{", ws=True)
        out: dict[str, Any] = {}
        while self._cur() != "}":
            if self._eof():
                raise self._error("'}'")
            key = self._key()
            self._expect("=", ws=True)
            if self._cur() == "[":
                out[key] = self._list()
            elif self._cur() == "{":
                out[key] = self._hash()
            else:
                out[key] = self._first()
            self._ws()
            if self._cur() != "}":
                self._expect(",")
                self._ws()
        self._expect("}")
        return out


def parse_shorthand(text: str) -> dict[str, Any]:
    return ShorthandParser(text).parse()


def _read_paramfile(value: str) -> str:
    for prefix in ("file://", "fileb://"):
        if value.startswith(prefix):
            path = os.path.expanduser(value[len(prefix):])
            try:
                with open(path, encoding="utf-8") as fh:
                    return fh.read()
            except OSError as exc:
                raise ParameterError(
                    f"Error parsing parameter '--parameters': Unable to load paramfile "
                    f"{value}: {exc}") from None
    return value


def normalize(raw: Any) -> dict[str, list[str]]:
    """Map of name to list of strings, as StartSession's Parameters member wants."""
    if not isinstance(raw, dict):
        raise ParameterError("--parameters must be a map of names to lists of strings")
    out: dict[str, list[str]] = {}
    for key, value in raw.items():
        values = value if isinstance(value, list) else [value]
        items: list[str] = []
        for v in values:
            if isinstance(v, bool):
                items.append("true" if v else "false")
            elif isinstance(v, str | int | float):
                items.append(str(v))
            else:
                raise ParameterError(
                    f"--parameters: value of {key!r} must be a string or a list of strings")
        out[str(key)] = items
    return out


def parse_parameters(text: str) -> dict[str, list[str]]:
    """Parse a `--parameters` value in any of the AWS CLI's forms."""
    text = _read_paramfile(text)
    stripped = text.strip()
    if stripped.startswith(("{", "[")):
        try:
            raw = json.loads(stripped)
        except ValueError as exc:
            raise ParameterError(
                f"Error parsing parameter '--parameters': Invalid JSON: {exc}\n"
                f"JSON received: {text}") from None
        return normalize(raw)
    if not stripped:
        return {}
    return normalize(parse_shorthand(text))
