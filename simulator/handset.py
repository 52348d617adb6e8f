"""What a tester does with a virtual phone, whoever drives it: the HTTP API (and so the web phone,
`ussdgw dial`, scenarios) or code in the same process.

    send an SMS to a short code        -> the MO goes to the gateway through the SMSC; the phone's
                                          outbox shows it `sent`, then `accepted` or `rejected`
                                          (`PhoneBook.mo_settled`, told by the SMSC)
    dial a USSD string, answer, cancel -> the phone's USSD dialogue (see `simulator.phones`)
    advance the simulator's clock      -> held MTs expire; registered time hooks run (e.g. the
                                          USSD service's review of pending applications, SPEC N2).
                                          It is the phone book's clock, which the composition root
                                          (`ussdgw.app.stack`) shares with the platform in one process
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from simulator.phones import OutboxEntry, PhoneBook, UssdDialogue
from simulator.smsc import MoRefused, Smsc, check_mo, check_text
from ussdgw.logs import get_logger
from ussdgw.smpp.text import split_text
from ussdgw.smpp.ussd import UssdRequest

log = get_logger("ussdgw.simulator")

TimeHook = Callable[[float], Awaitable[Any]]

SHORT_CODE = re.compile(r"\d{1,8}")  # a service's number (3339): the platform answers it
SUBSCRIBER = re.compile(r"\d{10,15}")  # another subscriber's number: the network delivers phone to phone
_SEPARATORS = re.compile(r"[\s()-]")


@dataclass(frozen=True, slots=True)
class Recipient:
    number: str
    subscriber: bool  # True: another phone; False: a short code of the platform


def recipient_of(to: str) -> Recipient:
    """Where an SMS typed into a phone goes: `+7 916 123-45-67`, `89161234567` and `9161234567`
    are the subscriber 79161234567; `3339` is a short code. Anything else (`3339#`, `*100#`,
    letters, 9 digits) raises `MoRefused` with code `bad_recipient`: a phone would not send it."""
    raw = _SEPARATORS.sub("", to) if isinstance(to, str) else ""
    if raw.startswith("+") and SUBSCRIBER.fullmatch(raw[1:]):
        return Recipient(raw[1:], True)
    if len(raw) == 11 and raw.startswith("8") and raw.isdigit():
        return Recipient("7" + raw[1:], True)
    if len(raw) == 10 and raw.startswith("9") and raw.isdigit():
        return Recipient("7" + raw, True)
    if SUBSCRIBER.fullmatch(raw):
        return Recipient(raw, True)
    if SHORT_CODE.fullmatch(raw):
        return Recipient(raw, False)
    raise MoRefused(f"the recipient must be a short code (1-8 digits) or a subscriber's number "
                    f"(+7 and 10 digits, 10-15 digits), not {str(to)[:30]!r}", "to", "bad_recipient")


class Handsets:
    def __init__(self, smsc: Smsc) -> None:
        self.smsc = smsc
        self.time_hooks: dict[str, TimeHook] = {}

    @property
    def phones(self) -> PhoneBook:
        return self.smsc.phones

    async def close(self) -> None:
        """Nothing runs here: the phone book follows each MO to its acknowledgement (`mo_settled`)."""

    # ---- SMS ----------------------------------------------------------------------------------
    def send_sms(self, msisdn: str, to: str, text: str) -> OutboxEntry:
        """Send an SMS: to a short code through the platform, to another subscriber's number
        straight to that phone (`recipient_of`); raises `MoRefused` (nothing sent) for a recipient
        a phone would not take or what no deliver_sm could carry."""
        recipient = recipient_of(to)
        to = recipient.number
        if recipient.subscriber:
            check_mo(msisdn, to, text)
            if to == msisdn:
                raise MoRefused("a phone does not send an SMS to its own number", "to", "own_number")
            entry = self.phones.phone_to_phone(msisdn, to, text, validity_s=self.smsc.validity_s,
                                               parts=len(split_text(text, reference=0).parts) if text else 1)
            log.info("phone_sms_to_phone", msisdn=msisdn, to=to)
            return entry
        queued = self.smsc.submit_mo(msisdn, to, text)
        entry = self.phones.record_sent(msisdn, to, text, "sms", [m.mo_id for m in queued])
        log.info("phone_sms_sent", msisdn=msisdn, to=to, parts=len(queued))
        return entry

    # ---- USSD ---------------------------------------------------------------------------------
    def _send_ussd(self, msisdn: str, request: UssdRequest) -> None:
        queued = self.smsc.submit_mo(msisdn, request.to, request.text, ussd_service_op=request.op,
                                     its_session_info=request.its_session_info)
        # A refusal ends the phone's wait for the answer to this request only (its dialogue version).
        self.phones.record_sent(msisdn, request.to, request.text, "ussd", [m.mo_id for m in queued],
                                ussd_version=self.phones.get(msisdn).ussd.version)

    def dial(self, msisdn: str, code: str) -> UssdDialogue:
        """Dial a USSD string; raises `UssdError` for a malformed one or a phone without network,
        `MoRefused` for a number no deliver_sm could carry (nothing changes then)."""
        check_mo(msisdn, "*0#", "", ussd=True)
        request = self.phones.ussd_dial(msisdn, code)
        self._send_ussd(msisdn, request)
        log.info("phone_ussd_dialled", msisdn=msisdn, service=code)
        return self.phones.get(msisdn).ussd

    def answer(self, msisdn: str, text: str) -> UssdDialogue:
        """Answer the network's question; raises `UssdError` when nothing was asked, `MoRefused`
        for an answer too long for one USSD message (the dialogue stays as it was)."""
        check_text(text, ussd=True)
        request = self.phones.ussd_answer(msisdn, text)
        self._send_ussd(msisdn, request)
        return self.phones.get(msisdn).ussd

    def cancel(self, msisdn: str) -> UssdDialogue:
        """Close the USSD popup; an open dialogue is ended towards the network too."""
        request = self.phones.ussd_cancel(msisdn)
        if request is not None:
            self._send_ussd(msisdn, request)
            log.info("phone_ussd_cancelled", msisdn=msisdn)
        return self.phones.get(msisdn).ussd

    async def wait_ussd(self, msisdn: str, version: int, timeout: float) -> UssdDialogue:
        return await self.phones.wait_ussd(msisdn, version, timeout)

    # ---- time ---------------------------------------------------------------------------------
    async def advance_time(self, seconds: float) -> dict[str, Any]:
        """Fast-forward the simulator's clock (the platform's too, in one process), then run every
        registered hook (SPEC N2 review, ...)."""
        expired = self.phones.advance(seconds)
        hooks: dict[str, Any] = {}
        for name, hook in self.time_hooks.items():
            hooks[name] = await hook(seconds)
        log.info("sim_time_advanced", seconds=seconds, offset=self.phones.clock.offset, expired=expired)
        return {"offset": self.phones.clock.offset, "expired": expired, "hooks": hooks}
