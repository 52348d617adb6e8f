"""P1 generation and checksum, P2 storage, P7 change rules (sms_codes.passwords)."""

from __future__ import annotations

import base64
import hashlib
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sms_codes.passwords import (
    LETTERS,
    PasswordMismatchError,
    WeakPasswordError,
    check_new_password,
    checksum_ok,
    generate_password,
    hash_password,
    is_generated_shape,
    is_strong_user_password,
    needs_rehash,
    precheck,
    verify_password,
)

DIGITS = "0123456789"
SAMPLE = 2000


@pytest.fixture(scope="module")
def generated() -> list[str]:
    return [generate_password() for _ in range(SAMPLE)]


def random_p1_shaped(rng: random.Random) -> str:
    """A string of the P1 shape with no regard for the checksum: what a guesser would send."""
    chars = [rng.choice(DIGITS) for _ in range(5)]
    chars += [rng.choice(LETTERS) for _ in range(rng.randint(3, 5))]
    rng.shuffle(chars)
    return "".join(chars)


# --- P1 ---------------------------------------------------------------------------


def test_generated_passwords_have_five_digits_and_three_to_five_unambiguous_letters(
    generated: list[str],
) -> None:
    for pw in generated:
        digits = [c for c in pw if c in DIGITS]
        letters = [c for c in pw if c not in DIGITS]
        assert len(digits) == 5, pw
        assert 3 <= len(letters) <= 5, pw
        assert set(letters) <= set(LETTERS), pw
        assert is_generated_shape(pw)


def test_generated_passwords_use_every_letter_count_and_mix_the_order(generated: list[str]) -> None:
    assert {len(pw) for pw in generated} == {8, 9, 10}
    assert {pw[0] in DIGITS for pw in generated} == {True, False}
    assert {pw[-1] in DIGITS for pw in generated} == {True, False}


def test_generated_passwords_avoid_letters_that_look_like_digits(generated: list[str]) -> None:
    assert not {"l", "o"} & set("".join(generated))


def test_generated_passwords_are_distinct(generated: list[str]) -> None:
    assert len(set(generated)) == len(generated)


def test_generated_passwords_pass_the_checksum(generated: list[str]) -> None:
    assert all(checksum_ok(pw) for pw in generated)


def test_checksum_is_digit_sum_plus_letter_positions_mod_11_equal_7() -> None:
    # 1+2+3+4+5 = 15, a=1 b=2 d=4 -> 22; 22 % 11 == 0, so "d"->"k" (11) makes 29 % 11 == 7.
    assert not checksum_ok("12345abd")
    assert checksum_ok("12345abk")
    assert checksum_ok("a1b2k345")


def test_checksum_rejects_at_least_85_percent_of_random_p1_shaped_guesses() -> None:
    rng = random.Random(20240601)
    trials = 20_000
    rejected = sum(not checksum_ok(random_p1_shaped(rng)) for _ in range(trials))
    rate = rejected / trials
    assert rate >= 0.85, rate


@pytest.mark.parametrize(
    "pw",
    [
        "",
        "12345ab",  # two letters
        "12345abcdef",  # six letters
        "1234abcd",  # four digits
        "123456abc",  # six digits
        "12345abl",  # ambiguous letter
        "12345ABK",  # upper case
        "12345ab k",
        "12345abк",  # Cyrillic к
        "12345ab²",  # a non-ASCII digit
    ],
)
def test_checksum_rejects_anything_not_of_the_generated_shape(pw: str) -> None:
    assert not is_generated_shape(pw)
    assert not checksum_ok(pw)


def test_precheck_accepts_generated_and_strong_user_passwords_only() -> None:
    assert precheck(generate_password())
    assert precheck("Secret42")
    assert not precheck("12345abd")  # P1 shape, bad checksum
    assert not precheck("secret42")  # neither P1 nor P7
    assert not precheck("")


@given(st.text(max_size=80))
def test_precheck_answers_any_text_without_raising(pw: str) -> None:
    assert precheck(pw) in (True, False)


def test_generated_and_user_chosen_passwords_never_overlap(generated: list[str]) -> None:
    assert not any(is_strong_user_password(pw) for pw in generated)


# --- P2 ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stored() -> tuple[str, str]:
    pw = generate_password()
    return pw, hash_password(pw)


