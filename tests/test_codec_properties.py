"""The codec by properties: every PDU type the project emits survives encode -> decode unchanged,
the fast path and the smpplib path agree byte for byte, and smpplib's own parser reads our bytes
(and we read smpplib's) with the same field values."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from smpplib import smpp

from ussdgw.smpp import codec
from ussdgw.smpp.pdu import (
    Bind,
    BindMode,
    BindResp,
    DataSm,
    DataSmResp,
    DeliverSm,
    DeliverSmResp,
    EnquireLink,
    EnquireLinkResp,
    GenericNack,
    Pdu,
    QuerySm,
    QuerySmResp,
    SubmitSm,
    SubmitSmResp,
    Tag,
    Unbind,
    UnbindResp,
)

CHECKS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
KNOWN_TAGS = {int(t) for t in Tag} | {0x0210}

octet = st.integers(0, 255)
short = st.integers(0, 0xFFFF)
sequence = st.integers(1, 0x7FFFFFFF)
status = st.sampled_from([0, 0x08, 0x14, 0x45, 0x58, 0x64])


def c_string(limit: int, min_size: int = 0) -> st.SearchStrategy[str]:
    """A C-octet string field: Latin-1, no NUL, at most limit - 1 octets."""
    return st.text(st.characters(min_codepoint=1, max_codepoint=255), min_size=min_size, max_size=limit - 1)


ascii_id = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=64)
other_tlvs = st.lists(
    st.tuples(short.filter(lambda t: t not in KNOWN_TAGS), st.binary(max_size=20)), max_size=3
).map(tuple)


def message_tlvs() -> dict[str, Any]:
    return {
        "user_message_reference": st.none() | short,
        "sar_msg_ref_num": st.none() | short,
        "sar_total_segments": st.none() | octet,
        "sar_segment_seqnum": st.none() | octet,
        "receipted_message_id": st.none() | ascii_id,
        "message_state": st.none() | st.integers(1, 8),
        "network_error_code": st.none() | st.binary(min_size=3, max_size=3),
        "message_payload": st.none() | st.binary(max_size=600),
        "ussd_service_op": st.none() | octet,
        "its_session_info": st.none() | short,
        "other_tlvs": other_tlvs,
    }


def short_message_pdu(cls: type[SubmitSm | DeliverSm], *, tlvs: bool = True) -> st.SearchStrategy[Pdu]:
    fields: dict[str, Any] = {
        "sequence": sequence, "service_type": c_string(6), "source_addr_ton": octet, "source_addr_npi": octet,
        "source_addr": c_string(21), "dest_addr_ton": octet, "dest_addr_npi": octet,
        "destination_addr": c_string(21), "esm_class": octet, "protocol_id": octet, "priority_flag": octet,
        "schedule_delivery_time": c_string(17), "validity_period": c_string(17), "registered_delivery": octet,
        "replace_if_present_flag": octet, "data_coding": octet, "sm_default_msg_id": octet,
        "short_message": st.binary(max_size=254),
    }
    if tlvs:
        fields.update(message_tlvs())
    return st.builds(cls, **fields)


def responses(cls: type[SubmitSmResp | DeliverSmResp | DataSmResp]) -> st.SearchStrategy[Pdu]:
    ok = st.builds(cls, sequence=sequence, message_id=c_string(65) if cls is not DeliverSmResp else st.just(""))
    failed = st.builds(cls, sequence=sequence, status=status.filter(bool))
    return ok | failed


every_pdu = st.one_of(
    short_message_pdu(SubmitSm),
    short_message_pdu(DeliverSm),
    st.builds(DataSm, sequence=sequence, service_type=c_string(6), source_addr_ton=octet, source_addr_npi=octet,
              source_addr=c_string(21), dest_addr_ton=octet, dest_addr_npi=octet, destination_addr=c_string(21),
              esm_class=octet, registered_delivery=octet, data_coding=octet, **message_tlvs()),
    responses(SubmitSmResp),
    responses(DeliverSmResp),
    responses(DataSmResp),
    st.builds(Bind, sequence=sequence, mode=st.sampled_from(list(BindMode)), system_id=c_string(16),
              password=c_string(9), system_type=c_string(13), interface_version=octet, addr_ton=octet,
              addr_npi=octet, address_range=c_string(41)),
    st.builds(BindResp, sequence=sequence, mode=st.sampled_from(list(BindMode)), system_id=c_string(16),
              sc_interface_version=st.none() | octet),
    st.builds(QuerySm, sequence=sequence, message_id=c_string(65, min_size=1), source_addr_ton=octet,
              source_addr_npi=octet, source_addr=c_string(21)),
    st.builds(QuerySmResp, sequence=sequence, message_id=c_string(65, min_size=1), final_date=c_string(17),
              message_state=st.integers(1, 8), error_code=octet),
    *(st.builds(cls, sequence=sequence, status=status) for cls in (EnquireLink, EnquireLinkResp, Unbind,
                                                                   UnbindResp, GenericNack)),
)


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
