"""Test peers that speak SMPP over real loopback TCP: a raw client (to poke the SMSC simulator with
PDUs in any order) and a scripted SMSC (to make the gateway meet what a carrier might do: late,
missing or out-of-order responses, receipts before submit_sm_resp)."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace

from gateway.service import Gateway
from handlers.registry import build_router
from ussdgw.config import Settings
from ussdgw.smpp import codec
from ussdgw.smpp.pdu import Bind, BindResp, DeliverSm, Pdu, SubmitSm, SubmitSmResp
from ussdgw.smpp.session import RequestReceived, ResponseReceived, Role, SmppSession
from ussdgw.store import Store


class RawClient:
    """Writes PDUs (or raw bytes) to a server and reads back whatever PDUs come, in order."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.sequence = 0

    @classmethod
    async def connect(cls, host: str, port: int) -> RawClient:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    def send(self, pdu: Pdu) -> int:
        """Send with the next sequence number (unless the PDU has one); returns it."""
        if not pdu.sequence:
            self.sequence += 1
            pdu = replace(pdu, sequence=self.sequence)
        self.writer.write(codec.encode(pdu))
        return pdu.sequence

    def send_raw(self, data: bytes) -> None:
        self.writer.write(data)

    async def read(self, timeout: float = 5.0) -> Pdu:
        async with asyncio.timeout(timeout):
            header = await self.reader.readexactly(16)
            (length,) = struct.unpack(">I", header[:4])
            return codec.decode(header + await self.reader.readexactly(length - 16))

    async def read_until(self, kind: type[Pdu], timeout: float = 5.0) -> Pdu:
        """The next PDU of `kind`, skipping (not answering) whatever comes before it."""
        async with asyncio.timeout(timeout):
            while True:
                pdu = await self.read(timeout)
                if isinstance(pdu, kind):
                    return pdu

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


SubmitHook = Callable[["ScriptedSmsc", SmppSession, SubmitSm], Awaitable[Pdu | None]]


class ScriptedSmsc:
    """An SMSC whose answer to each submit_sm is written by the test (`on_submit`); it accepts any
    bind, records what it got, and can push deliver_sm to the bound ESME."""

    def __init__(self, on_submit: SubmitHook | None = None) -> None:
        self.on_submit = on_submit
        self.submits: list[SubmitSm] = []
        self.submitted: asyncio.Queue[SubmitSm] = asyncio.Queue()
        self.responses: asyncio.Queue[Pdu] = asyncio.Queue()
        self.bound = asyncio.Event()
        self.binds = 0
        self.session: SmppSession | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.message_ids = 0

    async def start(self) -> tuple[str, int]:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        host, port = self.server.sockets[0].getsockname()[:2]
        return host, port

    def flush(self) -> None:
        if self.session is not None and self.writer is not None and not self.writer.is_closing():
            self.writer.write(self.session.data_to_send())

    def next_message_id(self) -> str:
        self.message_ids += 1
        return f"msg{self.message_ids:04d}"

    async def deliver(self, pdu: DeliverSm) -> None:
        assert self.session is not None
        self.session.send(pdu)
        self.flush()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        session = self.session = SmppSession(Role.SMSC)
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            while data := await reader.read(65536):
                for event in session.receive_data(data):
                    if isinstance(event, RequestReceived) and isinstance(event.pdu, Bind):
                        session.respond(event.pdu, BindResp(mode=event.pdu.mode, system_id="scripted"))
                        self.binds += 1
                        self.bound.set()
                    elif isinstance(event, RequestReceived) and isinstance(event.pdu, SubmitSm):
                        self.submits.append(event.pdu)
                        self.submitted.put_nowait(event.pdu)
                        task = asyncio.create_task(self._answer(session, event.pdu))
                        self.tasks.add(task)
                        task.add_done_callback(self.tasks.discard)
                    elif isinstance(event, ResponseReceived):
                        self.responses.put_nowait(event.pdu)
                self.flush()
        writer.close()

    async def _answer(self, session: SmppSession, pdu: SubmitSm) -> None:
        if self.on_submit is None:
            resp: Pdu | None = SubmitSmResp(message_id=self.next_message_id())
        else:
            resp = await self.on_submit(self, session, pdu)
        if resp is not None:
            session.respond(pdu, resp)
            self.flush()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        if self.writer is not None:
            self.writer.close()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


@contextlib.asynccontextmanager
async def gateway_against(smsc: ScriptedSmsc, store: Store, settings: Settings) -> AsyncIterator[Gateway]:
    """The real gateway, with its Redis `store`, bound to `smsc`."""
    host, port = await smsc.start()
    gateway = Gateway(settings.with_overrides(smsc_host=host, smsc_port=port), store, build_router())
    await gateway.start()
    try:
        await gateway.wait_bound(5)
        yield gateway
    finally:
        await gateway.stop()
        await smsc.stop()
