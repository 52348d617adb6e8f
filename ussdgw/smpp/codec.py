"""The one adapter between smpplib's PDU codec and the platform's PDU dataclasses.

smpplib encodes and decodes the mandatory body of every PDU. Optional parameters (TLVs) are
framed here instead, because smpplib's `DeliverSM` does not know `ussd_service_op` (parsing a
USSD deliver_sm raises KeyError) and it drops or chokes on tags it has not heard of. Unknown
tags are kept as raw bytes so that nothing a peer sent is lost.

Errors: `decode` raises only `PduDecodeError`, which carries the command_status to answer with
and, when the header could be read, the sequence number to answer to.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import fields
from typing import Any

from smpplib import command as smpp_command
from smpplib import ptypes

from ussdgw.smpp.pdu import (
    Bind,
    BindMode,
    BindResp,
    CommandId,
    DataSm,
    DataSmResp,
    DeliverSm,
    DeliverSmResp,
    EnquireLink,
    EnquireLinkResp,
    GenericNack,
    MessageTlvs,
    Pdu,
    QuerySm,
    QuerySmResp,
    Status,
    SubmitSm,
    SubmitSmResp,
    Tag,
    Unbind,
    UnbindResp,
    command_of,
)

HEADER = struct.Struct(">IIII")
HEADER_SIZE = 16
MAX_PDU_SIZE = 64 * 1024
SC_INTERFACE_VERSION = 0x0210


class PduDecodeError(ValueError):
    """A PDU that cannot be decoded; `status` says what to answer, `sequence` to whom."""

    def __init__(self, message: str, status: Status, command_id: int = 0, sequence: int = 0) -> None:
        super().__init__(message)
        self.status = status
        self.command_id = command_id
        self.sequence = sequence


class PduEncodeError(ValueError):
    """A PDU the platform itself built wrongly (a field too long, a value out of range)."""


class _SequenceFree:
    """smpplib PDUs pull sequence numbers from a client object; the session numbers PDUs itself."""

    sequence = 0

    def next_sequence(self) -> int:
        return 0


_SEQUENCE_FREE = _SequenceFree()

# Which smpplib class carries the mandatory body of each of our PDUs.
_SMPPLIB: dict[CommandId, type[Any]] = {
    CommandId.GENERIC_NACK: smpp_command.GenericNAck,
    CommandId.BIND_RECEIVER: smpp_command.BindReceiver,
    CommandId.BIND_TRANSMITTER: smpp_command.BindTransmitter,
    CommandId.BIND_TRANSCEIVER: smpp_command.BindTransceiver,
    CommandId.BIND_RECEIVER_RESP: smpp_command.BindReceiverResp,
    CommandId.BIND_TRANSMITTER_RESP: smpp_command.BindTransmitterResp,
    CommandId.BIND_TRANSCEIVER_RESP: smpp_command.BindTransceiverResp,
    CommandId.SUBMIT_SM: smpp_command.SubmitSM,
    CommandId.SUBMIT_SM_RESP: smpp_command.SubmitSMResp,
    CommandId.DELIVER_SM: smpp_command.DeliverSM,
    CommandId.DELIVER_SM_RESP: smpp_command.DeliverSMResp,
    CommandId.DATA_SM: smpp_command.DataSM,
    CommandId.DATA_SM_RESP: smpp_command.DataSMResp,
    CommandId.QUERY_SM: smpp_command.QuerySM,
    CommandId.QUERY_SM_RESP: smpp_command.QuerySMResp,
    CommandId.UNBIND: smpp_command.Unbind,
    CommandId.UNBIND_RESP: smpp_command.UnbindResp,
    CommandId.ENQUIRE_LINK: smpp_command.EnquireLink,
    CommandId.ENQUIRE_LINK_RESP: smpp_command.EnquireLinkResp,
}

_OURS: dict[CommandId, type[Pdu]] = {
    CommandId.GENERIC_NACK: GenericNack,
    CommandId.BIND_RECEIVER: Bind,
    CommandId.BIND_TRANSMITTER: Bind,
    CommandId.BIND_TRANSCEIVER: Bind,
    CommandId.BIND_RECEIVER_RESP: BindResp,
    CommandId.BIND_TRANSMITTER_RESP: BindResp,
    CommandId.BIND_TRANSCEIVER_RESP: BindResp,
    CommandId.SUBMIT_SM: SubmitSm,
    CommandId.SUBMIT_SM_RESP: SubmitSmResp,
    CommandId.DELIVER_SM: DeliverSm,
    CommandId.DELIVER_SM_RESP: DeliverSmResp,
    CommandId.DATA_SM: DataSm,
    CommandId.DATA_SM_RESP: DataSmResp,
    CommandId.QUERY_SM: QuerySm,
    CommandId.QUERY_SM_RESP: QuerySmResp,
    CommandId.UNBIND: Unbind,
    CommandId.UNBIND_RESP: UnbindResp,
    CommandId.ENQUIRE_LINK: EnquireLink,
    CommandId.ENQUIRE_LINK_RESP: EnquireLinkResp,
}


def _mandatory_fields(cls: type[Any]) -> tuple[str, ...]:
    return tuple(f for f in cls.params_order if not _smpplib_optional(cls, f))


def _smpplib_optional(cls: type[Any], name: str) -> bool:
    from smpplib import consts

    if name in getattr(cls, "mandatory_fields", ()):
        return False
    return name in consts.OPTIONAL_PARAMS


_MANDATORY: dict[CommandId, tuple[str, ...]] = {c: _mandatory_fields(k) for c, k in _SMPPLIB.items()}
# smpplib's QuerySMResp marks message_state mandatory through a string, not a tuple; say it plainly.
_MANDATORY[CommandId.QUERY_SM_RESP] = ("message_id", "final_date", "message_state", "error_code")
_STRING_FIELDS = {
    c: frozenset(f for f in names if _SMPPLIB[c].params[f].type is str) for c, names in _MANDATORY.items()
}

# TLVs by tag: (field name, kind) where kind is an int size, "str" (C-octet string) or "bytes".
_TLV_SPEC: dict[int, tuple[str, int | str]] = {
    Tag.USER_MESSAGE_REFERENCE: ("user_message_reference", 2),
    Tag.SAR_MSG_REF_NUM: ("sar_msg_ref_num", 2),
    Tag.SAR_TOTAL_SEGMENTS: ("sar_total_segments", 1),
    Tag.SAR_SEGMENT_SEQNUM: ("sar_segment_seqnum", 1),
    Tag.RECEIPTED_MESSAGE_ID: ("receipted_message_id", "str"),
    Tag.MESSAGE_STATE: ("message_state", 1),
    Tag.NETWORK_ERROR_CODE: ("network_error_code", "bytes"),
    Tag.MESSAGE_PAYLOAD: ("message_payload", "bytes"),
    Tag.USSD_SERVICE_OP: ("ussd_service_op", 1),
    Tag.ITS_SESSION_INFO: ("its_session_info", 2),
}
_TLV_BY_NAME = {name: (tag, kind) for tag, (name, kind) in _TLV_SPEC.items()}
_TLV_ORDER = tuple(_TLV_BY_NAME)


def encode(pdu: Pdu) -> bytes:
    """Bytes on the wire for `pdu`, header included."""
    command = command_of(pdu)
    body = _encode_mandatory(command, pdu)
    if isinstance(pdu, MessageTlvs):
        body += _encode_tlvs(pdu)
    elif isinstance(pdu, BindResp) and pdu.sc_interface_version is not None:
        body += struct.pack(">HHB", SC_INTERFACE_VERSION, 1, pdu.sc_interface_version)
    return HEADER.pack(HEADER_SIZE + len(body), command, pdu.status, pdu.sequence) + body


def _encode_mandatory(command: CommandId, pdu: Pdu) -> bytes:
    names = _MANDATORY[command]
    if not names:
        return b""
    if pdu.status and isinstance(pdu, SubmitSmResp | DeliverSmResp | DataSmResp | BindResp):
        # SMPP 3.4 §4: an error response carries no body.
        return b""
    obj = _SMPPLIB[command](command.name.lower(), client=_SEQUENCE_FREE)
    strings = _STRING_FIELDS[command]
    for name in names:
        if name == "sm_length":
            continue
        value = getattr(pdu, name)
        if name in strings:
            spec = obj.params[name]
            limit = getattr(spec, "max", 256) - 1
            if len(value) > limit:
                raise PduEncodeError(f"{command.name.lower()}.{name} longer than {limit} octets")
        setattr(obj, name, value)
    try:
        return bytes(obj.generate_params())
    except (struct.error, TypeError, ValueError) as exc:
        raise PduEncodeError(f"cannot encode {command.name.lower()}: {exc}") from exc


def _encode_tlvs(pdu: MessageTlvs) -> bytes:
    out = bytearray()
    for name in _TLV_ORDER:
        value = getattr(pdu, name)
        if value is None:
            continue
        tag, kind = _TLV_BY_NAME[name]
        if kind == "str":
            raw = value.encode("ascii") + b"\x00"
        elif kind == "bytes":
            raw = bytes(value)
        else:
            assert isinstance(kind, int)
            raw = int(value).to_bytes(kind, "big")
        out += struct.pack(">HH", tag, len(raw)) + raw
    for tag, raw in pdu.other_tlvs:
        out += struct.pack(">HH", tag, len(raw)) + raw
    return bytes(out)


def read_header(data: bytes | bytearray | memoryview) -> tuple[int, int, int, int]:
    """(command_length, command_id, command_status, sequence_number) of a framed PDU."""
    return HEADER.unpack_from(data)


def decode(data: bytes) -> Pdu:
    """Decode one whole PDU (header included)."""
    if len(data) < HEADER_SIZE:
        raise PduDecodeError("PDU shorter than its header", Status.RINVCMDLEN)
    length, command_id, status, sequence = HEADER.unpack_from(data)
    if length != len(data):
        raise PduDecodeError("command_length does not match the PDU", Status.RINVCMDLEN, command_id, sequence)
    try:
        command = CommandId(command_id)
    except ValueError:
        raise PduDecodeError(
            f"unknown command_id 0x{command_id:08x}", Status.RINVCMDID, command_id, sequence
        ) from None
    body = bytes(data[HEADER_SIZE:])
    try:
        values = _decode_body(command, status, body)
    except PduDecodeError as exc:
        exc.command_id, exc.sequence = command_id, sequence
        raise
    cls = _OURS[command]
    if cls is Bind or cls is BindResp:
        values["mode"] = BindMode(command & 0x7FFFFFFF)
    return cls(sequence=sequence, status=status, **values)


def _decode_body(command: CommandId, status: int, body: bytes) -> dict[str, Any]:
    names = _MANDATORY[command]
    if not names or not body:
        if body and not _accepts_tlvs(command):
            raise PduDecodeError(f"{command.name.lower()} carries an unexpected body", Status.RINVCMDLEN)
        return _decode_tlvs(command, body) if body else {}
    obj = _SMPPLIB[command](command.name.lower(), client=_SEQUENCE_FREE)
    tail: list[bytes] = []
    capture: Callable[[bytes], None] = tail.append
    obj.parse_optional_params = capture
    try:
        obj.parse_params(body)
    except Exception as exc:  # smpplib raises struct.error, IndexError, KeyError, ... on bad input
        raise PduDecodeError(f"malformed {command.name.lower()}: {exc!r}", Status.RINVCMDLEN) from None
    tlv_bytes = tail[0] if tail else b""
    values: dict[str, Any] = {}
    used = 0
    strings = _STRING_FIELDS[command]
    for name in names:
        value = getattr(obj, name, None)
        spec = obj.params[name]
        if value is None:
            if name in strings and used == len(body) - len(tlv_bytes):
                value = b""
                used -= 1  # a missing trailing string, as some peers send in error responses
            elif spec.type is int:
                raise PduDecodeError(f"{command.name.lower()} ends before {name}", Status.RINVCMDLEN)
            else:
                value = b""
        if name in strings:
            if not isinstance(value, bytes) or b"\x00" in value:
                raise PduDecodeError(f"bad C-octet string in {name}", Status.RINVCMDLEN)
            used += len(value) + 1
            values[name] = value.decode("latin-1")
        elif spec.type is ptypes.ostr:
            used += len(value)
            values[name] = bytes(value)
        else:
            used += spec.size
            values[name] = int(value)
    if name_missing := [n for n in names if n == "short_message" and len(values[n]) != values["sm_length"]]:
        raise PduDecodeError(f"sm_length disagrees with {name_missing[0]}", Status.RINVMSGLEN)
    values.pop("sm_length", None)
    if used + len(tlv_bytes) != len(body):
        raise PduDecodeError(f"malformed {command.name.lower()} body", Status.RINVCMDLEN)
    values.update(_decode_tlvs(command, tlv_bytes))
    return values


def _accepts_tlvs(command: CommandId) -> bool:
    return command in (
        CommandId.SUBMIT_SM,
        CommandId.DELIVER_SM,
        CommandId.DATA_SM,
        CommandId.BIND_RECEIVER_RESP,
        CommandId.BIND_TRANSMITTER_RESP,
        CommandId.BIND_TRANSCEIVER_RESP,
        CommandId.DATA_SM_RESP,
    )


def _decode_tlvs(command: CommandId, data: bytes) -> dict[str, Any]:
    if not data:
        return {}
    if not _accepts_tlvs(command):
        raise PduDecodeError(f"{command.name.lower()} carries unexpected optional parameters", Status.RINVCMDLEN)
    values: dict[str, Any] = {}
    other: list[tuple[int, bytes]] = []
    pos, end = 0, len(data)
    message_pdu = command in (CommandId.SUBMIT_SM, CommandId.DELIVER_SM, CommandId.DATA_SM)
    while pos < end:
        if end - pos < 4:
            raise PduDecodeError("truncated optional parameter header", Status.RINVOPTPARSTREAM)
        tag, length = struct.unpack_from(">HH", data, pos)
        pos += 4
        if pos + length > end:
            raise PduDecodeError(f"optional parameter 0x{tag:04x} runs past the PDU", Status.RINVOPTPARSTREAM)
        raw = data[pos : pos + length]
        pos += length
        spec = _TLV_SPEC.get(tag) if message_pdu else None
        if tag == SC_INTERFACE_VERSION and not message_pdu and length == 1:
            values["sc_interface_version"] = raw[0]
            continue
        if spec is None:
            if message_pdu:
                other.append((tag, raw))
            continue
        name, kind = spec
        if kind == "str":
            values[name] = raw.rstrip(b"\x00").decode("latin-1")
        elif kind == "bytes":
            values[name] = raw
        else:
            # Vendors differ in integer widths (a 2-octet ussd_service_op is seen in the wild).
            if not 1 <= length <= 4:
                raise PduDecodeError(f"optional parameter 0x{tag:04x} has length {length}", Status.RINVPARLEN)
            values[name] = int.from_bytes(raw, "big")
    if other:
        values["other_tlvs"] = tuple(other)
    return values


def field_names(cls: type[Pdu]) -> tuple[str, ...]:
    """Dataclass field names of a PDU class (handy for tests and logs)."""
    return tuple(f.name for f in fields(cls))
