"""The E.164 fast path of ``normalize`` answers exactly what ``phonenumbers.parse`` would."""

from __future__ import annotations

import random

import phonenumbers
import pytest

from gateway import phones


def parsed(raw: str) -> phones.Number | None:
    """The full path's answer for a number given with +, or None when it is not valid."""
    try:
        number = phonenumbers.parse(raw, "CN")
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phones.Number(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164),
                         phonenumbers.region_code_for_number(number) or "ZZ")


def candidates() -> list[str]:
    """Every region's example numbers of every type, and near misses of each."""
    rng = random.Random(10)
    out = []
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for kind in range(12):
            example = phonenumbers.example_number_for_type(region, kind)
            if example is None:
                continue
            e164 = phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)
            out.append(e164)
            for _ in range(4):
                digits = list(e164[1:])
                digits[rng.randrange(len(digits))] = str(rng.randrange(10))
                if rng.random() < 0.3:
                    digits.insert(rng.randrange(len(digits)), str(rng.randrange(10)))
                out.append("+" + "".join(digits))
    return out


def test_the_fast_path_agrees_with_the_full_parse() -> None:
    taken = 0
    for raw in candidates():
        fast = phones._fast(raw)
        if fast is not None:
            taken += 1
            assert fast == parsed(raw), raw
        if fast is None and parsed(raw) is not None:
            assert phones.normalize(raw, "CN") == parsed(raw), raw
    assert taken > 1000  # most valid E.164 numbers take it


def test_what_the_fast_path_leaves_to_the_full_parse() -> None:
    assert phones._fast("+8613800138000") == phones.Number("+8613800138000", "CN")
    assert phones._fast("+390612345678") is None  # Italian leading zero
    assert phones._fast("13800138000") is None  # national: the region decides
    assert phones._fast("+86 138 0013 8000") is None  # spaces: parse reads it
    assert phones._fast("+8612345") is None  # not valid: the full path says why
    assert phones._fast("+8613800138000\n") is None
    with pytest.raises(ValueError, match="only digits"):
        phones.normalize("+8613800138000\n", "CN")  # a trailing newline is still refused
