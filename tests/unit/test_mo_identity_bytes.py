"""An MO's id is what a redelivery is recognised by, in Redis, across gateway versions: the bytes
hashed must never change. These digests were computed by the first implementation (a blake2b fed
field by field); an upgrade that changed them would apply a redelivered MO a second time."""

from __future__ import annotations

from gateway.inbound import Part, mo_identity
from ussdgw.smpp.pdu import DeliverSm

PAYLOAD = "ПАРОЛЬ".encode("utf-16-be")


def test_a_whole_mo_with_a_reference_keeps_its_id() -> None:
    pdu = DeliverSm(source_addr="79161234567", destination_addr="5555", short_message=b"HELLO",
                    user_message_reference=7)
    assert mo_identity(pdu, PAYLOAD, None, window_s=299.5) == ("c0281d899253bf3f7eb60bc7", 300)


def test_a_reassembled_mo_keeps_its_id() -> None:
    pdu = DeliverSm(source_addr="79161234567", destination_addr="3339", data_coding=8, its_session_info=3)
    assert mo_identity(pdu, PAYLOAD, Part(513, 3, 2, b""), window_s=299.5) == ("402826642d1252d82d4fe78a", 300)


def test_any_field_tells_two_mos_apart() -> None:
    base = DeliverSm(source_addr="79161234567", destination_addr="5555", user_message_reference=7)
    ids = {
        mo_identity(base, b"HELLO")[0],
        mo_identity(DeliverSm(source_addr="79161234568", destination_addr="5555", user_message_reference=7),
                    b"HELLO")[0],
        mo_identity(DeliverSm(source_addr="79161234567", destination_addr="5556", user_message_reference=7),
                    b"HELLO")[0],
        mo_identity(DeliverSm(source_addr="79161234567", destination_addr="5555", user_message_reference=8),
                    b"HELLO")[0],
        mo_identity(base, b"HELLO!")[0],
        # a field's end is marked: "7916123456" + "75555" is not "79161234567" + "5555"
        mo_identity(DeliverSm(source_addr="7916123456", destination_addr="75555", user_message_reference=7),
                    b"HELLO")[0],
    }
    assert len(ids) == 6
