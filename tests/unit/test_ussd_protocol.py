"""USSD without I/O: the dialled string, its_session_info, the dialogue table, and foreign PDU bytes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support.pdus import foreign_deliver_sm
from ussdgw.smpp import codec
from ussdgw.smpp.pdu import DeliverSm, UssdOp
from ussdgw.smpp.text import decode_text
from ussdgw.smpp.ussd import (
    TRANSITIONS,
    DialogueEvent,
    DialogueExpired,
    DialogueState,
    IllegalTransition,
    MalformedUssdString,
    MoKind,
    SessionInfo,
    Timeouts,
    UssdDialogue,
    classify_op,
    fits_one_message,
    parse_ussd_string,
    reply_session_info,
    unpack_session_info,
)


@pytest.mark.parametrize(
    ("dialled", "code", "parts"),
    [("*100#", "100", ()), ("*111#", "111", ()), ("*111*828*1#", "111", ("828", "1")),
     (" *111*828*2# ", "111", ("828", "2")), ("#100#", "100", ()), ("*111*828*1*+79161234568#", "111",
                                                                        ("828", "1", "+79161234568"))],
)
def test_a_ussd_string_splits_into_service_code_and_supplementary_parts(dialled: str, code: str,
                                                                        parts: tuple[str, ...]) -> None:
    parsed = parse_ussd_string(dialled)
    assert (parsed.service_code, parsed.parts) == (code, parts)
    assert parsed.path == "*".join((code, *parts))


@pytest.mark.parametrize("dialled", ["", "111", "*111", "111#", "*#", "*111**1#", "*11a#", "*111*abc#",
                                     "*12345#", "***111#", "*100#*", "*" + "1" * 200 + "#"])
def test_a_malformed_ussd_string_is_refused_with_a_russian_reply(dialled: str) -> None:
    with pytest.raises(MalformedUssdString) as err:
        parse_ussd_string(dialled)
    assert "USSD" in err.value.reply


@given(st.text(max_size=60))
def test_any_text_parses_or_is_refused_cleanly(text: str) -> None:
    try:
        parsed = parse_ussd_string(text)
    except MalformedUssdString as err:
        assert err.reply
    else:
        assert parsed.raw == text.strip() and parsed.raw.endswith("#") and parsed.service_code.isdigit()


@given(st.integers(0, 255), st.integers(0, 127), st.booleans())
def test_its_session_info_packs_and_unpacks(session: int, sequence: int, end: bool) -> None:
    assert unpack_session_info(SessionInfo(session, sequence, end).pack()) == SessionInfo(session, sequence, end)


def test_the_reply_echoes_session_info_and_sets_the_end_bit_only_when_closing() -> None:
    received = SessionInfo(0x2A, 3).pack()
    assert reply_session_info(received, end=False) == received
    assert unpack_session_info(reply_session_info(received, end=True) or 0) == SessionInfo(0x2A, 3, True)
    assert reply_session_info(None, end=True) is None


@pytest.mark.parametrize(
    ("op", "kind"),
    [(1, MoKind.DIAL), (0, MoKind.DIAL), (18, MoKind.ANSWER), (0x81, MoKind.ABORT), (16, MoKind.ABORT),
     (17, MoKind.ABORT), (19, MoKind.NOTICE_ACK), (2, MoKind.UNSUPPORTED), (0x42, MoKind.UNSUPPORTED)],
)
def test_inbound_ussd_service_ops_are_classified(op: int, kind: MoKind) -> None:
    assert classify_op(op) is kind


def test_an_answer_carrying_the_end_of_session_bit_is_a_release() -> None:
    assert classify_op(18, SessionInfo(5, 2, end=True).pack()) is MoKind.ABORT


def test_a_dialogue_walks_dial_show_answer_end() -> None:
    timeouts = Timeouts(step_s=60, dialogue_s=180)
    d = UssdDialogue.dial("79161234567", "111", now=1000.0)
    assert d.state is DialogueState.PROCESSING
    d.show(now=1000.1)
    assert d.reply_op is UssdOp.USSR_REQUEST
    d.answer(now=1010.0, timeouts=timeouts)
    assert d.step == 1 and d.state is DialogueState.PROCESSING
    d.end()
    assert d.closed and d.reply_op is UssdOp.PSSR_RESPONSE


def test_an_answer_after_the_step_timeout_expires_the_dialogue() -> None:
    d = UssdDialogue.dial("79161234567", "111", now=1000.0)
    d.show(now=1000.0)
    with pytest.raises(DialogueExpired, match="step timeout"):
        d.answer(now=1061.0, timeouts=Timeouts(step_s=60, dialogue_s=180))
    assert d.state is DialogueState.TIMED_OUT


def test_quick_answers_still_end_at_the_whole_dialogue_timeout() -> None:
    timeouts = Timeouts(step_s=60, dialogue_s=180)
    d = UssdDialogue.dial("79161234567", "111", now=0.0)
    now = 0.0
    with pytest.raises(DialogueExpired, match="dialogue timeout"):
        while True:
            d.show(now)
            now += 50
            d.answer(now, timeouts)
    assert now > 180 and d.state is DialogueState.TIMED_OUT


def test_an_event_outside_the_table_raises_naming_role_state_and_event() -> None:
    d = UssdDialogue.dial("79161234567", "111", now=0.0)
    d.end()
    with pytest.raises(IllegalTransition, match=r"ussd dialogue: event ANSWER .* state CLOSED"):
        d.answer(1.0, Timeouts())
    assert all(isinstance(k[1], DialogueEvent) for k in TRANSITIONS)


def test_a_dialogue_survives_a_trip_through_json() -> None:
    d = UssdDialogue.dial("79161234567", "111", now=5.0, session_info=0x2A06)
    d.data = {"screen": "тарифы", "page": 1}
    d.show(6.0)
    again = UssdDialogue.from_json(d.to_json())
    assert again == d and again.version == d.version


def test_pages_fit_160_gsm_septets_or_80_ucs2_characters() -> None:
    assert fits_one_message("x" * 160) and not fits_one_message("x" * 161)
    assert fits_one_message("я" * 80) and not fits_one_message("я" * 81)
    assert not fits_one_message("{" * 81)  # an extension character costs two septets


def test_foreign_ussd_deliver_sm_with_data_coding_0x0f_decodes() -> None:
    pdu = codec.decode(foreign_deliver_sm(b"*111*828*1#", 0x0F, 1, 0x2A02))
    assert isinstance(pdu, DeliverSm) and pdu.is_ussd
    assert (pdu.service_type, pdu.ussd_service_op, pdu.its_session_info, pdu.sequence) == ("USSD", 1, 0x2A02, 77)
    assert decode_text(pdu.short_message, pdu.data_coding) == "*111*828*1#"


def test_foreign_ussd_deliver_sm_with_data_coding_0x48_ucs2_decodes() -> None:
    pdu = codec.decode(foreign_deliver_sm("2".encode("utf-16-be"), 0x48, 18, 0x2A04))
    assert isinstance(pdu, DeliverSm)
    assert pdu.ussd_service_op == UssdOp.USSR_CONFIRM and unpack_session_info(pdu.its_session_info or 0).sequence == 2
    assert decode_text(pdu.short_message, pdu.data_coding) == "2"
