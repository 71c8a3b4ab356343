"""Wildcard matching as IAM does it: ``*`` and ``?`` globs and segment-aware ARN patterns.

IAM has exactly two wildcards, ``*`` (any run of characters, including none) and ``?`` (any
single character); there are no character classes or escapes, so :mod:`fnmatch` does not
fit. A pattern here is a sequence of *elements*: single characters, which match themselves,
and the :class:`Wild` markers. Keeping wildcards as markers rather than as the characters
``*``/``?`` lets a policy variable's value (or the ``${*}`` escape) stand for a literal
asterisk in the same pattern as a real wildcard.

The matcher is the classic two-pointer algorithm with a single backtrack point: worst case
O(len(pattern) * len(text)), never exponential, so a hostile policy cannot stall evaluation.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence

__all__ = [
    "Element",
    "Wild",
    "arn_match",
    "glob_elements",
    "glob_match",
    "wildcard_match",
]


class Wild(enum.Enum):
    """The two IAM wildcards."""

    STAR = "*"
    QMARK = "?"


Element = str | Wild
"""One pattern element: a single literal character or a wildcard."""


def glob_elements(pattern: str) -> list[Element]:
    """Read a plain string as a pattern: ``*`` and ``?`` are wildcards, all else literal."""
    out: list[Element] = []
    for ch in pattern:
        if ch == "*":
            out.append(Wild.STAR)
        elif ch == "?":
            out.append(Wild.QMARK)
        else:
            out.append(ch)
    return out


def glob_match(pattern: Sequence[Element], text: str) -> bool:
    """Whether *text* matches the whole of *pattern* (case-sensitive; fold case beforehand)."""
    p_len = len(pattern)
    t_len = len(text)
    pi = ti = 0
    star_pi = -1  # index of the last STAR seen in the pattern
    star_ti = 0  # text position that STAR is currently stretched to
    while ti < t_len:
        if pi < p_len:
            element = pattern[pi]
            if element is Wild.STAR:
                star_pi, star_ti = pi, ti
                pi += 1
                continue
            if element is Wild.QMARK or element == text[ti]:
                pi += 1
                ti += 1
                continue
        if star_pi < 0:
            return False
        # Let the last star swallow one more character and retry from just after it.
        star_ti += 1
        ti = star_ti
        pi = star_pi + 1
    while pi < p_len and pattern[pi] is Wild.STAR:
        pi += 1
    return pi == p_len


def wildcard_match(pattern: str, text: str, *, ignore_case: bool = False) -> bool:
    """Convenience: match a plain-string glob (``*``/``?``) against *text*."""
    if ignore_case:
        pattern, text = pattern.lower(), text.lower()
    return glob_match(glob_elements(pattern), text)


def _split_fields(pattern: Sequence[Element], limit: int) -> list[list[Element]]:
    """Split a pattern at literal ``:`` characters into at most *limit* fields."""
    fields: list[list[Element]] = [[]]
    for element in pattern:
        if element == ":" and len(fields) < limit:
            fields.append([])
        else:
            fields[-1].append(element)
    return fields


def _all_stars(pattern: Iterable[Element]) -> bool:
    return all(element is Wild.STAR for element in pattern)


_ARN_FIELDS = 6  # arn:partition:service:region:account:resource (resource may hold colons)


def arn_match(pattern: Sequence[Element], arn: str) -> bool:
    """Match an ARN pattern the way IAM's Resource element and Arn* operators do.

    The first five colon-separated fields (``arn``, partition, service, region, account) are
    matched one by one, so a wildcard there never spans a ``:``; the sixth field is the rest
    of the ARN, colons included. A ``*`` that ends the *last* field of a pattern with fewer
    fields than the ARN stretches over the remaining fields (``arn:aws:ssm:*`` covers every
    SSM ARN). A pattern made only of ``*`` matches anything, even a non-ARN like ``*``.
    """
    if pattern and _all_stars(pattern):
        return True
    p_fields = _split_fields(pattern, _ARN_FIELDS)
    a_fields = arn.split(":", _ARN_FIELDS - 1)
    if len(p_fields) == len(a_fields):
        return all(glob_match(p, a) for p, a in zip(p_fields, a_fields, strict=True))
    last = p_fields[-1]
    if len(p_fields) < len(a_fields) and last and last[-1] is Wild.STAR:
        k = len(p_fields) - 1
        head_ok = all(glob_match(p_fields[i], a_fields[i]) for i in range(k))
        return head_ok and glob_match(last, ":".join(a_fields[k:]))
    return False
