"""SMS text encodings: decode by data_coding, choose, encode and split (ussdgw.smpp.text)."""

from __future__ import annotations

import contextlib
import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ussdgw.smpp.text import (
    SplitMessage,
    TextDecodeError,
    choose_encoding,
    decode_text,
    encode_text,
    split_text,
)

FAST = settings(max_examples=200, deadline=None)

GSM7_CHARS = "".join(chr(cp) for cp in range(0x10000) if choose_encoding(chr(cp)) == 0)
GSM7_EXTENSION_CHARS = "\f^{}\\[~]|€"
CYRILLIC = "".join(chr(cp) for cp in range(0x0410, 0x0450)) + "Ёё"

gsm7_text = st.text(alphabet=GSM7_CHARS, max_size=600)
ascii_text = st.text(alphabet=st.characters(max_codepoint=0x7F), max_size=400)
latin1_text = st.text(alphabet=st.characters(max_codepoint=0xFF), max_size=400)
unicode_text = st.text(max_size=400)  # hypothesis leaves out lone surrogates by default
cyrillic_text = st.text(alphabet=CYRILLIC + " .,!?0123456789", max_size=400)
emoji_text = st.text(alphabet=st.sampled_from("😀👍🇷🇺 a" + "Привет"), max_size=300)
splittable_text = st.one_of(gsm7_text, cyrillic_text, emoji_text, unicode_text)

MAX_AIR_OCTETS = 140


def payload_of(part: bytes, udhi: bool) -> bytes:
    return part[1 + part[0] :] if udhi else part


def air_octets(part: bytes, data_coding: int, udhi: bool) -> int:
    """Octets on the air interface: GSM 7-bit payload is packed after the septet-aligned UDH."""
    if data_coding != 0:
        return len(part)
    udh = 1 + part[0] if udhi else 0
    septets = (udh * 8 + 6) // 7 + len(part) - udh
    return (septets * 7 + 7) // 8


# --- the GSM 03.38 table ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("char", "encoded"),
    [
        ("@", b"\x00"),
        ("£", b"\x01"),
        ("\n", b"\x0a"),
        ("\r", b"\x0d"),
        ("Δ", b"\x10"),
        ("_", b"\x11"),
        ("Ξ", b"\x1a"),
        ("É", b"\x1f"),
        ("¤", b"\x24"),
        ("¡", b"\x40"),
        ("§", b"\x5f"),
        ("¿", b"\x60"),
        ("à", b"\x7f"),
        ("\f", b"\x1b\x0a"),
        ("^", b"\x1b\x14"),
        ("{", b"\x1b\x28"),
        ("\\", b"\x1b\x2f"),
        ("|", b"\x1b\x40"),
        ("€", b"\x1b\x65"),
    ],
)
def test_gsm7_code_points_follow_ts_23038(char: str, encoded: bytes) -> None:
    assert encode_text(char, 0) == encoded
    assert decode_text(encoded, 0) == char


def test_gsm7_alphabet_is_127_basic_plus_10_extension_characters() -> None:
    assert len(GSM7_CHARS) == 137
    assert set(GSM7_EXTENSION_CHARS) <= set(GSM7_CHARS)
    assert "\x1b" not in GSM7_CHARS


def test_escape_character_itself_is_not_gsm7_so_it_cannot_forge_an_extension_char() -> None:
    assert choose_encoding("\x1b(") == 8
    assert decode_text(encode_text("\x1b(", 0), 0) == "?("


# --- choose_encoding ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "data_coding"),
    [
        ("", 0),
        ("*111*828*1#", 0),
        ("Balance: 12.50 € {ok} [1|2] ~^\\", 0),
        ("Привет", 8),
        ("Ваш баланс 10", 8),
        ("ok 😀", 8),
        ("ç", 8),  # GSM 03.38 has only the capital Ç
    ],
)
def test_choose_encoding_prefers_gsm7_and_falls_back_to_ucs2(text: str, data_coding: int) -> None:
    assert choose_encoding(text) == data_coding


