"""Customer ids: one canonical form, and one rule for what is a plausible id, at ingest and at the API.

The same id must name the same customer in the raw zone, the features, the online store, the
predictions table and a request: ``"4711.0"`` (an integer id exported through a float column) is
customer ``"4711"`` everywhere, and ``"000123"`` stays ``"000123"`` (leading zeros are part of the
id). What cannot be a customer's id is refused with the reason, never guessed: a placeholder
(``null``, ``NaN``, ``n/a``, ...), a signed or exponent number (``-12``, ``1.2e4``: a number that went
through a spreadsheet), whitespace or invisible characters inside, control characters, or more
than ``max_length`` characters. Checked on whole columns (vectorised) at ingest, and per id at
the API.
"""

from __future__ import annotations

import re
import unicodedata

import pandas as pd

DEFAULT_MAX_LENGTH = 64
# What exports write for "no value": an id spelled like this is no customer.
PLACEHOLDERS = frozenset(
    {
        "null",
        "none",
        "nil",
        "nan",
        "na",
        "n/a",
        "n.a.",
        "#n/a",
        "undefined",
        "unknown",
        "missing",
        "-",
        "--",
        "?",
    }
)
_INTEGER_FLOAT = re.compile(r"^(\d+)\.0+$")
_SIGNED = re.compile(r"^[+-]")
_EXPONENT = re.compile(r"^\d+(\.\d+)?[eE][+-]?\d+$")
# ASCII letters and digits, and the punctuation ids are written with (the API's schema says the same).
_ALLOWED = re.compile(r"^[A-Za-z0-9_.:/@#-]+$")


class InvalidCustomerId(ValueError):
    """An id that cannot name a customer; the message says why."""


def canonical_customer_id(value: str, max_length: int = DEFAULT_MAX_LENGTH) -> str:
    """The canonical form of one id, or :class:`InvalidCustomerId` saying why it is none."""
    text = value.strip()
    reason = problem(text, max_length)
    if reason:
        raise InvalidCustomerId(f"{_shown(value)} {reason}")
    match = _INTEGER_FLOAT.match(text)
    return match.group(1) if match else text


def problem(text: str, max_length: int = DEFAULT_MAX_LENGTH) -> str | None:
    """Why a stripped id is not a plausible customer id (``None``: it is one)."""
    if not text:
        return "is empty"
    if len(text) > max_length:
        return f"is {len(text)} characters long (at most {max_length})"
    if text.casefold() in PLACEHOLDERS:
        return "is a placeholder for a missing value, not an id"
    if any(unicodedata.category(ch)[0] in "CZ" for ch in text):  # control, format, separators
        return "contains whitespace, control or invisible characters"
    if _SIGNED.match(text):
        return "starts with a sign: a number, not an id"
    if _EXPONENT.match(text):
        return "is a number in exponent form (an id mangled by a spreadsheet)"
    if not _ALLOWED.match(text):
        return "contains characters ids are not written with"
    return None


def canonical_customer_ids(
    raw: pd.Series, max_length: int = DEFAULT_MAX_LENGTH
) -> tuple[pd.Series, pd.Series]:
    """(ids, problems) for a column of raw ids (strings or numbers; missing values stay missing).

    ``ids``: the canonical form where the id is plausible, the stripped original where it is not
    (kept, so a quarantined row still shows what was sent); ``problems``: why, or <NA>.
    """
    text = raw.astype("string").str.strip()
    text = text.mask(text == "", pd.NA)
    present = text.notna()
    canonical = text.str.replace(_INTEGER_FLOAT, r"\1", regex=True)
    problems = pd.Series(pd.NA, index=raw.index, dtype="string")
    if present.any():
        # Most ids pass the cheap vectorised test; only the rest are explained one by one.
        values = text[present]
        plain = values.str.fullmatch(r"[0-9A-Za-z][0-9A-Za-z\-_.:/@#]*") & (values.str.len() <= max_length)
        plain &= ~values.str.fullmatch(_EXPONENT.pattern) & ~values.str.casefold().isin(PLACEHOLDERS)
        suspects = values[~plain.fillna(False).astype(bool)]
        if len(suspects):
            reasons = suspects.map(lambda v: problem(v, max_length))
            problems[suspects.index] = reasons.astype("string")
    bad = problems.notna()
    return canonical.where(~bad, text), problems


def _shown(value: str, limit: int = 40) -> str:
    """An id as quoted in a message: repr, cut to ``limit`` characters (never echo unbounded input)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"
