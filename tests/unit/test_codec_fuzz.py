"""Random and mutated bytes thrown at the codec and the session layer: nothing raises out of them,
what they answer is itself valid SMPP, and a session that survived garbage still works."""

from __future__ import annotations

import struct
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.pdus import answers, every_pdu, short_message_pdu
from ussdgw.smpp import codec
from ussdgw.smpp.pdu import (
    Bind,
    BindMode,
    BindResp,
    CommandId,
    DeliverSm,
    EnquireLink,
    EnquireLinkResp,
    Status,
    SubmitSm,
)
from ussdgw.smpp.session import ProtocolError, Role, SessionState, SmppSession

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def bound_session(role: Role) -> SmppSession:
    """A session in BOUND_TRX, reached the ordinary way."""
    session = SmppSession(role)
    if role is Role.ESME:
        sent = session.send(Bind(mode=BindMode.TRANSCEIVER, system_id="fuzz", password="pw"))
        session.receive_data(codec.encode(BindResp(sequence=sent.sequence, mode=BindMode.TRANSCEIVER)))
    else:
        [event] = session.receive_data(codec.encode(Bind(sequence=1, mode=BindMode.TRANSCEIVER, system_id="fuzz")))
        session.respond(event.pdu, BindResp(mode=BindMode.TRANSCEIVER))  # type: ignore[union-attr]
    session.data_to_send()
    assert session.state is SessionState.BOUND_TRX
    return session


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid PDU with a few of its bytes changed, cut short, or grown, its framing kept or not."""
    wire = bytearray(codec.encode(draw(every_pdu)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "command", "length"]))
        if kind == "flip" and wire:
            wire[draw(st.integers(0, len(wire) - 1))] = draw(st.integers(0, 255))
        elif kind == "truncate":
            del wire[draw(st.integers(16, max(16, len(wire)))) :]
        elif kind == "insert":
            at = draw(st.integers(16, len(wire)))
            wire[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "command" and len(wire) >= 8:
            wire[4:8] = draw(st.integers(0, 0xFFFFFFFF)).to_bytes(4, "big")
        if draw(st.booleans()) and len(wire) >= 4:
            wire[0:4] = len(wire).to_bytes(4, "big")  # keep the framing right: the session must go on
    return bytes(wire)


@FUZZ
@given(st.binary(max_size=300) | mutated())
def test_decode_raises_nothing_but_pdu_decode_error(data: bytes) -> None:
    try:
        codec.decode(data)
    except codec.PduDecodeError as exc:
        assert isinstance(exc.status, Status)


@FUZZ
@given(st.lists(st.binary(max_size=80) | mutated(), max_size=6), st.sampled_from(list(Role)), st.booleans(),
       st.integers(1, 64))
def test_no_bytes_make_the_session_raise_and_every_answer_is_valid_smpp(
    chunks: list[bytes], role: Role, bound: bool, piece: int,
) -> None:
    session = bound_session(role) if bound else SmppSession(role)
    stream = b"".join(chunks)
    for start in range(0, len(stream), piece):  # arbitrary TCP segmentation
        session.receive_data(stream[start : start + piece])
        answers(session)


@FUZZ
@given(mutated(), st.sampled_from(list(Role)))
def test_after_a_garbled_pdu_with_intact_framing_the_session_still_answers_enquire_link(
    garbled: bytes, role: Role,
) -> None:
    if int.from_bytes(garbled[:4], "big") != len(garbled) or len(garbled) < 16:
        return  # broken framing may legitimately end the session; covered above
    session = bound_session(role)
    session.receive_data(garbled)
    session.data_to_send()
    if session.state is SessionState.CLOSED:
        return  # a well-framed unbind, after mutation, is still an unbind
    session.receive_data(codec.encode(EnquireLink(sequence=424242)))
    assert EnquireLinkResp(sequence=424242) in answers(session)


def test_unknown_command_id_gets_generic_nack_invalid_command_id_and_the_session_goes_on() -> None:
    session = bound_session(Role.SMSC)
    events = session.receive_data(struct.pack(">IIII", 16, 0x00000077, 0, 9))
    [nack] = answers(session)
    assert (type(nack).__name__, nack.status, nack.sequence) == ("GenericNack", Status.RINVCMDID, 9)
    assert isinstance(events[0], ProtocolError)
    assert session.state is SessionState.BOUND_TRX


def test_a_command_length_that_cannot_be_framed_ends_the_session_with_generic_nack() -> None:
    session = bound_session(Role.SMSC)
    events = session.receive_data(struct.pack(">IIII", 8, 0x15, 0, 5))
    [nack] = answers(session)
    assert nack.status == Status.RINVCMDLEN
    assert isinstance(events[0], ProtocolError) and events[0].fatal
    assert session.state is SessionState.CLOSED


def _outcome(decode: Any, data: bytes) -> Any:
    try:
        return decode(data, 0, 1)
    except codec.PduDecodeError as exc:
        return (exc.status, str(exc))


@FUZZ
@given(st.one_of(short_message_pdu(SubmitSm), short_message_pdu(DeliverSm)).map(codec.encode) | mutated()
       | st.binary(min_size=16, max_size=300))
def test_the_one_match_read_of_a_message_pdu_agrees_with_the_field_by_field_read(data: bytes) -> None:
    """submit_sm / deliver_sm are read by one regex match, or field by field when it does not match:
    both give the same PDU for any bytes, or refuse them with the same status and reason."""
    for command, cls in ((CommandId.SUBMIT_SM, SubmitSm), (CommandId.DELIVER_SM, DeliverSm)):
        fast = codec._FAST_DECODERS[command]
        stepwise = codec._decode_short_message_stepwise(cls)
        assert _outcome(fast, data) == _outcome(stepwise, data)


def _wild_text(limit: int) -> st.SearchStrategy[str]:
    """A string field as a buggy caller might fill it: NULs, non-Latin-1 characters, too long."""
    return st.text(st.characters(max_codepoint=0x500), max_size=limit + 3) | st.just("\x00")


_wild_octet = st.integers(-2, 258)


@FUZZ
@given(short_message_pdu(SubmitSm) | short_message_pdu(DeliverSm)
       | st.builds(SubmitSm, service_type=_wild_text(6), source_addr_ton=_wild_octet, source_addr=_wild_text(21),
                   destination_addr=_wild_text(21), esm_class=_wild_octet, schedule_delivery_time=_wild_text(17),
                   validity_period=_wild_text(17), data_coding=_wild_octet, short_message=st.binary(max_size=258),
                   ussd_service_op=st.none() | st.integers(0, 255)))
def test_the_one_string_write_of_a_message_pdu_agrees_with_the_field_by_field_write(pdu: SubmitSm) -> None:
    """submit_sm / deliver_sm are written as one latin-1 string, or field by field when anything is
    out of the ordinary: the same bytes, or the same error, for any PDU."""
    def outcome(encode: Any) -> Any:
        try:
            return encode(pdu)
        except Exception as exc:  # the error itself is what is compared
            return (type(exc), str(exc))

    assert outcome(codec._encode_short_message) == outcome(codec._encode_short_message_stepwise)
