"""Inbound long-message reassembly: UDH parsing and the Reassembler (ussdgw.smpp.concat)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ussdgw.smpp.concat import ConcatError, ConcatInfo, ExpiredMessage, Reassembler, parse_udh
from ussdgw.smpp.text import decode_text, encode_text, split_text

FAST = settings(max_examples=200, deadline=None)

KEY = ("79001234567", "1234")
OTHER_KEY = ("79007654321", "1234")


def parts_of(data: bytes, total: int) -> list[bytes]:
    size = -(-len(data) // total) if data else 0
    return [data[i * size : (i + 1) * size] for i in range(total)]


# --- parse_udh ---------------------------------------------------------------------------------


def test_parse_udh_reads_8bit_reference_ie() -> None:
    assert parse_udh(b"\x05\x00\x03\xab\x03\x02hello") == (ConcatInfo(0xAB, 3, 2), b"hello")


def test_parse_udh_reads_16bit_reference_ie() -> None:
    assert parse_udh(b"\x06\x08\x04\x12\x34\x02\x01hi") == (ConcatInfo(0x1234, 2, 1), b"hi")


def test_parse_udh_skips_other_ies() -> None:
    port_addressing = b"\x05\x04\x0b\x84\x23\xf0"
    language_shift = b"\x25\x01\x02"
    udh = port_addressing + language_shift + b"\x00\x03\x07\x02\x02"
    assert parse_udh(bytes((len(udh),)) + udh + b"x") == (ConcatInfo(7, 2, 2), b"x")


def test_parse_udh_without_concat_ie_returns_none_and_payload() -> None:
    assert parse_udh(b"\x03\x25\x01\x02text") == (None, b"text")


def test_parse_udh_with_empty_udh_returns_none_and_payload() -> None:
    assert parse_udh(b"\x00text") == (None, b"text")


def test_parse_udh_uses_last_concat_ie_when_repeated() -> None:
    udh = b"\x00\x03\x01\x02\x01" + b"\x08\x04\x00\x09\x03\x03"
    assert parse_udh(bytes((len(udh),)) + udh) == (ConcatInfo(9, 3, 3), b"")


@pytest.mark.parametrize(
    "ie",
    [
        b"\x00\x03\x01\x00\x00",  # zero parts
        b"\x00\x03\x01\x02\x00",  # part 0
        b"\x00\x03\x01\x02\x03",  # part beyond total
        b"\x08\x04\x00\x01\x00\x01",
    ],
)
def test_parse_udh_ignores_concat_ie_with_impossible_numbering_per_ts_23040(ie: bytes) -> None:
    assert parse_udh(bytes((len(ie),)) + ie + b"x") == (None, b"x")


@pytest.mark.parametrize(
    ("short_message", "message"),
    [
        (b"", "empty"),
        (b"\x05\x00\x03\x01", "exceeds"),
        (b"\x01\x00", "truncated"),
        (b"\x03\x00\x03\x01", "overruns"),
        (b"\x04\x00\x02\x01\x02", "expected 3"),
        (b"\x05\x08\x03\x00\x01\x02", "expected 4"),
    ],
)
def test_parse_udh_rejects_malformed_udh_with_concat_error(short_message: bytes, message: str) -> None:
    with pytest.raises(ConcatError, match=message):
        parse_udh(short_message)


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=64))
def test_parse_udh_fuzz_only_concat_error_escapes(short_message: bytes) -> None:
    try:
        info, payload = parse_udh(short_message)
    except ConcatError:
        return
    assert short_message.endswith(payload)
    if info is not None:
        assert 1 <= info.seqnum <= info.total


@FAST
@given(st.text(min_size=161, max_size=1000), st.booleans(), st.integers(min_value=0, max_value=255))
def test_parse_udh_reads_back_what_split_text_wrote(text: str, use_16bit_ref: bool, reference: int) -> None:
    message = split_text(text, reference=reference, use_16bit_ref=use_16bit_ref)
    assert message.esm_class_udhi
    total = len(message.parts)
    for seqnum, part in enumerate(message.parts, start=1):
        info, payload = parse_udh(part)
        assert info == ConcatInfo(reference, total, seqnum)
        assert part.endswith(payload)


# --- Reassembler -------------------------------------------------------------------------------


@FAST
@given(st.data(), st.binary(max_size=2000), st.integers(min_value=1, max_value=20))
def test_reassembly_in_any_order_equals_original(data: st.DataObject, original: bytes, total: int) -> None:
    chunks = parts_of(original, total)
    order = data.draw(st.permutations(range(1, total + 1)))
    reassembler = Reassembler()
    results = [reassembler.add(KEY, 42, total, seq, chunks[seq - 1], 0, 0.0) for seq in order]
    assert results[:-1] == [None] * (total - 1)
    assert results[-1] == original
    assert len(reassembler) == 0


@FAST
@given(
    st.data(),
    st.text(min_size=1, max_size=800),
    st.booleans(),
    st.integers(min_value=0, max_value=255),
)
def test_split_then_parse_then_reassemble_then_decode_equals_original(
    data: st.DataObject, text: str, use_16bit_ref: bool, reference: int
) -> None:
    message = split_text(text, reference=reference, use_16bit_ref=use_16bit_ref)
    reassembler = Reassembler()
    joined: bytes | None = None
    for part in data.draw(st.permutations(message.parts)):
        if not message.esm_class_udhi:
            joined = part
            break
        info, payload = parse_udh(part)
        assert info is not None
        joined = reassembler.add(
            KEY, info.reference, info.total, info.seqnum, payload, message.data_coding, 1.0
        )
    assert joined is not None
    assert decode_text(joined, message.data_coding) == text


def test_single_part_message_completes_at_once() -> None:
    assert Reassembler().add(KEY, 1, 1, 1, b"whole", 0, 0.0) == b"whole"


def test_duplicate_part_is_ignored_and_first_copy_wins() -> None:
    reassembler = Reassembler()
    assert reassembler.add(KEY, 1, 2, 1, b"one", 0, 0.0) is None
    assert reassembler.add(KEY, 1, 2, 1, b"ONE", 0, 1.0) is None
    assert reassembler.add(KEY, 1, 2, 2, b"two", 0, 2.0) == b"onetwo"


def test_same_reference_from_different_senders_does_not_mix() -> None:
    reassembler = Reassembler()
    assert reassembler.add(KEY, 5, 2, 1, b"a1", 0, 0.0) is None
    assert reassembler.add(OTHER_KEY, 5, 2, 2, b"b2", 0, 0.0) is None
    assert reassembler.add(KEY, 5, 2, 2, b"a2", 0, 0.0) == b"a1a2"
    assert reassembler.add(OTHER_KEY, 5, 2, 1, b"b1", 0, 0.0) == b"b1b2"


def test_sar_values_reassemble_like_udh_values() -> None:
    reassembler = Reassembler()
    sar_msg_ref_num = 0xBEEF
    assert reassembler.add(KEY, sar_msg_ref_num, 2, 2, encode_text("а", 8), 8, 0.0) is None
    joined = reassembler.add(KEY, sar_msg_ref_num, 2, 1, encode_text("Привет", 8), 8, 0.0)
    assert joined is not None
    assert decode_text(joined, 8) == "Привета"


def test_expire_drops_incomplete_message_after_timeout_and_reports_it() -> None:
    reassembler = Reassembler(timeout=60)
    reassembler.add(KEY, 9, 3, 1, b"a", 0, 100.0)
    reassembler.add(KEY, 9, 3, 3, b"c", 0, 110.0)
    assert reassembler.expire(159.9) == []
    assert reassembler.expire(160.0) == [ExpiredMessage(KEY, 9, received=2, total=3)]
    assert len(reassembler) == 0
    assert reassembler.expire(1000.0) == []


def test_part_arriving_after_expiry_starts_a_new_message() -> None:
    reassembler = Reassembler(timeout=60)
    reassembler.add(KEY, 9, 2, 1, b"a", 0, 0.0)
    reassembler.expire(60.0)
    assert reassembler.add(KEY, 9, 2, 2, b"b", 0, 61.0) is None
    assert len(reassembler) == 1


def test_stale_reference_is_replaced_on_add_even_before_expire_runs() -> None:
    reassembler = Reassembler(timeout=60)
    reassembler.add(KEY, 9, 2, 1, b"old", 0, 0.0)
    assert reassembler.add(KEY, 9, 3, 1, b"new1", 8, 70.0) is None
    assert reassembler.add(KEY, 9, 3, 2, b"new2", 8, 70.0) is None
    assert reassembler.add(KEY, 9, 3, 3, b"new3", 8, 70.0) == b"new1new2new3"
    assert reassembler.expire(70.0) == [ExpiredMessage(KEY, 9, received=1, total=2)]


def test_expire_keeps_young_messages_behind_an_old_one() -> None:
    reassembler = Reassembler(timeout=10)
    reassembler.add(KEY, 1, 2, 1, b"x", 0, 0.0)
    reassembler.add(KEY, 2, 2, 1, b"y", 0, 5.0)
    assert reassembler.expire(12.0) == [ExpiredMessage(KEY, 1, received=1, total=2)]
    assert reassembler.add(KEY, 2, 2, 2, b"z", 0, 12.0) == b"yz"


def test_max_pending_evicts_oldest_first_and_expire_reports_it() -> None:
    reassembler = Reassembler(max_pending=2)
    reassembler.add(KEY, 1, 2, 1, b"a", 0, 0.0)
    reassembler.add(KEY, 2, 2, 1, b"b", 0, 1.0)
    reassembler.add(KEY, 3, 2, 1, b"c", 0, 2.0)
    assert len(reassembler) == 2
    assert reassembler.expire(3.0) == [ExpiredMessage(KEY, 1, received=1, total=2, evicted=True)]
    assert reassembler.add(KEY, 2, 2, 2, b"B", 0, 3.0) == b"bB"
    assert reassembler.add(KEY, 3, 2, 2, b"C", 0, 3.0) == b"cC"


@FAST
@given(st.lists(st.tuples(st.integers(0, 50), st.integers(1, 4), st.integers(1, 4)), max_size=300))
def test_pending_messages_never_exceed_max_pending(parts: list[tuple[int, int, int]]) -> None:
    reassembler = Reassembler(max_pending=5)
    for now, (ref, total, seq) in enumerate(parts):
        with contextlib.suppress(ConcatError):
            reassembler.add(KEY, ref, total, seq, b"x", 0, float(now))
        assert len(reassembler) <= 5


@pytest.mark.parametrize(
    ("ref", "total", "seq", "message"),
    [
        (1, 0, 1, "total 0"),
        (1, 256, 1, "total 256"),
        (1, 3, 0, "part 0"),
        (1, 3, 4, "part 4"),
        (-1, 3, 1, "reference -1"),
        (0x10000, 3, 1, "reference 65536"),
    ],
)
def test_add_rejects_impossible_numbering(ref: int, total: int, seq: int, message: str) -> None:
    with pytest.raises(ConcatError, match=message):
        Reassembler().add(KEY, ref, total, seq, b"x", 0, 0.0)


def test_part_with_different_total_raises_and_keeps_held_parts() -> None:
    reassembler = Reassembler()
    reassembler.add(KEY, 1, 2, 1, b"a", 0, 0.0)
    with pytest.raises(ConcatError, match="says 3 parts"):
        reassembler.add(KEY, 1, 3, 2, b"bogus", 0, 0.0)
    assert reassembler.add(KEY, 1, 2, 2, b"b", 0, 0.0) == b"ab"


def test_part_with_different_data_coding_raises_and_keeps_held_parts() -> None:
    reassembler = Reassembler()
    reassembler.add(KEY, 1, 2, 1, b"a", 0, 0.0)
    with pytest.raises(ConcatError, match="data_coding 0x08"):
        reassembler.add(KEY, 1, 2, 2, b"\x00b", 8, 0.0)
    assert reassembler.add(KEY, 1, 2, 2, b"b", 0, 0.0) == b"ab"


def test_reassembler_rejects_nonsense_limits() -> None:
    with pytest.raises(ValueError, match="timeout"):
        Reassembler(timeout=0)
    with pytest.raises(ValueError, match="max_pending"):
        Reassembler(max_pending=0)