def test_hash_then_verify_accepts_the_same_password(stored: tuple[str, str]) -> None:
    pw, h = stored
    assert verify_password(pw, h)


def test_verify_rejects_a_wrong_password(stored: tuple[str, str]) -> None:
    pw, h = stored
    assert not verify_password(pw + "1", h)
    assert not verify_password(pw.upper(), h)


def test_stored_hash_is_self_describing_and_has_no_plain_password(stored: tuple[str, str]) -> None:
    pw, h = stored
    scheme, n, r, p, salt, key = h.split("$")
    assert (scheme, n, r, p) == ("scrypt", str(2**14), "8", "1")
    assert len(base64.b64decode(salt)) == 16
    assert len(base64.b64decode(key)) == 32
    assert pw not in h
    assert not needs_rehash(h)


def test_same_password_gets_a_different_salt_each_time(stored: tuple[str, str]) -> None:
    pw, h = stored
    again = hash_password(pw)
    assert again.split("$")[4] != h.split("$")[4]
    assert again != h


def test_verify_reads_parameters_from_the_stored_string_and_flags_old_ones_for_rehash() -> None:
    salt = b"0123456789abcdef"
    key = hashlib.scrypt(b"12345abk", salt=salt, n=2**10, r=8, p=1, dklen=32)
    old = f"scrypt$1024$8$1${base64.b64encode(salt).decode()}${base64.b64encode(key).decode()}"
    assert verify_password("12345abk", old)
    assert not verify_password("12345abc", old)
    assert needs_rehash(old)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "12345abk",
        "bcrypt$16384$8$1$AAAA$AAAA",
        "scrypt$16384$8$1$AAAA",
        "scrypt$x$8$1$AAAA$AAAA",
        "scrypt$1000$8$1$AAAA$AAAA",  # n not a power of two
        "scrypt$1073741824$8$1$AAAA$AAAA",  # would need 1 TiB
        "scrypt$16384$8$1$not base64!$AAAA",
        "scrypt$16384$8$1$$AAAA",
    ],
)
def test_malformed_stored_hash_raises_without_echoing_it(bad: str) -> None:
    with pytest.raises(ValueError) as exc:
        verify_password("12345abk", bad)
    assert str(exc.value) in {
        "malformed stored password hash",
        "stored password hash has out-of-range scrypt parameters",
    }
    with pytest.raises(ValueError):
        needs_rehash(bad)


# --- P7 ---------------------------------------------------------------------------


def test_strong_new_password_is_accepted() -> None:
    check_new_password("12345abk", "NewPass7", "NewPass7")


def test_mismatched_repetition_is_refused_with_a_russian_reply() -> None:
    with pytest.raises(PasswordMismatchError) as exc:
        check_new_password("12345abk", "NewPass7", "NewPass8")
    assert "Пароли не совпадают" in exc.value.reply
    assert isinstance(exc.value, ValueError)


@pytest.mark.parametrize(
    "weak",
    [
        "Ab1",  # too short
        "Abc12",  # five characters
        "newpass7",  # no upper case
        "NEWPASS7",  # no lower case
        "NewPassword",  # no digit
        "New Pass7",  # space
        "NewPass7*#",  # USSD control characters
        "НовыйPass7",  # Cyrillic letters
        "Ab1" + "x" * 62,  # longer than 64
    ],
)
def test_weak_new_password_is_refused_with_the_rule_in_the_reply(weak: str) -> None:
    with pytest.raises(WeakPasswordError) as exc:
        check_new_password("12345abk", weak, weak)
    assert "Пароль не изменён" in exc.value.reply
    assert weak not in str(exc.value)


def test_weak_password_reply_states_the_rule() -> None:
    with pytest.raises(WeakPasswordError) as exc:
        check_new_password("12345abk", "newpass7", "newpass7")
    assert "не короче 6 символов" in exc.value.reply
    assert "заглавные" in exc.value.reply


def test_new_password_equal_to_the_old_one_is_refused() -> None:
    with pytest.raises(WeakPasswordError) as exc:
        check_new_password("OldPass7", "OldPass7", "OldPass7")
    assert "отличаться от старого" in exc.value.reply


def test_mismatch_is_reported_before_weakness() -> None:
    with pytest.raises(PasswordMismatchError):
        check_new_password("12345abk", "weak", "weaker")
