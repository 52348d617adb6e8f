"""Delivery receipts without I/O: the text the simulator writes is the text the gateway reads
(`parse(format(x)) == x`), foreign receipt texts are read leniently, and TLVs win over the text."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ussdgw.smpp import codec
from ussdgw.smpp.pdu import DeliverSm, EsmClass, MessageState
from ussdgw.smpp.receipt import (
    Receipt,
    format_receipt,
    parse_receipt_text,
    read_receipt,
    receipt_date,
    receipt_pdu,
)

ALNUM = string.ascii_letters + string.digits
receipts = st.builds(
    Receipt,
    message_id=st.text(ALNUM, min_size=1, max_size=64),
    state=st.sampled_from(MessageState),
    error=st.text(ALNUM + "_", max_size=6),
    submitted=st.text(string.digits, max_size=3),
    delivered=st.text(string.digits, max_size=3),
    submit_date=st.text(string.digits, max_size=12),
    done_date=st.text(string.digits, max_size=12),
    text=st.text(max_size=40),
)


@given(receipts)
def test_what_is_formatted_parses_back_the_same(receipt: Receipt) -> None:
    assert parse_receipt_text(format_receipt(receipt)) == receipt


@given(st.text(max_size=120))
def test_any_text_parses_or_is_no_receipt(text: str) -> None:
    parsed = parse_receipt_text(text)
    assert parsed is None or (parsed.message_id and isinstance(parsed.state, MessageState))


def test_the_simulator_writes_the_de_facto_text_and_the_tlvs_saying_the_same() -> None:
    pdu = receipt_pdu("0000002a1b2c3d4e", MessageState.UNDELIVERABLE, 8, source="79161234567", destination="3339",
                      submitted_at=1_700_000_000.0, done_at=1_700_000_090.0)
    assert pdu.short_message == (b"id:0000002a1b2c3d4e sub:001 dlvrd:000 submit date:2311142213 "
                                 b"done date:2311142214 stat:UNDELIV err:008 text:")
    assert pdu.esm_class == EsmClass.DELIVERY_RECEIPT and pdu.is_delivery_receipt
    assert (pdu.receipted_message_id, pdu.message_state, pdu.network_error_code) == (
        "0000002a1b2c3d4e", MessageState.UNDELIVERABLE, b"\x03\x00\x08")
    wire = codec.decode(codec.encode(pdu))
    assert isinstance(wire, DeliverSm)
    assert read_receipt(wire, wire.short_message.decode("latin-1")) == Receipt(
        "0000002a1b2c3d4e", MessageState.UNDELIVERABLE, "008", "001", "000", "2311142213", "2311142214")


@pytest.mark.parametrize(("text", "expected"), [
    ("id:12345 sub:001 dlvrd:001 submit date:2401011200 done date:2401011201 stat:DELIVRD err:000 text:Hello",
     Receipt("12345", MessageState.DELIVERED, "000", "001", "001", "2401011200", "2401011201", "Hello")),
    ("Id:ab-CD Stat:delivrd", Receipt("ab-CD", MessageState.DELIVERED)),  # keys and words in any case
    ("stat:EXPIRED err:027 id:7", Receipt("7", MessageState.EXPIRED, "027")),  # any order
    ("id:9 submit_date:2401011200 done_date:2401011300 stat:UNDELIV,",  # underscores, punctuation
     Receipt("9", MessageState.UNDELIVERABLE, submit_date="2401011200", done_date="2401011300")),
    ("id:9 stat:WEIRD", Receipt("9", MessageState.UNKNOWN)),  # a stat word nobody told us about
    ("id:9 sub:001 dlvrd:001 text:stat:DELIVRD", None),  # the quoted text is not a field
    ("id:9 dlvrd:001", None),  # no stat: not a receipt
    ("hello there", None),
])
def test_foreign_receipt_texts_are_read_leniently(text: str, expected: Receipt | None) -> None:
    assert parse_receipt_text(text) == expected


def test_tlvs_win_over_the_text_and_either_alone_is_enough() -> None:
    both = DeliverSm(esm_class=EsmClass.DELIVERY_RECEIPT, receipted_message_id="tlv", message_state=5)
    assert read_receipt(both, "id:text stat:DELIVRD err:001") == Receipt("tlv", MessageState.UNDELIVERABLE, "001")
    assert read_receipt(both, "") == Receipt("tlv", MessageState.UNDELIVERABLE)
    odd = DeliverSm(esm_class=EsmClass.DELIVERY_RECEIPT, receipted_message_id="tlv", message_state=42)
    assert read_receipt(odd, "").state is MessageState.UNKNOWN  # type: ignore[union-attr]
    text_only = DeliverSm(esm_class=EsmClass.DELIVERY_RECEIPT)
    assert read_receipt(text_only, "id:abc stat:REJECTD err:001") == Receipt("abc", MessageState.REJECTED, "001")
    assert read_receipt(text_only, "no receipt here") is None


def test_receipt_dates_are_utc_minutes() -> None:
    assert receipt_date(0.0) == "7001010000"