# --- encode / decode round trips ---------------------------------------------------------------


@FAST
@given(gsm7_text)
def test_gsm7_round_trips(text: str) -> None:
    assert decode_text(encode_text(text, 0), 0) == text


@FAST
@given(ascii_text)
def test_ia5_round_trips(text: str) -> None:
    assert decode_text(encode_text(text, 1), 1) == text


@FAST
@given(latin1_text)
def test_latin1_round_trips(text: str) -> None:
    assert decode_text(encode_text(text, 3), 3) == text


@FAST
@given(unicode_text)
def test_ucs2_round_trips_including_surrogate_pairs(text: str) -> None:
    assert decode_text(encode_text(text, 8), 8) == text


@pytest.mark.parametrize(
    ("text", "data_coding", "encoded"),
    [
        ("Привет!", 0, b"??????!"),
        ("naïve ☃", 1, b"na?ve ?"),
        ("€ ☃ é", 3, b"? ? \xe9"),
        ("\ud800x", 8, b"\x00?\x00x"),
    ],
)
def test_encode_replaces_unrepresentable_chars_with_question_mark(
    text: str, data_coding: int, encoded: bytes
) -> None:
    assert encode_text(text, data_coding) == encoded


@pytest.mark.parametrize("data_coding", [2, 4, 5, 0xF0, -1])
def test_encode_rejects_codings_other_than_0_1_3_8(data_coding: int) -> None:
    with pytest.raises(ValueError, match="data_coding"):
        encode_text("hi", data_coding)


# --- decode_text -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "data_coding", "text"),
    [
        (b"hi \xff", 2, "hi \xff"),
        (b"\x00\x80", 4, "\x00\x80"),
        (b"caf\xe9", 3, "café"),
        (b"*111#", 1, "*111#"),
        (b"\xbf\xe0\xd8\xd2\xd5\xe2", 6, "Привет"),
        (b"\xf9\xec\xe5\xed", 7, "שלום"),
        (b"\x04\x1f\x04\x40\x04\x38", 8, "При"),
        (b"\xd8\x3d\xde\x00", 8, "😀"),
        (b"*100#", 0x0F, "*100#"),  # USSD's CBS "GSM 7-bit, language unspecified"
        (b"Hi\x1b\x65", 0x11, "Hi€"),  # general group, class 1, GSM 7-bit
        (b"\xff", 0x15, "\xff"),  # general group, 8-bit
        (b"\x04\x1f", 0x18, "П"),  # general group, UCS2
        (b"\x04\x1f", 0x48, "П"),  # automatic deletion group, UCS2 (common USSD DCS)
        (b"Hi", 0xC0, "Hi"),  # message waiting, discard, GSM 7-bit
        (b"Hi", 0xD8, "Hi"),  # message waiting, store, GSM 7-bit
        (b"\x04\x1f", 0xE0, "П"),  # message waiting, store, UCS2
        (b"Hi", 0xF0, "Hi"),  # class 0 flash, GSM 7-bit
        (b"\xe9", 0xF6, "\xe9"),  # class 2, 8-bit
    ],
)
def test_decode_picks_alphabet_from_smpp_and_ts_23038_coding_groups(
    data: bytes, data_coding: int, text: str
) -> None:
    assert decode_text(data, data_coding) == text


@pytest.mark.parametrize(
    ("data", "data_coding", "text"),
    [
        (b"ab\x1b", 0, "ab\ufffd"),  # lone escape at the end
        (b"a\x80b", 0, "a\ufffdb"),  # not a septet
        (b"a\x1b\xffb", 0, "a\ufffdb"),  # escape followed by a non-septet
        (b"\x04\x1f\x04", 8, "П\ufffd"),  # odd length
        (b"\xd8\x3d\x00a", 8, "\ufffda"),  # lone high surrogate
        (b"\xde\x00", 8, "\ufffd"),  # lone low surrogate
        (b"ok\xff", 1, "ok\ufffd"),  # not ASCII
        (b"\xff", 7, "\ufffd"),  # undefined in ISO-8859-8
    ],
)
def test_decode_replaces_malformed_input_with_replacement_char(
    data: bytes, data_coding: int, text: str
) -> None:
    assert decode_text(data, data_coding) == text


