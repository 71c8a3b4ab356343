"""Policy variables: ``${aws:username}``, ``${aws:PrincipalTag/team, 'none'}`` and the escapes.

A Resource entry or condition value is parsed once into a :class:`Template`, a run of pieces:
policy text (where ``*``/``?`` keep their wildcard meaning), literal text (the ``${*}``,
``${?}`` and ``${$}`` escapes) and variable references. At evaluation the references are
filled in from the request context; the value a variable yields is *literal*, so a tag
value containing ``*`` can never widen a pattern.

Only ``Version: 2012-10-17`` documents substitute; in older documents ``${...}`` is plain
text, exactly as IAM treats it. A reference to a key the request lacks (or one holding
several values) is unresolvable unless it carries a default; the caller then treats the
whole entry as matching nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from portless.iam.wildcards import Element, glob_elements

__all__ = [
    "Literal",
    "Lookup",
    "Piece",
    "Template",
    "Text",
    "Variable",
    "as_glob",
    "as_text",
    "parse_template",
]


@dataclass(frozen=True, slots=True)
class Text:
    """Policy text as written; ``*`` and ``?`` in it are wildcards where the element allows."""

    value: str


@dataclass(frozen=True, slots=True)
class Literal:
    """Text that never acts as a wildcard: an escape (``${*}``) or a substituted value."""

    value: str


@dataclass(frozen=True, slots=True)
class Variable:
    """A ``${key}`` or ``${key, 'default'}`` reference; *key* is compared case-insensitively."""

    key: str
    default: str | None


Piece = Text | Literal | Variable

Lookup = Callable[[str], str | None]
"""Resolves a context key (any case) to its single value, or ``None`` if it has none."""

# ${ key } or ${ key , 'default' } ; inside the default a doubled '' is one quote.
_REFERENCE = re.compile(
    r"\$\{\s*(?P<key>[^\s,}']+)\s*(?:,\s*'(?P<default>(?:[^']|'')*)'\s*)?\}",
)
_ESCAPES = {"*": "*", "?": "?", "$": "$"}


@dataclass(frozen=True, slots=True)
class Template:
    """A parsed Resource entry or condition value."""

    source: str
    pieces: tuple[Piece, ...]

    @property
    def has_variables(self) -> bool:
        """Whether evaluation must consult the request context to know this value."""
        return any(isinstance(p, Variable) for p in self.pieces)

    def resolve(self, lookup: Lookup) -> tuple[Text | Literal, ...] | None:
        """Fill in every variable; ``None`` if one cannot be resolved and has no default."""
        out: list[Text | Literal] = []
        for piece in self.pieces:
            if isinstance(piece, Variable):
                value = lookup(piece.key)
                if value is None:
                    if piece.default is None:
                        return None
                    value = piece.default
                out.append(Literal(value))
            else:
                out.append(piece)
        return tuple(out)

    def static_text(self) -> str | None:
        """The plain value when the template has no variables, else ``None``."""
        parts: list[str] = []
        for piece in self.pieces:
            if isinstance(piece, Variable):
                return None
            parts.append(piece.value)
        return "".join(parts)


def as_text(pieces: tuple[Text | Literal, ...]) -> str:
    """Join resolved pieces into a plain string (wildcards taken literally)."""
    return "".join(piece.value for piece in pieces)


def as_glob(pieces: tuple[Text | Literal, ...], *, fold_case: bool = False) -> list[Element]:
    """Turn resolved pieces into glob elements: wildcards only where the policy wrote them."""
    out: list[Element] = []
    for piece in pieces:
        value = piece.value.lower() if fold_case else piece.value
        out.extend(value if isinstance(piece, Literal) else glob_elements(value))
    return out


def parse_template(source: str, *, substitute: bool) -> Template:
    """Parse *source*; with ``substitute=False`` (pre-2012 documents) ``${...}`` stays text."""
    if not substitute or "${" not in source:
        return Template(source, (Text(source),) if source else ())
    pieces: list[Piece] = []
    buffer: list[str] = []
    pos = 0
    while pos < len(source):
        start = source.find("${", pos)
        if start < 0:
            buffer.append(source[pos:])
            break
        buffer.append(source[pos:start])
        match = _REFERENCE.match(source, start)
        if match is None:
            # Not a well-formed reference: IAM leaves such text alone.
            buffer.append("${")
            pos = start + 2
            continue
        key, default = match.group("key"), match.group("default")
        if buffer:
            text = "".join(buffer)
            if text:
                pieces.append(Text(text))
            buffer = []
        if default is None and key in _ESCAPES:
            pieces.append(Literal(_ESCAPES[key]))
        else:
            unquoted = None if default is None else default.replace("''", "'")
            pieces.append(Variable(key, unquoted))
        pos = match.end()
    tail = "".join(buffer)
    if tail:
        pieces.append(Text(tail))
    return Template(source, tuple(pieces))
