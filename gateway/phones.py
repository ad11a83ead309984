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


_E164 = re.compile(r"\+([1-9]\d{6,14})")


def _fast(raw: str) -> Number | None:
    """A valid number already in E.164, without ``phonenumbers.parse`` (most of its cost); None
    for anything parse might read otherwise (then the full path decides). Parse would take the
    same country code (codes are prefix-free) and the same national number, unless it starts
    with 0 (Italian leading zeros) or with what the country strips as a national prefix."""
    match = _E164.fullmatch(raw)
    if match is None:
        return None
    digits = match.group(1)
    for size in (1, 2, 3):
        code = int(digits[:size])
        if code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
            break
    else:
        return None
    national = digits[size:]
    if national[:1] == "0" or _strips_prefix(code, national):
        return None
    parsed = phonenumbers.PhoneNumber(country_code=code, national_number=int(national))
    if not phonenumbers.is_valid_number(parsed):
        return None  # the full path says why
    return Number(raw, phonenumbers.region_code_for_number(parsed) or "ZZ")


def _strips_prefix(code: int, national: str) -> bool:
    region = phonenumbers.region_code_for_country_code(code)
    metadata = phonenumbers.PhoneMetadata.metadata_for_region_or_calling_code(code, region)
    if metadata is None:
        return True
    prefix = metadata.national_prefix_for_parsing or metadata.national_prefix
    return prefix is not None and prefix != "" and re.match(prefix, national) is not None


def normalize(raw: str, region: str) -> Number:
    """Parse one number (``region`` applies when it has no +); ValueError says what is wrong."""
    fast = _fast(raw)
    if fast is not None:
        return fast
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
