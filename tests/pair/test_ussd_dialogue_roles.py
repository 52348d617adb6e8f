"""One USSD dialogue seen from both ends, without I/O: the phone's `PhoneDialogue` and the network's
`UssdDialogue` exchange deliver_sm / submit_sm over an in-memory SMPP pair, and after every step
both are in the same state; `its_session_info` is packed and echoed by the same rules."""

from __future__ import annotations

import pytest

from tests.support.smpp_pair import SessionPair
from ussdgw.smpp.pdu import DeliverSm, DeliverSmResp, SubmitSm, SubmitSmResp, UssdOp
from ussdgw.smpp.session import RequestReceived, ResponseReceived
from ussdgw.smpp.ussd import (
    PHONE_TRANSITIONS,
    TRANSITIONS,
    DialogueEvent,
    DialogueState,
    IllegalTransition,
    MalformedUssdString,
    MoKind,
    PhoneDialogue,
    SessionInfo,
    Timeouts,
    UssdDialogue,
    UssdError,
    UssdRequest,
    classify_op,
    is_ussd_string,
    parse_ussd_string,
    reply_session_info,
    unpack_session_info,
)

MSISDN = "79161234567"


class Dialogue:
    """A phone and the network talking over a bound SMPP pair (SMSC = the phone's network side)."""

    def __init__(self) -> None:
        self.pair = SessionPair()
        self.pair.bind()
        self.phone = PhoneDialogue()
        self.network: UssdDialogue | None = None
        self.last_mo: DeliverSm | None = None

    def mo(self, request: UssdRequest) -> MoKind:
        """The phone's request reaches the network as a deliver_sm; what the network makes of it."""
        _, [event] = self.pair.send(self.pair.smsc, DeliverSm(
            service_type="USSD", source_addr=MSISDN, destination_addr=request.to,
            short_message=request.text.encode("ascii"), ussd_service_op=request.op,
            its_session_info=request.its_session_info))
        assert isinstance(event, RequestReceived) and isinstance(event.pdu, DeliverSm)
        [ack] = self.pair.respond(self.pair.esme, event.pdu, DeliverSmResp())
        assert isinstance(ack, ResponseReceived) and ack.pdu.status == 0
        self.last_mo = event.pdu
        return classify_op(event.pdu.ussd_service_op, event.pdu.its_session_info)

    def mt(self, text: str) -> SubmitSm:
        """The network's reply for its dialogue's state, as a submit_sm the phone then shows."""
        assert self.network is not None and self.last_mo is not None
        _, [event] = self.pair.send(self.pair.esme, SubmitSm(
            service_type="USSD", source_addr=self.last_mo.destination_addr, destination_addr=MSISDN,
            short_message=text.encode("ascii"), ussd_service_op=self.network.reply_op,
            its_session_info=reply_session_info(self.last_mo.its_session_info, end=self.network.closed)))
        assert isinstance(event, RequestReceived) and isinstance(event.pdu, SubmitSm)
        self.pair.respond(self.pair.smsc, event.pdu, SubmitSmResp(message_id="1"))
        pdu = event.pdu
        assert pdu.ussd_service_op is not None
        self.phone.receive(pdu.source_addr, pdu.short_message.decode("ascii"), pdu.ussd_service_op,
                           pdu.its_session_info)
        return pdu

    def same_state(self) -> DialogueState:
        assert self.network is not None
        assert self.phone.state is self.network.state
        return self.phone.state


def test_dial_menu_answer_result_keeps_both_ends_in_step() -> None:
    d = Dialogue()
    assert d.mo(d.phone.dial(parse_ussd_string("*111*2#"), session_number=7)) is MoKind.DIAL
    assert d.last_mo is not None and d.last_mo.destination_addr == "*111#" and d.last_mo.short_message == b"*111*2#"
    d.network = UssdDialogue.dial(MSISDN, "111", now=0.0, session_info=d.last_mo.its_session_info)
    assert d.same_state() is DialogueState.PROCESSING and d.phone.open

    d.network.show(now=1.0)
    menu = d.mt("1 Balance")
    assert menu.ussd_service_op == UssdOp.USSR_REQUEST
    assert d.same_state() is DialogueState.WAITING and d.phone.text == "1 Balance"

    assert d.mo(d.phone.answer("1")) is MoKind.ANSWER
    d.network.answer(now=2.0, timeouts=Timeouts(), session_info=d.last_mo.its_session_info)
    assert d.same_state() is DialogueState.PROCESSING
    assert unpack_session_info(d.last_mo.its_session_info or 0) == SessionInfo(7, 1)

    d.network.end()
    result = d.mt("Balance: 10")
    assert result.ussd_service_op == UssdOp.PSSR_RESPONSE
    assert unpack_session_info(result.its_session_info or 0) == SessionInfo(7, 1, end=True)
    assert d.same_state() is DialogueState.CLOSED and not d.phone.open


