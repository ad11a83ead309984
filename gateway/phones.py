"""Phone numbers: parsed and normalized to E.164 with ``phonenumbers``, masked for display."""

from __future__ import annotations

import re
from dataclasses import dataclass

import phonenumbers

# What a person writes; no letters, no CR/LF. /openapi.json publishes the same pattern.
NUMBER_PATTERN = r"[0-9+()\-. ]{3,32}"
_ALLOWED = re.compile(NUMBER_PATTERN)


@dataclass(frozen=True, slots=True)
class Number:
    e164: str
    region: str


def normalize(raw: str, region: str) -> Number:
    """Parse one number (``region`` applies when it has no +); ValueError says what is wrong."""
    if not _ALLOWED.fullmatch(raw):  # not match() with $: that would let a trailing "\n" through
        raise ValueError("not a phone number: only digits, spaces, +, -, ., ( and ) are allowed")
    try:
        parsed = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException as exc:
        raise ValueError(f"not a phone number: {exc._msg}") from None
    if not phonenumbers.is_valid_number(parsed):
        raise ValueError("not a valid phone number for its region")
    e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    return Number(e164, phonenumbers.region_code_for_number(parsed) or "ZZ")


def mask(number: str) -> str:
    """``+8613800138000`` -> ``+86138******00``: enough to recognize, not enough to dial.

    However short, at least five digits are hidden: ``+6834002`` -> ``+68*****``.
    """
    head = min(6, max(1, len(number) // 2 - 1))
    tail = 2 if len(number) >= 12 else 0
    return number[:head] + "*" * (len(number) - head - tail) + number[len(number) - tail:]


# Not inside a word or a decimal; a full stop after it (the end of a sentence) is fine.
_NUMBER_IN_TEXT = re.compile(r"(?<![\w.])\+?\d{7,15}(?!\w|\.\d)")


def mask_text(text: str) -> str:
    """Mask every free-standing run of 7-15 digits (a phone number, possibly) in a log line."""
    return _NUMBER_IN_TEXT.sub(lambda m: mask(m.group(0)), text)
