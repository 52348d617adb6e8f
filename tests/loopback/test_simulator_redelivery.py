"""The simulator's SMSC owes every MO and every receipt until an ESME acknowledges it: a link cut
mid-delivery, an error in the middle of a send, a stop with deliveries outstanding lose nothing.
And it behaves like the SMSC a gateway meets: SAR parts joined on the phone, receipts a moment after
the submit_sm_resp, intermediate notifications when asked for, bad input refused up front."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from gateway.service import Gateway
from simulator.handset import Handsets
from simulator.phones import USSD_REFUSED, USSD_TIMED_OUT, Power
from simulator.smsc import MoRefused, Smsc
from tests.support.smpp_peer import RawClient
from ussdgw.app.stack import Stack
from ussdgw.config import Settings
from ussdgw.link.link import SmppLink
from ussdgw.smpp.pdu import (
    Bind,
    BindMode,
    BindResp,
    DataSm,
    DeliverSm,
    DeliverSmResp,
    EsmClass,
    MessageState,
    Pdu,
    Status,
    SubmitSm,
    SubmitSmResp,
    UssdOp,
)
from ussdgw.smpp.session import SessionError

PHONE = "79161234567"


# ---- the link cut while MOs and receipts are in flight --------------------------------------------
class FirstTryHangs:
    """Wraps the gateway's `on_deliver` and `on_receipts` (the receipts of one read, together): the
    first attempt of each PDU never gets its answer (as if the gateway were slow when the link
    went), later attempts are handled for real."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.tries: Counter[tuple[str, str, bytes]] = Counter()
        self.hanging: dict[str, int] = Counter()  # "mo" / "receipt" -> first attempts now hanging
        self.changed = asyncio.Event()
        self.release = asyncio.Event()  # the hanging first attempts end (their link is long gone)
        for client in gateway.clients:
            client.on_deliver = self
            client.on_receipts = self.receipts

    async def receipts(self, pdus: list[DeliverSm]) -> list[int]:
        return list(await asyncio.gather(*(self(pdu) for pdu in pdus)))

    async def __call__(self, pdu: DeliverSm | DataSm) -> int:
        key = (pdu.source_addr, pdu.destination_addr, pdu.payload)
        self.tries[key] += 1
        if self.tries[key] == 1:
            kind = "receipt" if isinstance(pdu, DeliverSm) and pdu.is_delivery_receipt else "mo"
            self.hanging[kind] += 1
            self.changed.set()
            await self.release.wait()
            return Status.RX_T_APPN
        return await Gateway.on_deliver(self.gateway, pdu)

    async def until(self, kind: str, count: int) -> None:
        async with asyncio.timeout(10):
            while self.hanging[kind] < count:
                self.changed.clear()
                await self.changed.wait()


async def test_a_link_cut_with_mos_and_receipts_in_flight_loses_none_of_them(stack: Stack) -> None:
    assert stack.smsc is not None and stack.gateway is not None and stack.store is not None
    smsc, phones = stack.smsc, stack.smsc.phones
    hangs = FirstTryHangs(stack.gateway)
    senders = [f"7916100{i:04d}" for i in range(6)]
    after = phones.last_seq
    mos = [mo for msisdn in senders for mo in smsc.submit_mo(msisdn, "3339", "HELP")]
    mos += smsc.submit_mo("79161009999", "*100#", "*100#", ussd_service_op=UssdOp.PSSR_INDICATION)
    await hangs.until("mo", len(mos))  # every MO is out on the link, none answered

    await smsc.drop_connections()
    async with asyncio.timeout(10):
        await asyncio.gather(*(mo.delivered.wait() for mo in mos))  # after the re-bind, each one again
    assert all(mo.last_status == Status.ROK and mo.attempts >= 2 for mo in mos)
    for msisdn in senders:
        [reply] = await phones.wait_inbox(msisdn, after, 10)
        assert reply.sender == "3339"

    # The replies' receipts: each one's first attempt is now hanging; the link goes again.
    wanted = sum(1 for r in smsc.mt_records.values() if r.registered_delivery)  # each part of each reply
    assert wanted >= len(senders)
    await hangs.until("receipt", wanted)
    receipts = [mo for mo in smsc.mo_pending.values() if mo.pdu.is_delivery_receipt]
    assert len(receipts) == wanted
    await smsc.drop_connections()
    async with asyncio.timeout(10):
        await asyncio.gather(*(mo.delivered.wait() for mo in receipts))
    assert all(mo.last_status == Status.ROK for mo in receipts)
    for msisdn in senders:
        trail = await stack.store.audit_trail(msisdn)
        assert [e["event"] for e in trail].count("mo_received") == 1  # redelivered, applied once
        assert any(e["event"] == "mt_receipt" and "state=DELIVERED" in e["detail"] for e in trail)
    assert not smsc.mo_pending
    hangs.release.set()


