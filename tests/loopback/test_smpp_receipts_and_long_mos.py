"""What an SMSC may send that the gateway must put together: long MOs in 8-bit and 16-bit UDH parts,
in SAR TLVs or in one message_payload, and delivery receipts that overtake their submit_sm_resp."""

from __future__ import annotations

import asyncio

from gateway.service import Gateway
from tests.support.platform import eventually
from tests.support.smpp_peer import ScriptedSmsc, gateway_against
from ussdgw.config import Settings
from ussdgw.smpp.concat import parse_udh
from ussdgw.smpp.pdu import DeliverSm, DeliverSmResp, EsmClass, MessageState, Pdu, SubmitSm, SubmitSmResp
from ussdgw.smpp.session import SmppSession
from ussdgw.smpp.text import decode_text
from ussdgw.store import Store
from ussdgw.store.keys import dlr_key

PHONE = "79161234567"
FIRST, SECOND = "ПАР".encode("utf-16-be"), "ОЛЬ".encode("utf-16-be")


def mo(short_message: bytes = b"", *, esm_class: int = 0, **tlvs: object) -> DeliverSm:
    return DeliverSm(source_addr_ton=1, source_addr_npi=1, source_addr=PHONE, destination_addr="3339",
                     esm_class=esm_class, data_coding=8, short_message=short_message, **tlvs)  # type: ignore[arg-type]


async def reply_to(smsc: ScriptedSmsc, *parts: DeliverSm) -> str:
    """Deliver the parts in order; every one is acknowledged; returns the text of the reply MT."""
    for part in parts:
        await smsc.deliver(part)
    async with asyncio.timeout(10):
        for _ in parts:
            ack = await smsc.responses.get()
            assert isinstance(ack, DeliverSmResp) and ack.status == 0
        texts = []
        first = await smsc.submitted.get()
        texts.append(first)
        info, _ = parse_udh(first.short_message) if first.esm_class & EsmClass.UDHI else (None, b"")
        while info is not None and len(texts) < info.total:
            texts.append(await smsc.submitted.get())
    return "".join(decode_text(parse_udh(p.short_message)[1] if p.esm_class & EsmClass.UDHI
                               else p.short_message, p.data_coding) for p in texts)


async def test_a_long_mo_in_8_bit_udh_parts_is_reassembled(settings: Settings, store: Store) -> None:
    smsc = ScriptedSmsc()
    async with gateway_against(smsc, store, settings):
        text = await reply_to(smsc, mo(bytes([5, 0, 3, 0x2A, 2, 1]) + FIRST, esm_class=EsmClass.UDHI),
                              mo(bytes([5, 0, 3, 0x2A, 2, 2]) + SECOND, esm_class=EsmClass.UDHI))
    assert "Личный кабинет:" in text


async def test_a_long_mo_in_16_bit_udh_parts_arriving_last_part_first_is_reassembled(
    settings: Settings, store: Store,
) -> None:
    smsc = ScriptedSmsc()
    async with gateway_against(smsc, store, settings):
        text = await reply_to(smsc, mo(bytes([6, 8, 4, 0x12, 0x34, 2, 2]) + SECOND, esm_class=EsmClass.UDHI),
                              mo(bytes([6, 8, 4, 0x12, 0x34, 2, 1]) + FIRST, esm_class=EsmClass.UDHI))
    assert "Личный кабинет:" in text


async def test_a_long_mo_in_sar_tlvs_is_reassembled(settings: Settings, store: Store) -> None:
    smsc = ScriptedSmsc()
    async with gateway_against(smsc, store, settings):
        text = await reply_to(smsc, mo(FIRST, sar_msg_ref_num=777, sar_total_segments=2, sar_segment_seqnum=1),
                              mo(SECOND, sar_msg_ref_num=777, sar_total_segments=2, sar_segment_seqnum=2))
    assert "Личный кабинет:" in text


async def test_a_long_mo_in_one_message_payload_is_read_whole(settings: Settings, store: Store) -> None:
    smsc = ScriptedSmsc()
    async with gateway_against(smsc, store, settings):
        text = await reply_to(smsc, mo(message_payload=FIRST + SECOND))
    assert "Личный кабинет:" in text


async def test_a_receipt_that_arrives_before_its_submit_sm_resp_is_still_recorded(
    settings: Settings, store: Store,
) -> None:
    async def receipt_first(smsc: ScriptedSmsc, _: SmppSession, pdu: SubmitSm) -> Pdu:
        assert pdu.registered_delivery & 1
        message_id = smsc.next_message_id()
        await smsc.deliver(DeliverSm(
            source_addr=pdu.destination_addr, destination_addr=pdu.source_addr,
            esm_class=EsmClass.DELIVERY_RECEIPT, receipted_message_id=message_id,
            message_state=MessageState.DELIVERED,
            short_message=f"id:{message_id} sub:001 dlvrd:001 submit date:2501010000 done date:2501010000 "
                          "stat:DELIVRD err:000 text:".encode("ascii"),
        ))
        while not isinstance(ack := await smsc.responses.get(), DeliverSmResp):
            pass
        assert ack.status == 0  # the gateway took the receipt before it knew the message id
        return SubmitSmResp(message_id=message_id)

    smsc = ScriptedSmsc(receipt_first)
    async with gateway_against(smsc, store, settings) as gateway:
        recorded = asyncio.Event()
        record = gateway._record_receipts

        async def record_and_tell(known: list[dict[str, str]]) -> None:
            await record(known)
            recorded.set()

        gateway._record_receipts = record_and_tell  # type: ignore[method-assign]
        await smsc.deliver(mo("HELLO".encode("utf-16-be")))
        await asyncio.wait_for(recorded.wait(), 10)
        states = await store.mt_states(PHONE)
        trail = await store.audit_trail(PHONE)
    assert set(states.values()) == {"DELIVERED"}
    assert any(e["event"] == "mt_receipt" and "state=DELIVERED" in e["detail"] for e in trail)