def test_decode_gsm7_escape_to_unmapped_code_shows_basic_char_as_ts_23038_says() -> None:
    assert decode_text(b"\x1bA", 0) == "A"


def test_decode_gsm7_double_escape_shows_a_space_as_ts_23038_says() -> None:
    assert decode_text(b"a\x1b\x1bb", 0) == "a b"


@pytest.mark.parametrize(
    "data_coding",
    [0x05, 0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x0E, 0x1C, 0x20, 0x2C, 0x60, 0x80, 0xBF, -1, 0x100],
)
def test_decode_rejects_uninterpretable_coding_with_text_decode_error(data_coding: int) -> None:
    with pytest.raises(TextDecodeError, match=f"0x{data_coding:02X}") as excinfo:
        decode_text(b"hi", data_coding)
    assert excinfo.value.data_coding == data_coding
    assert isinstance(excinfo.value, ValueError)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300), st.integers(min_value=-1, max_value=0x100))
def test_decode_fuzz_only_text_decode_error_escapes(data: bytes, data_coding: int) -> None:
    with contextlib.suppress(TextDecodeError):
        assert isinstance(decode_text(data, data_coding), str)


@FAST
@given(st.binary(max_size=300), st.sampled_from([0, 1, 2, 3, 4, 6, 7, 8, 0x11, 0x18, 0xF0, 0xF4]))
def test_decode_never_raises_for_supported_codings(data: bytes, data_coding: int) -> None:
    decode_text(data, data_coding)


# --- split_text --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "data_coding", "parts"),
    [
        ("", 0, 1),
        ("a" * 160, 0, 1),
        ("a" * 161, 0, 2),
        ("€" * 80, 0, 1),  # extension chars count two septets
        ("€" * 80 + "a", 0, 2),
        ("a" * 153 * 2, 0, 2),
        ("a" * (153 * 2 + 1), 0, 3),
        ("Я" * 70, 8, 1),
        ("Я" * 71, 8, 2),
        ("Я" * 67 * 2, 8, 2),
        ("Я" * (67 * 2 + 1), 8, 3),
        ("😀" * 35, 8, 1),
        ("😀" * 36, 8, 2),
    ],
)
def test_split_uses_single_sms_limits_then_part_limits(text: str, data_coding: int, parts: int) -> None:
    message = split_text(text, reference=7)
    assert message.data_coding == data_coding
    assert len(message.parts) == parts
    assert message.esm_class_udhi == (parts > 1)


@pytest.mark.parametrize(
    ("text", "use_16bit_ref", "per_part"),
    [
        ("a" * 1000, False, 153),
        ("a" * 1000, True, 152),
        ("Я" * 1000, False, 67),
        ("Я" * 1000, True, 66),
    ],
)
def test_split_fills_parts_to_ts_23040_capacity(text: str, use_16bit_ref: bool, per_part: int) -> None:
    message = split_text(text, reference=1, use_16bit_ref=use_16bit_ref)
    payloads = [payload_of(part, True) for part in message.parts]
    assert [decode_text(p, message.data_coding) for p in payloads[:-1]] == [text[:per_part]] * (
        len(payloads) - 1
    )


@pytest.mark.parametrize(("data_coding", "per_part"), [(1, 134), (3, 134)])
def test_split_budgets_ia5_and_latin1_as_8bit(data_coding: int, per_part: int) -> None:
    assert len(split_text("a" * 140, data_coding, reference=0).parts) == 1
    message = split_text("a" * 141, data_coding, reference=0)
    assert [len(payload_of(p, True)) for p in message.parts] == [per_part, 141 - per_part]


def test_split_writes_8bit_reference_udh() -> None:
    parts = split_text("a" * 200, reference=0xAB).parts
    assert [part[:6] for part in parts] == [b"\x05\x00\x03\xab\x02\x01", b"\x05\x00\x03\xab\x02\x02"]