async def test_an_error_in_the_middle_of_a_delivery_neither_ends_the_task_nor_loses_the_pdu(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    smsc = Smsc({"esme": "secret"}, enquire_link_s=0, retry_min_s=0.01, retry_max_s=0.05)
    await smsc.start("127.0.0.1", 0)
    real_call = SmppLink.call
    failures = [SessionError.__new__(SessionError), RuntimeError("boom"), ConnectionResetError()]

    async def flaky_call(self: SmppLink, pdu: Pdu, timeout: float | None = None) -> Pdu:
        if failures:
            raise failures.pop(0)
        return await real_call(self, pdu, timeout)

    monkeypatch.setattr(SmppLink, "call", flaky_call)
    try:
        client = await RawClient.connect(smsc.host, smsc.port)
        client.send(Bind(mode=BindMode.TRANSCEIVER, system_id="esme", password="secret"))
        assert (await client.read()).status == Status.ROK
        [mo] = smsc.submit_mo(PHONE, "3339", "ПАРОЛЬ")
        pdu = await client.read_until(DeliverSm)
        client.send(DeliverSmResp(sequence=pdu.sequence))
        await asyncio.wait_for(mo.delivered.wait(), 5)
        assert mo.attempts == 4 and not failures and not smsc.mo_pending
        await client.close()
    finally:
        await smsc.stop()


async def test_a_stop_first_delivers_what_it_owes_to_a_bound_esme() -> None:
    smsc = Smsc({"esme": "secret"}, enquire_link_s=0)
    await smsc.start("127.0.0.1", 0)
    client = await RawClient.connect(smsc.host, smsc.port)
    client.send(Bind(mode=BindMode.TRANSCEIVER, system_id="esme", password="secret"))
    assert (await client.read()).status == Status.ROK
    [mo] = smsc.submit_mo(PHONE, "3339", "HELP")
    pdu = await client.read_until(DeliverSm)  # out, not yet answered, when the stop begins
    stopping = asyncio.create_task(smsc.stop())
    await asyncio.sleep(0)
    client.send(DeliverSmResp(sequence=pdu.sequence))
    await asyncio.wait_for(mo.delivered.wait(), 5)
    unbind = await client.read()
    assert unbind.command_id.name == "UNBIND"
    await client.close()
    await asyncio.wait_for(stopping, 5)


# ---- the MT side: SAR parts, receipt timing, intermediate notifications ---------------------------------
@pytest.fixture
async def smsc() -> AsyncIterator[Smsc]:
    server = Smsc({"esme": "secret"}, enquire_link_s=0, receipt_delay_s=0.05,
                  intermediate_states=(MessageState.ENROUTE, MessageState.ACCEPTED))
    await server.start("127.0.0.1", 0)
    yield server
    await server.stop()


async def esme(smsc: Smsc) -> RawClient:
    client = await RawClient.connect(smsc.host, smsc.port)
    client.send(Bind(mode=BindMode.TRANSCEIVER, system_id="esme", password="secret"))
    resp = await client.read()
    assert isinstance(resp, BindResp) and resp.status == Status.ROK
    return client


async def next_deliver(client: RawClient) -> DeliverSm:
    pdu = await client.read_until(DeliverSm)
    assert isinstance(pdu, DeliverSm)
    client.send(DeliverSmResp(sequence=pdu.sequence))
    return pdu


def mt(text: str, *, registered_delivery: int = 1, **tlvs: int) -> SubmitSm:
    return SubmitSm(source_addr="3339", dest_addr_ton=1, dest_addr_npi=1, destination_addr=PHONE,
                    data_coding=8, short_message=text.encode("utf-16-be"), registered_delivery=registered_delivery,
                    **tlvs)  # type: ignore[arg-type]


async def test_sar_parts_of_a_submit_sm_are_joined_into_one_message_on_the_phone(smsc: Smsc) -> None:
    client = await esme(smsc)
    client.send(mt("Пароль для ", sar_msg_ref_num=0x1234, sar_total_segments=2, sar_segment_seqnum=2))
    client.send(mt("входа: 42", sar_msg_ref_num=0x1234, sar_total_segments=2, sar_segment_seqnum=1))
    ids = {(await client.read_until(SubmitSmResp)).message_id for _ in range(2)}  # type: ignore[attr-defined]
    receipts = [await next_deliver(client), await next_deliver(client)]
    [message] = smsc.phones.get(PHONE).inbox
    assert message.text == "входа: 42Пароль для " and message.sender == "3339"
    assert {r.receipted_message_id for r in receipts} == ids
    assert {r.message_state for r in receipts} == {MessageState.DELIVERED}
    assert smsc.phones.get(PHONE).network[-1].parts == 2
    await client.close()


async def test_the_receipt_comes_a_moment_after_the_submit_sm_resp_never_with_it(smsc: Smsc) -> None:
    client = await esme(smsc)
    client.send(mt("hello"))
    resp = await client.read()
    answered = time.monotonic()
    assert isinstance(resp, SubmitSmResp) and resp.status == Status.ROK
    receipt = await next_deliver(client)
    assert receipt.is_delivery_receipt and receipt.message_state == MessageState.DELIVERED
    assert time.monotonic() - answered >= 0.04  # the setting is 0.05 s
    await client.close()


async def test_intermediate_notifications_go_only_to_an_esme_that_asked(smsc: Smsc) -> None:
    client = await esme(smsc)
    smsc.phones.set_power(PHONE, Power.OFF)  # held: ENROUTE is where it stays for now
    client.send(mt("asked", registered_delivery=0x11))
    message_id = (await client.read_until(SubmitSmResp)).message_id  # type: ignore[attr-defined]
    notes = [await next_deliver(client), await next_deliver(client)]
    assert [n.esm_class for n in notes] == [EsmClass.INTERMEDIATE_NOTIFICATION] * 2
    assert sorted(n.message_state or 0 for n in notes) == [MessageState.ENROUTE, MessageState.ACCEPTED]
    assert {n.receipted_message_id for n in notes} == {message_id}
    smsc.phones.set_power(PHONE, Power.ON)
    final = await next_deliver(client)
    assert final.esm_class == EsmClass.DELIVERY_RECEIPT and final.message_state == MessageState.DELIVERED

    client.send(mt("not asked", registered_delivery=1))
    await client.read_until(SubmitSmResp)
    only = await next_deliver(client)
    assert only.esm_class == EsmClass.DELIVERY_RECEIPT
    await asyncio.wait_for(asyncio.gather(*(m.delivered.wait() for m in list(smsc.mo_pending.values()))), 5)
    await client.close()


# ---- what the phones may send: refused before the encoder; USSD that never ends, or is refused ----------
@pytest.mark.parametrize(("msisdn", "to", "text", "ussd"), [
    ("7" * 21, "3339", "HI", False),  # a 21-character address
    (PHONE, "3" * 21, "HI", False),
    ("7916123456x", "3339", "HI", False),
    (PHONE, "*100#", "Я" * 81, True),  # 81 UCS2 characters: more than one USSD message
    (PHONE, "*100#", "1" * 255, True),  # more than a short_message holds
])
async def test_submit_mo_refuses_what_no_deliver_sm_could_carry(msisdn: str, to: str, text: str, ussd: bool) -> None:
    smsc = Smsc({}, enquire_link_s=0)
    with pytest.raises(MoRefused):
        smsc.submit_mo(msisdn, to, text, ussd_service_op=UssdOp.PSSR_INDICATION if ussd else None)
    assert not smsc.mo_pending and msisdn not in smsc.phones.phones
    await smsc.stop()


@pytest.fixture
async def sim(stack: Stack) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(stack.endpoints["simulator"]) as session:
        yield session


async def test_the_http_api_answers_400_for_what_no_pdu_could_carry(stack: Stack, sim: aiohttp.ClientSession) -> None:
    assert stack.smsc is not None
    bad = [
        ("POST", f"/api/phones/{PHONE}/sms", {"to": "3" * 21, "text": "HI"}),
        ("POST", f"/api/phones/{PHONE}/ussd/dial", {"code": "*1234567890123456789#"}),  # 19-digit service code
        ("POST", f"/api/phones/{PHONE}/ussd/dial", {"code": "*100*" + "1" * 300 + "#"}),
        ("POST", f"/api/phones/{'7' * 21}/ussd/dial", {"code": "*100#"}),
    ]
    for method, path, body in bad:
        async with sim.request(method, path, json=body) as response:
            assert response.status == 400, (path, body, await response.text())
            assert "error" in await response.json()
    async with sim.post(f"/api/phones/{PHONE}/ussd/dial", json={"code": "*111#", "wait": 10}) as response:
        assert (await response.json())["state"] == "waiting"
    version = stack.smsc.phones.get(PHONE).ussd.version
    async with sim.post(f"/api/phones/{PHONE}/ussd/answer", json={"text": "Ж" * 100}) as response:
        assert response.status == 400
    dialogue = stack.smsc.phones.get(PHONE).ussd
    assert dialogue.version == version and dialogue.to_dict()["state"] == "waiting"  # unchanged
    assert all(not t.done() or not t.exception() for t in asyncio.all_tasks())


async def test_the_phone_gives_up_on_a_dialogue_after_the_networks_timeout(settings: Settings) -> None:
    stack = Stack(settings.with_overrides(sim_ussd_timeout_s=30.0))
    await stack.start(gateway=False)  # nobody bound: the network never answers
    try:
        assert stack.handsets is not None and stack.smsc is not None
        dialogue = stack.handsets.dial(PHONE, "*100#")
        assert dialogue.to_dict()["state"] == "sent"
        await stack.handsets.advance_time(29)
        assert dialogue.to_dict()["state"] == "sent"
        await stack.handsets.advance_time(2)
        assert dialogue.to_dict()["state"] == "closed" and dialogue.text == USSD_TIMED_OUT
        assert not dialogue.open
    finally:
        await stack.stop()


async def test_a_dial_the_network_refuses_does_not_stay_sent() -> None:
    smsc = Smsc({"esme": "secret"}, enquire_link_s=0)
    await smsc.start("127.0.0.1", 0)

    handsets = Handsets(smsc)
    try:
        client = await esme(smsc)
        dialogue = handsets.dial(PHONE, "*100#")
        pdu = await client.read_until(DeliverSm)
        client.send(DeliverSmResp(sequence=pdu.sequence, status=Status.RX_P_APPN))
        await smsc.phones.wait_ussd(PHONE, dialogue.version, 5)
        assert dialogue.to_dict()["state"] == "closed" and dialogue.text.startswith(USSD_REFUSED)
        [sent] = smsc.phones.get(PHONE).outbox
        assert sent.state == "rejected" and sent.status == Status.RX_P_APPN
        await client.close()
    finally:
        await handsets.close()
        await smsc.stop()



async def test_a_restarted_smsc_delivers_what_it_still_owed_and_keeps_its_phones(tmp_path: Path) -> None:

    state = str(tmp_path / "smsc-state.json")
    first = Smsc({"esme": "secret"}, enquire_link_s=0, stop_grace_s=0.05, state_file=state)
    await first.start("127.0.0.1", 0)
    first.phones.add_to_inbox(first.phones.get(PHONE), "3339", "an SMS from before")
    entry = Handsets(first).send_sms(PHONE, "3339", "ПАРОЛЬ")
    client = await esme(first)
    unanswered = await client.read_until(DeliverSm)  # out once, never answered
    await client.close()
    await first.stop()

    second = Smsc({"esme": "secret"}, enquire_link_s=0, state_file=state)
    await second.start("127.0.0.1", 0)
    try:
        phone = second.phones.get(PHONE)
        assert [m.text for m in phone.inbox] == ["an SMS from before"]
        [restored] = phone.outbox
        assert (restored.id, restored.state) == (entry.id, "sent")
        [owed] = second.mo_pending.values()
        client = await esme(second)
        again = await next_deliver(client)
        assert (again.short_message, again.user_message_reference) == (unanswered.short_message,
                                                                      unanswered.user_message_reference)
        await asyncio.wait_for(owed.delivered.wait(), 5)
        assert restored.state == "accepted" and not second.mo_pending
        [later] = second.submit_mo(PHONE, "3339", "ПАРОЛЬ")
        assert later.pdu.user_message_reference != unanswered.user_message_reference  # a new MO, not a repeat
        await client.close()
    finally:
        await second.stop()


async def test_a_restart_between_the_parts_of_a_long_mt_or_while_a_phone_is_off_loses_no_mt(tmp_path: Path) -> None:
    """The phone keeps the parts it holds and what waits for it to come back on; the restarted
    SMSC still sends each part's receipt to the ESME that submitted it."""
    state = str(tmp_path / "smsc-state.json")
    off = "79161230000"
    first = Smsc({"esme": "secret"}, enquire_link_s=0, stop_grace_s=0.05, state_file=state)
    await first.start("127.0.0.1", 0)
    first.phones.set_power(off, Power.OFF)
    client = await esme(first)
    client.send(mt("Пароль для ", sar_msg_ref_num=7, sar_total_segments=2, sar_segment_seqnum=1))
    part_one = (await client.read_until(SubmitSmResp)).message_id  # type: ignore[attr-defined]
    client.send(dataclasses.replace(mt("held while off"), destination_addr=off))
    held = (await client.read_until(SubmitSmResp)).message_id  # type: ignore[attr-defined]
    await client.close()
    await first.stop()

    second = Smsc({"esme": "secret"}, enquire_link_s=0, state_file=state)
    await second.start("127.0.0.1", 0)
    try:
        client = await esme(second)
        client.send(mt("входа: 42", sar_msg_ref_num=7, sar_total_segments=2, sar_segment_seqnum=2))
        part_two = (await client.read_until(SubmitSmResp)).message_id  # type: ignore[attr-defined]
        receipts = {(await next_deliver(client)).receipted_message_id for _ in range(2)}
        assert receipts == {part_one, part_two}
        [message] = second.phones.get(PHONE).inbox
        assert message.text == "Пароль для входа: 42"
        second.phones.set_power(off, Power.ON)
        landed = await next_deliver(client)
        assert (landed.receipted_message_id, landed.message_state) == (held, MessageState.DELIVERED)
        assert [m.text for m in second.phones.get(off).inbox] == ["held while off"]
        await client.close()
    finally:
        await second.stop()