def test_a_cancel_on_the_phone_is_a_release_for_the_network() -> None:
    d = Dialogue()
    d.mo(d.phone.dial(parse_ussd_string("*111#"), session_number=3))
    d.network = UssdDialogue.dial(MSISDN, "111", now=0.0)
    d.network.show(now=0.0)
    d.mt("menu")
    cancel = d.phone.cancel()
    assert cancel is not None and cancel.text == "" and d.phone.state is DialogueState.IDLE
    assert d.mo(cancel) is MoKind.ABORT
    d.network.abort()
    assert d.network.state is DialogueState.ABORTED
    assert d.phone.cancel() is None  # nothing open any more: nothing to tell the network


def test_the_phone_echoes_the_networks_session_number_and_counts_its_own_sequence() -> None:
    phone = PhoneDialogue()
    dial = phone.dial(parse_ussd_string("*100#"), session_number=0x1FF)  # wraps to 8 bits
    assert unpack_session_info(dial.its_session_info) == SessionInfo(0xFF, 0)
    phone.receive("100", "?", UssdOp.USSR_REQUEST, SessionInfo(0x2A, 0).pack())
    answer = phone.answer("1")
    assert unpack_session_info(answer.its_session_info) == SessionInfo(0x2A, 1)
    phone.receive("100", "?", UssdOp.USSR_REQUEST, None)  # no value this time: the last one still counts
    cancel = phone.cancel()
    assert cancel is not None and unpack_session_info(cancel.its_session_info) == SessionInfo(0x2A, 2, end=True)


def test_a_new_dial_replaces_an_open_dialogue_on_the_phone() -> None:
    phone = PhoneDialogue()
    phone.dial(parse_ussd_string("*111#"), session_number=1)
    phone.receive("*111#", "menu", UssdOp.USSR_REQUEST, SessionInfo(9, 0).pack())
    again = phone.dial(parse_ussd_string("*100#"), session_number=2)
    assert (phone.state, phone.service, phone.sequence, phone.its_session_info) == (
        DialogueState.PROCESSING, "*100#", 0, None)
    assert again == UssdRequest("*100#", "*100#", UssdOp.PSSR_INDICATION, SessionInfo(2, 0).pack())


@pytest.mark.parametrize("op", [UssdOp.PSSR_RESPONSE, UssdOp.USSN_REQUEST, 0x81])
def test_whatever_else_the_network_sends_closes_the_phones_dialogue(op: int) -> None:
    phone = PhoneDialogue()
    phone.receive("*111#", "note", op, None)
    assert phone.state is DialogueState.CLOSED and phone.service == "*111#" and phone.last_op == op


def test_an_illegal_move_raises_naming_the_role_the_state_and_the_event() -> None:
    with pytest.raises(IllegalTransition, match="phone ussd dialogue: event ANSWER is not allowed in state IDLE"):
        PhoneDialogue().answer("1")
    network = UssdDialogue.dial(MSISDN, "111", now=0.0)
    with pytest.raises(IllegalTransition, match=r"network ussd dialogue: event ANSWER .* state PROCESSING"):
        network.answer(1.0, Timeouts())
    with pytest.raises(UssdError, match="at most 160"):
        PhoneDialogue(state=DialogueState.WAITING).answer("x" * 161)


def test_the_phone_moves_only_between_the_states_a_screen_can_show() -> None:
    screen = {DialogueState.IDLE, DialogueState.PROCESSING, DialogueState.WAITING, DialogueState.CLOSED}
    assert {s for key in PHONE_TRANSITIONS for s in (key[0], PHONE_TRANSITIONS[key])} <= screen
    assert {e for _, e in PHONE_TRANSITIONS} == set(DialogueEvent) - {DialogueEvent.TIMEOUT}
    assert {(s, e) for (s, e) in TRANSITIONS if e is DialogueEvent.TIMEOUT} == {
        (DialogueState.WAITING, DialogueEvent.TIMEOUT)}


@pytest.mark.parametrize(("text", "ok"), [
    ("*100#", True), ("#100#", True), ("*111*828*1*+79161234568#", True), (" *111# ", True),
    ("100", False), ("*111**1#", False), ("*12345#", False), ("*1a0#", False), ("", False),
])
def test_one_check_of_the_dialled_string_for_both_ends(text: str, ok: bool) -> None:
    assert is_ussd_string(text) is ok
    if ok:
        assert PhoneDialogue().dial(parse_ussd_string(text), 1).text == text.strip()
    else:
        with pytest.raises(MalformedUssdString):
            parse_ussd_string(text)
