"""The SMSC simulator as a carrier's engineer would probe it: raw PDUs over loopback TCP, in orders
a well-behaved ESME never sends, and the answers SMPP 3.4 prescribes."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator

import pytest

from simulator.smsc import Smsc
from tests.support.smpp_peer import RawClient
from ussdgw.smpp.pdu import (
    Bind,
    BindMode,
    BindResp,
    DataSm,
    DataSmResp,
    DeliverSm,
    DeliverSmResp,
    EnquireLink,
    EnquireLinkResp,
    GenericNack,
    QuerySm,
    QuerySmResp,
    Status,
    SubmitSm,
    SubmitSmResp,
    Unbind,
    UnbindResp,
)

MT = SubmitSm(source_addr="3339", dest_addr_ton=1, dest_addr_npi=1, destination_addr="79161234567",
              short_message=b"hello", registered_delivery=1)


@pytest.fixture
async def smsc() -> AsyncIterator[Smsc]:
    server = Smsc({"esme": "secret"}, enquire_link_s=0)
    await server.start("127.0.0.1", 0)
    yield server
    await server.stop()


async def bound_client(smsc: Smsc, mode: BindMode = BindMode.TRANSCEIVER) -> RawClient:
    client = await RawClient.connect(smsc.host, smsc.port)
    client.send(Bind(mode=mode, system_id="esme", password="secret"))
    resp = await client.read()
    assert isinstance(resp, BindResp) and resp.status == Status.ROK and resp.mode is mode
    return client


async def test_submit_sm_before_bind_is_refused_with_invalid_bind_status(smsc: Smsc) -> None:
    client = await RawClient.connect(smsc.host, smsc.port)
    seq = client.send(MT)
    resp = await client.read()
    assert isinstance(resp, SubmitSmResp) and (resp.sequence, resp.status) == (seq, Status.RINVBNDSTS)
    await client.close()


async def test_a_second_bind_on_a_bound_session_is_refused_with_already_bound(smsc: Smsc) -> None:
    client = await bound_client(smsc)
    client.send(Bind(mode=BindMode.TRANSMITTER, system_id="esme", password="secret"))
    resp = await client.read()
    assert isinstance(resp, BindResp) and resp.status == Status.RALYBND
    await client.close()


@pytest.mark.parametrize(("system_id", "password", "status"),
                         [("esme", "wrong", Status.RINVPASWD), ("nobody", "secret", Status.RINVSYSID)])
async def test_a_refused_bind_leaves_the_session_open_for_another_try(
    smsc: Smsc, system_id: str, password: str, status: Status,
) -> None:
    client = await RawClient.connect(smsc.host, smsc.port)
    client.send(Bind(mode=BindMode.TRANSCEIVER, system_id=system_id, password=password))
    refused = await client.read()
    assert isinstance(refused, BindResp) and refused.status == status
    client.send(Bind(mode=BindMode.TRANSCEIVER, system_id="esme", password="secret"))
    assert (await client.read()).status == Status.ROK
    await client.close()


async def test_a_receiver_bind_may_not_submit(smsc: Smsc) -> None:
    client = await bound_client(smsc, BindMode.RECEIVER)
    client.send(MT)
    resp = await client.read()
    assert isinstance(resp, SubmitSmResp) and resp.status == Status.RINVBNDSTS
    await client.close()


async def test_mos_go_to_a_receiver_bind_never_to_a_transmitter_bind(smsc: Smsc) -> None:
    transmitter = await bound_client(smsc, BindMode.TRANSMITTER)
    receiver = await bound_client(smsc, BindMode.RECEIVER)
    [mo] = smsc.submit_mo("79161234567", "3339", "ПАРОЛЬ")
    pdu = await receiver.read()
    assert isinstance(pdu, DeliverSm) and pdu.source_addr == "79161234567"
    receiver.send(DeliverSmResp(sequence=pdu.sequence))
    await asyncio.wait_for(mo.delivered.wait(), 5)
    transmitter.send(EnquireLink())
    assert isinstance(await transmitter.read(), EnquireLinkResp)  # and nothing else came before it
    await transmitter.close()
    await receiver.close()


async def test_an_unknown_command_id_gets_generic_nack_and_the_session_goes_on(smsc: Smsc) -> None:
    client = await bound_client(smsc)
    client.send_raw(struct.pack(">IIII", 16, 0x00000021, 0, 77))  # submit_multi: not served here
    nack = await client.read()
    assert isinstance(nack, GenericNack) and (nack.sequence, nack.status) == (77, Status.RINVCMDID)
    seq = client.send(MT)
    resp = await client.read()
    assert isinstance(resp, SubmitSmResp) and resp.sequence == seq and resp.status == Status.ROK
    await client.close()


async def test_a_malformed_submit_sm_is_answered_with_an_error_and_the_session_goes_on(smsc: Smsc) -> None:
    client = await bound_client(smsc)
    body = b"\x00\x01\x01791612"  # the source address never ends
    client.send_raw(struct.pack(">IIII", 16 + len(body), 0x04, 0, 78) + body)
    nack = await client.read()
    assert nack.sequence == 78 and nack.status == Status.RINVCMDLEN
    client.send(EnquireLink(sequence=79))
    assert await client.read() == EnquireLinkResp(sequence=79)
    await client.close()


async def test_query_sm_reports_the_state_of_a_submitted_mt_and_fails_for_an_unknown_id(smsc: Smsc) -> None:
    client = await bound_client(smsc, BindMode.TRANSMITTER)
    client.send(MT)
    submitted = await client.read()
    assert isinstance(submitted, SubmitSmResp) and submitted.message_id
    client.send(QuerySm(message_id=submitted.message_id, source_addr="3339"))
    query = await client.read()
    assert isinstance(query, QuerySmResp) and query.message_id == submitted.message_id
    assert query.message_state == smsc.mt_records[submitted.message_id].state
    client.send(QuerySm(message_id="nope", source_addr="3339"))
    assert (await client.read()).status == Status.RQUERYFAIL
    await client.close()


async def test_data_sm_is_accepted_as_an_mt(smsc: Smsc) -> None:
    client = await bound_client(smsc)
    client.send(DataSm(source_addr="3339", destination_addr="79161234567", message_payload=b"hi"))
    resp = await client.read()
    assert isinstance(resp, DataSmResp) and resp.status == Status.ROK and resp.message_id in smsc.mt_records
    await client.close()


async def test_unbind_is_answered_and_recorded(smsc: Smsc) -> None:
    client = await bound_client(smsc)
    client.send(Unbind(sequence=5))
    assert await client.read() == UnbindResp(sequence=5)
    assert smsc.unbinds == ["esme"]
    await client.close()


async def test_the_smsc_probes_with_enquire_link_and_drops_an_esme_that_stops_answering() -> None:
    server = Smsc({"esme": "secret"}, enquire_link_s=0.1, deliver_timeout_s=0.3)
    await server.start("127.0.0.1", 0)
    try:
        client = await bound_client(server)
        probe = await client.read()
        assert isinstance(probe, EnquireLink)
        client.send(EnquireLinkResp(sequence=probe.sequence))
        await client.read_until(EnquireLink)  # answered once: probed again; now stay silent
        async with asyncio.timeout(5):
            assert await client.reader.read() == b""  # the SMSC closed the link
        assert not server.connections
    finally:
        await server.stop()


async def test_stopping_the_smsc_unbinds_every_esme_first(smsc: Smsc) -> None:
    client = await bound_client(smsc)
    stopping = asyncio.create_task(smsc.stop())
    unbind = await client.read()
    assert isinstance(unbind, Unbind)
    client.send(UnbindResp(sequence=unbind.sequence))
    await asyncio.wait_for(stopping, 5)
    await client.close()


async def test_refuse_switch_answers_queue_full_then_accepts(smsc: Smsc) -> None:
    client = await bound_client(smsc)
    smsc.refuse_submits.extend([Status.RMSGQFUL, Status.RTHROTTLED])
    statuses = []
    for _ in range(3):
        client.send(MT)
        statuses.append((await client.read()).status)
    assert statuses == [Status.RMSGQFUL, Status.RTHROTTLED, Status.ROK]
    await client.close()


async def test_max_submit_rate_throttles_a_burst_beyond_it() -> None:
    server = Smsc({"esme": "secret"}, enquire_link_s=0, max_submit_per_s=10)
    await server.start("127.0.0.1", 0)
    try:
        client = await bound_client(server)
        for _ in range(20):
            client.send(MT)
        statuses = [(await client.read()).status for _ in range(20)]
        assert statuses.count(Status.RTHROTTLED) >= 15  # the burst allowance is one second's tenth
        assert statuses[0] == Status.ROK
        await client.close()
    finally:
        await server.stop()
