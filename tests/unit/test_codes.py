"""Short-lived numeric codes and their keyed digests (sms_codes.codes)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sms_codes.codes import CodePurpose, code_digest, code_matches, generate_code

KEY = b"k" * 32
OTHER_KEY = b"q" * 32
MSISDN = "79161234567"


def test_generated_code_has_the_requested_number_of_digits() -> None:
    for digits in (4, 6, 8):
        for _ in range(200):
            code = generate_code(digits)
            assert len(code) == digits
            assert code.isascii() and code.isdigit()


def test_generated_codes_keep_leading_zeros_and_vary() -> None:
    codes = [generate_code(4) for _ in range(2000)]
    assert any(c.startswith("0") for c in codes)
    assert len(set(codes)) > 1000


@pytest.mark.parametrize("digits", [0, 3, 13])
def test_code_length_outside_4_to_12_is_refused(digits: int) -> None:
    with pytest.raises(ValueError):
        generate_code(digits)


def test_digest_matches_the_same_code_and_hides_it() -> None:
    code = generate_code()
    digest = code_digest(KEY, CodePurpose.SMS_ARCHIVE, MSISDN, code)
    assert len(digest) == 64
    assert code not in digest
    assert code_matches(KEY, CodePurpose.SMS_ARCHIVE, MSISDN, code, digest)


def test_wrong_code_does_not_match() -> None:
    digest = code_digest(KEY, CodePurpose.SMS_ARCHIVE, MSISDN, "123456")
    assert not code_matches(KEY, CodePurpose.SMS_ARCHIVE, MSISDN, "123457", digest)


def test_code_is_bound_to_purpose_msisdn_and_key() -> None:
    digest = code_digest(KEY, CodePurpose.BONUS_GIFT, MSISDN, "123456")
    assert not code_matches(KEY, CodePurpose.SMS_ARCHIVE, MSISDN, "123456", digest)
    assert not code_matches(KEY, CodePurpose.BONUS_GIFT, "79161234568", "123456", digest)
    assert not code_matches(OTHER_KEY, CodePurpose.BONUS_GIFT, MSISDN, "123456", digest)


def test_field_boundaries_cannot_be_shifted() -> None:
    assert code_digest(KEY, "ab", "c", "1") != code_digest(KEY, "a", "bc", "1")
    assert code_digest(KEY, "a", "b1", "") != code_digest(KEY, "a", "b", "1")


def test_purpose_enum_and_plain_string_give_the_same_digest() -> None:
    assert code_digest(KEY, CodePurpose.EMAIL_RECOVERY, MSISDN, "1234") == code_digest(
        KEY, "email_recovery", MSISDN, "1234"
    )


def test_short_key_is_refused() -> None:
    with pytest.raises(ValueError):
        code_digest(b"short", CodePurpose.SMS_ARCHIVE, MSISDN, "123456")


@given(st.text(max_size=20), st.text(max_size=70))
def test_any_stored_digest_text_is_compared_without_raising(code: str, digest: str) -> None:
    assert not code_matches(KEY, CodePurpose.SMS_ARCHIVE, MSISDN, code, digest)
