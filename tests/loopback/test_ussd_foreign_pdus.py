"""USSD PDUs written by another implementation, byte by byte, over loopback TCP into the real gateway."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from gateway.service import Gateway
from handlers.registry import build_router
from tests.support.pdus import foreign_deliver_sm
from ussdgw.config import Settings
from ussdgw.smpp.pdu import Bind, BindResp, DeliverSmResp, Status, SubmitSm, SubmitSmResp, UssdOp
from ussdgw.smpp.session import RequestReceived, ResponseReceived, Role, SmppSession
from ussdgw.smpp.text import decode_text
from ussdgw.smpp.ussd import SessionInfo, unpack_session_info
from ussdgw.store import AuditEvent, Store


class RawSmsc:
    """An SMSC that answers the bind by the book but writes its deliver_sm as raw bytes."""

    def __init__(self) -> None:
        self.submits: asyncio.Queue[SubmitSm] = asyncio.Queue()
        self.responses: asyncio.Queue[DeliverSmResp] = asyncio.Queue()
        self.bound = asyncio.Event()
        self.writer: asyncio.StreamWriter | None = None
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> tuple[str, int]:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        host, port = self.server.sockets[0].getsockname()[:2]
        return host, port

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        self.writer = writer
        session = SmppSession(Role.SMSC)
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            while data := await reader.read(65536):
                for event in session.receive_data(data):
                    if isinstance(event, RequestReceived) and isinstance(event.pdu, Bind):
                        session.respond(event.pdu, BindResp(mode=event.pdu.mode, system_id="raw-smsc"))
                        self.bound.set()
                    elif isinstance(event, RequestReceived) and isinstance(event.pdu, SubmitSm):
                        session.respond(event.pdu, SubmitSmResp(message_id=f"raw{self.submits.qsize()}"))
                        self.submits.put_nowait(event.pdu)
                    elif isinstance(event, ResponseReceived) and isinstance(event.pdu, DeliverSmResp):
                        self.responses.put_nowait(event.pdu)
                writer.write(session.data_to_send())
        writer.close()

    def inject(self, raw: bytes) -> None:
        assert self.writer is not None
        self.writer.write(raw)

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


@pytest.fixture
async def raw_gateway(settings: Settings, store: Store) -> AsyncIterator[tuple[RawSmsc, Store]]:
    smsc = RawSmsc()
    host, port = await smsc.start()
    gateway = Gateway(settings.with_overrides(smsc_host=host, smsc_port=port), store, build_router())
    await gateway.start()
    await gateway.wait_bound(5)
    yield smsc, store
    await gateway.stop()
    await smsc.stop()


async def exchange(smsc: RawSmsc, raw: bytes) -> tuple[DeliverSmResp, SubmitSm]:
    smsc.inject(raw)
    async with asyncio.timeout(10):
        return await smsc.responses.get(), await smsc.submits.get()


async def test_a_foreign_gsm7_0x0f_dial_gets_its_ussd_reply_with_session_info_closed(
    raw_gateway: tuple[RawSmsc, Store],
) -> None:
    smsc, store = raw_gateway
    await store.subscribers.put("79161234567", {"balance_kop": 9900, "owner_id": "p-1", "region": "77"},
                               AuditEvent("seeded", "admin"))
    resp, submit = await exchange(smsc, foreign_deliver_sm(b"*100#", 0x0F, UssdOp.PSSR_INDICATION, 0x2A02, 77))
    assert (resp.sequence, resp.status) == (77, Status.ROK)
    assert submit.service_type == "USSD" and submit.destination_addr == "79161234567"
    assert submit.ussd_service_op == UssdOp.PSSR_RESPONSE
    assert unpack_session_info(submit.its_session_info or 0) == SessionInfo(0x2A, 1, end=True)
    assert decode_text(submit.short_message, submit.data_coding) == "Ваш баланс: 99\u00a0₽."


async def test_a_foreign_ucs2_0x48_dialogue_is_walked_step_by_step(raw_gateway: tuple[RawSmsc, Store]) -> None:
    smsc, _ = raw_gateway
    resp, menu = await exchange(smsc, foreign_deliver_sm("*111#".encode("utf-16-be"), 0x48, 1, 0x2B02, 78))
    assert resp.status == Status.ROK and menu.ussd_service_op == UssdOp.USSR_REQUEST
    assert menu.its_session_info == 0x2B02  # echoed, the dialogue goes on
    assert decode_text(menu.short_message, menu.data_coding).startswith("Мой МТС")
    resp, tariffs = await exchange(smsc, foreign_deliver_sm("2".encode("utf-16-be"), 0x48, 18, 0x2B04, 79))
    assert resp.status == Status.ROK and tariffs.ussd_service_op == UssdOp.USSR_REQUEST
    assert "Тарифы" in decode_text(tariffs.short_message, tariffs.data_coding)
    assert tariffs.its_session_info == 0x2B04


async def test_a_foreign_release_with_a_vendor_op_is_acknowledged_without_a_reply(
    raw_gateway: tuple[RawSmsc, Store],
) -> None:
    smsc, store = raw_gateway
    await exchange(smsc, foreign_deliver_sm(b"*111#", 0x0F, 1, 0x2C02, 80))
    smsc.inject(foreign_deliver_sm(b"", 0x0F, 0x81, 0x2C05, 81))
    resp = await asyncio.wait_for(smsc.responses.get(), 10)
    assert (resp.sequence, resp.status) == (81, Status.ROK) and smsc.submits.empty()
    assert "ussd_aborted" in [e["event"] for e in await store.audit_trail("79161234567")]


async def test_without_reference_or_session_info_the_same_answer_on_two_screens_counts_twice(
    raw_gateway: tuple[RawSmsc, Store],
) -> None:
    smsc, _ = raw_gateway
    screens = []
    for seq, (op, text) in enumerate([(1, b"*111#"), (18, b"2"), (18, b"0"), (18, b"2"), (18, b"98")], start=90):
        resp, submit = await exchange(smsc, foreign_deliver_sm(text, 0x0F, op, None, seq))
        assert resp.status == Status.ROK
        screens.append(decode_text(submit.short_message, submit.data_coding))
    assert screens[1].startswith("Ваш тариф") or screens[1].startswith("Тарифы")
    assert screens[2].startswith("Мой МТС")
    assert screens[3] == screens[1]
    assert "0 Назад" in screens[4] and not screens[4].startswith("Нет такого пункта")  # the dialogue moved on
