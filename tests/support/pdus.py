"""PDUs for tests: hypothesis strategies for every PDU type the project emits, a foreign SMSC's
USSD deliver_sm written byte by byte, and a session's output read back as PDUs."""

from __future__ import annotations

import struct
from typing import Any

from hypothesis import strategies as st

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
from ussdgw.smpp.session import SmppSession

KNOWN_TAGS = {int(t) for t in Tag} | {0x0210}  # tags the codec reads as fields, not as other TLVs
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


def answers(session: SmppSession) -> list[Pdu]:
    """Everything the session wrote, decoded: it must all be valid SMPP."""
    data, out, pos = session.data_to_send(), [], 0
    while pos < len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        out.append(codec.decode(data[pos : pos + length]))
        pos += length
    return out


def _cstr(value: str) -> bytes:
    return value.encode("latin-1") + b"\x00"


def foreign_deliver_sm(text: bytes, data_coding: int, op: int, session_info: int | None, sequence: int = 77) -> bytes:
    """A deliver_sm as another SMSC writes it, byte by byte (not through smpplib); no 0x1383 when None."""
    body = (
        _cstr("USSD") + bytes([1, 1]) + _cstr("79161234567") + bytes([0, 0]) + _cstr("*111#")
        + bytes([0, 0, 0]) + _cstr("") + _cstr("") + bytes([0, 0, data_coding, 0, len(text)]) + text
        + struct.pack(">HHB", 0x0501, 1, op)
        + (struct.pack(">HHH", 0x1383, 2, session_info) if session_info is not None else b"")
    )
    return struct.pack(">IIII", 16 + len(body), 0x00000005, 0, sequence) + body
