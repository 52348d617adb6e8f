"""The codec by properties: every PDU type the project emits survives encode -> decode unchanged,
the fast path and the smpplib path agree byte for byte, and smpplib's own parser reads our bytes
(and we read smpplib's) with the same field values."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from smpplib import smpp

from tests.support.pdus import every_pdu, responses, short_message_pdu
from ussdgw.smpp import codec
from ussdgw.smpp.pdu import (
    DeliverSm,
    Pdu,
    SubmitSm,
    SubmitSmResp,
    Tag,
)

CHECKS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
KNOWN_TAGS = {int(t) for t in Tag} | {0x0210}

@CHECKS
@given(every_pdu)
def test_every_pdu_type_decodes_to_what_was_encoded(pdu: Pdu) -> None:
    assert codec.decode(codec.encode(pdu)) == pdu


@CHECKS
@given(every_pdu)
def test_the_fast_path_writes_the_same_bytes_as_the_smpplib_path_and_reads_them_the_same(pdu: Pdu) -> None:
    wire = codec.encode(pdu)
    assert codec.encode_reference(pdu) == wire
    assert codec.decode_reference(wire) == codec.decode(wire) == pdu


class _NoClient:
    sequence = 0

    def next_sequence(self) -> int:
        return 0


MANDATORY = ("service_type", "source_addr_ton", "source_addr_npi", "source_addr", "dest_addr_ton", "dest_addr_npi",
             "destination_addr", "esm_class", "protocol_id", "priority_flag", "schedule_delivery_time",
             "validity_period", "registered_delivery", "replace_if_present_flag", "data_coding",
             "sm_default_msg_id", "short_message")


def _plain(value: Any) -> Any:
    return value.decode("latin-1") if isinstance(value, bytes) else value


@CHECKS
@given(st.one_of(short_message_pdu(SubmitSm, tlvs=False), short_message_pdu(DeliverSm, tlvs=False)))
def test_smpplib_parses_our_submit_and_deliver_sm_to_the_same_fields(pdu: SubmitSm | DeliverSm) -> None:
    theirs = smpp.parse_pdu(codec.encode(pdu), client=_NoClient())
    assert theirs.sequence == pdu.sequence
    for name in MANDATORY:
        ours = getattr(pdu, name)
        value = getattr(theirs, name)
        if name == "short_message":
            assert (value or b"") == ours, name
        elif isinstance(ours, str):
            assert _plain(value or b"") == ours, name
        else:
            assert (value or 0) == ours, name


@CHECKS
@given(short_message_pdu(SubmitSm, tlvs=False).filter(lambda p: p.short_message and all(
    getattr(p, n) for n in ("source_addr", "destination_addr"))))
def test_we_parse_smpplib_submit_sm_to_the_same_fields(pdu: SubmitSm) -> None:
    fields = {n: getattr(pdu, n) for n in MANDATORY}
    theirs = smpp.make_pdu("submit_sm", client=_NoClient(), **fields)
    theirs.sequence = pdu.sequence
    assert codec.decode(bytes(theirs.generate())) == pdu


@CHECKS
@given(responses(SubmitSmResp).filter(lambda p: p.status == 0))
def test_smpplib_reads_our_submit_sm_resp(pdu: SubmitSmResp) -> None:
    theirs = smpp.parse_pdu(codec.encode(pdu), client=_NoClient())
    assert (theirs.sequence, _plain(theirs.message_id or b"")) == (pdu.sequence, pdu.message_id)