def test_split_writes_16bit_reference_udh() -> None:
    parts = split_text("a" * 200, reference=0x1234, use_16bit_ref=True).parts
    assert [part[:7] for part in parts] == [
        b"\x06\x08\x04\x12\x34\x02\x01",
        b"\x06\x08\x04\x12\x34\x02\x02",
    ]


def test_split_with_forced_gsm7_replaces_cyrillic_with_question_marks() -> None:
    message = split_text("Да", 0, reference=0)
    assert message == SplitMessage(0, False, (b"??",))


def test_split_message_is_frozen() -> None:
    message = split_text("hi", reference=0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        message.parts = ()  # type: ignore[misc]


def test_split_accepts_255_parts_and_rejects_256() -> None:
    assert len(split_text("a" * 153 * 255, reference=0).parts) == 255
    with pytest.raises(ValueError, match="256 parts"):
        split_text("a" * (153 * 255 + 1), reference=0)


@pytest.mark.parametrize(("reference", "use_16bit_ref"), [(-1, False), (256, False), (0x10000, True)])
def test_split_rejects_reference_out_of_range(reference: int, use_16bit_ref: bool) -> None:
    with pytest.raises(ValueError, match="reference"):
        split_text("hi", reference=reference, use_16bit_ref=use_16bit_ref)


def test_split_rejects_unsupported_coding() -> None:
    with pytest.raises(ValueError, match="data_coding"):
        split_text("hi", 4, reference=0)


@FAST
@given(splittable_text, st.booleans(), st.integers(min_value=0, max_value=255))
def test_split_then_join_payloads_decodes_to_original(text: str, use_16bit_ref: bool, reference: int) -> None:
    message = split_text(text, reference=reference, use_16bit_ref=use_16bit_ref)
    joined = b"".join(payload_of(part, message.esm_class_udhi) for part in message.parts)
    assert decode_text(joined, message.data_coding) == text


@FAST
@given(splittable_text, st.booleans())
def test_split_parts_fit_140_octets_on_the_air(text: str, use_16bit_ref: bool) -> None:
    message = split_text(text, reference=3, use_16bit_ref=use_16bit_ref)
    for part in message.parts:
        assert air_octets(part, message.data_coding, message.esm_class_udhi) <= MAX_AIR_OCTETS


@FAST
@given(splittable_text, st.booleans())
def test_split_never_cuts_escape_sequence_or_surrogate_pair(text: str, use_16bit_ref: bool) -> None:
    message = split_text(text, reference=3, use_16bit_ref=use_16bit_ref)
    decoded = [decode_text(payload_of(p, message.esm_class_udhi), message.data_coding) for p in message.parts]
    assert "".join(decoded) == text  # a cut sequence would decode as U+FFFD on each side


@FAST
@given(st.text(alphabet="a€", min_size=161, max_size=800), st.booleans())
def test_split_gsm7_parts_are_full_except_for_a_held_back_escape(text: str, use_16bit_ref: bool) -> None:
    capacity = 152 if use_16bit_ref else 153
    message = split_text(text, reference=3, use_16bit_ref=use_16bit_ref)
    for part in message.parts[:-1]:
        payload = payload_of(part, True)
        assert capacity - 1 <= len(payload) <= capacity
        assert not payload.endswith(b"\x1b")


@FAST
@given(st.text(alphabet="Я😀", min_size=36, max_size=400), st.booleans())
def test_split_ucs2_parts_are_full_except_for_a_held_back_surrogate_pair(
    text: str, use_16bit_ref: bool
) -> None:
    capacity = 132 if use_16bit_ref else 134
    message = split_text(text, reference=3, use_16bit_ref=use_16bit_ref)
    for part in message.parts[:-1]:
        payload = payload_of(part, True)
        assert capacity - 2 <= len(payload) <= capacity
        assert not 0xD8 <= payload[-2] <= 0xDB  # never ends on a high surrogate
