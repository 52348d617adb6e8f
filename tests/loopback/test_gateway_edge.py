"""The gateway's edge: a deliver_sm whose reply could never be addressed is refused for good (and
nothing is queued for it); a notification about an MT is acknowledged and never routed as an MO."""

from __future__ import annotations

import asyncio
import struct

import pytest

from gateway.inbound import unanswerable
from tests.support.platform import all_keys
from tests.support.smpp_peer import ScriptedSmsc, gateway_against
from ussdgw.config import Settings
from ussdgw.smpp.pdu import DeliverSm, DeliverSmResp, EsmClass, MessageState, Status
from ussdgw.store import Store
from ussdgw.store.connect import connect
from ussdgw.store.keys import INDEX_BUCKETS, mt_due_key

PHONE = "79161234567"
OTHER = "79161234599"


def raw_deliver_sm(sequence: int, source: str, destination: str, text: bytes, *, esm_class: int = 0) -> bytes:
    """A deliver_sm as a careless SMSC may write it: addresses of any length (our encoder refuses
    over 20 octets, so the bytes are put together here)."""
    body = b"".join((
        b"\x00", bytes((1, 1)), source.encode("latin-1") + b"\x00", bytes((0, 0)),
        destination.encode("latin-1") + b"\x00", bytes((esm_class, 0, 0)), b"\x00", b"\x00",
        bytes((0, 0, 0, 0, len(text))), text,
    ))
    return struct.pack(">IIII", 16 + len(body), 0x00000005, 0, sequence) + body


@pytest.mark.parametrize(("source", "destination", "status"), [
    ("7" * 21, "3339", Status.RINVSRCADR),  # longer than an SMPP address
    ("7" * 40, "3339", Status.RINVSRCADR),
    ("MTS-INFO", "3339", Status.RINVSRCADR),  # a name, where the reply needs a number
    ("7916123456x", "3339", Status.RINVSRCADR),
    ("", "3339", Status.RINVSRCADR),
    (PHONE, "3" * 21, Status.RINVDSTADR),
    (PHONE, "", Status.RINVDSTADR),
    (PHONE, "3339", None),
    ("+" + PHONE, "3339", None),
    (PHONE, "*100#", None),
])
def test_which_mos_can_never_be_answered(source: str, destination: str, status: int | None) -> None:
    assert unanswerable(DeliverSm(source_addr=source, destination_addr=destination)) == status


async def test_an_mo_whose_reply_cannot_be_addressed_is_refused_for_good_and_nothing_is_queued(
    settings: Settings, store: Store,
) -> None:
    smsc = ScriptedSmsc()
    async with gateway_against(smsc, store, settings):
        assert smsc.writer is not None
        for sequence, source in ((0x7001, "7" * 21), (0x7002, "MTS-INFO")):
            smsc.writer.write(raw_deliver_sm(sequence, source, "3339", "ПАРОЛЬ".encode("utf-16-be")))
            resp = await asyncio.wait_for(smsc.responses.get(), 5)
            assert isinstance(resp, DeliverSmResp) and (resp.sequence, resp.status) == (sequence, Status.RINVSRCADR)
        smsc.writer.write(raw_deliver_sm(0x7003, PHONE, "3" * 25, b"HELP"))
        resp = await asyncio.wait_for(smsc.responses.get(), 5)
        assert (resp.sequence, resp.status) == (0x7003, Status.RINVDSTADR)
        await after_a_good_one(smsc)
    client = connect(settings.redis_url)
    try:
        indexed = [m for b in range(INDEX_BUCKETS) for m in await client.zrange(mt_due_key(b), 0, -1)]
        assert {m.decode().split("|")[0] for m in indexed} <= {OTHER}  # nothing queued for the refused ones
        subscribers = {key.decode().split("}")[0] for key in all_keys(settings.redis_url, "sub:*")}
        assert subscribers == {f"sub:{{{OTHER}"}
    finally:
        await client.aclose()


async def after_a_good_one(smsc: ScriptedSmsc) -> None:
    """An ordinary MO from another phone goes through, and its reply is the first MT out: nothing
    was submitted for what came before it."""
    await smsc.deliver(DeliverSm(source_addr_ton=1, source_addr_npi=1, source_addr=OTHER, destination_addr="3339",
                                 short_message=b"HELP"))
    resp = await asyncio.wait_for(smsc.responses.get(), 5)
    assert resp.status == Status.ROK
    first = await asyncio.wait_for(smsc.submitted.get(), 5)
    assert first.destination_addr == OTHER


async def test_an_intermediate_notification_is_acknowledged_and_not_routed(settings: Settings, store: Store) -> None:
    smsc = ScriptedSmsc()
    async with gateway_against(smsc, store, settings):
        await smsc.deliver(DeliverSm(source_addr=PHONE, destination_addr="3339",
                                     esm_class=EsmClass.INTERMEDIATE_NOTIFICATION, short_message=b"id:1 stat:ENROUTE",
                                     receipted_message_id="1", message_state=MessageState.ENROUTE))
        resp = await asyncio.wait_for(smsc.responses.get(), 5)
        assert resp.status == Status.ROK
        await after_a_good_one(smsc)  # no help text went back for the notification, as an MO would get
