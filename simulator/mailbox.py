"""The simulator's mail side (SPEC D3): a local SMTP sink (aiosmtpd) and a mailbox view over HTTP.

Every address has a state a tester can set: `ok` (mail lands in its mailbox), `full` (RCPT gets
452 4.2.2, as a full mailbox does), `unknown` (550 5.1.1, no such user). The platform's mailer
sees the same codes a real server gives, so a failed e-mail is visible end to end.

    GET   /api/mail                              every mailbox, its state and message count
    GET   /api/mail/{address}?after=N&wait=S     messages after seq N, waiting up to S s
    PATCH /api/mail/{address}                    {"state": "ok" | "full" | "unknown"}
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
from dataclasses import asdict, dataclass, field
from email.message import EmailMessage
from enum import StrEnum
from typing import Any

from aiohttp import web
from aiosmtpd.smtp import SMTP, Envelope, Session

from ussdgw.clock import Clock
from ussdgw.connections import Gate, GuardedProtocol
from ussdgw.inputs import parse_whole_number
from ussdgw.logs import get_logger
from ussdgw.web import body_timeout, read_json_object

log = get_logger("ussdgw.simulator.mail")


class MailboxState(StrEnum):
    OK = "ok"
    FULL = "full"
    UNKNOWN = "unknown"


REFUSALS = {
    MailboxState.FULL: "452 4.2.2 Mailbox full",
    MailboxState.UNKNOWN: "550 5.1.1 No such user here",
}


@dataclass(slots=True)
class Mail:
    seq: int
    sender: str
    to: str
    subject: str
    body: str
    attachments: list[dict[str, Any]]
    received_at: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class Mailbox:
    address: str
    state: MailboxState = MailboxState.OK
    messages: list[Mail] = field(default_factory=list)


class PostOffice:
    """All mailboxes, and the aiosmtpd handler that fills them; `clock` stamps `received_at`."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock = clock or Clock()
        self.boxes: dict[str, Mailbox] = {}
        self._seq = 0
        self._changed = asyncio.Condition()
        self._server: asyncio.Server | None = None
        self.gate = Gate("smtp", 64)
        self.port = 0

    def find(self, address: str) -> Mailbox | None:
        return self.boxes.get(address.strip().lower())

    def box(self, address: str) -> Mailbox:
        address = address.strip().lower()
        if address not in self.boxes:
            self.boxes[address] = Mailbox(address)
        return self.boxes[address]

    # ---- aiosmtpd handler hooks ----
    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        box = self.box(address)
        refusal = REFUSALS.get(box.state)
        if refusal is not None:
            log.info("mail_refused", state=box.state.value)
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content or b""
        data = raw if isinstance(raw, bytes) else raw.encode()
        parsed = email.message_from_bytes(data, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        body_part = parsed.get_body(preferencelist=("plain",))
        body = str(body_part.get_content()) if body_part is not None else ""
        attachments: list[dict[str, Any]] = []
        for part in parsed.iter_attachments():
            raw_payload = part.get_payload(decode=True)
            payload = raw_payload if isinstance(raw_payload, bytes) else b""
            entry: dict[str, Any] = {"filename": part.get_filename(), "content_type": part.get_content_type(),
                                     "size": len(payload)}
            if part.get_content_maintype() == "text":
                entry["text"] = payload.decode("utf-8", "replace")
            attachments.append(entry)
        for rcpt in envelope.rcpt_tos:
            self._seq += 1
            self.box(rcpt).messages.append(Mail(self._seq, envelope.mail_from or "", rcpt.lower(),
                                                str(parsed.get("Subject", "")), body, attachments,
                                                self.clock.now()))
        async with self._changed:
            self._changed.notify_all()
        return "250 Message accepted for delivery"

    # ---- lifecycle ----
    async def start(self, host: str = "127.0.0.1", port: int = 0, *, timeout_s: float = 30.0,
                    max_connections: int = 64) -> tuple[str, int]:
        """Listen for SMTP: at most `max_connections` sessions (421 beyond), each dropped after
        `timeout_s` without a command (aiosmtpd's own timeout)."""
        loop = asyncio.get_running_loop()
        self.gate = Gate("smtp", max_connections)

        def session() -> GuardedProtocol:
            return GuardedProtocol(lambda: SMTP(self, hostname="smtp.sim", ident="ussdgw sim", timeout=timeout_s),
                                   self.gate, refusal=SMTP_BUSY)

        self._server = await loop.create_server(session, host, port)
        sock = self._server.sockets[0].getsockname()
        self.port = int(sock[1])
        log.info("smtp_sink_listening", host=host, port=self.port)
        return host, self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def wait_mail(self, address: str, after: int, timeout: float) -> list[Mail]:
        box = self.box(address)

        def fresh() -> list[Mail]:
            return [m for m in box.messages if m.seq > after]

        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait_for(lambda: bool(fresh())), timeout)
        return fresh()

    @property
    def last_seq(self) -> int:
        return self._seq


