"""The SMPP session without I/O, both ends at once (`tests/support/smpp_pair.py`): bind, submit, deliver,
enquire_link, unbind, what each bind state allows and refuses, and the outstanding requests."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.pdus import answers, every_pdu
from tests.support.smpp_pair import SessionPair
from ussdgw.smpp import codec
from ussdgw.smpp.pdu import (
    Bind,
    BindMode,
    BindResp,
    CommandId,
    DeliverSm,
    DeliverSmResp,
    EnquireLink,
    EnquireLinkResp,
    GenericNack,
    Pdu,
    Status,
    SubmitSm,
    SubmitSmResp,
    Unbind,
    UnbindResp,
    with_sequence,
)
from ussdgw.smpp.session import (
    REQUESTS,
    TRANSITIONS,
    ProtocolError,
    RequestReceived,
    ResponseReceived,
    Role,
    SessionError,
    SessionEvent,
    SessionState,
    SmppSession,
    Unbound,
)

MT = SubmitSm(source_addr="3339", destination_addr="79161234567", short_message=b"hello")
MO = DeliverSm(source_addr="79161234567", destination_addr="3339", short_message=b"HELP")


@pytest.mark.parametrize("segment", [None, 1, 7])
def test_bind_transceiver_then_submit_and_deliver_both_ways(segment: int | None) -> None:
    pair = SessionPair(segment=segment)
    bound = pair.bind()
    assert isinstance(bound.pdu, BindResp) and bound.pdu.system_id == "smsc"
    assert (pair.smsc.system_id, pair.smsc.bind_mode) == ("esme", BindMode.TRANSCEIVER)
    assert pair.esme.can_submit and pair.smsc.can_deliver

    sent, [submit] = pair.send(pair.esme, MT, token="mt-1")
    assert isinstance(submit, RequestReceived) and submit.pdu == sent and sent.sequence
    [answer] = pair.respond(pair.smsc, submit.pdu, SubmitSmResp(message_id="abc"))
    assert answer == ResponseReceived(SubmitSmResp(sequence=sent.sequence, message_id="abc"), sent, "mt-1")

    delivered, [mo] = pair.send(pair.smsc, MO)
    assert isinstance(mo, RequestReceived) and mo.pdu == delivered
    [ack] = pair.respond(pair.esme, mo.pdu, DeliverSmResp(status=Status.RX_T_APPN))
    assert isinstance(ack, ResponseReceived) and ack.pdu.status == Status.RX_T_APPN and ack.request == delivered
    assert not pair.esme.outstanding and not pair.smsc.outstanding


def test_a_refused_bind_returns_both_ends_to_open_and_a_second_bind_may_follow() -> None:
    pair = SessionPair()
    _, [request] = pair.send(pair.esme, Bind(system_id="esme", password="wrong"))
    assert pair.esme.state is pair.smsc.state is SessionState.BINDING
    [refused] = pair.respond(pair.smsc, request.pdu, BindResp(status=Status.RINVPASWD))  # type: ignore[union-attr]
    assert refused.pdu.status == Status.RINVPASWD  # type: ignore[union-attr]
    assert pair.esme.state is pair.smsc.state is SessionState.OPEN
    pair.bind(BindMode.TRANSMITTER)


@pytest.mark.parametrize(("mode", "esme_submits", "smsc_delivers"), [
    (BindMode.TRANSMITTER, True, False), (BindMode.RECEIVER, False, True), (BindMode.TRANSCEIVER, True, True),
])
def test_the_bind_mode_decides_which_way_messages_flow(mode: BindMode, esme_submits: bool,
                                                      smsc_delivers: bool) -> None:
    pair = SessionPair()
    pair.bind(mode)
    assert (pair.esme.can_submit, pair.smsc.can_deliver) == (esme_submits, smsc_delivers)


def test_enquire_link_is_answered_by_the_session_itself_in_any_state_but_closed() -> None:
    pair = SessionPair()
    sent, events = pair.send(pair.esme, EnquireLink())
    assert events == []  # nothing for the SMSC's application: the session answered
    [answer] = pair.deliver(pair.smsc)
    assert answer == ResponseReceived(EnquireLinkResp(sequence=sent.sequence), sent)
    pair.bind()
    probe, _ = pair.send(pair.smsc, EnquireLink())
    [answer] = pair.deliver(pair.esme)
    assert isinstance(answer.pdu, EnquireLinkResp) and answer.request == probe  # type: ignore[union-attr]


@pytest.mark.parametrize("unbinder", ["esme", "smsc"])
def test_unbind_by_either_end_closes_both_and_settles_the_request(unbinder: str) -> None:
    pair = SessionPair()
    pair.bind()
    side = getattr(pair, unbinder)
    sent, [unbound] = pair.send(side, Unbind(), token="bye")
    assert unbound == Unbound(by_peer=True) and pair.peer(side).state is SessionState.CLOSED
    assert side.state is SessionState.UNBINDING
    answered = pair.deliver(pair.peer(side))
    assert answered == [ResponseReceived(UnbindResp(sequence=sent.sequence), sent, "bye"), Unbound(by_peer=False)]
    assert side.state is SessionState.CLOSED


def test_crossing_unbinds_close_both_ends() -> None:
    pair = SessionPair()
    pair.bind()
    pair.esme.send(Unbind())
    pair.smsc.send(Unbind())
    at_esme, at_smsc = pair.pump()
    assert Unbound(by_peer=True) in at_esme and Unbound(by_peer=True) in at_smsc
    assert pair.esme.state is pair.smsc.state is SessionState.CLOSED


def test_after_unbind_is_sent_only_enquire_link_is_taken_from_the_peer() -> None:
    pair = SessionPair()
    pair.bind()
    pair.esme.send(Unbind())
    pair.esme.data_to_send()  # the unbind is still on its way when the SMSC delivers
    pair.smsc.send(MO)
    [refused] = pair.deliver(pair.smsc)
    assert isinstance(refused, ProtocolError) and refused.status == Status.RINVBNDSTS
    [nack] = pair.deliver(pair.esme)
    assert isinstance(nack, ResponseReceived) and nack.pdu == DeliverSmResp(sequence=nack.pdu.sequence,
                                                                              status=Status.RINVBNDSTS)


# ---- what a state refuses --------------------------------------------------------------------------
@pytest.mark.parametrize(("role", "pdu", "event"), [
    (Role.ESME, MT, CommandId.SUBMIT_SM),  # not bound yet
    (Role.SMSC, MO, CommandId.DELIVER_SM),
    (Role.SMSC, Bind(), CommandId.BIND_TRANSCEIVER),  # an SMSC never binds
    (Role.ESME, DeliverSm(), CommandId.DELIVER_SM),  # nor an ESME delivers
])
def test_an_illegal_local_send_raises_naming_role_state_and_event(role: Role, pdu: Pdu, event: CommandId) -> None:
    session = SmppSession(role)
    with pytest.raises(SessionError, match=rf"{role.value}: send {event.name.lower()} is not allowed in state OPEN"):
        session.send(pdu)
    assert session.state is SessionState.OPEN and not session.outstanding and not session.data_to_send()


def test_binding_twice_raises_with_the_event_and_the_state() -> None:
    session = SmppSession(Role.ESME)
    session.send(Bind())
    with pytest.raises(SessionError, match="esme: send bind_transceiver is not allowed in state BINDING"):
        session.send(Bind())


def test_answering_a_bind_that_is_not_pending_raises() -> None:
    pair = SessionPair()
    pair.bind()
    with pytest.raises(SessionError, match=r"smsc: bind ok \(transceiver\) is not allowed in state BOUND_TRX"):
        pair.smsc.respond(Bind(sequence=99), BindResp())


@pytest.mark.parametrize(("mode", "sender", "pdu", "status"), [
    (None, "esme", MT, Status.RINVBNDSTS),  # submit before bind
    (BindMode.RECEIVER, "esme", MT, Status.RINVBNDSTS),  # a receiver may not submit
    (BindMode.TRANSMITTER, "smsc", MO, Status.RINVBNDSTS),  # nor get MOs
    (BindMode.TRANSCEIVER, "esme", MO, Status.RINVCMDID),  # deliver_sm is the SMSC's to send
    (BindMode.TRANSCEIVER, "esme", Bind(), Status.RALYBND),
])
def test_what_the_peer_may_not_send_is_answered_with_an_error_and_the_session_goes_on(
    mode: BindMode | None, sender: str, pdu: Pdu, status: Status,
) -> None:
    pair = SessionPair()
    if mode is not None:
        pair.bind(mode)
    receiver = pair.peer(getattr(pair, sender))
    before = receiver.state
    [refused] = receiver.receive_data(codec.encode(replace(pdu, sequence=77)))  # a peer that ignores the rules
    assert isinstance(refused, ProtocolError) and refused.status == status and not refused.fatal
    [answer] = answers(receiver)
    assert answer.sequence == 77 and answer.status == status
    assert not isinstance(answer, GenericNack)  # the matching response type, as SMPP 3.4 asks
    assert receiver.state is before


# ---- the tables ------------------------------------------------------------------------------------
def test_both_ends_read_the_same_rules_and_every_transition_leads_somewhere_legal() -> None:
    for (role, state, event), target in TRANSITIONS.items():
        assert isinstance(event, SessionEvent)
        assert all((role, s) in REQUESTS or s is SessionState.CLOSED for s in (state, target))
    bound = {SessionState.BOUND_TX, SessionState.BOUND_RX, SessionState.BOUND_TRX}
    for role in Role:
        reachable = {target for (r, _, _), target in TRANSITIONS.items() if r is role}
        assert bound <= reachable and SessionState.CLOSED in reachable


# ---- outstanding requests ------------------------------------------------------------------------
def test_requests_past_their_deadline_are_handed_back_once_and_a_late_response_matches_nothing() -> None:
    pair = SessionPair()
    pair.bind()
    first, _ = pair.send(pair.esme, MT, deadline=10.0, token="a")
    second, _ = pair.send(pair.esme, MT, deadline=5.0, token="b")
    pair.send(pair.esme, MT, token="c")  # no deadline: waits for ever
    assert pair.esme.next_deadline() == 5.0
    assert pair.esme.expire(4.9) == []
    [overdue] = pair.esme.expire(5.0)
    assert (overdue.request, overdue.token) == (second, "b") and pair.esme.next_deadline() == 10.0
    [late] = pair.respond(pair.smsc, second, SubmitSmResp(message_id="late"))
    assert late == ResponseReceived(SubmitSmResp(sequence=second.sequence, message_id="late"), None)
    assert [(e.request, e.token) for e in pair.esme.expire(99.0)] == [(first, "a")]
    assert pair.esme.next_deadline() is None
    assert [e.token for e in pair.esme.close()] == ["c"]
    assert pair.esme.state is SessionState.CLOSED and not pair.esme.outstanding


def test_a_response_of_the_wrong_type_keeps_the_request_waiting() -> None:
    pair = SessionPair()
    pair.bind()
    sent, _ = pair.send(pair.esme, MT, token="t")
    [error] = pair.respond(pair.smsc, sent, DeliverSmResp())
    assert isinstance(error, ProtocolError) and "deliver_sm_resp answers submit_sm" in error.reason
    assert pair.esme.outstanding[sent.sequence].token == "t"


@given(st.lists(st.sampled_from(["submit", "deliver", "enquire"]), max_size=20), st.integers(1, 40))
def test_any_interleaving_of_requests_is_answered_and_leaves_nothing_outstanding(kinds: list[str],
                                                                                  segment: int) -> None:
    pair = SessionPair(segment=segment)
    pair.bind()
    for kind in kinds:
        side, pdu = {"submit": (pair.esme, MT), "deliver": (pair.smsc, MO),
                     "enquire": (pair.smsc, EnquireLink())}[kind]
        side.send(pdu)
    at_esme, at_smsc = pair.pump()
    for side, events in ((pair.esme, at_esme), (pair.smsc, at_smsc)):
        for event in events:
            if isinstance(event, RequestReceived):
                side.respond(event.pdu, SubmitSmResp(message_id="1") if isinstance(event.pdu, SubmitSm)
                             else DeliverSmResp())
    pair.pump()
    assert not pair.esme.outstanding and not pair.smsc.outstanding


@settings(max_examples=300, deadline=None)
@given(every_pdu, st.integers(1, 0x7FFFFFFF))
def test_numbering_a_pdu_changes_its_sequence_and_nothing_else(pdu: Pdu, sequence: int) -> None:
    assert with_sequence(pdu, sequence) == replace(pdu, sequence=sequence)


def test_an_esme_stopping_while_its_bind_resp_is_on_the_way_unbinds_and_both_ends_close() -> None:
    """The SMSC counts the ESME bound as soon as it answers; the ESME, still BINDING, unbinds all the same."""
    pair = SessionPair()
    _, [request] = pair.send(pair.esme, Bind(mode=BindMode.TRANSCEIVER, system_id="esme", password="secret"))
    assert isinstance(request, RequestReceived) and isinstance(request.pdu, Bind)
    pair.smsc.respond(request.pdu, BindResp(system_id="smsc"))  # queued, not yet read by the ESME
    assert pair.smsc.state is SessionState.BOUND_TRX and pair.esme.state is SessionState.BINDING
    pair.esme.send(Unbind())
    _, at_smsc = pair.pump()
    assert Unbound(by_peer=True) in at_smsc
    assert pair.esme.state is pair.smsc.state is SessionState.CLOSED
