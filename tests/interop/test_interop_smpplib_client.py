"""The SMSC simulator serving smpplib's own blocking client (`smpplib.client.Client`, code this
project did not write) over loopback TCP: bind, an MT with its delivery receipt, an MO, unbind."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest
import smpplib.client
import smpplib.consts
import smpplib.gsm

from simulator.smsc import Smsc
from ussdgw.smpp.pdu import MessageState

PHONE = "79161234567"


@pytest.fixture
async def smsc() -> AsyncIterator[Smsc]:
    server = Smsc({"smpplib": "secret"}, enquire_link_s=0)
    await server.start("127.0.0.1", 0)
    yield server
    await server.stop()


def run_smpplib_esme(port: int, mo_wanted: threading.Event, mo_sent: threading.Event) -> dict[str, Any]:
    """Everything a plain smpplib ESME does and sees; runs in a thread (smpplib blocks)."""
    seen: dict[str, Any] = {"sent": [], "received": []}
    client = smpplib.client.Client("127.0.0.1", port, timeout=10, allow_unknown_opt_params=True)
    client.set_message_sent_handler(lambda pdu: seen["sent"].append(pdu.message_id.decode()))

    def received(pdu: Any) -> int:
        seen["received"].append({
            "esm_class": pdu.esm_class, "source_addr": pdu.source_addr.decode(),
            "destination_addr": pdu.destination_addr.decode(), "short_message": pdu.short_message,
            "data_coding": pdu.data_coding, "receipted_message_id": pdu.receipted_message_id,
            "message_state": pdu.message_state,
        })
        return 0  # ESME_ROK in the deliver_sm_resp

    client.set_message_received_handler(received)
    client.connect()
    try:
        client.bind_transceiver(system_id="smpplib", password="secret")
        parts, encoding, esm_class = smpplib.gsm.make_parts("Привет из smpplib")
        for part in parts:
            client.send_message(
                source_addr_ton=smpplib.consts.SMPP_TON_ALNUM, source_addr="TESTER",
                dest_addr_ton=smpplib.consts.SMPP_TON_INTL, destination_addr=PHONE,
                short_message=part, data_coding=encoding, esm_class=esm_class, registered_delivery=True,
            )
        while not seen["sent"] or not seen["received"]:
            client.read_once()  # the submit_sm_resp, then the delivery receipt
        mo_wanted.set()
        assert mo_sent.wait(10)
        while len(seen["received"]) < 2:
            client.read_once()  # the MO
        client.unbind()
    finally:
        client.disconnect()
    return seen


async def test_smpplib_client_binds_submits_gets_its_receipt_and_an_mo_then_unbinds(smsc: Smsc) -> None:
    mo_wanted, mo_sent = threading.Event(), threading.Event()
    esme = asyncio.create_task(asyncio.to_thread(run_smpplib_esme, smsc.port, mo_wanted, mo_sent))
    await asyncio.wait_for(asyncio.to_thread(mo_wanted.wait, 10), 15)
    smsc.submit_mo(PHONE, "TESTER", "ответ")
    mo_sent.set()
    seen = await asyncio.wait_for(esme, 15)

    [message_id] = seen["sent"]
    receipt, mo = seen["received"]
    assert receipt["esm_class"] & 0x04 and receipt["receipted_message_id"].decode() == message_id
    assert receipt["message_state"] == MessageState.DELIVERED
    assert f"id:{message_id}".encode() in receipt["short_message"]
    assert (mo["source_addr"], mo["destination_addr"], mo["data_coding"]) == (PHONE, "TESTER", 8)
    assert mo["short_message"].decode("utf-16-be") == "ответ"
    inbox = smsc.phones.get(PHONE).inbox
    assert [m.text for m in inbox] == ["Привет из smpplib"]
    assert smsc.unbinds == ["smpplib"]