MAX_ADDRESS = 254  # characters of an e-mail address (RFC 5321 path limit)
SMTP_BUSY = b"421 4.7.0 smtp.sim Too many connections, try again later\r\n"

POST_OFFICE_KEY = web.AppKey("post_office", PostOffice)


def _error(status: int, message: str, field: str | None = None) -> web.Response:
    return web.json_response({"error": message} if field is None else {"error": message, "field": field},
                             status=status)


async def list_boxes(request: web.Request) -> web.Response:
    office = request.app[POST_OFFICE_KEY]
    return web.json_response({"mailboxes": [
        {"address": b.address, "state": b.state.value, "count": len(b.messages)} for b in office.boxes.values()]})


async def get_box(request: web.Request) -> web.Response:
    office = request.app[POST_OFFICE_KEY]
    address = request.match_info["address"]
    if "@" not in address or len(address) > MAX_ADDRESS:
        return _error(400, "address must be an e-mail address", "address")
    after = parse_whole_number(request.query.get("after", "0"), maximum=2**53)
    if after is None:
        return _error(400, "after must be a whole number", "after")
    wait = parse_whole_number(request.query.get("wait", "0"), maximum=60)
    if wait is None:
        return _error(400, "wait must be whole seconds, 0 to 60", "wait")
    if office.find(address) is None and wait <= 0:  # a look makes no mailbox: an empty one is shown
        return web.json_response({"address": address.strip().lower(), "state": MailboxState.OK.value,
                                  "messages": [], "last_seq": office.last_seq})
    messages = await office.wait_mail(address, after, wait) if wait > 0 else [
        m for m in office.box(address).messages if m.seq > after]
    box = office.box(address)
    return web.json_response({"address": box.address, "state": box.state.value,
                              "messages": [m.to_dict() for m in messages], "last_seq": office.last_seq})


async def patch_box(request: web.Request) -> web.Response:
    office = request.app[POST_OFFICE_KEY]
    address = request.match_info["address"]
    if "@" not in address or len(address) > MAX_ADDRESS:
        return _error(400, "address must be an e-mail address", "address")
    body = await read_json_object(request, max_bytes=4096, timeout_s=body_timeout(request))
    try:
        state = MailboxState(body["state"])
    except (ValueError, KeyError, TypeError):
        return _error(400, f"body must be {{\"state\": one of {[s.value for s in MailboxState]}}}", "state")
    box = office.box(address)
    box.state = state
    return web.json_response({"address": box.address, "state": box.state.value, "count": len(box.messages)})


def register_routes(app: web.Application, office: PostOffice) -> None:
    """Add the mailbox view to an aiohttp app (the simulator's HTTP API) before it starts."""
    app[POST_OFFICE_KEY] = office
    app.router.add_get("/api/mail", list_boxes)
    app.router.add_get("/api/mail/{address}", get_box)
    app.router.add_patch("/api/mail/{address}", patch_box)