def delivered(message_id: str) -> DeliverSm:
    return DeliverSm(source_addr=PHONE, destination_addr="3339", esm_class=EsmClass.DELIVERY_RECEIPT,
                     receipted_message_id=message_id, message_state=MessageState.DELIVERED,
                     short_message=f"id:{message_id} sub:001 dlvrd:001 submit date:2501010000 done date:2501010000 "
                                   "stat:DELIVRD err:000 text:".encode("ascii"))


async def reply_submitted(smsc: ScriptedSmsc) -> None:
    """Deliver one MO and wait until it is acknowledged and its reply's first part submitted."""
    await smsc.deliver(mo("HELLO".encode("utf-16-be")))
    async with asyncio.timeout(10):
        while not isinstance(await smsc.responses.get(), DeliverSmResp):
            pass
        await smsc.submitted.get()


async def receipts_recorded(store: Store, sender: Gateway, sending: ScriptedSmsc, receiving: ScriptedSmsc,
                            ) -> list[dict[bytes, bytes]]:
    """One reply submitted by `sender` through `sending`, and a receipt for each of its parts delivered
    through `receiving`: once every part is recorded DELIVERED, each part's `dlr:` hash."""
    await reply_submitted(sending)
    await sender.sends_done()
    message_ids = [f"msg{n:04d}" for n in range(1, sending.message_ids + 1)]
    assert message_ids
    for message_id in message_ids:
        await receiving.deliver(delivered(message_id))

    async def recorded() -> None:
        assert set((await store.mt_states(PHONE)).values()) == {"DELIVERED"}
        assert sum(e["event"] == "mt_receipt" for e in await store.audit_trail(PHONE)) == len(message_ids)
    await eventually(recorded)
    return [await store.redis.hgetall(dlr_key(m)) for m in message_ids]


async def test_a_receipt_back_through_the_gateway_that_sent_the_part_is_met_in_its_memory(
    settings: Settings, store: Store,
) -> None:
    smsc = ScriptedSmsc()
    async with gateway_against(smsc, store, settings) as gateway:
        halves = await receipts_recorded(store, gateway, smsc, smsc)
    # met without Redis: the receipt side never wrote its half of the correlation
    assert all(b"msisdn" in h and b"state" not in h for h in halves)


async def test_a_receipt_that_comes_back_through_another_gateway_is_met_in_redis(
    settings: Settings, store: Store,
) -> None:
    """Any gateway process may get any receipt: the one that did not send the part finds its MT
    through `dlr:<message id>`, which the sender wrote."""
    sending, receiving = ScriptedSmsc(), ScriptedSmsc()
    async with gateway_against(sending, store, settings) as sender, gateway_against(receiving, store, settings):
        halves = await receipts_recorded(store, sender, sending, receiving)
    assert all(h.get(b"state") == b"DELIVERED" for h in halves)


async def test_a_receipt_that_overtakes_its_parts_record_waits_for_it_in_the_same_process(
    settings: Settings, store: Store,
) -> None:
    """The SMSC answers each submit_sm and sends its receipt at once: the receipt reaches the gateway
    while the part's record is still on its way to Redis, waits for it in memory, and is recorded
    after it (SUBMITTED, then DELIVERED), without a correlation in Redis."""
    async def receipt_at_once(smsc: ScriptedSmsc, _: SmppSession, pdu: SubmitSm) -> Pdu:
        message_id = smsc.next_message_id()
        asyncio.get_running_loop().call_soon(lambda: asyncio.ensure_future(smsc.deliver(delivered(message_id))))
        return SubmitSmResp(message_id=message_id)

    smsc = ScriptedSmsc(receipt_at_once)
    async with gateway_against(smsc, store, settings) as gateway:
        await reply_submitted(smsc)

        async def recorded() -> None:
            assert set((await store.mt_states(PHONE)).values()) == {"DELIVERED"}
            assert sum(e["event"] == "mt_receipt" for e in await store.audit_trail(PHONE)) == smsc.message_ids
        await eventually(recorded)
        await gateway.sends_done()
        message_ids = [f"msg{n:04d}" for n in range(1, smsc.message_ids + 1)]
        halves = [await store.redis.hgetall(dlr_key(m)) for m in message_ids]
        assert len(gateway._submitted) == 0  # every part met, none left behind
    assert message_ids and all(b"msisdn" in h and b"state" not in h for h in halves)
